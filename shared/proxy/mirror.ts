import { TLS_MODE_LABEL } from "../config/index.ts";
import type { PickContext } from "./balancer.ts";
import type { Cluster, ClusterHealth } from "./cluster.ts";
import { pickable, type ActiveHealth } from "./health-check.ts";
import { speaksHttp2 } from "./grpc.ts";
import type { MeshIdentity, RequestBody, UpstreamClient, UpstreamFailure } from "./types.ts";

/** One copy of a request for a shadow cluster. */
export interface MirrorCopy {
  readonly cluster: Cluster;
  readonly health: ClusterHealth;
  /** The shadow's active health checks, when it sets healthCheck. */
  readonly active?: ActiveHealth | undefined;
  readonly subset: string | undefined;
  readonly method: string;
  readonly path: string;
  /** The headers the primary request was sent with; the Host is rewritten here. */
  readonly headers: Readonly<Record<string, string | string[]>>;
  /** A body held whole in memory (or none). */
  readonly body: RequestBody;
  readonly meshIdentity: MeshIdentity | undefined;
}

/** How a copy ended; the engine drops it, tests and logs may read it. */
export type MirrorOutcome =
  | { readonly sent: true; readonly status: number; readonly endpoint: string }
  | { readonly sent: false; readonly reason: "overflow" | "no_healthy_upstream" | "mtls_unavailable" | UpstreamFailure };

/**
 * Copies in flight from one proxy to one shadow service whose connectionPool sets no maxRequests
 * (Envoy's default circuit-breaker threshold): beyond it a copy is dropped with `overflow`, so a
 * shadow that hangs cannot pile up copies, each holding its headers and body for the shadow's timeout.
 */
export const MIRROR_MAX_IN_FLIGHT = 1024;

// Copies in flight by upstream client (one per engine, so per proxy) and shadow service name: the
// count outlives config swaps, which rebuild clusters but keep the client.
const copiesInFlight = new WeakMap<UpstreamClient, Map<string, number>>();

/**
 * shadowHost is the Host a mirrored request carries: the original host with `-shadow` appended
 * (Envoy's request_mirror_policies), before the port if there is one.
 * @example
 * shadowHost("shop.example:8080") // "shop.example-shadow:8080"
 */
export function shadowHost(authority: string): string {
  const port = /:\d+$/.exec(authority);
  return port ? `${authority.slice(0, port.index)}-shadow${port[0]}` : `${authority}-shadow`;
}

/**
 * sendMirror sends one copy of a request to a shadow cluster, once, and discards the answer. It
 * goes through the shadow's outlier detection and circuit breaker like any request (a full
 * circuit drops the copy), at most MIRROR_MAX_IN_FLIGHT copies per shadow are in flight when its
 * connectionPool sets no maxRequests, and it never throws; callers do not await it on the request path.
 * @example
 * void sendMirror(client, copy, { head, random });
 */
export async function sendMirror(client: UpstreamClient, copy: MirrorCopy, ctx: PickContext): Promise<MirrorOutcome> {
  const { cluster, health } = copy;
  const endpoints = cluster.endpoints(copy.subset);
  const minHealthPercent = cluster.service.traffic.outlierDetection?.minHealthPercent ?? 50;
  const endpoint = cluster.balancer.pick(pickable(endpoints, health.outlier, copy.active, minHealthPercent), ctx);
  if (!endpoint) return { sent: false, reason: "no_healthy_upstream" };
  let mesh: { identity: MeshIdentity; expectedId: string } | undefined;
  if (endpoint.labels[TLS_MODE_LABEL] === "mesh") {
    if (copy.meshIdentity?.current() === undefined) return { sent: false, reason: "mtls_unavailable" };
    mesh = { identity: copy.meshIdentity, expectedId: cluster.service.spiffeId };
  }
  const traffic = cluster.service.traffic;
  const service = cluster.service.name;
  let counts: Map<string, number> | undefined;
  if (traffic.connectionPool?.maxRequests === undefined) {
    counts = copiesInFlight.get(client);
    if (!counts) copiesInFlight.set(client, (counts = new Map()));
    const inFlight = counts.get(service) ?? 0;
    if (inFlight >= MIRROR_MAX_IN_FLIGHT) return { sent: false, reason: "overflow" };
    counts.set(service, inFlight + 1);
  }
  if (health.circuit) {
    const entry = health.circuit.enter();
    if (entry !== "entered") {
      // A copy never waits for a slot: its place in the queue goes back at once.
      if (entry !== "overflow") entry.cancel();
      if (counts) leaveCount(counts, service);
      return { sent: false, reason: "overflow" };
    }
  }
  const host = typeof copy.headers.host === "string" ? shadowHost(copy.headers.host) : undefined;
  cluster.balancer.start?.(endpoint);
  try {
    const result = await client.forward({
      endpoint,
      method: copy.method,
      path: copy.path,
      headers: host === undefined ? { ...copy.headers } : { ...copy.headers, host },
      body: copy.body,
      connectTimeoutMs: traffic.connectTimeoutMs,
      timeoutMs: traffic.timeoutMs,
      idleTimeoutMs: traffic.idleTimeoutMs,
      maxBodyBytes: undefined,
      maxReplayBytes: copy.body.length ?? 0,
      maxConnections: traffic.maxConnectionsPerEndpoint,
      mesh,
      // As the primary request: the shadow's first port decides, and UPGRADE lifts mesh copies to HTTP/2.
      http2: speaksHttp2(cluster.service.ports, undefined) || (mesh !== undefined && traffic.h2UpgradePolicy === "UPGRADE"),
    });
    health.outlier?.report(endpoint, result.ok ? { status: result.response.status } : { failure: result.reason }, cluster.endpoints(undefined));
    if (!result.ok) return { sent: false, reason: result.reason };
    result.response.discard();
    return { sent: true, status: result.response.status, endpoint: endpoint.address };
  } catch {
    return { sent: false, reason: "upstream_reset" };
  } finally {
    cluster.balancer.end?.(endpoint);
    health.circuit?.leave();
    if (counts) leaveCount(counts, service);
  }
}

function leaveCount(counts: Map<string, number>, service: string): void {
  const left = (counts.get(service) ?? 1) - 1;
  if (left > 0) counts.set(service, left);
  else counts.delete(service);
}
