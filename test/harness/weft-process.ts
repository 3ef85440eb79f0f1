import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";

const ROOT = new URL("../..", import.meta.url).pathname;

export interface WeftProcess {
  readonly pid: number;
  /** Parsed JSON lines the process wrote to stderr (its log). */
  logs(): Record<string, unknown>[];
  /** Parsed JSON lines the process wrote to stdout (a proxy's access log). */
  accessLog(): Record<string, unknown>[];
  /** Everything written to stdout and stderr so far. */
  output(): string;
  /** Resolves with the first log line that satisfies `match` (already written ones count); fails at once if the process exits. */
  waitForLog(match: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** The same for the access log (stdout). */
  waitForAccess(match: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Resolves with the exit code once the process ended. */
  readonly exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL after 5 s; resolves once the process exited. */
  stop(): Promise<void>;
}

/** Calls `onLine` for every complete line of a stream; `onText` sees the raw text. */
function eachLine(stream: NodeJS.ReadableStream | null, onLine: (line: string) => void, onText: (text: string) => void): void {
  let buffered = "";
  stream?.on("data", (chunk: Buffer) => {
    const text = chunk.toString();
    onText(text);
    buffered += text;
    let nl: number;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      onLine(buffered.slice(0, nl));
      buffered = buffered.slice(nl + 1);
    }
  });
}

/**
 * watchProcess follows a spawned process: its stderr as a JSON log (each line also to `onLog`), its stdout as a JSON access log, its exit, and stops it by PID.
 * @example
 * const sidecar = watchProcess(spawn("bun", ["sidecar/main.ts", ...args], { stdio: ["ignore", "pipe", "pipe"] }), "sidecar on bun");
 * await sidecar.waitForLog((l) => l.msg === "sidecar ready");
 */
export function watchProcess(child: ChildProcess, what: string, options: { logTimeoutMs?: number; onLog?: (line: Record<string, unknown>) => void } = {}): WeftProcess {
  const access: Record<string, unknown>[] = [];
  const logs: Record<string, unknown>[] = [];
  let text = "";
  eachLine(
    child.stdout,
    (line) => {
      if (!line.startsWith("{")) return;
      try {
        access.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // Not an access-log line (a banner); ignored.
      }
    },
    (t) => (text += t),
  );
  eachLine(
    child.stderr,
    (line) => {
      let entry: Record<string, unknown>;
      try {
        entry = JSON.parse(line) as Record<string, unknown>;
      } catch {
        entry = { raw: line };
      }
      logs.push(entry);
      options.onLog?.(entry);
    },
    (t) => (text += t),
  );
  const ended = () => child.exitCode !== null || child.signalCode !== null;
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const waitForLine = async (lines: Record<string, unknown>[], kind: string, match: (line: Record<string, unknown>) => boolean, timeoutMs: number) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = lines.find(match);
      if (found) return found;
      if (ended()) throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}):\n${text}`);
      if (Date.now() > deadline) throw new Error(`${what}: expected ${kind} line not seen in ${timeoutMs} ms:\n${text}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return {
    pid: child.pid!,
    logs: () => logs,
    accessLog: () => access,
    output: () => text,
    exited,
    waitForLog: (match, timeoutMs = options.logTimeoutMs ?? 20_000) => waitForLine(logs, "log", match, timeoutMs),
    waitForAccess: (match, timeoutMs = options.logTimeoutMs ?? 20_000) => waitForLine(access, "access-log", match, timeoutMs),
    async stop() {
      if (ended()) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * spawnWeft runs `weft <command> ...args` from this checkout in its own process (Node + tsx).
 * @example
 * const control = spawnWeft(["control", "--nats", nats.url]);
 * await control.waitForLog((l) => l.msg === "control plane ready");
 */
export function spawnWeft(args: string[], options: { env?: Record<string, string> } = {}): WeftProcess {
  const child = spawn(process.execPath, ["scripts/weft.mjs", ...args], {
    cwd: ROOT,
    env: { ...process.env, ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  return watchProcess(child, `weft ${args[0]}`);
}

/**
 * weftToken mints a join token for a service account with `weft token` on a control plane's state folder; the test fails if it cannot.
 * @example
 * const token = await weftToken(join(dir, "control"), "client-svc");
 */
export async function weftToken(controlStateDir: string, serviceAccount: string, namespace = "default"): Promise<string> {
  const r = await runWeft(["token", "--ns", namespace, "--sa", serviceAccount, "--state-dir", controlStateDir]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim();
}

/**
 * runWeft runs a one-shot `weft` command (apply, status, get) to completion and captures its output.
 * @example
 * const r = await runWeft(["apply", file, "--nats", url]);
 */
export function runWeft(args: string[], timeoutMs = 30_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["scripts/weft.mjs", ...args], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
