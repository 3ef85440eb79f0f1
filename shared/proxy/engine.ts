import { TLS_MODE_LABEL, type FaultConfig, type ServiceSnapshot, type MirrorConfig, type RetryPolicyConfig, type RouteConfig } from "../config/index.ts";
import type { CircuitBreaker } from "./circuit.ts";
import { createClusterHealth, type Cluster, type ClusterHealthReport } from "./cluster.ts";
import { createHealthChecker, pickable, type CheckTimers, type HealthChange } from "./health-check.ts";
import { chance, createFault, type Fault } from "./fault.ts";
import { sendMirror, type MirrorCopy, type MirrorOutcome } from "./mirror.ts";
import { grpcLocalHeaders, grpcStatusOfResponse, isGrpcRequest, parseGrpcTimeout, shouldRetryGrpcStatus, speaksHttp2 } from "./grpc.ts";
import { appendForwardedFor, copyForwardable, firstValue, trustedClientIp, type OutgoingHeaders } from "./headers.ts";
import type { OutlierDetector } from "./outlier.ts";
import { REASONS, type Reason } from "./reasons.ts";
import { backoffMs, isIdempotent, isRefusedStream, shouldRetryFailure, shouldRetryStatus } from "./retry.ts";
import { chooseWeighted, type RouteMatch } from "./router.ts";
import { toOriginForm } from "./request-target.ts";
import { applyHeaderOps, redirectLocation, rewritePath } from "./route-actions.ts";
import type { Endpoint, HeaderMap, MeshIdentity, RequestBody, RequestHead, RequestLoad, UpstreamClient, UpstreamRequest, UpstreamResponse, UpstreamResult } from "./types.ts";
import { WEBSOCKET } from "./upgrade.ts";

/** What one request needs from the live config; built once per config swap (see view.ts). */
export interface RouteView {
  readonly revision: number;
  /** Routes a request; undefined = no route. */
  route(head: RequestHead): RouteMatch | undefined;
  cluster(service: string): Cluster | undefined;
  readonly policy: PolicyGate | undefined;
  readonly xffTrustedHops: number;
  /** A sidecar's outbound side (calls its app makes): telemetry records a client span there. */
  readonly outbound?: boolean;
}

/** The policy step as the engine sees it (authn → authz → rate limit), implemented in shared/policy. */
export interface PolicyGate {
  evaluate(request: RequestHead): Promise<PolicyVerdict>;
}
export type PolicyVerdict =
  | {
      readonly ok: true;
      /** The authenticated end user (JWT `iss/sub`), never the mTLS peer. */
      readonly principal?: string;
      readonly requestHeaders?: readonly (readonly [string, string])[];
      readonly removeHeaders?: readonly string[];
      readonly responseHeaders?: readonly (readonly [string, string])[];
    }
  | { readonly ok: false; readonly reason: "jwt_invalid" | "denied" | "rate_limited"; readonly headers?: readonly (readonly [string, string])[] };

/** Everything known about a finished request, handed to telemetry. */
export interface RequestRecord {
  startTimeMs: number;
  durationMs: number;
  upstreamDurationMs?: number;
  method: string;
  authority: string;
  path: string;
  protocol: string;
  status: number;
  reason?: string;
  route?: string;
  service?: string;
  upstream?: string;
  bytesIn: number;
  bytesOut: number;
  requestId: string;
  traceId?: string;
  spanId?: string;
  /** The mTLS peer's SPIFFE ID (the calling workload). */
  sourcePrincipal?: string;
  /** The JWT's `iss/sub` when the request carried a valid token (Istio's request principal). */
  requestPrincipal?: string;
  clientIp: string;
  userAgent?: string;
  attempts: number;
  /** A gRPC call's grpc-status: of weft's own answer, a trailers-only answer, or the upstream's trailers. */
  grpcStatus?: number;
}

