import { spawn, type ChildProcess } from "node:child_process";

const ROOT = new URL("../..", import.meta.url).pathname;

export interface WeftProcess {
  readonly pid: number;
  /** Parsed JSON lines the process wrote to stderr (its log). */
  logs(): Record<string, unknown>[];
  /** Parsed JSON lines the process wrote to stdout (a proxy's access log). */
  accessLog(): Record<string, unknown>[];
  /** Resolves with the first log line that satisfies `match` (already written ones count). */
  waitForLog(match: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** SIGTERM, then SIGKILL after 5 s; resolves once the process exited. */
  stop(): Promise<void>;
}

/**
 * spawnWeft runs `weft <command> ...args` from this checkout in its own process (Node + tsx).
 * @example
 * const control = spawnWeft(["control", "--nats", nats.url]);
 * await control.waitForLog((l) => l.msg === "control plane ready");
 */
export function spawnWeft(args: string[], options: { env?: Record<string, string> } = {}): WeftProcess {
  const child: ChildProcess = spawn(process.execPath, ["scripts/weft.mjs", ...args], {
    cwd: ROOT,
    env: { ...process.env, ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const access: Record<string, unknown>[] = [];
  let out = "";
  child.stdout!.on("data", (chunk: Buffer) => {
    out += chunk.toString();
    let nl: number;
    while ((nl = out.indexOf("\n")) >= 0) {
      const line = out.slice(0, nl);
      out = out.slice(nl + 1);
      if (line.startsWith("{")) {
        try {
          access.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          // Not an access-log line (a banner); ignored.
        }
      }
    }
  });
  const logs: Record<string, unknown>[] = [];
  let stderrText = "";
  let buffered = "";
  child.stderr!.on("data", (chunk: Buffer) => {
    buffered += chunk.toString();
    let nl: number;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      stderrText += `${line}\n`;
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        logs.push({ raw: line });
      }
    }
  });
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  return {
    pid: child.pid!,
    logs: () => logs,
    accessLog: () => access,
    async waitForLog(match, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = logs.find(match);
        if (found) return found;
        if (child.exitCode !== null) throw new Error(`weft ${args[0]} exited (${child.exitCode}):\n${stderrText}`);
        if (Date.now() > deadline) throw new Error(`weft ${args[0]}: expected log line not seen in ${timeoutMs} ms:\n${stderrText}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
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
