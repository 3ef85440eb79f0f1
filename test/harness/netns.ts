import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { watchProcess, type WeftProcess } from "./weft-process.ts";

const ROOT = new URL("../..", import.meta.url).pathname;

/** A process started inside a namespace: its log, its output, its exit. */
export type NetnsProcess = WeftProcess;

export interface Namespace {
  readonly name: string;
  /** This namespace's address on the veth link. */
  readonly address: string;
  /** Runs a command inside the namespace to completion. */
  run(args: readonly string[], timeoutMs?: number): { code: number | null; stdout: string; stderr: string };
  /** Starts a long-running command inside the namespace (optionally as another uid/gid, via setpriv). */
  start(args: readonly string[], options?: { uid?: number; env?: Record<string, string> }): NetnsProcess;
}

export interface NetnsPair {
  readonly a: Namespace;
  readonly b: Namespace;
  /** Kills every process started through start(), deletes both namespaces (and with them the veth pair) and the /etc/netns files. */
  destroy(): Promise<void>;
}

/**
 * netnsAvailable tells whether this process may create network namespaces (root with CAP_SYS_ADMIN
 * and CAP_NET_ADMIN, `ip` and `setpriv` installed); the reason when not.
 * @example
 * const can = netnsAvailable(); if (!can.ok) t.skip(can.reason);
 */
export function netnsAvailable(): { ok: true } | { ok: false; reason: string } {
  const probe = `weft-probe-${process.pid}`;
  const add = spawnSync("ip", ["netns", "add", probe], { encoding: "utf8" });
  if (add.error || add.status !== 0) return { ok: false, reason: `ip netns add is not permitted here: ${add.error?.message ?? add.stderr.trim()}` };
  spawnSync("ip", ["netns", "del", probe]);
  const setpriv = spawnSync("setpriv", ["--version"], { encoding: "utf8" });
  if (setpriv.error || setpriv.status !== 0) return { ok: false, reason: "setpriv (util-linux) is not installed" };
  return { ok: true };
}

function must(args: string[]): void {
  const r = spawnSync(args[0]!, args.slice(1), { encoding: "utf8" });
  if (r.error || r.status !== 0) throw new Error(`${args.join(" ")} failed: ${r.error?.message ?? r.stderr}`);
}

/**
 * createNetnsPair makes two network namespaces joined by a veth pair (`<subnet>.1/24` in a,
 * `<subnet>.2/24` in b, loopback up in both) and writes `/etc/netns/<ns>/hosts` so that
 * `ip netns exec` resolves the given names (a cluster DNS stand-in).
 * @example
 * const pair = await createNetnsPair({ subnet: "10.77.0", hosts: { "server-svc": "10.77.0.2" } });
 * try { ... } finally { await pair.destroy(); }
 */
export async function createNetnsPair(options: { subnet: string; hosts?: Record<string, string> }): Promise<NetnsPair> {
  const tag = `${process.pid % 100000}`;
  const names = { a: `weft-a-${tag}`, b: `weft-b-${tag}` };
  const veth = { a: `wva${tag}`, b: `wvb${tag}` };
  const processes = new Set<NetnsProcess>();
  const created: string[] = [];
  const madeEtcNetns = !existsSync("/etc/netns");
  const removeEtc = (ns: string) => {
    rmSync(`/etc/netns/${ns}`, { recursive: true, force: true });
    if (madeEtcNetns) {
      try {
        rmdirSync("/etc/netns");
      } catch {
        // not empty (another namespace's files) or already gone
      }
    }
  };
  const destroy = async () => {
    await Promise.all([...processes].map((p) => p.stop()));
    for (const ns of created) {
      spawnSync("ip", ["netns", "del", ns]);
      removeEtc(ns);
    }
    // Deleting a namespace deletes the veth end in it, and with it the peer; this catches a half-made pair.
    spawnSync("ip", ["link", "del", veth.a]);
  };
  const onExit = () => {
    for (const p of processes) {
      try {
        process.kill(p.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    for (const ns of created) {
      spawnSync("ip", ["netns", "del", ns]);
      removeEtc(ns);
    }
  };
  process.once("exit", onExit);
  try {
    for (const side of ["a", "b"] as const) {
      must(["ip", "netns", "add", names[side]]);
      created.push(names[side]);
    }
    must(["ip", "link", "add", veth.a, "type", "veth", "peer", "name", veth.b]);
    for (const [side, host] of [["a", 1], ["b", 2]] as const) {
      const ns = names[side];
      must(["ip", "link", "set", veth[side], "netns", ns]);
      must(["ip", "-n", ns, "addr", "add", `${options.subnet}.${host}/24`, "dev", veth[side]]);
      must(["ip", "-n", ns, "link", "set", veth[side], "up"]);
      must(["ip", "-n", ns, "link", "set", "lo", "up"]);
      mkdirSync(`/etc/netns/${ns}`, { recursive: true });
      const lines = ["127.0.0.1 localhost", ...Object.entries(options.hosts ?? {}).map(([name, ip]) => `${ip} ${name}`)];
      writeFileSync(`/etc/netns/${ns}/hosts`, `${lines.join("\n")}\n`);
    }
  } catch (err) {
    await destroy();
    process.removeListener("exit", onExit);
    throw err;
  }

  const namespace = (side: "a" | "b", host: number): Namespace => ({
    name: names[side],
    address: `${options.subnet}.${host}`,
    run(args, timeoutMs = 30_000) {
      const r = spawnSync("ip", ["netns", "exec", names[side], ...args], { cwd: ROOT, encoding: "utf8", timeout: timeoutMs });
      return { code: r.status, stdout: r.stdout ?? "", stderr: (r.stderr ?? "") + (r.error ? String(r.error) : "") };
    },
    start(args, startOptions = {}) {
      const asUser = startOptions.uid === undefined ? [] : ["setpriv", `--reuid=${startOptions.uid}`, `--regid=${startOptions.uid}`, "--clear-groups"];
      // `ip netns exec` and setpriv both exec, so the child's pid is the command's own.
      const child = spawn("ip", ["netns", "exec", names[side], ...asUser, ...args], {
        cwd: ROOT,
        env: { ...process.env, ...startOptions.env },
        stdio: ["ignore", "pipe", "pipe"],
      });
      const proc = watchProcess(child, args.join(" "), { logTimeoutMs: 30_000 });
      processes.add(proc);
      return proc;
    },
  });

  return {
    a: namespace("a", 1),
    b: namespace("b", 2),
    async destroy() {
      await destroy();
      process.removeListener("exit", onExit);
    },
  };
}
