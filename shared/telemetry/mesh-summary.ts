import type { TelemetryRecord } from "./record.ts";

/** Calls from one workload to one service during an interval, as a caller's proxy saw them. */
export interface EdgeSummary {
  readonly source: string;
  readonly destination: string;
  readonly requests: number;
  /** Answers with a 5xx status (upstream or local). */
  readonly errors: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

/** A request a proxy's policy refused (401, 403, 429). */
export interface DenialSummary {
  readonly at: number;
  readonly source: string;
  readonly destination: string;
  readonly method: string;
  readonly path: string;
  readonly status: number;
  readonly reason: string;
}

/** What a proxy publishes every interval on `weft.telemetry.<proxy-id>` for the mesh view. */
export interface ProxySummary {
  readonly v: 1;
  readonly proxyId: string;
  readonly role: "gateway" | "sidecar";
  /** The gateway's or the service's name: the node this proxy stands for. */
  readonly workload: string;
  readonly revision: number;
  readonly intervalMs: number;
  readonly sentAt: number;
  readonly edges: readonly EdgeSummary[];
  readonly denials: readonly DenialSummary[];
}

export interface MeshSummaryOptions {
  readonly proxyId: string;
  readonly role: "gateway" | "sidecar";
  readonly workload: string;
  /** Records whose destination is this (a sidecar's way to its own app) are inbound: not an edge. */
  readonly inboundService?: string;
  /** Durations kept per edge and interval for the percentiles (default 512; a uniform sample beyond). */
  readonly sampleSize?: number;
  readonly random?: () => number;
}

export interface MeshSummary {
  /** Adds one finished request (the engine's onRequestDone). */
  record(record: TelemetryRecord): void;
  setRevision(revision: number): void;
  /** The interval since the last take, then starts a new one. */
  take(now: number): ProxySummary;
}

/** Name of the node for requests that reach a gateway from outside the mesh. */
export const CLIENTS_NODE = "clients";
const MAX_DENIALS = 20;

interface EdgeState {
  readonly source: string;
  readonly destination: string;
  requests: number;
  errors: number;
  readonly durations: number[];
}

/**
 * createMeshSummary condenses a proxy's requests into the mesh view's graph: per interval, calls
 * from this workload to each destination (count, 5xx, p50/p99) and the latest policy denials. Edges
 * are counted where the call leaves (gateway, sidecar outbound), so no call is counted twice; a
 * gateway also reports the calls it receives from outside as coming from "clients".
 * @example
 * const summary = createMeshSummary({ proxyId, role: "sidecar", workload: "web", inboundService: "inbound|app" });
 * onRequestDone = (r) => summary.record(r);
 * bus.publish(telemetrySubject(proxyId), encodeJson(summary.take(Date.now())));
 */
export function createMeshSummary(options: MeshSummaryOptions): MeshSummary {
  const { proxyId, role, workload, inboundService } = options;
  const sampleSize = options.sampleSize ?? 512;
  const random = options.random ?? Math.random;
  // Edges in the order first seen (the summary lists them so), found by source then destination
  // without building a key string per request.
  let edges: EdgeState[] = [];
  let bySource = new Map<string, Map<string, EdgeState>>();
  let denials: DenialSummary[] = [];
  let revision = 0;
  let since: number | undefined;

  function count(source: string, destination: string, r: TelemetryRecord) {
    let byDestination = bySource.get(source);
    if (!byDestination) bySource.set(source, (byDestination = new Map()));
    let e = byDestination.get(destination);
    if (!e) {
      byDestination.set(destination, (e = { source, destination, requests: 0, errors: 0, durations: [] }));
      edges.push(e);
    }
    e.requests++;
    if (r.status >= 500) e.errors++;
    // Reservoir sampling keeps a uniform sample of the interval's durations in bounded memory.
    if (e.durations.length < sampleSize) e.durations.push(r.durationMs);
    else {
      const i = Math.floor(random() * e.requests);
      if (i < sampleSize) e.durations[i] = r.durationMs;
    }
  }

  return {
    record(r) {
      const inbound = inboundService !== undefined && r.service === inboundService;
      const denied = r.status === 401 || r.status === 403 || r.status === 429;
      if (denied && r.reason !== undefined) {
        const source = r.sourcePrincipal !== undefined ? workloadOf(r.sourcePrincipal) : role === "gateway" ? CLIENTS_NODE : workload;
        const destination = role === "gateway" ? workload : inbound ? workload : (r.service ?? workload);
        if (denials.length === MAX_DENIALS) denials.shift();
        denials.push({ at: r.startTimeMs, source, destination, method: r.method, path: r.path.split("?")[0]!, status: r.status, reason: r.reason });
      }
      if (inbound) return;
      if (role === "gateway") count(CLIENTS_NODE, workload, r);
      if (r.service !== undefined) count(workload, r.service, r);
    },
    setRevision(next) {
      revision = next;
    },
    take(now) {
      const out: EdgeSummary[] = [];
      for (const e of edges) {
        const sorted = e.durations.sort((a, b) => a - b);
        out.push({ source: e.source, destination: e.destination, requests: e.requests, errors: e.errors, p50Ms: quantile(sorted, 0.5), p99Ms: quantile(sorted, 0.99) });
      }
      const summary: ProxySummary = { v: 1, proxyId, role, workload, revision, intervalMs: since === undefined ? 0 : now - since, sentAt: now, edges: out, denials };
      edges = [];
      bySource = new Map();
      denials = [];
      since = now;
      return summary;
    },
  };
}

/** The service account of a SPIFFE ID (`spiffe://td/ns/<ns>/sa/<sa>` → `<sa>`), the mesh view's node name. */
function workloadOf(spiffeId: string): string {
  const at = spiffeId.lastIndexOf("/sa/");
  return at < 0 ? spiffeId : spiffeId.slice(at + 4);
}

function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
}
