import { spawnSync } from "node:child_process";
import process from "node:process";
import { parseArgs } from "node:util";
import { applyCommands, CHAINS, cleanupCommands, parseCaptureOptions, planCapture, renderRestore } from "./iptables.ts";

const USAGE = `usage: weft iptables [options] [--dry-run] [--cleanup]

Writes the nat rules that send a workload's TCP through its sidecar (run as root in the workload's
network namespace, before the app starts). Rules live in weft's own chains (WEFT_INBOUND,
WEFT_IN_REDIRECT, WEFT_OUTPUT, WEFT_REDIRECT) plus one jump each from PREROUTING and OUTPUT.
IPv4 only; ip6tables rules are not written.
  --proxy-uid N                 the sidecar's uid, never captured (default 1337)
  --proxy-gid N                 the sidecar's gid, never captured (default: the uid)
  --inbound-port N              inbound redirect target (default 15006)
  --outbound-port N             outbound redirect target (default 15001)
  --admin-port N                never captured inbound (default 15000)
  --include-inbound-ports LIST  ports to capture inbound, comma-separated, or * (default *)
  --exclude-inbound-ports LIST  ports never captured inbound
  --exclude-outbound-ports LIST destination ports never captured outbound
  --exclude-outbound-cidrs LIST destination IPv4 CIDRs never captured outbound
  --iptables PATH               the iptables binary (default iptables)
  --dry-run                     print the rules (iptables-restore format) and change nothing
  --cleanup                     remove exactly weft's chains and jumps`;

/**
 * main runs `weft iptables`; it returns the process exit code (0 done, 1 iptables failed, 2 bad options).
 * @example
 * process.exitCode = await main(["--exclude-inbound-ports", "22", "--dry-run"]);
 */
export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      "proxy-uid": { type: "string" },
      "proxy-gid": { type: "string" },
      "inbound-port": { type: "string" },
      "outbound-port": { type: "string" },
      "admin-port": { type: "string" },
      "include-inbound-ports": { type: "string" },
      "exclude-inbound-ports": { type: "string" },
      "exclude-outbound-ports": { type: "string" },
      "exclude-outbound-cidrs": { type: "string" },
      iptables: { type: "string" },
      "dry-run": { type: "boolean" },
      cleanup: { type: "boolean" },
      help: { type: "boolean" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const binary = values.iptables ?? "iptables";
  const run = (args: string[]) => spawnSync(binary, args, { encoding: "utf8" });

  if (values.cleanup) {
    if (values["dry-run"]) {
      for (const args of cleanupCommands()) console.log([binary, ...args].join(" "));
      return 0;
    }
    const left = removeAll(run);
    if (left.length > 0) {
      for (const chain of left) console.error(`weft iptables: chain ${chain} could not be removed`);
      return 1;
    }
    console.error("weft iptables: removed weft's nat chains and jumps");
    return 0;
  }

  const parsed = parseCaptureOptions(values as Record<string, string | undefined>);
  if (!parsed.ok) {
    for (const issue of parsed.issues) console.error(`weft iptables: --${issue.option} ${issue.message}`);
    console.error(USAGE);
    return 2;
  }
  const rules = planCapture(parsed.options);
  if (values["dry-run"]) {
    process.stdout.write(renderRestore(rules));
    return 0;
  }
  // Applying twice must not duplicate the jumps: start from a clean slate of weft's own rules.
  removeAll(run);
  for (const args of applyCommands(rules)) {
    const r = run(args);
    if (r.status !== 0) {
      console.error(`weft iptables: failed: ${binary} ${args.join(" ")}\n${r.error?.message ?? r.stderr}`);
      removeAll(run);
      return 1;
    }
  }
  console.error(`weft iptables: ${rules.length} nat rules applied (inbound → ${parsed.options.inboundPort}, outbound → ${parsed.options.outboundPort})`);
  return 0;
}

/** Runs the cleanup commands (each may fail when already gone); returns weft chains still present. */
function removeAll(run: (args: string[]) => { status: number | null }): string[] {
  const commands = cleanupCommands();
  const jumps = commands.filter((args) => args.includes("-D"));
  // A jump added twice (by hand, or by an older run) needs deleting twice; the chains go after.
  for (const args of jumps) for (let i = 0; i < 16 && run(args).status === 0; i++);
  for (const args of commands) if (!args.includes("-D")) run(args);
  return CHAINS.filter((c) => run(["-w", "-t", "nat", "-S", c]).status === 0);
}
