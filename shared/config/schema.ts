import * as v from "valibot";
import safeRegex from "safe-regex2";
import { PolicySetSchema } from "./policy-schema.ts";

// Every bound below exists so that a hostile or mistyped value is refused at apply time
// instead of hurting a proxy at request time.
const MAX_TIMEOUT_MS = 24 * 3600 * 1000;
const MAX_WEIGHT = 1_000_000;
const MAX_REGEX_LENGTH = 512;

const Name = v.pipe(
  v.string(),
  v.regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, "must be a DNS label: lowercase letters, digits and '-'"),
);
const Port = v.pipe(v.number(), v.integer("must be an integer"), v.minValue(1), v.maxValue(65535));
const DurationMs = v.pipe(
  v.number(),
  v.integer("must be an integer number of milliseconds"),
  v.minValue(0, "must not be negative"),
  v.maxValue(MAX_TIMEOUT_MS, "must be at most 24 hours"),
);
const PositiveDurationMs = v.pipe(
  v.number(),
  v.integer("must be an integer number of milliseconds"),
  v.minValue(1, "must be at least 1 ms"),
  v.maxValue(MAX_TIMEOUT_MS, "must be at most 24 hours"),
);
const ByteCount = v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(2 ** 40));
const HeaderName = v.pipe(v.string(), v.regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, "must be a valid HTTP header name"));
const HeaderValue = v.pipe(v.string(), v.regex(/^[^\r\n\0]*$/, "must not contain CR, LF or NUL"));

/** A regular expression that compiles, is bounded in length and has no catastrophic backtracking. */
export const SafeRegex = v.pipe(
  v.string(),
  v.maxLength(MAX_REGEX_LENGTH, `must be at most ${MAX_REGEX_LENGTH} characters`),
  v.check((s) => {
    try {
      new RegExp(s);
      return true;
    } catch {
      return false;
    }
  }, "must be a valid regular expression"),
  v.check((s) => safeRegex(s), "may backtrack catastrophically (nested or overlapping quantifiers)"),
);

const Host = v.pipe(
  v.string(),
  v.regex(/^(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d{1,5})?$|^\*$/i, "must be a host name, '*.suffix' or '*'"),
);

const StringMatch = v.union(
  [
    v.strictObject({ exact: v.string() }),
    v.strictObject({ prefix: v.string() }),
    v.strictObject({ regex: SafeRegex }),
  ],
  "must be one of { exact }, { prefix } or { regex }",
);

const PathMatch = v.union(
  [
    v.strictObject({ exact: v.pipe(v.string(), v.startsWith("/", "must start with '/'")) }),
    v.strictObject({ prefix: v.pipe(v.string(), v.startsWith("/", "must start with '/'")) }),
    v.strictObject({ regex: SafeRegex }),
  ],
  "must be one of { exact }, { prefix } or { regex }",
);

const HeaderMatch = v.union(
  [
    v.strictObject({ exact: v.string() }),
    v.strictObject({ prefix: v.string() }),
    v.strictObject({ regex: SafeRegex }),
    v.strictObject({ present: v.literal(true) }),
    v.strictObject({ absent: v.literal(true) }),
  ],
  "must be one of { exact }, { prefix }, { regex }, { present: true } or { absent: true }",
);

