import { TLS_MODE_LABEL, type Endpoint, type ServiceSnapshot, type Snapshot } from "../config/index.ts";
import { createCircuitBreaker, type CircuitBreaker } from "./circuit.ts";
import { clusterLookup } from "./view.ts";
import type { Cluster } from "./cluster.ts";
import { chooseWeighted } from "./router.ts";
import type { ExternalTcpView } from "./external-tcp.ts";
import { createL4Router, type L4Router } from "./tcp-router.ts";
import type { MeshIdentity, PeerIdentity, RequestHead } from "./types.ts";

/**
 * ALPN protocol a proxy offers on the mesh mTLS handshake when the connection carries raw TCP for
 * one of the destination's ports (after a transport header) rather than HTTP.
 */
export const MESH_TCP_ALPN = "weft-tcp";

/** Envoy's tcp_proxy default: a proxied connection with no byte either way for an hour is closed. */
export const DEFAULT_TCP_IDLE_TIMEOUT_MS = 3_600_000;

const HEADER_MAGIC = [0x57, 0x54, 0x50]; // "WTP"
const HEADER_VERSION = 1;
/** Size of the transport header: magic "WTP", version 1, target port (u16, big-endian). */
export const TRANSPORT_HEADER_BYTES = 6;

/**
 * encodeTransportHeader names the destination's port at the start of a mesh TCP connection (like
 * Linkerd's opaque-transport header), so the inbound sidecar knows which app port the bytes are for.
 * @example
 * tlsSocket.write(encodeTransportHeader(5432));
 */
export function encodeTransportHeader(port: number): Uint8Array {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new TypeError(`not a port: ${port}`);
  return new Uint8Array([...HEADER_MAGIC, HEADER_VERSION, port >> 8, port & 0xff]);
}

/**
 * decodeTransportHeader reads the fixed-size header from the first bytes of a mesh TCP connection.
 * @example
 * const h = decodeTransportHeader(firstBytes); if (h.ok) pipeTo(h.port, firstBytes.subarray(TRANSPORT_HEADER_BYTES));
 */
export function decodeTransportHeader(bytes: Uint8Array): { readonly ok: true; readonly port: number } | { readonly ok: false; readonly reason: "incomplete" | "bad_transport_header" } {
  for (let i = 0; i < Math.min(bytes.length, 4); i++) {
    const want = i < 3 ? HEADER_MAGIC[i] : HEADER_VERSION;
    if (bytes[i] !== want) return { ok: false, reason: "bad_transport_header" };
  }
  if (bytes.length < TRANSPORT_HEADER_BYTES) return { ok: false, reason: "incomplete" };
  const port = (bytes[4]! << 8) | bytes[5]!;
  if (port === 0) return { ok: false, reason: "bad_transport_header" };
  return { ok: true, port };
}

/** Why a proxied TCP connection was refused or ended; logged as the access log's `reason`. */
export type TcpReason =
  | "no_route"
  | "no_sni"
  | "not_tls"
  | "bad_client_hello"
  | "no_cluster"
  | "no_healthy_upstream"
  | "mtls_unavailable"
  | "overflow"
  | "upstream_connect_failure"
  | "upstream_reset"
  | "downstream_reset"
  | "idle_timeout"
  | "handshake_timeout"
  | "denied"
  | "unknown_port"
  | "bad_transport_header"
  | "sni_mismatch"
  | "drained";

/** What is known of a connection when it is routed. */
export interface ConnectionHead {
  readonly clientIp: string;
  /** The listener port (gateway), or the app port named by the transport header (inbound sidecar). */
  readonly localPort: number;
  /** The ClientHello's server name on a tls listener. */
  readonly sni?: string;
  /** The verified SPIFFE ID of the peer proxy (mesh mTLS). */
  readonly peer?: PeerIdentity;
}

/** One proxied connection, handed to telemetry when it ends. */
export interface TcpRecord {
  startTimeMs: number;
  durationMs: number;
  /** "tcp" or "tls" (passthrough). */
  protocol: "tcp" | "tls";
  localPort: number;
  sni?: string;
  route?: string;
  service?: string;
  upstream?: string;
  /** Bytes from the client to the upstream, and back. */
  bytesIn: number;
  bytesOut: number;
  sourcePrincipal?: string;
  clientIp: string;
  /** Why it was refused or how it ended abnormally; absent for a connection either side closed. */
  reason?: TcpReason;
}

/** Where to send a connection's bytes. */
export interface TcpUpstream {
  readonly endpoint: Endpoint;
  /** Originate mesh mTLS (ALPN MESH_TCP_ALPN) and send the transport header with `port`. */
  readonly mesh?: { readonly identity: MeshIdentity; readonly expectedId: string; readonly port: number };
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
}

/** A connection being proxied: where to, and the hook to call once it is over. */
export interface TcpSession {
  readonly record: TcpRecord;
  /** Undefined when the connection is refused (record.reason says why). */
  readonly upstream: TcpUpstream | undefined;
  /** Call exactly once when both sides are closed, with the byte counts and how it ended. */
  done(bytesIn: number, bytesOut: number, reason?: TcpReason): void;
}