/** The engine's answer: a local response or an upstream one, and a hook to call when it is sent. */
export type Exchange = (
  | { readonly kind: "local"; readonly status: number; readonly headers: OutgoingHeaders; readonly body: string }
  | { readonly kind: "upstream"; readonly status: number; readonly headers: OutgoingHeaders; readonly response: UpstreamResponse }
) & {
  /**
   * Call once the response is written (or failed), with the byte counts the adapter saw and the trailers it
   * relayed. A method of the exchange (shared by all of them): call it as `exchange.finish(...)`.
   */
  finish(bytesIn: number, bytesOut: number, error?: string, trailers?: HeaderMap): void;
};

/** What an engine does when one of its exchanges finishes; one per engine, shared by its exchanges. */
interface ExchangeEnd {
  done(record: RequestRecord, bytesIn: number, bytesOut: number, error: string | undefined, trailers: HeaderMap | undefined): void;
  mirror(copy: MirrorCopy, head: RequestHead): void;
}

/** A copy of a request with a body, sent once the primary is done with the whole of it (see forward). */
interface PendingMirror {
  readonly copy: MirrorCopy;
  readonly head: RequestHead;
  readonly body: RequestBody;
  readonly length: number;
}

/**
 * What both kinds of exchange carry to be finished. Exchanges are class instances so that finishing
 * one needs no closure per request: a circuit slot to give back and a mirrored copy to send are
 * plain fields that finish() reads.
 */
abstract class ExchangeBase {
  readonly status: number;
  readonly headers: OutgoingHeaders;
  readonly record: RequestRecord;
  readonly end: ExchangeEnd;
  circuit: CircuitBreaker | undefined = undefined;
  mirror: PendingMirror | undefined = undefined;

  constructor(status: number, headers: OutgoingHeaders, record: RequestRecord, end: ExchangeEnd) {
    this.status = status;
    this.headers = headers;
    this.record = record;
    this.end = end;
  }

  finish(bytesIn: number, bytesOut: number, error?: string, trailers?: HeaderMap): void {
    // The circuit slot goes back first, once (a second finish must not free another request's slot).
    const circuit = this.circuit;
    if (circuit !== undefined) {
      this.circuit = undefined;
      circuit.leave();
    }
    this.end.done(this.record, bytesIn, bytesOut, error, trailers);
    const mirror = this.mirror;
    if (mirror !== undefined && bytesIn === mirror.length && mirror.body.replayable) this.end.mirror(mirror.copy, mirror.head);
  }
}

class LocalExchange extends ExchangeBase {
  readonly kind = "local";
  readonly body: string;

  constructor(status: number, headers: OutgoingHeaders, body: string, record: RequestRecord, end: ExchangeEnd) {
    super(status, headers, record, end);
    this.body = body;
  }
}

class UpstreamExchange extends ExchangeBase {
  readonly kind = "upstream";
  readonly response: UpstreamResponse;

  constructor(response: UpstreamResponse, headers: OutgoingHeaders, record: RequestRecord, end: ExchangeEnd) {
    super(response.status, headers, record, end);
    this.response = response;
  }
}

type EngineExchange = LocalExchange | UpstreamExchange;

/** What telemetry decides when a request starts (see EngineOptions.onRequestStart). */
export interface RequestStart {
  readonly traceId?: string;
  readonly spanId?: string;
  /** Set on the upstream request (traceparent, tracestate); an undefined value removes the header. */
  readonly upstreamHeaders?: Readonly<Record<string, string | undefined>>;
}

export interface EngineOptions {
  readonly client: UpstreamClient;
  /** At the mesh edge (a gateway): client-supplied x-weft-* headers go, x-request-id is always new. */
  readonly edge: boolean;
  readonly random?: () => number;
  readonly now?: () => number;
  readonly onRequestDone?: (record: RequestRecord) => void;
  /** Called once per request before any decision; its ids go on the record, its headers upstream. */
  readonly onRequestStart?: (head: RequestHead, outbound: boolean) => RequestStart | undefined;
  /** Told as each request starts and finishes: the runtime's requestLoad (see ProxyRuntime). */
  readonly load?: RequestLoad;
  readonly newRequestId?: () => string;
  readonly sleep?: (ms: number) => Promise<void>;
  /**
   * This proxy's mesh identity: requests to endpoints labelled TLS_MODE_LABEL=mesh go over mTLS and
   * the server must prove the destination service's SPIFFE ID. Without it they fail `mtls_unavailable`.
   */
  readonly meshIdentity?: MeshIdentity;
  /** Told how each mirrored copy ended (shadow service name, outcome); copies are never awaited. */
  readonly onMirrorDone?: (service: string, outcome: MirrorOutcome) => void;
  /** Told once each time an endpoint's active health changes (see health-check.ts). */
  readonly onHealthChange?: (change: HealthChange) => void;
  /** Timers of the active health checks (tests inject them). */
  readonly checkTimers?: CheckTimers;
}