const Method = v.picklist(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"]);

/** One match condition; every field given must hold (AND). */
export const RouteMatchSchema = v.strictObject({
  /** Host names (exact or `*.suffix`); default: any host. */
  hosts: v.optional(v.pipe(v.array(Host), v.minLength(1))),
  /** Path match; default: any path. */
  path: v.optional(PathMatch),
  /** Methods; default: any method. */
  methods: v.optional(v.pipe(v.array(Method), v.minLength(1))),
  /** Header conditions keyed by header name (case-insensitive). */
  headers: v.optional(v.record(HeaderName, HeaderMatch)),
  /** Query parameter conditions keyed by parameter name. */
  query: v.optional(v.record(v.pipe(v.string(), v.minLength(1)), v.union([StringMatch, v.strictObject({ present: v.literal(true) })]))),
});

// The gRPC ones (Envoy's retry_grpc_on) retry a trailers-only answer with that grpc-status, POST or not.
const RetryOn = v.picklist([
  "connect-failure",
  // An HTTP/2 stream the upstream refused (RST_STREAM or GOAWAY with REFUSED_STREAM) never reached the app (RFC 9113 §8.7).
  "refused-stream",
  "reset",
  "5xx",
  "gateway-error",
  "retriable-status-codes",
  "cancelled",
  "deadline-exceeded",
  "internal",
  "resource-exhausted",
  "unavailable",
]);

/** Retry policy; by default a request is tried once more on connect failure only. */
export const RetryPolicySchema = v.strictObject({
  /** Retries after the first try (default 1; 0 disables). */
  attempts: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(10)), 1),
  /** Timeout of each try; default: the route timeout. */
  perTryTimeoutMs: v.optional(PositiveDurationMs),
  /** Conditions that trigger a retry (default ["connect-failure", "refused-stream"]). */
  retryOn: v.optional(v.array(RetryOn), ["connect-failure", "refused-stream"]),
  /** Status codes retried with "retriable-status-codes" (default [503]). */
  retriableStatusCodes: v.optional(v.array(v.pipe(v.number(), v.integer(), v.minValue(100), v.maxValue(599))), [503]),
  /** Exponential backoff base (default 25 ms) and cap (default 250 ms); full jitter. */
  backoff: v.optional(
    v.strictObject({ baseMs: v.optional(DurationMs, 25), maxMs: v.optional(DurationMs, 250) }),
    { baseMs: 25, maxMs: 250 },
  ),
  /** Retry POST/PATCH and other non-idempotent methods too (default false). */
  retryNonIdempotent: v.optional(v.boolean(), false),
  /** Largest request body kept for replay; a longer body is not retried (default 64 KiB). */
  maxReplayBytes: v.optional(ByteCount, 65536),
});

const HashOn = v.union(
  [
    v.strictObject({ header: HeaderName }),
    v.strictObject({ cookie: v.pipe(v.string(), v.minLength(1)) }),
    v.strictObject({ sourceIp: v.literal(true) }),
  ],
  "must be one of { header }, { cookie } or { sourceIp: true }",
);

/** How callers balance across a service's endpoints. */
export const LoadBalancerSchema = v.union(
  [
    v.picklist(["round_robin", "random", "least_request"]),
    v.strictObject({ consistentHash: HashOn }),
  ],
  "must be 'round_robin', 'random', 'least_request' or { consistentHash }",
);

const Percentage = v.pipe(v.number(), v.minValue(0, "must be 0 to 100"), v.maxValue(100, "must be 0 to 100"));
const Count = v.pipe(v.number(), v.integer("must be an integer"), v.minValue(0), v.maxValue(1_000_000));

/**
 * Outlier detection (Istio's outlierDetection, Envoy's outlier_detection): an endpoint that keeps
 * failing gets no requests for a while. Off unless the block is given.
 */
export const OutlierDetectionSchema = v.strictObject({
  /** Consecutive 5xx answers (local connect failures, resets and timeouts count too) that eject an endpoint (default 5; 0 turns it off). */
  consecutive5xxErrors: v.optional(Count, 5),
  /** Consecutive 502/503/504 answers or local failures that eject an endpoint (default 0: off). */
  consecutiveGatewayErrors: v.optional(Count, 0),
  /** Each interval an endpoint stays in, its ejection multiplier drops by one (default 10000 ms). */
  intervalMs: v.optional(PositiveDurationMs, 10000),
  /** An ejection lasts this long times the number of times the endpoint was ejected (default 30000 ms). */
  baseEjectionTimeMs: v.optional(PositiveDurationMs, 30000),
  /** Longest ejection, whatever the multiplier (default 300000 ms, or baseEjectionTimeMs if larger). */
  maxEjectionTimeMs: v.optional(PositiveDurationMs, 300000),
  /** Most endpoints ejected at once, as a percentage of the service's endpoints; at least one may always go (default 10; 0 never ejects). */
  maxEjectionPercent: v.optional(Percentage, 10),
  /** Panic threshold: below this share of endpoints not ejected, requests are balanced over all of them (default 50; 0 never panics). */
  minHealthPercent: v.optional(Percentage, 50),
});

