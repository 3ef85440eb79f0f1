#!/usr/bin/env node
// The `weft` command: loads TypeScript through tsx on Node, then runs one subcommand.
import { register } from "tsx/esm/api";

register();

// name → [module, export, help]
const COMMANDS = {
  dev: ["../scripts/dev.ts", "main", "runs a demo mesh on loopback: control plane, gateway and two sample services"],
  control: ["../control/main.ts", "main", "runs the control plane on a NATS bus"],
  gateway: ["../gateway/main.ts", "main", "serves an ingress gateway from the bus or a config file"],
  sidecar: ["../sidecar/main.ts", "main", "runs beside one workload: inbound policy, outbound routing by Host, registration"],
  iptables: ["../sidecar/capture/iptables-command.ts", "main", "writes (or with --cleanup removes) the nat rules that capture a workload's traffic"],
  apply: ["../control/cli.ts", "apply", "validates a config file and applies it to the mesh"],
  status: ["../control/cli.ts", "status", "shows every proxy's revision and whether it is in sync"],
  get: ["../control/cli.ts", "get", "lists routes, services, endpoints or gateways"],
  token: ["../control/cli.ts", "token", "mints a join token for a proxy outside Kubernetes"],
  inject: ["../control/cli.ts", "inject", "adds weft sidecars to the pods of a Kubernetes manifest, offline"],
  test: ["../control/policy-test.ts", "main", "runs offline policy tests (weft/testing) with node's test runner"],
};

const [name, ...args] = process.argv.slice(2);
const command = COMMANDS[name];
if (!command) {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  console.log("usage: weft <command> [options]\n\ncommands:");
  for (const [cmd, [, , help]] of Object.entries(COMMANDS)) console.log(`  ${cmd.padEnd(width)}  ${help}`);
  console.log("\n`weft <command> --help` describes a command's options.");
  process.exit(name === undefined || name === "help" || name === "--help" ? 0 : 2);
}
const mod = await import(new URL(command[0], import.meta.url).href);
const stop = await mod[command[1]](args);
if (typeof stop === "function") {
  for (const signal of ["SIGTERM", "SIGINT"]) process.once(signal, () => stop().then(() => process.exit(0)));
} else if (typeof stop === "number") {
  process.exitCode = stop;
}
