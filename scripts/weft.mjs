#!/usr/bin/env node
// The `weft` command: loads TypeScript through tsx on Node, then runs one subcommand.
import { register } from "tsx/esm/api";

register();

const COMMANDS = {
  dev: ["../scripts/dev.ts", "runs a demo mesh on loopback: gateway and two sample services"],
  gateway: ["../gateway/main.ts", "serves an ingress gateway from a config file"],
};

const [name, ...args] = process.argv.slice(2);
const command = COMMANDS[name];
if (!command) {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  console.log("usage: weft <command> [options]\n\ncommands:");
  for (const [cmd, [, help]] of Object.entries(COMMANDS)) console.log(`  ${cmd.padEnd(width)}  ${help}`);
  console.log("\n`weft <command> --help` describes a command's options.");
  process.exit(name === undefined || name === "help" || name === "--help" ? 0 : 2);
}
const mod = await import(new URL(command[0], import.meta.url).href);
const stop = await mod.main(args);
if (typeof stop === "function") {
  for (const signal of ["SIGTERM", "SIGINT"]) process.once(signal, () => stop().then(() => process.exit(0)));
} else if (typeof stop === "number") {
  process.exitCode = stop;
}