/** What a gateway's tcp and tls listeners route with; built once per config swap. */
export interface TcpView {
  readonly revision: number;
  readonly router: L4Router;
  cluster(service: string): Cluster | undefined;
}

/** What an inbound sidecar accepts: the service's tcp/tls ports and who may connect to them. */
export interface InboundTcpView {
  readonly revision: number;
  readonly service: ServiceSnapshot;
  /** Where the app listens (its port is replaced by the target port). */
  readonly appHost: string;
  /** Authorization by peer, namespace, address and port; true allows. */
  authorize(head: ConnectionHead): boolean;
}

/**
 * createTcpGatewayView compiles a gateway's tcp and tls routes and the clusters they reach.
 * @example
 * const view = createTcpGatewayView(snapshot, "ingress");
 */
export function createTcpGatewayView(snapshot: Snapshot, gatewayName: string): TcpView {
  const gateway = snapshot.gateways.get(gatewayName);
  if (!gateway) throw new TypeError(`gateway "${gatewayName}" is not in the config`);
  return { revision: snapshot.revision, router: createL4Router(gateway.tcpRoutes ?? [], gateway.tlsRoutes ?? []), cluster: clusterLookup(snapshot) };
}

export interface TcpProxyOptions {
  /** Mesh endpoints (TLS_MODE_LABEL=mesh) are reached over mTLS with this identity. */
  readonly meshIdentity?: MeshIdentity;
  readonly onConnectionDone?: (record: TcpRecord) => void;
  readonly now?: () => number;
  readonly random?: () => number;
}

/** Decides where connections go and keeps the per-service connection counts (maxConnections). */
export interface TcpProxy {
  /** A gateway connection: route by port (tcp) or SNI (tls), pick a destination and an endpoint. */
  open(head: ConnectionHead, protocol: "tcp" | "tls", view: TcpView): TcpSession;
  /** A connection refused before routing (no SNI, not TLS): recorded only. */
  refuse(head: ConnectionHead, protocol: "tcp" | "tls", reason: TcpReason): TcpSession;
  /** An inbound mesh connection for one of the service's ports: port declared, authorized, then the app. */
  openInbound(head: ConnectionHead, view: InboundTcpView): TcpSession;
  /**
   * A connection for an external service's tcp or tls port: on a sidecar's `--tcp-outbound HOST:PORT`
   * listener, or on an egress gateway's mesh port (`head.localPort` the declared port, `head.peer` the caller).
   */
  openExternal(head: ConnectionHead, protocol: "tcp" | "tls", view: ExternalTcpView): TcpSession;
  /** Open proxied connections per service. */
  active(): ReadonlyMap<string, number>;
}

/**
 * createTcpProxy builds the L4 path shared by gateway and sidecar (routing, balancing, limits,
 * records); the runtime adapter owns the sockets.
 * @example
 * const tcp = createTcpProxy({ meshIdentity, onConnectionDone: log });
 * const session = tcp.open({ clientIp, localPort: 5432 }, "tcp", view);
 */
