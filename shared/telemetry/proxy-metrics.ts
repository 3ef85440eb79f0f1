import type { Counter, Histogram, MetricsRegistry } from "./metrics.ts";
import type { TelemetryRecord } from "./record.ts";

/** Request duration buckets in seconds: 0.5 ms to 60 s, roughly Istio's, so dashboards carry over. */
export const DURATION_BUCKETS_SECONDS: readonly number[] = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
];

export interface ProxyMetrics {
  /** A request entered the engine (in-flight gauge up). */
  requestStarted(): void;
  /** A client connection opened / closed on an HTTP listener (active-connections gauge). */
  connectionOpened(): void;
  connectionClosed(): void;
  /** A request finished: counters, duration, bytes, retries; in-flight gauge down. */
  requestDone(record: TelemetryRecord): void;
  /** A config revision is now serving. */
  configApplied(revision: number): void;
  /** A config update was refused (the previous one keeps serving). */
  configRejected(): void;
  /** Access-log lines dropped because the sink could not keep up. */
  accessLogDropped(lines: number): void;
  /** The proxy holds a certificate valid until then (renewals move it). */
  certificateExpires(notAfter: Date): void;
  /** Upstream health as of now (read at each scrape): endpoint health, outlier ejections, pool load. */
  clustersObserved(clusters: readonly ClusterReading[]): void;
  /** A mirrored copy ended: `sent` or the reason it was not. */
  mirrorDone(service: string, outcome: "sent" | string): void;
  /** A proxied TCP or TLS-passthrough connection ended (or was refused). */
  connectionDone(connection: TelemetryConnection): void;
}

/** A finished proxied connection as metrics read it (shared/proxy's TcpRecord). */
export interface TelemetryConnection {
  readonly route?: string;
  readonly service?: string;
  readonly reason?: string;
  readonly sourcePrincipal?: string;
  readonly bytesIn: number;
  readonly bytesOut: number;
}

/** One upstream service as a proxy sees it (built from the snapshot and the engine's health report). */
export interface ClusterReading {
  readonly service: string;
  readonly endpoints: readonly { readonly address: string; readonly draining: boolean }[];
  /** Addresses ejected by outlier detection now. */
  readonly ejected: readonly string[];
  /** Addresses failing their active health checks now (none when the service sets no healthCheck). */
  readonly unhealthy?: readonly string[];
  /** Ejections since the service's outlier detection began (it restarts at 0 when that policy changes). */
  readonly ejectionsTotal: number;
  readonly active: number;
  readonly pending: number;
  /** Retries refused by the pool's maxRetries or retry budget since its breaker began (restarts at 0 when that policy changes). */
  readonly retryOverflows: number;
}

interface RouteSeries {
  readonly requestBytes: Counter;
  readonly responseBytes: Counter;
  readonly retries: Counter;
  readonly byOutcome: Map<number | string, { readonly requests: Counter; readonly duration: Histogram }>;
  /** gRPC calls by grpc-status (at most 17 codes). */
  readonly byGrpcStatus: Map<number, Counter>;
}

/**
 * createProxyMetrics registers a proxy's standard series (Istio's names where they fit, `weft_` prefix)
 * and records each finished request with two map lookups and no other allocation once warm.
 * Labels are route and service names and status codes, never paths, so cardinality stays bounded.
 * @example
 * const metrics = createProxyMetrics(createMetricsRegistry());
 * engineOptions.onRequestDone = (record) => metrics.requestDone(record);
 */
