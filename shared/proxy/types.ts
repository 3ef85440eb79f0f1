import type { Endpoint } from "../config/index.ts";

/** Request headers as lower-case names; repeated headers are joined (set-cookie stays a list). */
export type HeaderMap = Readonly<Record<string, string | readonly string[] | undefined>>;

/** The verified identity of the peer proxy on an mTLS connection. */
export interface PeerIdentity {
  readonly spiffeId: string;
}

/**
 * The light, runtime-neutral view of an incoming request that the engine decides on.
 * Adapters build it from node:http, Bun.serve or Deno.serve without copying the body.
 */
export interface RequestHead {
  readonly method: string;
  readonly scheme: "http" | "https";
  /** Host header (HTTP/1.1) or :authority, as received. */
  readonly authority: string;
  /** Request target in origin form: path plus optional query, as received. */
  readonly path: string;
  readonly headers: HeaderMap;
  /** Address of the TCP peer (before any x-forwarded-for processing). */
  readonly clientIp: string;
  /** Local port the request arrived on. */
  readonly localPort: number;
  readonly peer?: PeerIdentity;
  /** Protocol the request arrived over, as the access log names it (default "HTTP/1.1"). */
  readonly protocol?: "HTTP/1.1" | "HTTP/2";
  /**
   * Set when the client asks to switch protocols (Connection: upgrade + Upgrade): the lower-case
   * protocol, and whether this listener can carry the connection on after a 101.
   */
  readonly upgrade?: { readonly protocol: string; readonly tunnel: boolean };
}

export type { Endpoint };

/**
 * The request body, owned by the runtime adapter; the engine only asks whether a retry may
 * replay it. Adapters keep what they stream upstream in memory up to `maxReplayBytes`.
 */
export interface RequestBody {
  /** Declared length in bytes, 0 when there is no body, undefined when unknown (chunked). */
  readonly length: number | undefined;
  /** True while every byte read so far is still held for a replay. */
  readonly replayable: boolean;
}

/** The SVID a proxy holds (chain leaf first, PEM) and the roots of its trust domain it accepts. */
export interface MeshTlsMaterial {
  readonly chainPem: readonly string[];
  readonly keyPem: string;
  readonly bundlePem: readonly string[];
}

/**
 * A proxy's mesh identity as listeners and upstream clients use it: read `current()` for each new
 * connection; `onUpdate` fires on every renewal and bundle change (open connections keep theirs).
 */
export interface MeshIdentity {
  readonly trustDomain: string;
  /** This proxy's own SPIFFE ID. */
  readonly spiffeId: string;
  current(): MeshTlsMaterial | undefined;
  /** Counts material changes; connections made with an older generation are not reused once idle. */
  readonly generation: number;
  onUpdate(listener: (material: MeshTlsMaterial) => void): () => void;
}

/** Mesh mTLS on a listener: the proxy's identity, and whether plaintext peers are also accepted. */
export interface MeshListen {
  readonly identity: MeshIdentity;
  /** Read per connection, so a config change applies to the next connection. */
  mode(): "STRICT" | "PERMISSIVE";
  /** Told about every peer turned away (reason code, remote address), for logs and metrics. */
  onRefused?(reason: string, remote: string): void;
  /** Raw TCP for the workload's tcp/tls ports (ALPN MESH_TCP_ALPN); without it such connections are refused. */
  readonly tcp?: InboundTcpTarget;
}

/** How an inbound mesh port hands raw TCP to the L4 path: the proxy and the live inbound view. */
export interface InboundTcpTarget {
  readonly proxy: import("./tcp.ts").TcpProxy;
  current(): import("./tcp.ts").InboundTcpView | undefined;
  /** An egress gateway: mesh TCP goes to external services (SNI read on tls ports) instead of an app. */
  external?(): import("./external-tcp.ts").ExternalTcpView | undefined;
}

/** A gateway's tcp or tls (passthrough) listener. */
export interface TcpListenOptions {
  readonly port: number;
  readonly address?: string;
  readonly protocol: "tcp" | "tls";
  /** How long a tls listener waits for the whole ClientHello (default 10000 ms). */
  readonly helloTimeoutMs?: number;
}

/** How a tcp/tls listener reaches the L4 path: the proxy and the live view, read once per connection. */
export interface TcpServeTarget {
  readonly proxy: import("./tcp.ts").TcpProxy;
  current(): import("./tcp.ts").TcpView | undefined;
  /** A sidecar's listener for an external service port: connections go through this view instead of `current`. */
  external?(): import("./external-tcp.ts").ExternalTcpView | undefined;
}