export function createTcpProxy(options: TcpProxyOptions = {}): TcpProxy {
  const now = options.now ?? Date.now;
  const random = options.random ?? Math.random;
  const { meshIdentity, onConnectionDone } = options;
  // Kept across config swaps, like the HTTP circuit breakers: a swap must not forget open connections.
  const limits = new Map<string, { max: number; circuit: CircuitBreaker }>();
  const counts = new Map<string, number>();

  function newRecord(head: ConnectionHead, protocol: "tcp" | "tls"): TcpRecord {
    return {
      startTimeMs: now(),
      durationMs: 0,
      protocol,
      localPort: head.localPort,
      sni: head.sni,
      bytesIn: 0,
      bytesOut: 0,
      sourcePrincipal: head.peer?.spiffeId,
      clientIp: head.clientIp,
    };
  }

  function session(record: TcpRecord, upstream: TcpUpstream | undefined, release?: () => void): TcpSession {
    let finished = false;
    return {
      record,
      upstream,
      done(bytesIn, bytesOut, reason) {
        if (finished) return;
        finished = true;
        release?.();
        record.bytesIn = bytesIn;
        record.bytesOut = bytesOut;
        record.durationMs = now() - record.startTimeMs;
        if (reason !== undefined && record.reason === undefined) record.reason = reason;
        onConnectionDone?.(record);
      },
    };
  }

  function refused(record: TcpRecord, reason: TcpReason): TcpSession {
    record.reason = reason;
    return session(record, undefined);
  }

  function take(name: string, traffic: ServiceSnapshot["traffic"]): (() => void) | "overflow" {
    const max = traffic.connectionPool?.maxConnections;
    let held = limits.get(name);
    if (max === undefined) {
      if (held) limits.delete(name);
    } else if (!held || held.max !== max) {
      held = { max, circuit: createCircuitBreaker({ maxRequests: max, maxPendingRequests: 0 }) };
      limits.set(name, held);
    }
    const circuit = max === undefined ? undefined : held!.circuit;
    if (circuit && circuit.enter() !== "entered") return "overflow";
    counts.set(name, (counts.get(name) ?? 0) + 1);
    return () => {
      circuit?.leave();
      const left = (counts.get(name) ?? 1) - 1;
      if (left <= 0) counts.delete(name);
      else counts.set(name, left);
    };
  }

  return {
    open(head, protocol, view) {
      const record = newRecord(head, protocol);
      const match = protocol === "tls" ? view.router.matchTls(head.localPort, head.sni ?? "") : view.router.matchTcp(head.localPort);
      if (!match) return refused(record, "no_route");
      record.route = match.route.name;
      const destination = chooseWeighted(match.route.to, random);
      const cluster = view.cluster(destination.service);
      if (!cluster) return refused(record, "no_cluster");
      const service = cluster.service;
      record.service = service.name;
      const port = destination.port ?? service.ports.find((p) => p.protocol === "tcp" || p.protocol === "tls")?.port ?? service.ports[0]!.port;
      const pickHead: RequestHead = { method: "", scheme: "http", authority: head.sni ?? "", path: "/", headers: {}, clientIp: head.clientIp, localPort: head.localPort };
      const endpoint = cluster.balancer.pick(cluster.endpoints(destination.subset), { head: pickHead, random });
      if (!endpoint) return refused(record, "no_healthy_upstream");
      let mesh: TcpUpstream["mesh"];
      if (endpoint.labels[TLS_MODE_LABEL] === "mesh") {
        if (meshIdentity?.current() === undefined) return refused(record, "mtls_unavailable");
        mesh = { identity: meshIdentity, expectedId: service.spiffeId, port };
      }
      record.upstream = endpoint.address;
      const release = take(service.name, service.traffic);
      if (release === "overflow") return refused(record, "overflow");
      const traffic = service.traffic;
      return session(record, { endpoint, mesh, connectTimeoutMs: traffic.connectTimeoutMs, idleTimeoutMs: traffic.tcpIdleTimeoutMs ?? DEFAULT_TCP_IDLE_TIMEOUT_MS }, release);
    },
    refuse(head, protocol, reason) {
      return refused(newRecord(head, protocol), reason);
    },
    openInbound(head, view) {
      const record = newRecord(head, "tcp");
      const service = view.service;
      record.service = service.name;
      const declared = service.ports.find((p) => p.port === head.localPort);
      // Only declared tcp/tls ports: the inbound must not become a way into any loopback port of the pod.
      if (!declared || (declared.protocol !== "tcp" && declared.protocol !== "tls")) return refused(record, "unknown_port");
      record.protocol = declared.protocol;
      if (!view.authorize(head)) return refused(record, "denied");
      const endpoint: Endpoint = { address: `${view.appHost}:${head.localPort}`, host: view.appHost, port: head.localPort, labels: {}, weight: 1, draining: false };
      record.upstream = endpoint.address;
      const traffic = service.traffic;
      return session(record, { endpoint, connectTimeoutMs: traffic.connectTimeoutMs, idleTimeoutMs: traffic.tcpIdleTimeoutMs ?? DEFAULT_TCP_IDLE_TIMEOUT_MS });
    },
    openExternal(head, protocol, view) {
      const record = newRecord(head, protocol);
      const target = view.resolve(head, random);
      if (!target.ok) {
        record.route = target.route;
        return refused(record, target.reason);
      }
      record.route = target.route;
      record.service = target.cluster;
      let mesh: TcpUpstream["mesh"];
      if (target.mesh !== undefined) {
        if (meshIdentity?.current() === undefined) return refused(record, "mtls_unavailable");
        mesh = { identity: meshIdentity, expectedId: target.mesh.expectedId, port: target.mesh.port };
      }
      record.upstream = target.endpoint.address;
      const release = take(target.cluster, target.traffic);
      if (release === "overflow") return refused(record, "overflow");
      const traffic = target.traffic;
      return session(record, { endpoint: target.endpoint, mesh, connectTimeoutMs: traffic.connectTimeoutMs, idleTimeoutMs: traffic.tcpIdleTimeoutMs ?? DEFAULT_TCP_IDLE_TIMEOUT_MS }, release);
    },
    active: () => counts,
  };
}

/**
 * createTcpForwardView routes every connection of one listener to one service port: a sidecar's
 * outbound listener for a `tcp` port of a service it calls (an app's TCP carries no Host).
 * @example
 * const view = createTcpForwardView(snapshot, "db", 5432);
 */
export function createTcpForwardView(snapshot: Snapshot, service: string, port: number): TcpView {
  const route = { name: `${service}:${port}`, to: [{ service, port, weight: 1 }] };
  return { revision: snapshot.revision, router: createL4Router([route], []), cluster: clusterLookup(snapshot) };
}