export function createProxyMetrics(registry: MetricsRegistry): ProxyMetrics {
  const requests = registry.counter({
    name: "weft_requests_total",
    help: "Requests handled, by source workload (the mTLS peer's SPIFFE path, empty when none), route, destination service, response code and weft reason (empty when none).",
    labelNames: ["source", "route", "service", "code", "reason"],
  });
  const duration = registry.histogram({
    name: "weft_request_duration_seconds",
    help: "Time from request head received to response fully sent, in seconds.",
    labelNames: ["route", "service", "code"],
    buckets: DURATION_BUCKETS_SECONDS,
  });
  const retries = registry.counter({
    name: "weft_upstream_rq_retry_total",
    help: "Upstream requests sent again after a failed try.",
    labelNames: ["route", "service"],
  });
  const grpcCalls = registry.counter({
    name: "weft_grpc_requests_total",
    help: "gRPC calls handled, by route, destination service and grpc-status (weft's own answer, or the upstream's trailers).",
    labelNames: ["route", "service", "grpc_status"],
  });
  const requestBytes = registry.counter({
    name: "weft_request_bytes_total",
    help: "Request body bytes received from clients.",
    labelNames: ["route", "service"],
  });
  const responseBytes = registry.counter({
    name: "weft_response_bytes_total",
    help: "Response body bytes sent to clients.",
    labelNames: ["route", "service"],
  });
  const inFlight = registry.gauge({ name: "weft_requests_in_flight", help: "Requests being handled right now (saturation)." }).labels();
  const connectionsActive = registry.gauge({
    name: "weft_downstream_connections_active",
    help: "Client connections open on this proxy's HTTP listeners (Envoy's downstream_cx_active; Node listeners).",
  }).labels();
  const revision = registry.gauge({ name: "weft_config_revision", help: "Revision of the config this proxy serves." }).labels();
  const rejected = registry.counter({ name: "weft_config_rejected_total", help: "Config updates refused; the previous config kept serving." }).labels();
  const certificateExpiry = registry.gauge({
    name: "weft_certificate_expiry_timestamp_seconds",
    help: "When this proxy's workload certificate expires (Unix seconds); 0 before it holds one.",
  }).labels();
  const dropped = registry.counter({
    name: "weft_access_log_dropped_total",
    help: "Access-log lines dropped because the output could not keep up.",
  }).labels();

  const endpointHealthy = registry.gauge({
    name: "weft_upstream_endpoint_healthy",
    help: "1 when an upstream endpoint takes traffic, 0 when it is ejected by outlier detection, fails its active health checks or is draining.",
    labelNames: ["service", "endpoint"],
  });
  const ejectionsActive = registry.gauge({
    name: "weft_outlier_ejections_active",
    help: "Endpoints of the service ejected by outlier detection right now.",
    labelNames: ["service"],
  });
  const ejections = registry.counter({
    name: "weft_outlier_ejections_total",
    help: "Endpoints ejected by outlier detection (Envoy's ejections_enforced_total).",
    labelNames: ["service"],
  });
  const poolActive = registry.gauge({
    name: "weft_upstream_rq_active",
    help: "Requests holding a connection-pool slot of the service (saturation; services with a connectionPool only).",
    labelNames: ["service"],
  });
  const poolPending = registry.gauge({
    name: "weft_upstream_rq_pending",
    help: "Requests waiting for a connection-pool slot of the service.",
    labelNames: ["service"],
  });
  const retryOverflow = registry.counter({
    name: "weft_upstream_rq_retry_overflow_total",
    help: "Retries not sent because the connection pool's maxRetries or retry budget was used up (Envoy's upstream_rq_retry_overflow).",
    labelNames: ["service"],
  });
  const mirrored = registry.counter({
    name: "weft_mirror_requests_total",
    help: "Copies of requests for a shadow service: outcome `sent` (answered, answer discarded) or why not (overflow, timeout, upstream_connect_failure, ...).",
    labelNames: ["service", "outcome"],
  });
  const connections = registry.counter({
    name: "weft_tcp_connections_closed_total",
    help: "Proxied TCP and TLS-passthrough connections ended, by source workload, route, destination service and weft reason (empty for a normal close; refusals count here too).",
    labelNames: ["source", "route", "service", "reason"],
  });
  const tcpReceived = registry.counter({
    name: "weft_tcp_received_bytes_total",
    help: "Bytes received from the client side of proxied TCP connections (sent on upstream).",
    labelNames: ["route", "service"],
  });
  const tcpSent = registry.counter({
    name: "weft_tcp_sent_bytes_total",
    help: "Bytes sent to the client side of proxied TCP connections (received from upstream).",
    labelNames: ["route", "service"],
  });
  // Last totals seen per service, to turn the engine's running totals into counter increments.
  const ejectionsSeen = new Map<string, number>();
  const retryOverflowsSeen = new Map<string, number>();

  const byRoute = new Map<string, RouteSeries>();

  function routeSeries(route: string, service: string): RouteSeries {
    const key = `${route}\u0001${service}`;
    let found = byRoute.get(key);
    if (!found) {
      found = {
        requestBytes: requestBytes.labels(route, service),
        responseBytes: responseBytes.labels(route, service),
        retries: retries.labels(route, service),
        byOutcome: new Map(),
        byGrpcStatus: new Map(),
      };
      byRoute.set(key, found);
    }
    return found;
  }

  return {
    requestStarted() {
      inFlight.inc();
    },
    connectionOpened() {
      connectionsActive.inc();
    },
    connectionClosed() {
      connectionsActive.dec();
    },
    requestDone(record) {
      inFlight.dec();
      const route = record.route ?? "";
      const service = record.service ?? "";
      const series = routeSeries(route, service);
      const reason = record.reason ?? "";
      const source = record.sourcePrincipal === undefined ? "" : sourceOf(record.sourcePrincipal);
      // A plain status (number) keys the common case (no reason, no peer) without building a string.
      const outcomeKey = reason === "" && source === "" ? record.status : `${record.status}\u0001${reason}\u0001${source}`;
      let outcome = series.byOutcome.get(outcomeKey);
      if (!outcome) {
        const code = String(record.status);
        outcome = { requests: requests.labels(source, route, service, code, reason), duration: duration.labels(route, service, code) };
        series.byOutcome.set(outcomeKey, outcome);
      }
      outcome.requests.inc();
      outcome.duration.observe(record.durationMs / 1000);
      series.requestBytes.inc(record.bytesIn);
      series.responseBytes.inc(record.bytesOut);
      if (record.attempts > 1) series.retries.inc(record.attempts - 1);
      if (record.grpcStatus !== undefined) {
        let calls = series.byGrpcStatus.get(record.grpcStatus);
        if (!calls) series.byGrpcStatus.set(record.grpcStatus, (calls = grpcCalls.labels(route, service, String(record.grpcStatus))));
        calls.inc();
      }
    },
    connectionDone(c) {
      const route = c.route ?? "";
      const service = c.service ?? "";
      connections.labels(c.sourcePrincipal === undefined ? "" : sourceOf(c.sourcePrincipal), route, service, c.reason ?? "").inc();
      tcpReceived.labels(route, service).inc(c.bytesIn);
      tcpSent.labels(route, service).inc(c.bytesOut);
    },
    configApplied(next) {
      revision.set(next);
    },
    configRejected() {
      rejected.inc();
    },
    accessLogDropped(lines) {
      dropped.inc(lines);
    },
    certificateExpires(notAfter) {
      certificateExpiry.set(notAfter.getTime() / 1000);
    },
    clustersObserved(clusters) {
      endpointHealthy.clear();
      ejectionsActive.clear();
      poolActive.clear();
      poolPending.clear();
      for (const c of clusters) {
        const ejected = new Set(c.ejected);
        const unhealthy = c.unhealthy && c.unhealthy.length > 0 ? new Set(c.unhealthy) : undefined;
        for (const e of c.endpoints) {
          const out = e.draining || ejected.has(e.address) || unhealthy?.has(e.address) === true;
          endpointHealthy.labels(c.service, e.address).set(out ? 0 : 1);
        }
        ejectionsActive.labels(c.service).set(ejected.size);
        poolActive.labels(c.service).set(c.active);
        poolPending.labels(c.service).set(c.pending);
        const seen = ejectionsSeen.get(c.service) ?? 0;
        // A detector rebuilt by a policy change starts again at 0: count from there.
        ejections.labels(c.service).inc(c.ejectionsTotal >= seen ? c.ejectionsTotal - seen : c.ejectionsTotal);
        ejectionsSeen.set(c.service, c.ejectionsTotal);
        const overflowsSeen = retryOverflowsSeen.get(c.service) ?? 0;
        retryOverflow.labels(c.service).inc(c.retryOverflows >= overflowsSeen ? c.retryOverflows - overflowsSeen : c.retryOverflows);
        retryOverflowsSeen.set(c.service, c.retryOverflows);
      }
    },
    mirrorDone(service, outcome) {
      mirrored.labels(service, outcome).inc();
    },
  };
}

/** The workload part of a SPIFFE ID (`ns/<ns>/sa/<sa>`), the trust domain left out: a bounded label. */
function sourceOf(spiffeId: string): string {
  const start = spiffeId.indexOf("/", "spiffe://".length);
  return start < 0 ? spiffeId : spiffeId.slice(start + 1);
}
