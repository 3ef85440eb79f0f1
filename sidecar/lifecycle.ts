import { spawn } from "node:child_process";

/** One thing the sidecar needs before it takes traffic (a config applied, a certificate held, ...). */
export interface ReadyCondition {
  readonly name: string;
  ready(): boolean;
}

export interface Readiness {
  /** True when every condition holds. */
  ready(): boolean;
  /** Names of the conditions that do not hold yet. */
  waiting(): string[];
  /** Adds a condition (the identity agent adds `certificate`). */
  add(condition: ReadyCondition): void;
  /** Resolves once ready (checked every `intervalMs`, default 50), or false after `timeoutMs`. */
  until(timeoutMs: number, intervalMs?: number): Promise<boolean>;
}

/**
 * createReadiness joins the conditions `/ready` reports on: ready only when all hold.
 * @example
 * const readiness = createReadiness([{ name: "config", ready: () => views !== undefined }]);
 */
export function createReadiness(conditions: readonly ReadyCondition[]): Readiness {
  const list = [...conditions];
  const waiting = () => list.filter((c) => !c.ready()).map((c) => c.name);
  return {
    ready: () => waiting().length === 0,
    waiting,
    add: (condition) => void list.push(condition),
    async until(timeoutMs, intervalMs = 50) {
      const deadline = Date.now() + timeoutMs;
      while (waiting().length > 0) {
        if (Date.now() >= deadline) return false;
        await new Promise((r) => setTimeout(r, intervalMs));
      }
      return true;
    },
  };
}

export interface SupervisedApp {
  readonly pid: number;
  /** The app's exit code (128 + signal number when a signal ended it). */
  readonly exited: Promise<number>;
  /** Sends SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code. */
  stop(graceMs: number): Promise<number>;
}

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15 };

/**
 * superviseApp runs the workload beside the sidecar (`weft sidecar ... --run -- cmd args`), with
 * the terminal's stdio; the sidecar exits with its code when it ends, so batch jobs finish.
 * @example
 * const app = superviseApp(["node", "job.js"], { env: { HTTP_PROXY: "http://127.0.0.1:15001" } });
 * process.exitCode = await app.exited;
 */
export function superviseApp(command: readonly string[], options: { env?: Record<string, string> } = {}): SupervisedApp {
  if (command.length === 0) throw new TypeError("superviseApp needs a command");
  const child = spawn(command[0]!, command.slice(1), { stdio: "inherit", env: { ...process.env, ...options.env } });
  const exited = new Promise<number>((resolve) => {
    child.once("error", () => resolve(127));
    child.once("exit", (code, signal) => resolve(code ?? 128 + (signal ? (SIGNALS[signal] ?? 1) : 1)));
  });
  return {
    pid: child.pid ?? 0,
    exited,
    async stop(graceMs) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
        const code = await exited;
        clearTimeout(timer);
        return code;
      }
      return exited;
    },
  };
}
