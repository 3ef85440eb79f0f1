import { Hono } from "hono";
import type { Snapshot } from "../config/index.ts";
import type { ClusterHealthReport } from "../proxy/index.ts";
import { PROMETHEUS_CONTENT_TYPE, type Logger, type LogLevel } from "../telemetry/index.ts";

export interface AdminState {
  readonly log: Logger;
  /** What the proxy still waits for before it takes traffic (config, listeners, certificate); empty = ready. */
  waiting(): readonly string[];
  snapshot(): Snapshot | undefined;
  /** Prometheus text exposition of this proxy's metrics. */
  metrics?(): string | Promise<string>;
  /** The same metrics as JSON, for /stats. */
  stats?(): unknown | Promise<unknown>;
  /** Outlier ejections and pool load per service, for /clusters. */
  health?(): readonly ClusterHealthReport[];
  /** POST /quitquitquit (Istio's): the proxy stops (drains) and exits 0; absent = not offered. */
  quit?(): void;
}

const LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];

/**
 * createAdminApp serves a proxy's admin API (port 15000 by default, loopback only): /ready (503 with
 * what it waits for), /healthz, /config_dump, /clusters, /stats, /stats/prometheus, /logging, and
 * POST /quitquitquit where the role offers it.
 * @example
 * runtime.serveFetch(createAdminApp(state).fetch, { port: 15000, address: "127.0.0.1" });
 */
export function createAdminApp(state: AdminState): Hono {
  const app = new Hono();
  app.get("/healthz", (c) => c.text("ok\n"));
  app.get("/ready", (c) => {
    const waiting = state.waiting();
    return waiting.length === 0 ? c.text("ready\n") : c.text(`not ready: ${waiting.join(", ")}\n`, 503);
  });
  app.get("/config_dump", (c) => {
    const snap = state.snapshot();
    if (!snap) return c.json({ revision: null }, 503);
    return c.json(dumpSnapshot(snap));
  });
  app.get("/clusters", (c) => {
    const snap = state.snapshot();
    const health = new Map((state.health?.() ?? []).map((h) => [h.service, h]));
    const clusters = snap
      ? [...snap.services.values()].map((s) => {
          const h = health.get(s.name);
          const ejected = new Map(h?.ejected.map((e) => [e.address, e.untilMs]));
          const unhealthy = h?.unhealthy === undefined ? undefined : new Set(h.unhealthy);
          return {
            service: s.name,
            endpoints: s.endpoints.map((e) => {
              const until = ejected.get(e.address);
              return {
                address: e.address,
                weight: e.weight,
                labels: e.labels,
                draining: e.draining,
                healthy: !e.draining && until === undefined && unhealthy?.has(e.address) !== true,
                // Envoy's /clusters shows failed_active_health_check; null when the service sets no healthCheck.
                activeHealth: unhealthy === undefined ? null : unhealthy.has(e.address) ? "unhealthy" : "healthy",
                // Envoy's /clusters shows failed_outlier_check; here with the time the endpoint returns.
                outlier: until === undefined ? null : { ejectedUntil: new Date(until).toISOString() },
              };
            }),
            outlierEjectionsTotal: h?.ejectionsTotal ?? 0,
            pool: h ? { active: h.active, pending: h.pending, retries: h.retries } : null,
          };
        })
      : [];
    return c.json({ clusters });
  });
  app.get("/stats/prometheus", async (c) => {
    const text = state.metrics ? await state.metrics() : "";
    return c.body(text, 200, { "content-type": PROMETHEUS_CONTENT_TYPE });
  });
  app.get("/stats", async (c) => c.json({ revision: state.snapshot()?.revision ?? null, metrics: state.stats ? await state.stats() : {} }));
  app.post("/logging", (c) => {
    const level = c.req.query("level") as LogLevel | undefined;
    if (!level || !LEVELS.includes(level)) return c.text(`level must be one of ${LEVELS.join(", ")}\n`, 400);
    state.log.setLevel(level);
    return c.text(`level ${level}\n`);
  });
  app.get("/logging", (c) => c.text(`level ${state.log.level}\n`));
  const quit = state.quit;
  if (quit) {
    app.post("/quitquitquit", (c) => {
      state.log.info("asked to quit");
      // Answer first, then stop: the caller sees 200 before the admin listener closes.
      setTimeout(quit, 10);
      return c.text("quitting\n");
    });
  }
  return app;
}

/**
 * dumpSnapshot renders a snapshot as JSON with every secret-looking field (see redactSecrets) replaced.
 * @example
 * JSON.stringify(dumpSnapshot(ingress.snapshot))
 */
export function dumpSnapshot(snap: Snapshot): unknown {
  return redactSecrets({
    revision: snap.revision,
    trustDomain: snap.trustDomain,
    outboundTrafficPolicy: snap.outboundTrafficPolicy,
    accessLog: snap.accessLog,
    tracing: snap.tracing,
    services: Object.fromEntries(snap.services),
    gateways: Object.fromEntries(snap.gateways),
  });
}

// Names that hold credentials: keys, secrets, tokens, passwords, and header names such as
// x-api-key or authorization when they key a header match or header operation.
const SECRET_NAME = /key|secret|token|passw|credential|authorization|cookie/i;
// A field ending in "File" names where a secret lives (tls.keyFile), not the secret: kept for debugging.
const PATH_NAME = /File$/;

/**
 * redactSecrets copies a JSON-like value, replacing the value of every field whose name looks like
 * a secret (key, secret, token, password, credential, authorization, cookie) with "[redacted]".
 * @example
 * redactSecrets({ jwt: { hmacSecret: "s" }, tls: { keyFile: "/k.pem" } }) // { jwt: { hmacSecret: "[redacted]" }, tls: { keyFile: "/k.pem" } }
 */
export function redactSecrets(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(redactSecrets);
  if (value instanceof Map) return redactSecrets(Object.fromEntries(value));
  if (value === null || typeof value !== "object") return value;
  const out: Record<string, unknown> = {};
  for (const [name, inner] of Object.entries(value)) {
    out[name] = SECRET_NAME.test(name) && !PATH_NAME.test(name) ? "[redacted]" : redactSecrets(inner);
  }
  return out;
}
