// What every bench suite measures with: CPU time of a process tree from /proc, free ports,
// waiting for a listener, reading wrk's output, and printing a Markdown table.
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";

const CLK_TCK = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;

export type ProcessTable = Map<number, { ppid: number; cpu: number }>;

/**
 * processTable reads every process's parent and CPU seconds (user + system) from /proc.
 * @example
 * const table = processTable(); table.get(pid)?.cpu
 */
export function processTable(): ProcessTable {
  const stats: ProcessTable = new Map();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      stats.set(Number(name), { ppid: Number(fields[1]), cpu: (Number(fields[11]) + Number(fields[12])) / CLK_TCK });
    } catch {
      // The process ended while the table was read.
    }
  }
  return stats;
}

/**
 * processTree lists a process and all its descendants.
 * @example
 * processTree(gateway.pid!) // [pid, ...children]
 */
export function processTree(pid: number, table: ProcessTable = processTable()): number[] {
  const tree: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const p = queue.pop()!;
    tree.push(p);
    for (const [child, s] of table) if (s.ppid === p) queue.push(child);
  }
  return tree;
}

/**
 * cpuSeconds sums the CPU time of a process and its descendants (read before and after a run).
 * @example
 * const before = cpuSeconds(pid); await load(); const used = cpuSeconds(pid) - before;
 */
export function cpuSeconds(pid: number, table: ProcessTable = processTable()): number {
  return processTree(pid, table).reduce((total, p) => total + (table.get(p)?.cpu ?? 0), 0);
}

/**
 * killProcessTrees SIGKILLs each still-running child and all its descendants, by PID (killing only
 * a parent would orphan its workers).
 * @example
 * process.on("exit", () => killProcessTrees(children));
 */
export function killProcessTrees(children: readonly ChildProcess[]): void {
  const table = processTable();
  for (const c of children) {
    if (c.pid === undefined || c.exitCode !== null || c.signalCode !== null) continue;
    for (const pid of processTree(c.pid, table)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
  }
}

/**
 * requireTools throws, naming the apt packages, when a program the suite runs is not on PATH.
 * @example
 * requireTools(["wrk", "taskset"], "wrk util-linux");
 */
export function requireTools(tools: readonly string[], packages: string): void {
  for (const tool of tools) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0) throw new Error(`${tool} is needed: apt-get install -y ${packages}`);
  }
}

/**
 * loadGenerator runs a load generator (wrk, hey, h2load, ...) on core 0 and resolves with its
 * stdout; the child joins `children` so an interrupted bench can kill it.
 * @example
 * const out = await loadGenerator(["wrk", "-t1", "-c50", "-d10s", url], children);
 */
export function loadGenerator(args: readonly string[], children: ChildProcess[], cwd?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn("taskset", ["-c", "0", ...args], { cwd, stdio: ["ignore", "pipe", "ignore"] });
    children.push(child);
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (out += chunk));
    child.on("error", reject);
    child.on("close", () => resolve(out));
  });
}

/**
 * waitForJsonLog resolves with the first JSON line of a process log file that `match` accepts, and
 * fails if the process exits first or 30 s pass.
 * @example
 * const line = await waitForJsonLog(child, join(dir, "sidecar-a.err"), "sidecar-a", (l) => l.msg === "sidecar ready");
 */
export async function waitForJsonLog(child: ChildProcess, file: string, what: string, match: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    let text = "";
    try {
      text = readFileSync(file, "utf8");
    } catch {
      // Not written yet.
    }
    for (const line of text.split("\n")) {
      if (!line.startsWith("{")) continue;
      try {
        const parsed = JSON.parse(line) as Record<string, unknown>;
        if (match(parsed)) return parsed;
      } catch {
        // A partial last line; read again.
      }
    }
    if (child.exitCode !== null) throw new Error(`${what} exited (${child.exitCode}):\n${text}`);
    if (Date.now() > deadline) throw new Error(`${what}: expected log line not seen in 30 s:\n${text}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * freePort asks the kernel for a free loopback port.
 * @example
 * const port = await freePort();
 */
export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/**
 * waitForPort resolves once something accepts on the loopback port, and fails if the child exits
 * first or 30 s pass.
 * @example
 * await waitForPort(port, child, "gateway");
 */
export async function waitForPort(port: number, child: ChildProcess, what: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${what} exited (${child.exitCode})`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, "127.0.0.1", () => (s.destroy(), resolve(true)));
      s.on("error", () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not listen on ${port}`);
}

/**
 * parseMs reads a wrk duration ("812.00us", "1.20ms", "2.01s") as milliseconds (NaN if absent).
 * @example
 * parseMs("812.00us") // 0.812
 */
export function parseMs(text: string): number {
  const m = /([\d.]+)(us|ms|s)/.exec(text);
  if (!m) return NaN;
  const v = Number(m[1]);
  return m[2] === "us" ? v / 1000 : m[2] === "s" ? v * 1000 : v;
}

export interface WrkResult {
  readonly rps: number;
  readonly requests: number;
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly p99Ms: number;
  /** Non-2xx/3xx answers plus socket errors. */
  readonly errors: number;
}

/**
 * parseWrk reads `wrk --latency` output.
 * @example
 * parseWrk(out).p99Ms
 */
export function parseWrk(out: string): WrkResult {
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  // Anchored: the thread-stats lines end in percentages too ("75.50%").
  const pct = (p: number) => parseMs(new RegExp(`^\\s+${p}%\\s+(\\S+)`, "m").exec(out)?.[1] ?? "");
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0),
    requests: Number(/(\d+) requests in/.exec(out)?.[1] ?? 0),
    p50Ms: pct(50),
    p90Ms: pct(90),
    p99Ms: pct(99),
    errors: Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0) + (socket ? socket.slice(1).reduce((a, b) => a + Number(b), 0) : 0),
  };
}

/**
 * markdownTable prints rows (same keys each) as a Markdown table, first column left-aligned.
 * @example
 * console.log(markdownTable([{ case: "direct", "µs/op": "1.2" }]));
 */
export function markdownTable(rows: readonly Readonly<Record<string, string>>[]): string {
  const columns = Object.keys(rows[0] ?? {});
  const width = columns.map((c) => Math.max(c.length, ...rows.map((r) => (r[c] ?? "").length)));
  const line = (cells: readonly string[]) => `| ${cells.map((c, i) => (i === 0 ? c.padEnd(width[i]!) : c.padStart(width[i]!))).join(" | ")} |`;
  return [line(columns), `|${width.map((w, i) => (i === 0 ? "-".repeat(w + 2) : `${"-".repeat(w + 1)}:`)).join("|")}|`, ...rows.map((r) => line(columns.map((c) => r[c] ?? "")))].join("\n");
}

/**
 * getStatus sends one GET /bench with the given Host on a fresh connection; its status, or 0 when the connection failed.
 * @example
 * while ((await getStatus(outbound, "bench-server")) !== 200) await sleep(100);
 */
export function getStatus(port: number, host: string): Promise<number> {
  return new Promise((done) => {
    const req = http.get({ host: "127.0.0.1", port, path: "/bench", headers: { host }, agent: false }, (res) => {
      res.resume();
      res.on("end", () => done(res.statusCode ?? 0));
    });
    req.on("error", () => done(0));
  });
}
