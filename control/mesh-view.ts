import * as v from "valibot";
import { Hono } from "hono";
import { serve } from "@hono/node-server";
import type { AddressInfo } from "node:net";
import { decodeJson, TELEMETRY_SUBJECTS, type Bus } from "../shared/bus/index.ts";
import type { DenialSummary, ProxySummary } from "../shared/telemetry/index.ts";
import { MESH_VIEW_PAGE } from "./mesh-view-page.ts";
import type { ProxyStatusRow } from "./status.ts";

/** The live service graph the mesh view draws. */
export interface MeshGraph {
  readonly generatedAt: number;
  readonly nodes: readonly { readonly name: string; readonly kind: "gateway" | "service" | "clients"; readonly proxies: readonly ProxyStatusRow[] }[];
  readonly edges: readonly {
    readonly source: string;
    readonly destination: string;
    readonly rps: number;
    readonly errorRate: number;
    readonly p99Ms: number;
  }[];
  readonly denials: readonly DenialSummary[];
}

export interface MeshView {
  graph(now?: number): MeshGraph;
  /** The page and its JSON API: GET / and GET /api/graph. */
  readonly app: Hono;
  stop(): void;
}

// The wire is untrusted: summaries are checked before they are counted.
const Finite = v.pipe(v.number(), v.finite(), v.minValue(0));
const Name = v.pipe(v.string(), v.maxLength(253));
const SummarySchema = v.object({
  v: v.literal(1),
  proxyId: Name,
  role: v.picklist(["gateway", "sidecar"]),
  workload: Name,
  revision: Finite,
  intervalMs: Finite,
  sentAt: Finite,
  edges: v.pipe(
    v.array(v.object({ source: Name, destination: Name, requests: Finite, errors: Finite, p50Ms: Finite, p99Ms: Finite })),
    v.maxLength(1000),
  ),
  denials: v.pipe(
    v.array(v.object({ at: Finite, source: Name, destination: Name, method: v.pipe(v.string(), v.maxLength(16)), path: v.pipe(v.string(), v.maxLength(2048)), status: Finite, reason: Name })),
    v.maxLength(100),
  ),
});

const RECENT_DENIALS = 50;

/**
 * startMeshView follows every proxy's summary on `weft.telemetry.*` and serves the mesh view: the
 * service graph (requests/s, error rate and p99 per edge, from each proxy's latest interval),
 * every node's proxies with their config revision and sync state, and the latest denials.
 * @example
 * const view = startMeshView({ bus, status: () => control.status() });
 * serve({ fetch: view.app.fetch, port: 15080, hostname: "127.0.0.1" });
 */
export function startMeshView(options: { bus: Bus; status: () => ProxyStatusRow[]; staleAfterMs?: number; now?: () => number }): MeshView {
  const now = options.now ?? Date.now;
  const staleAfterMs = options.staleAfterMs ?? 6000;
  const latest = new Map<string, { summary: ProxySummary; receivedAt: number }>();
  let denials: DenialSummary[] = [];

  const sub = options.bus.subscribe(TELEMETRY_SUBJECTS, (msg) => {
    const decoded = decodeJson(msg.data);
    if (!decoded.ok) return;
    const parsed = v.safeParse(SummarySchema, decoded.value);
    if (!parsed.success) return;
    const summary = parsed.output as ProxySummary;
    latest.set(summary.proxyId, { summary, receivedAt: now() });
    if (summary.denials.length > 0) denials = [...denials, ...summary.denials].sort((a, b) => a.at - b.at).slice(-RECENT_DENIALS);
  });

  function graph(at = now()): MeshGraph {
    const rows = options.status();
    const nodes = new Map<string, MeshGraph["nodes"][number]>();
    const node = (name: string, kind: "gateway" | "service" | "clients") => {
      if (!nodes.has(name)) nodes.set(name, { name, kind, proxies: rows.filter((r) => r.name === name) });
    };
    for (const r of rows) node(r.name, r.role === "gateway" ? "gateway" : "service");
    const edges = new Map<string, { source: string; destination: string; requests: number; errors: number; seconds: number; p99Ms: number }>();
    for (const [id, { summary, receivedAt }] of latest) {
      if (at - receivedAt > staleAfterMs) {
        latest.delete(id);
        continue;
      }
      node(summary.workload, summary.role === "gateway" ? "gateway" : "service");
      const seconds = Math.max(summary.intervalMs, 1) / 1000;
      for (const e of summary.edges) {
        node(e.source, e.source === "clients" ? "clients" : "service");
        node(e.destination, "service");
        const key = `${e.source}\u0001${e.destination}`;
        const agg = edges.get(key) ?? { source: e.source, destination: e.destination, requests: 0, errors: 0, seconds: 0, p99Ms: 0 };
        agg.requests += e.requests;
        agg.errors += e.errors;
        // Replicas report over about the same interval: rates add up, p99 is the worst replica's.
        agg.seconds = Math.max(agg.seconds, seconds);
        agg.p99Ms = Math.max(agg.p99Ms, e.p99Ms);
        edges.set(key, agg);
      }
    }
    return {
      generatedAt: at,
      nodes: [...nodes.values()],
      edges: [...edges.values()].map((e) => ({
        source: e.source,
        destination: e.destination,
        rps: e.seconds > 0 ? e.requests / e.seconds : 0,
        errorRate: e.requests > 0 ? e.errors / e.requests : 0,
        p99Ms: e.p99Ms,
      })),
      denials,
    };
  }

  const app = new Hono();
  app.get("/", (c) => c.html(MESH_VIEW_PAGE));
  app.get("/api/graph", (c) => c.json(graph()));

  return { graph, app, stop: () => sub.unsubscribe() };
}

/**
 * serveMeshView runs the mesh view for a control plane on `address` (host:port) until closed.
 * @example
 * const ui = await serveMeshView(bus, control, "127.0.0.1:15080", log);
 */
export async function serveMeshView(
  bus: Bus,
  control: { status(): ProxyStatusRow[] },
  address: string,
  log: { info(msg: string, fields?: Record<string, unknown>): void },
): Promise<{ readonly port: number; close(): Promise<void> }> {
  const view = startMeshView({ bus, status: () => control.status() });
  const colon = address.lastIndexOf(":");
  const hostname = address.slice(0, colon) || "127.0.0.1";
  const server = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
    const s = serve({ fetch: view.app.fetch, port: Number(address.slice(colon + 1)), hostname, overrideGlobalObjects: false }, () => resolve(s));
    s.once("error", reject);
  });
  const port = (server.address() as AddressInfo).port;
  log.info("mesh view", { url: `http://${hostname}:${port}/` });
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        view.stop();
        server.close(() => resolve());
      }),
  };
}