/**
 * Circuit breaking (Istio's connectionPool, Envoy's circuit breakers): limits per service and
 * caller proxy. Every limit is off unless given.
 */
export const ConnectionPoolSchema = v.strictObject({
  /** Requests in flight to the service at once; more fail fast with `overflow` (default: no limit). */
  maxRequests: v.optional(v.pipe(Count, v.minValue(1))),
  /** Requests that may wait for a slot when maxRequests are in flight, up to their timeout (default 0: none wait). */
  maxPendingRequests: v.optional(Count, 0),
  /** Proxied TCP connections (tcp and tls routes) open to the service at once from this proxy; more are closed at once with `overflow` (default: no limit). */
  maxConnections: v.optional(v.pipe(Count, v.minValue(1))),
  /** Retries in flight to the service at once; a retry beyond it is not made (default: no limit). */
  maxRetries: v.optional(Count),
  /** Retries in flight as a share of the requests in flight; replaces maxRetries when given. */
  retryBudget: v.optional(
    v.strictObject({
      /** Share of the requests in flight that may be retries (default 20). */
      budgetPercent: v.optional(Percentage, 20),
      /** Retries always allowed in flight, however few requests there are (default 3). */
      minRetryConcurrency: v.optional(Count, 3),
    }),
  ),
});

/**
 * Active health checks (Envoy's health_check, HTTP): each proxy sends `GET path` to every endpoint
 * of the service every intervalMs; an endpoint that fails unhealthyThreshold checks in a row takes
 * no requests until it passes healthyThreshold in a row. Off unless the block is given.
 */
export const HealthCheckSchema = v.pipe(
  v.strictObject({
    /** Path checked (default "/healthz"). */
    path: v.optional(v.pipe(v.string(), v.regex(/^\/[^\s]*$/, "must start with / and hold no whitespace")), "/healthz"),
    /** Time between two checks of an endpoint (default 10000 ms; each round is jittered by up to 10%). */
    intervalMs: v.optional(PositiveDurationMs, 10000),
    /** A check without response headers after this long fails (default 1000 ms). */
    timeoutMs: v.optional(PositiveDurationMs, 1000),
    /** Checks passed in a row that bring an unhealthy endpoint back (default 2). */
    healthyThreshold: v.optional(v.pipe(Count, v.minValue(1)), 2),
    /** Checks failed in a row that take an endpoint out (default 3). */
    unhealthyThreshold: v.optional(v.pipe(Count, v.minValue(1)), 3),
    /** Statuses that pass, as [from, to] ranges, both ends included (default [[200, 399]]). */
    expectedStatuses: v.optional(
      v.pipe(
        v.array(
          v.pipe(
            v.tuple([v.pipe(v.number(), v.integer(), v.minValue(100), v.maxValue(599)), v.pipe(v.number(), v.integer(), v.minValue(100), v.maxValue(599))]),
            v.check(([from, to]) => from <= to, "range must run from low to high"),
          ),
        ),
        v.minLength(1, "must hold at least one range"),
      ),
      [[200, 399]],
    ),
    /** Host header of the checks (default: the service's name). */
    host: v.optional(Host),
  }),
);

/** WebSocket upgrades to a service, as Envoy's upgrade_configs: allowed unless turned off. */
export const WebSocketSchema = v.strictObject({
  /** Pass WebSocket upgrades on; false answers them 403 `upgrade_refused` (default true). */
  enabled: v.optional(v.boolean(), true),
  /** An upgraded connection with no bytes either way for this long is closed (default 3600000 ms, 1 h). */
  idleTimeoutMs: v.optional(PositiveDurationMs, 3_600_000),
});

