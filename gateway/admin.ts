import { Hono } from "hono";
import type { Snapshot } from "../shared/config/index.ts";
import type { Logger, LogLevel } from "../shared/telemetry/logger.ts";

export interface AdminState {
  readonly role: string;
  readonly log: Logger;
  /** Ready to take traffic (config loaded, listeners bound, certificate held where needed). */
  ready(): boolean;
  snapshot(): Snapshot | undefined;
  /** Prometheus text exposition of this proxy's metrics. */
  metrics?(): string | Promise<string>;
}

const LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];

/**
 * createAdminApp serves a proxy's admin API (port 15000 by default, loopback only):
 * /ready, /healthz, /config_dump, /clusters, /stats, /stats/prometheus, /logging.
 * @example
 * runtime.serveFetch(createAdminApp(state).fetch, { port: 15000, address: "127.0.0.1" });
 */
export function createAdminApp(state: AdminState): Hono {
  const app = new Hono();
  app.get("/healthz", (c) => c.text("ok\n"));
  app.get("/ready", (c) => (state.ready() ? c.text("ready\n") : c.text("not ready\n", 503)));
  app.get("/config_dump", (c) => {
    const snap = state.snapshot();
    if (!snap) return c.json({ revision: null }, 503);
    return c.json(dumpSnapshot(snap));
  });
  app.get("/clusters", (c) => {
    const snap = state.snapshot();
    const clusters = snap
      ? [...snap.services.values()].map((s) => ({
          service: s.name,
          endpoints: s.endpoints.map((e) => ({ address: e.address, weight: e.weight, labels: e.labels, draining: e.draining, healthy: !e.draining })),
        }))
      : [];
    return c.json({ clusters });
  });
  app.get("/stats/prometheus", async (c) => {
    const text = state.metrics ? await state.metrics() : "";
    return c.body(text, 200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" });
  });
  app.get("/stats", async (c) => c.text(state.metrics ? await state.metrics() : ""));
  app.post("/logging", (c) => {
    const level = c.req.query("level") as LogLevel | undefined;
    if (!level || !LEVELS.includes(level)) return c.text(`level must be one of ${LEVELS.join(", ")}\n`, 400);
    state.log.setLevel(level);
    return c.text(`level ${level}\n`);
  });
  app.get("/logging", (c) => c.text(`level ${state.log.level}\n`));
  return app;
}

/** dumpSnapshot renders a snapshot as JSON with file paths kept and nothing secret (no keys are held in it). */
export function dumpSnapshot(snap: Snapshot): unknown {
  return {
    revision: snap.revision,
    trustDomain: snap.trustDomain,
    outboundTrafficPolicy: snap.outboundTrafficPolicy,
    services: Object.fromEntries(snap.services),
    gateways: Object.fromEntries(snap.gateways),
  };
}
