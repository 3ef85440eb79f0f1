import { spawn } from "node:child_process";
import { Hono } from "hono";
import type { Snapshot } from "../shared/config/index.ts";
import type { Logger } from "../shared/telemetry/index.ts";

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

export interface SidecarAdminState {
  readonly readiness: Readiness;
  readonly log: Logger;
  snapshot(): Snapshot | undefined;
  /** POST /quitquitquit: the sidecar stops (drains) and exits 0. */
  quit(): void;
}

/**
 * createSidecarAdmin serves the sidecar's admin API (127.0.0.1:15000 by default): /ready (503 with
 * the conditions still waiting), /healthz, /config_dump (revision and services known),
 * POST /quitquitquit (Istio's: exit cleanly, for jobs whose app has finished).
 * @example
 * runtime.serveFetch(createSidecarAdmin({ readiness, log, snapshot: () => views?.snapshot, quit }).fetch, { port: 15000, address: "127.0.0.1" });
 */
export function createSidecarAdmin(state: SidecarAdminState): Hono {
  const app = new Hono();
  app.get("/healthz", (c) => c.text("ok\n"));
  app.get("/ready", (c) => {
    const waiting = state.readiness.waiting();
    return waiting.length === 0 ? c.text("ready\n") : c.text(`not ready: ${waiting.join(", ")}\n`, 503);
  });
  app.get("/config_dump", (c) => {
    const snap = state.snapshot();
    if (!snap) return c.json({ revision: null }, 503);
    return c.json({
      revision: snap.revision,
      outboundTrafficPolicy: snap.outboundTrafficPolicy,
      services: [...snap.services.values()].map((s) => ({ name: s.name, hostnames: s.hostnames, endpoints: s.endpoints.map((e) => e.address) })),
    });
  });
  app.post("/quitquitquit", (c) => {
    state.log.info("asked to quit");
    // Answer first, then stop: the caller sees 200 before the admin listener closes.
    setTimeout(() => state.quit(), 10);
    return c.text("quitting\n");
  });
  return app;
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