/** Destination policy: how callers reach a service (Istio's DestinationRule). */
export const DestinationPolicySchema = v.strictObject({
  /** Load balancing (default "round_robin"). */
  loadBalancer: v.optional(LoadBalancerSchema, "round_robin"),
  /** Connect timeout (default 2000 ms). */
  connectTimeoutMs: v.optional(PositiveDurationMs, 2000),
  /** Time to response headers when the route sets none (default 15000 ms). */
  timeoutMs: v.optional(PositiveDurationMs, 15000),
  /** Retries when the route sets none. */
  retries: v.optional(RetryPolicySchema),
  /** Idle upstream connections close after this (default 30000 ms, below Node's 65 s server keep-alive). */
  idleTimeoutMs: v.optional(PositiveDurationMs, 30000),
  /** Upstream connections kept per endpoint (default 128). */
  maxConnectionsPerEndpoint: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(100_000)), 128),
  /** A proxied TCP connection (tcp and tls routes) closes after this long without a byte either way (default 3600000 ms, Envoy's tcp_proxy default). */
  tcpIdleTimeoutMs: v.optional(PositiveDurationMs),
  /** Eject endpoints that keep failing (default: off). */
  outlierDetection: v.optional(OutlierDetectionSchema),
  /** Limits on requests and retries in flight (default: off). */
  connectionPool: v.optional(ConnectionPoolSchema),
  /** Active HTTP health checks of every endpoint (default: off). */
  healthCheck: v.optional(HealthCheckSchema),
  /**
   * UPGRADE: requests to this service's sidecars cross the mesh over HTTP/2 (mTLS, ALPN h2) even
   * when its port speaks http, and leave the destination sidecar in the port's protocol (Istio's
   * h2UpgradePolicy). WebSocket upgrades stay HTTP/1.1. Default "DO_NOT_UPGRADE".
   */
  h2UpgradePolicy: v.optional(v.picklist(["DO_NOT_UPGRADE", "UPGRADE"])),
  /** WebSocket upgrades (HTTP/1.1 Upgrade: websocket) to this service (default: allowed, 1 h idle). */
  websocket: v.optional(WebSocketSchema, {}),
});

const Destination = v.strictObject({
  /** Target service (must be declared). */
  service: Name,
  /** Version subset of the service; default: every endpoint. */
  subset: v.optional(Name),
  /** Relative weight (default 1). */
  weight: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(MAX_WEIGHT, `must be at most ${MAX_WEIGHT}`)), 1),
  /** Service port; default: the service's first port. */
  port: v.optional(Port),
});

const HeaderOps = v.strictObject({
  set: v.optional(v.record(HeaderName, HeaderValue)),
  add: v.optional(v.record(HeaderName, HeaderValue)),
  remove: v.optional(v.array(HeaderName)),
});

/** Fault injection on a route (Istio's VirtualService fault): delays and aborts for a share of requests. */
export const FaultSchema = v.pipe(
  v.strictObject({
    /** Hold matching requests this long before forwarding them. */
    delay: v.optional(
      v.strictObject({
        fixedDelayMs: PositiveDurationMs,
        /** Share delayed (default 100). */
        percentage: v.optional(Percentage, 100),
      }),
    ),
    /** Answer matching requests with this status without reaching the upstream (`x-weft-reason: fault_abort`). */
    abort: v.optional(
      v.strictObject({
        httpStatus: v.pipe(v.number(), v.integer(), v.minValue(200), v.maxValue(599)),
        /** Share aborted (default 100). */
        percentage: v.optional(Percentage, 100),
      }),
    ),
    /** Only requests with these headers get faults (default: every request of the route). */
    headers: v.optional(v.record(HeaderName, HeaderMatch)),
  }),
  v.check((f) => f.delay !== undefined || f.abort !== undefined, "needs delay or abort"),
);

/** Traffic mirroring (Istio's VirtualService mirror): a copy of a share of requests goes to a shadow service. */
export const MirrorSchema = v.strictObject({
  /** Shadow service (must be declared). */
  service: Name,
  /** Version subset of the shadow service; default: every endpoint. */
  subset: v.optional(Name),
  /** Share of requests copied (default 100). */
  percentage: v.optional(Percentage, 100),
});