export interface Engine {
  handle(head: RequestHead, body: RequestBody, view: RouteView): Promise<Exchange>;
  /**
   * Answers a request the role itself turns away (a sidecar's unknown Host) with `reason`, recorded
   * like any local failure; `outbound` as RouteView.outbound (default true: a sidecar's outbound side refuses).
   */
  refuse(head: RequestHead, reason: Reason, status?: number, outbound?: boolean): Exchange;
  /** Outlier ejections, active health and connection-pool load per service (for /clusters and metrics). */
  health(): readonly ClusterHealthReport[];
  /** Follows a new snapshot's services: starts, restarts and stops their active health checks. Call before swapping in its view. */
  checkHealth(services: Iterable<ServiceSnapshot>): void;
  /** Stops the active health checks (on proxy stop). */
  stop(): void;
}

/** What the tries of one forwarded request share. */
interface ForwardPlan {
  readonly head: RequestHead;
  readonly body: RequestBody;
  readonly record: RequestRecord;
  readonly route: RouteConfig;
  readonly verdict: PolicyVerdict | undefined;
  readonly cluster: Cluster;
  readonly subset: string | undefined;
  readonly headers: OutgoingHeaders;
  readonly path: string;
  readonly retry: RetryPolicyConfig;
  readonly deadline: number;
  readonly outlier: OutlierDetector | undefined;
  readonly circuit: CircuitBreaker | undefined;
  /** The destination is reached over HTTP/2 (its port speaks http2 or grpc). */
  readonly http2: boolean;
  /** The destination's h2UpgradePolicy is UPGRADE: mesh endpoints are reached over HTTP/2 whatever the port. */
  readonly h2Upgrade: boolean;
  /** The request is gRPC: a trailers-only grpc-status may be retried (see grpc.ts). */
  readonly grpc: boolean;
  /** A WebSocket upgrade: sent with its Upgrade headers, and a 101 hands the connection over. */
  readonly upgrade: UpstreamRequest["upgrade"];
}

const VALID_AUTHORITY = /^[^\s,/\\@]+$/;

const DEFAULT_RETRIES: RetryPolicyConfig = {
  attempts: 1,
  retryOn: ["connect-failure", "refused-stream"],
  retriableStatusCodes: [503],
  backoff: { baseMs: 25, maxMs: 250 },
  retryNonIdempotent: false,
  maxReplayBytes: 65536,
};

/**
 * createEngine builds the request path shared by gateway and sidecar: policy → route → destination
 * (balance, timeout, retries) → upstream → telemetry. It never touches sockets: the adapter owns them.
 * @example
 * const engine = createEngine({ client: createNodeUpstreamClient(), edge: true });
 * const exchange = await engine.handle(head, body, store.current);
 */
