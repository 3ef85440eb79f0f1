// The `weft` command's table: each subcommand's module, loaded only when it runs. scripts/weft.mjs
// runs this through tsx; scripts/build.mjs bundles the same file into one module for production.

type Command = readonly [load: () => Promise<Record<string, unknown>>, entry: string, help: string];

const COMMANDS: Record<string, Command> = {
  dev: [() => import("./dev.ts"), "main", "runs a demo mesh on loopback: control plane, gateway and two sample services"],
  control: [() => import("../control/main.ts"), "main", "runs the control plane on a NATS bus"],
  gateway: [() => import("../gateway/main.ts"), "main", "serves an ingress gateway from the bus or a config file"],
  sidecar: [() => import("../sidecar/main.ts"), "main", "runs beside one workload: inbound policy, outbound routing by Host, registration"],
  iptables: [() => import("../sidecar/capture/iptables-command.ts"), "main", "writes (or with --cleanup removes) the nat rules that capture a workload's traffic"],
  apply: [() => import("../control/cli.ts"), "apply", "validates a config file and applies it to the mesh"],
  status: [() => import("../control/cli.ts"), "status", "shows every proxy's revision and whether it is in sync"],
  get: [() => import("../control/cli.ts"), "get", "lists routes, services, endpoints or gateways"],
  token: [() => import("../control/cli.ts"), "token", "mints a join token for a proxy outside Kubernetes"],
  inject: [() => import("../control/cli.ts"), "inject", "adds weft sidecars to the pods of a Kubernetes manifest, offline"],
  test: [() => import("../control/policy-test.ts"), "main", "runs offline policy tests (weft/testing) with node's test runner"],
};

/**
 * run dispatches `weft <command> [options]`: a long-running command's stop function is called on
 * SIGTERM/SIGINT, a one-shot's number becomes the exit code.
 * @example
 * await run(["gateway", "--config", "weft.config.ts"]);
 */
export async function run(argv: readonly string[]): Promise<void> {
  const [name, ...args] = argv;
  const command = name === undefined ? undefined : COMMANDS[name];
  if (!command) {
    const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
    console.log("usage: weft <command> [options]\n\ncommands:");
    for (const [cmd, [, , help]] of Object.entries(COMMANDS)) console.log(`  ${cmd.padEnd(width)}  ${help}`);
    console.log("\n`weft <command> --help` describes a command's options.");
    process.exit(name === undefined || name === "help" || name === "--help" ? 0 : 2);
  }
  const [load, entry] = command;
  const result = await ((await load())[entry] as (argv: string[]) => Promise<unknown>)(args);
  if (typeof result === "function") {
    const stop = result as () => Promise<void>;
    for (const signal of ["SIGTERM", "SIGINT"] as const) process.once(signal, () => stop().then(() => process.exit(0)));
  } else if (typeof result === "number") {
    process.exitCode = result;
  }
}