const Forward = v.strictObject({
  to: v.pipe(v.array(Destination), v.minLength(1, "needs at least one destination")),
  /** Time to response headers, including retries; default: the destination's timeoutMs. */
  timeoutMs: v.optional(PositiveDurationMs),
  retries: v.optional(RetryPolicySchema),
  rewrite: v.optional(
    v.strictObject({
      /** Replaces the matched path prefix (route must match by prefix). */
      pathPrefix: v.optional(v.pipe(v.string(), v.startsWith("/"))),
      /** Replaces the Host/authority sent upstream. */
      host: v.optional(Host),
    }),
  ),
  /** Largest request body accepted (413 beyond); default: unlimited. */
  maxBodyBytes: v.optional(ByteCount),
  /** Inject delays and aborts (default: none). */
  fault: v.optional(FaultSchema),
  /** Copy requests to a shadow service, fire and forget (default: none). */
  mirror: v.optional(MirrorSchema),
});

const Redirect = v.strictObject({
  scheme: v.optional(v.picklist(["http", "https"])),
  host: v.optional(Host),
  port: v.optional(Port),
  path: v.optional(v.pipe(v.string(), v.startsWith("/"))),
  /** Replaces the matched path prefix. */
  prefixRewrite: v.optional(v.pipe(v.string(), v.startsWith("/"))),
  status: v.optional(v.picklist([301, 302, 303, 307, 308]), 301),
});

const DirectResponse = v.strictObject({
  status: v.pipe(v.number(), v.integer(), v.minValue(200), v.maxValue(599)),
  body: v.optional(v.pipe(v.string(), v.maxLength(65536))),
  contentType: v.optional(HeaderValue, "text/plain; charset=utf-8"),
});

/** A route: match conditions (any of them) and exactly one action. */
export const RouteSchema = v.pipe(
  v.strictObject({
    name: v.optional(v.pipe(v.string(), v.minLength(1), v.maxLength(128))),
    /** One condition or a list (any may match); default: match everything. */
    match: v.optional(v.union([RouteMatchSchema, v.pipe(v.array(RouteMatchSchema), v.minLength(1))])),
    forward: v.optional(Forward),
    redirect: v.optional(Redirect),
    directResponse: v.optional(DirectResponse),
    headers: v.optional(v.strictObject({ request: v.optional(HeaderOps), response: v.optional(HeaderOps) })),
  }),
  v.check(
    (r) => [r.forward, r.redirect, r.directResponse].filter((a) => a !== undefined).length === 1,
    "needs exactly one of forward, redirect or directResponse",
  ),
  v.check(
    (r) => !r.forward || r.forward.to.some((d) => d.weight !== 0),
    "forward.to needs at least one destination with a weight above 0",
  ),
);