/** What the engine asks an UpstreamClient to send. */
export interface UpstreamRequest {
  readonly endpoint: Endpoint;
  readonly method: string;
  readonly path: string;
  readonly headers: Record<string, string | string[]>;
  readonly body: RequestBody;
  /** Give up connecting after this long (reason `upstream_connect_failure`). */
  readonly connectTimeoutMs: number;
  /** Give up waiting for response headers after this long (reason `timeout`). */
  readonly timeoutMs: number;
  /** Close idle pooled connections after this long. */
  readonly idleTimeoutMs: number;
  /** Largest body accepted; more fails with `body_too_large`. */
  readonly maxBodyBytes: number | undefined;
  /** Keep up to this many body bytes for a replay. */
  readonly maxReplayBytes: number;
  /** Connections kept per endpoint. */
  readonly maxConnections: number;
  /** Originate mesh mTLS with this identity; the server must present `expectedId`. */
  readonly mesh?: { readonly identity: MeshIdentity; readonly expectedId: string };
  /** Speak HTTP/2 (h2c) to the endpoint: the destination port's protocol is http2 or grpc. */
  readonly http2?: boolean;
  /** Originate TLS to an external host (not with `mesh`); a failed handshake or verification is `upstream_tls_failure`. */
  readonly tls?: UpstreamTls;
  /**
   * Ask the endpoint to switch to this protocol (the headers carry Connection: upgrade and Upgrade);
   * a 101 answer hands the connection over, to be closed after `idleTimeoutMs` without traffic.
   */
  readonly upgrade?: { readonly protocol: string; readonly idleTimeoutMs: number };
}

/** TLS a proxy originates to a host outside the mesh. */
export interface UpstreamTls {
  /** SNI, and the name the certificate must be valid for. */
  readonly servername: string;
  /** PEM file of the only CAs trusted; default: the system roots. */
  readonly caFile?: string;
}

/** The head of an upstream response; its body stays with the adapter until written or discarded. */
export interface UpstreamResponse {
  readonly status: number;
  readonly headers: HeaderMap;
  /** Release the response without reading it (a retry will follow). */
  discard(): void;
}

export type UpstreamFailure =
  | "upstream_connect_failure"
  | "upstream_reset"
  | "timeout"
  | "body_too_large"
  | "upstream_protocol_error"
  | "upstream_tls_failure";

export type UpstreamResult =
  | { readonly ok: true; readonly response: UpstreamResponse }
  | { readonly ok: false; readonly reason: UpstreamFailure; readonly detail?: string };

/** How a runtime reaches upstreams: pooled, streaming, one method. Declared here, implemented per runtime. */
export interface UpstreamClient {
  forward(request: UpstreamRequest): Promise<UpstreamResult>;
  close(): Promise<void>;
}

/** A listening socket serving the engine. */
export interface Listener {
  readonly port: number;
  /** Stops accepting; in-flight requests finish, idle keep-alive connections close. */
  close(): Promise<void>;
  /** Replaces the TLS certificate for new connections (old ones keep theirs). */
  setTls(tls: { cert: string; key: string }): void;
  /**
   * Ends every connection that outlives a request, still open: proxied TCP and upgraded (WebSocket)
   * ones. A drain calls it at the end of its grace period.
   */
  destroy?(): void;
}

export interface ListenOptions {
  readonly port: number;
  readonly address?: string;
  readonly tls?: { readonly cert: string; readonly key: string };
  /** Terminate mesh mTLS (a sidecar's inbound port); the peer's SPIFFE ID reaches the engine as `peer`. */
  readonly mesh?: MeshListen;
  /** Also serve HTTP/2: h2c with prior knowledge on plain ports, ALPN h2 with `tls` (not with `mesh`). */
  readonly http2?: boolean;
  /** Headers beyond these limits are answered with 431. */
  readonly maxHeaderCount: number;
  readonly maxHeaderBytes: number;
}

/** How a listener reaches the engine: the live view is read once per request. */
export interface ServeTarget {
  readonly engine: import("./engine.ts").Engine;
  current(): import("./engine.ts").RouteView;
  /** Called for a crashed request (a bug): logged by the role, answered 500 `internal`. */
  onInternalError?(err: unknown): void;
  /** Told when a client connection opens and closes (the active-connections gauge); Node listeners only. */
  readonly connections?: { opened(): void; closed(): void };
}

/** A small Web-standard HTTP app (the admin API), served by the runtime. */
export type FetchHandler = (request: Request) => Response | Promise<Response>;

/** Told as each request starts and as it finishes, so that a runtime can do its own work between requests. */
export interface RequestLoad {
  started(): void;
  done(): void;
}

/** What differs per runtime, implemented once in shared/runtime/<runtime>/ and passed to a role. */
export interface ProxyRuntime {
  readonly name: "node" | "bun" | "deno";
  createUpstreamClient(): UpstreamClient;
  /** The process's request load, given to every engine; Node collects young garbage when it falls to zero (idle-gc.ts). */
  readonly requestLoad?: RequestLoad;
  listen(options: ListenOptions, target: ServeTarget): Promise<Listener>;
  /** Raw TCP and TLS-passthrough listeners; absent on runtimes that do not proxy TCP yet. */
  listenTcp?(options: TcpListenOptions, target: TcpServeTarget): Promise<Listener>;
  serveFetch(handler: FetchHandler, options: { port: number; address: string }): Promise<{ port: number; close(): Promise<void> }>;
}