export function createEngine(options: EngineOptions): Engine {
  const { client, edge, meshIdentity } = options;
  const random = options.random ?? Math.random;
  const now = options.now ?? Date.now;
  const onRequestDone = options.onRequestDone;
  const onRequestStart = options.onRequestStart;
  const onMirrorDone = options.onMirrorDone;
  const load = options.load;
  const newRequestId = options.newRequestId ?? (() => crypto.randomUUID());
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  /** True once `granted` settles (its timer cleared: an injected sleep cannot be), false after `ms`. */
  const grantedWithin = (granted: Promise<void>, ms: number): Promise<boolean> => {
    if (options.sleep) return Promise.race([granted.then(() => true), options.sleep(ms).then(() => false)]);
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(resolve, ms, false);
      granted.then(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  };
  // Outlier and circuit state per service, kept across config swaps.
  const health = createClusterHealth(now);
  // Active health checks, sent through the same client (mesh endpoints over mTLS).
  const checker = createHealthChecker({ client, meshIdentity, random, timers: options.checkTimers, onChange: options.onHealthChange });
  // Route configs are frozen per snapshot: each fault block is compiled once.
  const faults = new WeakMap<FaultConfig, Fault>();
  // Records of gRPC requests: their local failures are answered the gRPC way (see grpc.ts).
  const grpcCalls = new WeakSet<RequestRecord>();

  function local(
    record: RequestRecord,
    reason: Reason,
    extra?: readonly (readonly [string, string])[],
    status: number = REASONS[reason],
  ): LocalExchange {
    const headers: OutgoingHeaders = { "content-type": "text/plain; charset=utf-8", "x-weft-reason": reason, "x-request-id": record.requestId };
    if (extra) for (const [name, value] of extra) headers[name] = value;
    if (grpcCalls.has(record)) {
      // gRPC clients read failures from grpc-status, never from the HTTP status (trailers-only answer).
      const grpc = grpcLocalHeaders(reason, status);
      for (const name in grpc) headers[name] = grpc[name]!;
      record.status = 200;
      record.reason = reason;
      record.grpcStatus = Number(grpc["grpc-status"]);
      return new LocalExchange(200, headers, "", record, end);
    }
    record.status = status;
    record.reason = reason;
    return new LocalExchange(status, headers, `${reason}\n`, record, end);
  }

  const end: ExchangeEnd = {
    done(record, bytesIn, bytesOut, error, trailers) {
      load?.done();
      if (!onRequestDone) return;
      record.bytesIn = bytesIn;
      record.bytesOut = bytesOut;
      if (trailers !== undefined && grpcCalls.has(record)) record.grpcStatus = grpcStatusOfResponse(trailers) ?? record.grpcStatus;
      record.durationMs = now() - record.startTimeMs;
      if (error && record.reason === undefined) record.reason = error;
      onRequestDone(record);
    },
    mirror: (copy, head) => mirrorNow(copy, head),
  };

  function startRecord(head: RequestHead, xffTrustedHops: number): RequestRecord {
    const incomingId = edge ? undefined : firstValue(head.headers, "x-request-id");
    const requestId = incomingId && incomingId.length <= 128 ? incomingId : newRequestId();
    load?.started();
    return {
      startTimeMs: now(),
      durationMs: 0,
      method: head.method,
      authority: head.authority,
      path: head.path,
      protocol: head.protocol ?? "HTTP/1.1",
      status: 0,
      bytesIn: 0,
      bytesOut: 0,
      requestId,
      clientIp: xffTrustedHops === 0 ? head.clientIp : trustedClientIp(firstValue(head.headers, "x-forwarded-for"), head.clientIp, xffTrustedHops),
      userAgent: firstValue(head.headers, "user-agent"),
      attempts: 0,
      sourcePrincipal: head.peer?.spiffeId,
    };
  }

  function refuse(head: RequestHead, reason: Reason, status: number = REASONS[reason], outbound = true): Exchange {
    const record = startRecord(head, 0);
    if (isGrpcRequest(head.headers)) grpcCalls.add(record);
    const started = onRequestStart?.(head, outbound);
    if (started) {
      record.traceId = started.traceId;
      record.spanId = started.spanId;
    }
    return local(record, reason, undefined, status);
  }

  async function handle(incoming: RequestHead, body: RequestBody, view: RouteView): Promise<Exchange> {
    // Absolute form (`GET http://host/path`) names the authority in the target itself.
    const head = toOriginForm(incoming, true) ?? incoming;
    const record = startRecord(head, view.xffTrustedHops);
    const requestId = record.requestId;
    if (isGrpcRequest(head.headers)) grpcCalls.add(record);
    const started = onRequestStart?.(head, view.outbound === true);
    if (started) {
      record.traceId = started.traceId;
      record.spanId = started.spanId;
    }
    // Other forms than origin, absolute and `*` (OPTIONS, left to routing) are not request targets here.
    if (head === incoming && head.path.charCodeAt(0) !== 47 && head.path !== "*") return local(record, "bad_request");
    if (!head.authority) return local(record, "missing_host");
    // A repeated Host arrives joined with "," from Web runtimes: as bad as two Host lines (RFC 9112 §3.2).
    if (!VALID_AUTHORITY.test(head.authority)) return local(record, "bad_request");

    let verdict: PolicyVerdict | undefined;
    if (view.policy) {
      try {
        verdict = await view.policy.evaluate(head);
      } catch {
        // A policy that cannot be evaluated denies (fail closed).
        return local(record, "denied");
      }
      if (!verdict.ok) return local(record, verdict.reason, verdict.headers);
      // The end user stays apart from the calling workload: metrics label workloads only (bounded).
      if (verdict.principal) record.requestPrincipal = verdict.principal;
    }

    const match = view.route(head);
    if (!match) return local(record, "no_route");
    const route = match.route;
    record.route = route.name;

    if (route.directResponse) {
      const d = route.directResponse;
      const headers: OutgoingHeaders = { "content-type": d.contentType ?? "text/plain; charset=utf-8", "x-request-id": requestId };
      if (route.headers?.response) applyHeaderOps(route.headers.response, headers);
      record.status = d.status;
      return new LocalExchange(d.status, headers, d.body ?? "", record, end);
    }
    if (route.redirect) {
      const status = route.redirect.status ?? 301;
      const headers: OutgoingHeaders = { location: redirectLocation(route.redirect, head, match), "x-request-id": requestId };
      if (route.headers?.response) applyHeaderOps(route.headers.response, headers);
      record.status = status;
      return new LocalExchange(status, headers, "", record, end);
    }
    // `return await` settles in fewer microtask turns than returning the promise from an async function (V8).
    return await forward(head, body, view, match, route, record, verdict, started?.upstreamHeaders);
  }

  async function forward(
    head: RequestHead,
    body: RequestBody,
    view: RouteView,
    match: RouteMatch,
    route: RouteConfig,
    record: RequestRecord,
    verdict: PolicyVerdict | undefined,
    startHeaders: RequestStart["upstreamHeaders"],
  ): Promise<Exchange> {
    const fwd = route.forward!;
    let startedAt = record.startTimeMs;
    if (fwd.fault) {
      let fault = faults.get(fwd.fault);
      if (!fault) faults.set(fwd.fault, (fault = createFault(fwd.fault)));
      const decision = fault(head, random);
      if (decision) {
        if (decision.delayMs > 0) {
          await sleep(decision.delayMs);
          // As with Envoy's fault filter ahead of the router, the route timeout starts after the delay.
          startedAt = now();
        }
        if (decision.abortStatus !== undefined) return local(record, "fault_abort", undefined, decision.abortStatus);
      }
    }
    const destination = chooseWeighted(fwd.to, random);
    const cluster = view.cluster(destination.service);
    if (!cluster) return local(record, "no_cluster");
    record.service = destination.service;
    const traffic = cluster.service.traffic;
    // Only WebSocket is carried on; any other Upgrade (h2c, ...) was dropped and the request goes on as plain HTTP.
    const websocket = head.upgrade?.protocol === WEBSOCKET ? head.upgrade : undefined;
    if (websocket) {
      if (!traffic.websocket.enabled) return local(record, "upgrade_refused");
      if (!websocket.tunnel) return local(record, "upgrade_unsupported");
    }

    const maxBody = fwd.maxBodyBytes;
    if (maxBody !== undefined && body.length !== undefined && body.length > maxBody) return local(record, "body_too_large");

    const headers = copyForwardable(head.headers, edge);
    const grpc = grpcCalls.has(record);
    // gRPC needs `te: trailers` end to end (its servers refuse calls without it); other TE values stay hop-by-hop.
    if (grpc) headers.te = "trailers";
    const xff = firstValue(head.headers, "x-forwarded-for");
    headers["x-forwarded-for"] = appendForwardedFor(edge && view.xffTrustedHops === 0 ? undefined : xff, head.clientIp);
    if (edge || headers["x-forwarded-proto"] === undefined) headers["x-forwarded-proto"] = head.scheme;
    if (edge || headers["x-forwarded-host"] === undefined) headers["x-forwarded-host"] = head.authority;
    headers["x-request-id"] = record.requestId;
    // The verified caller, as Envoy's x-forwarded-client-cert; a client-supplied one is never passed on.
    if (head.peer) headers["x-forwarded-client-cert"] = `URI=${head.peer.spiffeId}`;
    else delete headers["x-forwarded-client-cert"];
    if (startHeaders) {
      for (const name in startHeaders) {
        const value = startHeaders[name];
        if (value === undefined) delete headers[name];
        else headers[name] = value;
      }
    }
    if (verdict?.ok) {
      if (verdict.removeHeaders) for (const name of verdict.removeHeaders) delete headers[name];
      if (verdict.requestHeaders) for (const [name, value] of verdict.requestHeaders) headers[name] = value;
    }
    if (route.headers?.request) applyHeaderOps(route.headers.request, headers);
    headers.host = fwd.rewrite?.host ?? head.authority;
    // The hop-by-hop pair that asks the next hop to switch (RFC 9110 §7.8), kept for a WebSocket upgrade.
    if (websocket) {
      headers.connection = "upgrade";
      headers.upgrade = firstValue(head.headers, "upgrade")!;
    }
    const path =
      fwd.rewrite?.pathPrefix !== undefined && match.matchedPrefix !== undefined
        ? rewritePath(match.path, match.matchedPrefix, fwd.rewrite.pathPrefix)
        : match.path;

    const retry = fwd.retries ?? cluster.retries ?? DEFAULT_RETRIES;
    const routeTimeoutMs = fwd.timeoutMs ?? traffic.timeoutMs;
    // The caller's gRPC deadline caps the route timeout: nothing waits past the point the client gave up.
    const grpcTimeoutMs = grpc ? parseGrpcTimeout(firstValue(head.headers, "grpc-timeout")) : undefined;
    const timeoutMs = grpcTimeoutMs === undefined ? routeTimeoutMs : Math.min(routeTimeoutMs, grpcTimeoutMs);
    const deadline = startedAt + timeoutMs;
    const { outlier, circuit } = health.of(cluster);
    // An HTTP/1.1 upgrade has no HTTP/2 form here (RFC 8441 is not spoken upstream).
    const http2 = !websocket && speaksHttp2(cluster.service.ports, destination.port);
    const upgrade = websocket ? { protocol: WEBSOCKET, idleTimeoutMs: traffic.websocket.idleTimeoutMs } : undefined;
    const h2Upgrade = !websocket && traffic.h2UpgradePolicy === "UPGRADE";
    const plan: ForwardPlan = { head, body, record, route, verdict, cluster, subset: destination.subset, headers, path, retry, deadline, outlier, circuit, http2, h2Upgrade, grpc, upgrade };

    // A copy of an upgrade would open a second connection that nobody reads: upgrades are not mirrored.
    const mirror = !websocket && fwd.mirror && chance(fwd.mirror.percentage, random) ? mirrorCopy(fwd.mirror, view, plan) : undefined;
    if (!mirror) return await (circuit ? throughCircuit(circuit, plan) : tryUpstream(plan));
    // A request without a body is copied at once; one with a body only once the whole of it was read
    // and held, when the primary is done with it (the adapter's body feeds one upstream at a time).
    if (body.length === 0) mirrorNow(mirror, head);
    const exchange = await (circuit ? throughCircuit(circuit, plan) : tryUpstream(plan));
    if (body.length === 0 || body.length === undefined) return exchange;
    exchange.mirror = { copy: mirror, head, body, length: body.length };
    return exchange;
  }

  function mirrorCopy(config: MirrorConfig, view: RouteView, plan: ForwardPlan): MirrorCopy | undefined {
    const cluster = view.cluster(config.service);
    if (!cluster) return undefined;
    const { head, headers, path, body } = plan;
    return { cluster, health: health.of(cluster), active: checker.of(cluster.service.name), subset: config.subset, method: head.method, path, headers: { ...headers }, body, meshIdentity };
  }

  function mirrorNow(copy: MirrorCopy, head: RequestHead): void {
    // Nothing a copy does may reach the request path, not even a throwing observer.
    sendMirror(client, copy, { head, random })
      .then((outcome) => onMirrorDone?.(copy.cluster.service.name, outcome))
      .catch(() => {});
  }

  /** Takes a request slot of the circuit (or waits for one), runs the request and gives the slot back when its answer is sent. */
  async function throughCircuit(circuit: CircuitBreaker, plan: ForwardPlan): Promise<EngineExchange> {
    const entry = circuit.enter();
    if (entry === "overflow") return local(plan.record, "overflow");
    if (entry !== "entered") {
      const wait = plan.deadline - now();
      const granted = wait > 0 && (await grantedWithin(entry.granted, wait));
      if (!granted) {
        entry.cancel();
        return local(plan.record, "timeout");
      }
    }
    let exchange: EngineExchange;
    try {
      exchange = await tryUpstream(plan);
    } catch (err) {
      circuit.leave();
      throw err;
    }
    if (exchange.kind === "local") {
      circuit.leave();
      return exchange;
    }
    // An upstream answer holds its slot until its body is sent, as Envoy counts an active request.
    exchange.circuit = circuit;
    return exchange;
  }

  /** Sends a request to the cluster's endpoints: picks (outliers left out), tries, reports each outcome, retries within policy and budget. */
  async function tryUpstream(plan: ForwardPlan): Promise<EngineExchange> {
    const { head, body, record, route, verdict, cluster, headers, path, retry, deadline, outlier, circuit } = plan;
    const traffic = cluster.service.traffic;
    const maxBody = route.forward!.maxBodyBytes;
    const mayReplayMethod = retry.retryNonIdempotent || isIdempotent(head.method);
    const all = cluster.endpoints(undefined);
    const endpoints = cluster.endpoints(plan.subset);
    const ctx = { head, random };
    // A retry slot of the circuit is held from the decision to retry until that try is over.
    let retrying = false;

    let last: UpstreamResult | undefined;
    let lastEndpoint: Endpoint | undefined;
    try {
      for (let attempt = 0; ; attempt++) {
        const pool = pickable(endpoints, outlier, checker.of(cluster.service.name), traffic.outlierDetection?.minHealthPercent ?? 50);
        let endpoint = cluster.balancer.pick(pool, ctx);
        // On a retry, prefer another endpoint than the one that just failed (Envoy's previous_hosts).
        if (attempt > 0 && endpoint === lastEndpoint && pool.length > 1) endpoint = cluster.balancer.pick(pool, ctx);
        if (!endpoint) return local(record, "no_healthy_upstream");
        lastEndpoint = endpoint;
        let mesh: { identity: MeshIdentity; expectedId: string } | undefined;
        if (endpoint.labels[TLS_MODE_LABEL] === "mesh") {
          if (meshIdentity?.current() === undefined) return local(record, "mtls_unavailable");
          mesh = { identity: meshIdentity, expectedId: cluster.service.spiffeId };
        }
        record.upstream = endpoint.address;
        record.attempts = attempt + 1;

        const remaining = deadline - now();
        if (remaining <= 0) return local(record, "timeout");
        const tryTimeout = retry.perTryTimeoutMs !== undefined ? Math.min(retry.perTryTimeoutMs, remaining) : remaining;
        const sentAt = now();
        cluster.balancer.start?.(endpoint);
        try {
          last = await client.forward({
            endpoint,
            method: head.method,
            path,
            headers,
            body,
            connectTimeoutMs: traffic.connectTimeoutMs,
            timeoutMs: tryTimeout,
            idleTimeoutMs: traffic.idleTimeoutMs,
            maxBodyBytes: maxBody,
            maxReplayBytes: retry.maxReplayBytes,
            maxConnections: traffic.maxConnectionsPerEndpoint,
            mesh,
            // Only a peer proxy is upgraded: an endpoint outside the mesh keeps the port's protocol.
            http2: plan.http2 || (plan.h2Upgrade && mesh !== undefined),
            tls: cluster.service.originateTls,
            upgrade: plan.upgrade,
          });
        } finally {
          cluster.balancer.end?.(endpoint);
          if (retrying) {
            retrying = false;
            circuit!.retryDone();
          }
        }
        record.upstreamDurationMs = now() - sentAt;
        outlier?.report(endpoint, last.ok ? { status: last.response.status } : { failure: last.reason }, all);

        const canRetry = attempt < retry.attempts && body.replayable && now() < deadline;
        if (last.ok) {
          const status = last.response.status;
          // Switched: the connection now belongs to the client, never retried.
          if (status === 101) return upstreamExchange(last.response, route, record, verdict);
          // A trailers-only gRPC failure listed in retryOn is retried whatever the method: listing it is the opt-in.
          const grpcStatus = plan.grpc ? grpcStatusOfResponse(last.response.headers) : undefined;
          const retryGrpc = grpcStatus !== undefined && shouldRetryGrpcStatus(retry, grpcStatus);
          // Beyond the retry budget the request ends with the answer it has (Envoy's retry overflow).
          if (canRetry && (retryGrpc || (mayReplayMethod && shouldRetryStatus(retry, status))) && (circuit === undefined || (retrying = circuit.tryRetry()))) {
            last.response.discard();
            await sleep(backoffMs(retry, attempt, random));
            continue;
          }
          return upstreamExchange(last.response, route, record, verdict);
        }
        if (last.reason === "body_too_large") return local(record, "body_too_large");
        // A connect failure or a refused stream never reached the upstream, so even a POST is safe to send again.
        const safe = last.reason === "upstream_connect_failure" || isRefusedStream(last.reason, last.detail) || mayReplayMethod;
        if (canRetry && safe && shouldRetryFailure(retry, last.reason, last.detail) && (circuit === undefined || (retrying = circuit.tryRetry()))) {
          await sleep(backoffMs(retry, attempt, random));
          continue;
        }
        if (last.reason === "timeout" && now() >= deadline) return local(record, "timeout");
        return local(record, attempt > 0 ? "retries_exhausted" : last.reason);
      }
    } finally {
      if (retrying) circuit!.retryDone();
    }
  }

  function upstreamExchange(response: UpstreamResponse, route: RouteConfig, record: RequestRecord, verdict: PolicyVerdict | undefined): UpstreamExchange {
    const headers = copyForwardable(response.headers, false);
    // Rate-limit headers and the like from the policy step (draft-ietf-httpapi-ratelimit-headers).
    if (verdict?.ok && verdict.responseHeaders) for (const [name, value] of verdict.responseHeaders) headers[name] = value;
    if (route.headers?.response) applyHeaderOps(route.headers.response, headers);
    if (response.status === 101) {
      headers.connection = "upgrade";
      headers.upgrade = firstValue(response.headers, "upgrade") ?? WEBSOCKET;
    }
    record.status = response.status;
    // A trailers-only answer carries it here; a full one in its trailers (see end.done).
    if (grpcCalls.has(record)) record.grpcStatus = grpcStatusOfResponse(response.headers);
    return new UpstreamExchange(response, headers, record, end);
  }

  function healthReport(): readonly ClusterHealthReport[] {
    const active = checker.report();
    if (active.length === 0) return health.report();
    const unhealthy = new Map(active.map((a) => [a.service, a.unhealthy]));
    const reports: ClusterHealthReport[] = health.report().map((r) => (unhealthy.has(r.service) ? { ...r, unhealthy: unhealthy.get(r.service) } : r));
    for (const r of reports) unhealthy.delete(r.service);
    for (const [service, addresses] of unhealthy) {
      reports.push({ service, ejected: [], ejectionsTotal: 0, active: 0, pending: 0, retries: 0, retryOverflows: 0, unhealthy: addresses });
    }
    return reports;
  }

  return {
    handle,
    refuse,
    health: healthReport,
    checkHealth: (services) => checker.update(services),
    stop: () => checker.stop(),
  };
}