const SniHost = v.pipe(
  v.string(),
  v.regex(/^(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?$|^\*$/i, "must be a host name, '*.suffix' or '*' (no port)"),
);

const L4Routed = {
  name: v.optional(v.pipe(v.string(), v.minLength(1), v.maxLength(128))),
  /** Destinations by weight; a destination's port defaults to the service's first tcp or tls port. */
  to: v.pipe(v.array(Destination), v.minLength(1, "needs at least one destination")),
};
const SOME_WEIGHT = "to needs at least one destination with a weight above 0";

/** A route for a gateway's `tcp` listeners (Istio VirtualService `tcp`): bytes go unchanged to a destination. */
export const TcpRouteSchema = v.pipe(
  v.strictObject({
    ...L4Routed,
    /** Listener ports this route takes (default: every tcp listener). */
    match: v.optional(v.strictObject({ ports: v.optional(v.pipe(v.array(Port), v.minLength(1))) })),
  }),
  v.check((r) => r.to.some((d) => d.weight !== 0), SOME_WEIGHT),
);

/** A route for a gateway's `tls` listeners (Istio VirtualService `tls` with Gateway PASSTHROUGH): routed by the ClientHello's SNI, never decrypted. */
export const TlsRouteSchema = v.pipe(
  v.strictObject({
    ...L4Routed,
    match: v.strictObject({
      /** Server names, exact or `*.suffix` (or `*`); the exact one wins, then the longest suffix. */
      sniHosts: v.pipe(v.array(SniHost), v.minLength(1)),
      /** Listener ports this route takes (default: every tls listener). */
      ports: v.optional(v.pipe(v.array(Port), v.minLength(1))),
    }),
  }),
  v.check((r) => r.to.some((d) => d.weight !== 0), SOME_WEIGHT),
);

const ServicePort = v.strictObject({
  port: Port,
  protocol: v.optional(v.picklist(["http", "http2", "grpc", "tcp", "tls"]), "http"),
  name: v.optional(Name),
});

const isPort = (n: number) => Number.isInteger(n) && n >= 1 && n <= 65535;

/** A statically known endpoint; the registry adds live ones. */
const StaticEndpoint = v.strictObject({
  /** host:port, or unix:/path for a Unix socket. */
  address: v.pipe(
    v.string(),
    v.regex(/^(unix:\/.+|\[[0-9a-f:.]+\]:\d{1,5}|[a-z0-9.-]+:\d{1,5})$/i, "must be host:port or unix:/path"),
    v.check((a) => a.startsWith("unix:") || !/:\d+$/.test(a) || isPort(Number(a.slice(a.lastIndexOf(":") + 1))), "port must be 1 to 65535"),
  ),
  version: v.optional(Name),
  weight: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(MAX_WEIGHT)), 1),
});

/**
 * How a sidecar's inbound port treats peers: STRICT accepts only mTLS from a workload of the trust
 * domain; PERMISSIVE also accepts plaintext (for migrating workloads into the mesh).
 */
export const MtlsSchema = v.strictObject({
  mode: v.optional(v.picklist(["STRICT", "PERMISSIVE"]), "STRICT"),
});

export const ServiceSchema = v.strictObject({
  /** Namespace (default "default"). */
  namespace: v.optional(Name, "default"),
  /** Service account, the workload's identity (default: the service name). */
  serviceAccount: v.optional(Name),
  ports: v.optional(v.pipe(v.array(ServicePort), v.minLength(1)), [{ port: 80, protocol: "http" }]),
  /** Version subsets: name → labels an endpoint must carry. */
  versions: v.optional(v.record(Name, v.record(v.string(), v.string()))),
  endpoints: v.optional(v.array(StaticEndpoint)),
  /** Routes applied by callers of this service (Istio VirtualService for the mesh host); default: all to the service. */
  routes: v.optional(v.array(RouteSchema)),
  /** How callers reach this service. */
  traffic: v.optional(DestinationPolicySchema, {}),
  /** Policy applied by this service's own sidecar to incoming requests. */
  inbound: v.optional(PolicySetSchema, {}),
  /** Mutual TLS on this service's inbound port (Istio PeerAuthentication). */
  mtls: v.optional(MtlsSchema, {}),
});

const Listener = v.pipe(
  v.strictObject({
    name: v.optional(Name),
    port: v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(65535)),
    /** Bind address (default "0.0.0.0"). */
    address: v.optional(v.string(), "0.0.0.0"),
    /** http, https, tcp (bytes proxied by tcpRoutes) or tls (passthrough by SNI with tlsRoutes, never terminated). */
    protocol: v.optional(v.picklist(["http", "https", "tcp", "tls"]), "http"),
    tls: v.optional(v.strictObject({ certFile: v.string(), keyFile: v.string() })),
    /**
     * Also serve HTTP/2 (default false: HTTP/1.1 only). On http, h2c with prior knowledge beside
     * HTTP/1.1 on the same port; on https, ALPN offers h2 and http/1.1.
     */
    http2: v.optional(v.boolean()),
  }),
  v.check((l) => l.protocol !== "https" || l.tls !== undefined, "an https listener needs tls.certFile and tls.keyFile"),
  v.check((l) => (l.protocol !== "tcp" && l.protocol !== "tls") || (l.tls === undefined && l.http2 === undefined), "a tcp or tls listener takes no tls certificate or http2 (tls is passed through)"),
);

export const GatewaySchema = v.strictObject({
  /**
   * What the gateway is for (default "ingress"). An "egress" gateway takes the mesh's calls to
   * external services over mesh mTLS on its listeners (so it knows each caller's SPIFFE ID),
   * authorizes them with `policy`, and originates TLS to the external hosts routed through it.
   */
  kind: v.optional(v.picklist(["ingress", "egress"]), "ingress"),
  /** Namespace of the gateway's identity (default "default"). */
  namespace: v.optional(Name, "default"),
  /** Service account of the gateway's identity (default: the gateway's name). */
  serviceAccount: v.optional(Name),
  listeners: v.pipe(v.array(Listener), v.minLength(1)),
  routes: v.array(RouteSchema),
  /** Routes for tcp listeners, first match wins (default none). */
  tcpRoutes: v.optional(v.array(TcpRouteSchema)),
  /** Routes for tls (passthrough) listeners by SNI (default none). */
  tlsRoutes: v.optional(v.array(TlsRouteSchema)),
  /** Trusted proxies in front of this gateway: how many x-forwarded-for hops to believe (default 0). */
  xffTrustedHops: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(10)), 0),
  /** Header limits: beyond them the request is refused with 431. */
  maxHeaderCount: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(1000)), 100),
  maxHeaderBytes: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1024), v.maxValue(1 << 20)), 16384),
  /** Policy applied at the gateway. */
  policy: v.optional(PolicySetSchema, {}),
});

const ExternalHost = v.pipe(
  v.string(),
  v.regex(
    /^(\*\.)?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/,
    "must be a lowercase host name or '*.suffix', without a port",
  ),
  v.maxLength(253),
);

/** One port of an external service, as the app calls it. */
const ExternalPort = v.strictObject({
  /** The port the app names in its Host (80 when it names none). */
  port: Port,
  /**
   * http: plain HTTP to the host; https: the app speaks plain HTTP and the mesh originates TLS;
   * tls / tcp: the app's own TLS or bytes (declared, not yet proxied by weft: HTTP to them is refused).
   */
  protocol: v.picklist(["http", "https", "tls", "tcp"]),
  /** Port on the external host (default: port), e.g. port 80 protocol https targetPort 443. */
  targetPort: v.optional(Port),
});

const ExternalEndpoint = v.strictObject({
  /** IP or host name, optionally with :port (default: the called port's targetPort). */
  address: v.pipe(
    v.string(),
    v.regex(/^(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(:\d{1,5})?$/i, "must be host or host:port"),
    v.check((a) => !/\]?:\d+$/.test(a) || isPort(Number(a.slice(a.lastIndexOf(":") + 1))), "port must be 1 to 65535"),
  ),
});

/**
 * A service outside the mesh that workloads may call (Istio's ServiceEntry): under REGISTRY_ONLY
 * only declared external hosts are reachable, directly from the sidecar or through an egress gateway.
 */
export const ExternalServiceSchema = v.strictObject({
  /** Host names callers use: exact, or `*.suffix` for any name under suffix. */
  hosts: v.pipe(v.array(ExternalHost), v.minLength(1, "needs at least one host")),
  ports: v.pipe(v.array(ExternalPort), v.minLength(1, "needs at least one port")),
  /** DNS: connect to the called host name (default); STATIC: connect to `endpoints`. */
  resolution: v.optional(v.picklist(["DNS", "STATIC"]), "DNS"),
  /** Where the hosts are reached instead of their DNS names; required with STATIC. */
  endpoints: v.optional(v.pipe(v.array(ExternalEndpoint), v.minLength(1))),
  /** TLS originated on `https` ports: verified against the system roots, or caFile's certificates only; SNI and name check = the called host. */
  tls: v.optional(
    v.strictObject({
      /** PEM file of the CAs trusted for this service, read by the proxy that originates TLS (default: system roots). */
      caFile: v.optional(v.pipe(v.string(), v.minLength(1))),
    }),
    {},
  ),
  /** Route through this egress gateway (over mesh mTLS) instead of directly from the sidecar (default: direct). */
  egress: v.optional(v.strictObject({ gateway: Name })),
  /** Timeouts, retries and pool limits for calls to the service. */
  traffic: v.optional(DestinationPolicySchema, {}),
});

export const AccessLogSchema = v.optional(
  v.union([v.literal("off"), v.literal("json"), v.strictObject({ text: v.pipe(v.string(), v.minLength(1)) })]),
  "json",
);

/** Tracing of proxied requests (W3C trace context, OpenTelemetry spans). */
export const TracingSchema = v.strictObject({
  /** Share of new traces recorded, 0..1 (default 0.01); a request that arrives with a traceparent keeps its sampled flag. */
  sampleRatio: v.optional(v.pipe(v.number(), v.minValue(0), v.maxValue(1)), 0.01),
  /** OTLP/HTTP JSON endpoint sampled spans are sent to, e.g. http://collector:4318/v1/traces (default: none, spans are only propagated). */
  otlpEndpoint: v.optional(v.pipe(v.string(), v.regex(/^https?:\/\/[^\s]+$/, "must be an http:// or https:// URL"))),
  /** Also write each sampled span as one JSON line to the process log on stderr (default false). */
  console: v.optional(v.boolean(), false),
});

export const MeshSchema = v.strictObject({
  /** SPIFFE trust domain (default "cluster.local"). */
  trustDomain: v.optional(v.pipe(v.string(), v.regex(/^[a-z0-9._-]+$/, "must be lowercase letters, digits, '.', '_' or '-'")), "cluster.local"),
  /** What sidecars do with hosts the mesh does not know (default "REGISTRY_ONLY"). */
  outboundTrafficPolicy: v.optional(v.picklist(["REGISTRY_ONLY", "ALLOW_ANY"]), "REGISTRY_ONLY"),
  /** Access log format for every proxy (default "json"). */
  accessLog: AccessLogSchema,
  /** Tracing for every proxy (default: 1% of new traces, no export). */
  tracing: v.optional(TracingSchema, {}),
  services: v.optional(v.record(Name, ServiceSchema), {}),
  gateways: v.optional(v.record(Name, GatewaySchema), {}),
  /** Services outside the mesh that workloads may call (default: none). */
  externalServices: v.optional(v.record(Name, ExternalServiceSchema), {}),
});

export type MeshInput = v.InferInput<typeof MeshSchema>;
export type MeshConfig = v.InferOutput<typeof MeshSchema>;
export type ServiceConfig = v.InferOutput<typeof ServiceSchema>;
export type GatewayConfig = v.InferOutput<typeof GatewaySchema>;
export type RouteConfig = v.InferOutput<typeof RouteSchema>;
export type RouteMatchConfig = v.InferOutput<typeof RouteMatchSchema>;
export type RetryPolicyConfig = v.InferOutput<typeof RetryPolicySchema>;
export type DestinationPolicyConfig = v.InferOutput<typeof DestinationPolicySchema>;
export type TracingConfig = v.InferOutput<typeof TracingSchema>;
export type LoadBalancerConfig = v.InferOutput<typeof LoadBalancerSchema>;
export type OutlierDetectionConfig = v.InferOutput<typeof OutlierDetectionSchema>;
export type ConnectionPoolConfig = v.InferOutput<typeof ConnectionPoolSchema>;
export type HealthCheckConfig = v.InferOutput<typeof HealthCheckSchema>;
export type FaultConfig = v.InferOutput<typeof FaultSchema>;
export type MirrorConfig = v.InferOutput<typeof MirrorSchema>;
export type TcpRouteConfig = v.InferOutput<typeof TcpRouteSchema>;
export type TlsRouteConfig = v.InferOutput<typeof TlsRouteSchema>;
export type ExternalServiceConfig = v.InferOutput<typeof ExternalServiceSchema>;
