import net from "node:net";
import tls from "node:tls";
import {
  decodeTransportHeader,
  encodeTransportHeader,
  MAX_CLIENT_HELLO_BYTES,
  MESH_TCP_ALPN,
  readClientHelloSni,
  TRANSPORT_HEADER_BYTES,
  type ConnectionHead,
  type InboundTcpTarget,
  type Listener,
  type PeerIdentity,
  type TcpListenOptions,
  type TcpReason,
  type TcpServeTarget,
  type TcpSession,
  type TcpUpstream,
} from "../../proxy/index.ts";
import { meshClientTlsOptions } from "./mesh-tls.ts";

const DEFAULT_HELLO_TIMEOUT_MS = 10_000;
/** Record headers of a ClientHello split over several records, on top of the handshake bound. */
const MAX_HELLO_BUFFER = MAX_CLIENT_HELLO_BYTES + 1024;

/** The open connection pairs of one listener, so a drain can end them at the end of its grace period. */
class PairSet {
  readonly pairs = new Set<Pair>();
  destroyAll(reason: TcpReason): void {
    for (const pair of [...this.pairs]) pair.end(reason);
  }
}

/**
 * listenTcpNode serves a gateway's tcp listener (bytes to the route's destination) or tls listener
 * (the ClientHello's SNI is read, never decrypted, and the connection routed by it), over node:net.
 * @example
 * const l = await listenTcpNode({ port: 5432, protocol: "tcp" }, { proxy: createTcpProxy(), current: () => view });
 */
export async function listenTcpNode(options: TcpListenOptions, target: TcpServeTarget): Promise<Listener> {
  const pairs = new PairSet();
  const helloTimeoutMs = options.helloTimeoutMs ?? DEFAULT_HELLO_TIMEOUT_MS;
  const server = net.createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true }, (socket) => {
    const head = { clientIp: socket.remoteAddress ?? "", localPort: socket.localPort ?? 0 };
    if (options.protocol === "tcp") return route(socket, head, []);
    readHello(socket, helloTimeoutMs, (result, buffered) => {
      if (typeof result !== "string") return route(socket, { ...head, sni: result.sni }, buffered);
      const session = target.proxy.refuse(head, "tls", result);
      socket.destroy();
      session.done(bytesOf(buffered), 0);
    });
  });

  function route(socket: net.Socket, head: ConnectionHead, buffered: Buffer[]) {
    const session = target.external ? openExternal(target, head, options.protocol) : openRouted(target, head, options.protocol);
    if (!session.upstream) {
      socket.destroy();
      session.done(bytesOf(buffered), 0);
      return;
    }
    new Pair(socket, session, session.upstream, buffered, pairs).connect();
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.address ?? "0.0.0.0", () => {
      server.off("error", reject);
      resolve();
    });
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
    setTls() {},
    destroy: () => pairs.destroyAll("drained"),
  };
}

function openRouted(target: TcpServeTarget, head: ConnectionHead, protocol: "tcp" | "tls"): TcpSession {
  const view = target.current();
  return view ? target.proxy.open(head, protocol, view) : target.proxy.refuse(head, protocol, "no_route");
}

function openExternal(target: TcpServeTarget | InboundTcpTarget, head: ConnectionHead, protocol: "tcp" | "tls"): TcpSession {
  const view = target.external!();
  return view ? target.proxy.openExternal(head, protocol, view) : target.proxy.refuse(head, protocol, "no_route");
}

/**
 * serveMeshTcp takes a mesh mTLS connection that negotiated MESH_TCP_ALPN: reads the transport
 * header (the app port), applies the inbound authorization, then pipes to the app on loopback.
 * A refused connection is closed before anything reaches the app.
 * @example
 * createMeshFront(mesh, httpServer, (socket, peer) => serveMeshTcp(socket, peer, mesh.tcp!, pairs));
 */
export function serveMeshTcp(socket: tls.TLSSocket, peer: PeerIdentity | undefined, target: InboundTcpTarget, pairs: { destroyAll(reason: TcpReason): void }): void {
  const clientIp = socket.remoteAddress ?? "";
  let buffered: Buffer = Buffer.alloc(0);
  const timer = setTimeout(() => refuse("handshake_timeout", 0), DEFAULT_HELLO_TIMEOUT_MS);
  function refuse(reason: TcpReason, port: number) {
    clearTimeout(timer);
    socket.off("data", onData);
    const session = target.proxy.refuse({ clientIp, localPort: port, peer }, "tcp", reason);
    socket.destroy();
    session.done(buffered.length, 0);
  }
  function onData(chunk: Buffer) {
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
    const header = decodeTransportHeader(buffered);
    if (!header.ok) {
      if (header.reason !== "incomplete") refuse("bad_transport_header", 0);
      return;
    }
    clearTimeout(timer);
    socket.off("data", onData);
    socket.pause();
    const rest0 = buffered.subarray(TRANSPORT_HEADER_BYTES);
    if (target.external) return serveEgress(socket, { clientIp, localPort: header.port, peer }, rest0, target, pairs as PairSet);
    const view = target.current();
    const head: ConnectionHead = { clientIp, localPort: header.port, peer };
    const session = view ? target.proxy.openInbound(head, view) : target.proxy.refuse(head, "tcp", "unknown_port");
    const rest = rest0;
    if (!session.upstream) {
      socket.destroy();
      session.done(rest.length, 0);
      return;
    }
    new Pair(socket, session, session.upstream, rest.length > 0 ? [rest] : [], pairs as PairSet).connect();
  }
  socket.on("error", () => socket.destroy());
  socket.on("data", onData);
}

/**
 * An egress gateway's mesh TCP connection: on a tls port the SNI is read from the caller's ClientHello
 * (passed on unchanged), then the external view authorizes and routes it.
 */
function serveEgress(socket: tls.TLSSocket, head: ConnectionHead, rest: Buffer, target: InboundTcpTarget, pairs: PairSet): void {
  const protocol = target.external!()?.protocolOf(head.localPort) ?? "tcp";
  const open = (h: ConnectionHead, buffered: Buffer[]) => {
    const session = openExternal(target, h, protocol);
    if (!session.upstream) {
      socket.destroy();
      session.done(bytesOf(buffered), 0);
      return;
    }
    new Pair(socket, session, session.upstream, buffered, pairs).connect();
  };
  if (protocol === "tcp") return open(head, rest.length > 0 ? [rest] : []);
  if (rest.length > 0) socket.unshift(rest);
  readHello(socket, DEFAULT_HELLO_TIMEOUT_MS, (result, buffered) => {
    if (typeof result !== "string") return open({ ...head, sni: result.sni }, buffered);
    const session = target.proxy.refuse(head, "tls", result);
    socket.destroy();
    session.done(bytesOf(buffered), 0);
  });
}

/** A PairSet for the mesh inbound port; `destroyAll` ends its proxied connections. */
export function createPairSet(): { destroyAll(reason: TcpReason): void } {
  return new PairSet();
}

/** Reads a tls listener's first bytes until the ClientHello's SNI is known, the hello is refused, or time runs out. */
function readHello(socket: net.Socket, timeoutMs: number, done: (result: { sni: string } | TcpReason, buffered: Buffer[]) => void): void {
  const chunks: Buffer[] = [];
  let length = 0;
  let settled = false;
  const finish = (result: { sni: string } | TcpReason) => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    socket.off("data", onData);
    socket.off("end", onEnd);
    socket.pause();
    done(result, chunks);
  };
  const timer = setTimeout(() => finish("handshake_timeout"), timeoutMs);
  const onEnd = () => finish("bad_client_hello");
  const onData = (chunk: Buffer) => {
    chunks.push(chunk);
    length += chunk.length;
    const all = chunks.length === 1 ? chunk : Buffer.concat(chunks, length);
    const r = readClientHelloSni(all);
    if (r.ok) return finish(r.sni === undefined ? "no_sni" : { sni: r.sni });
    if (r.reason === "not_tls") return finish("not_tls");
    if (r.reason !== "incomplete" || length > MAX_HELLO_BUFFER) finish("bad_client_hello");
  };
  socket.on("error", () => finish("downstream_reset"));
  socket.on("data", onData);
  socket.on("end", onEnd);
  socket.resume();
}

function bytesOf(chunks: readonly Buffer[]): number {
  let n = 0;
  for (const c of chunks) n += c.length;
  return n;
}

/**
 * One proxied connection: the client socket, the upstream socket (plain, or mesh mTLS with the
 * transport header), bytes counted both ways, half-close passed on, the idle timeout, one record.
 */
class Pair {
  readonly client: net.Socket;
  readonly session: TcpSession;
  readonly target: TcpUpstream;
  readonly pending: Buffer[];
  readonly set: PairSet;
  upstream: net.Socket | undefined;
  bytesIn = 0;
  bytesOut = 0;
  closed = 0;
  ended = false;
  reason: TcpReason | undefined;
  connectTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(client: net.Socket, session: TcpSession, target: TcpUpstream, pending: Buffer[], set: PairSet) {
    this.client = client;
    this.session = session;
    this.target = target;
    this.pending = pending;
    this.set = set;
    for (const chunk of pending) this.bytesIn += chunk.length;
  }

  connect(): void {
    this.set.pairs.add(this);
    const { endpoint, mesh } = this.target;
    const client = this.client;
    client.on("error", () => this.end("downstream_reset"));
    client.once("close", () => this.closedOne());
    let upstream: net.Socket;
    if (mesh) {
      upstream = tls.connect({
        ...(endpoint.socketPath ? { path: endpoint.socketPath } : { host: endpoint.host, port: endpoint.port }),
        ...meshClientTlsOptions(mesh.identity, mesh.expectedId, [MESH_TCP_ALPN]),
      });
      upstream.once("secureConnect", () => {
        // A sidecar that does not speak raw TCP would read the bytes as HTTP: stop here instead.
        if ((upstream as tls.TLSSocket).alpnProtocol !== MESH_TCP_ALPN) return this.end("upstream_connect_failure");
        upstream.write(encodeTransportHeader(mesh.port));
        this.connected();
      });
    } else {
      const options = { allowHalfOpen: true, noDelay: true };
      upstream = endpoint.socketPath ? net.connect({ ...options, path: endpoint.socketPath }) : net.connect({ ...options, host: endpoint.host, port: endpoint.port });
      upstream.once("connect", () => this.connected());
    }
    this.upstream = upstream;
    this.connectTimer = setTimeout(() => this.end("upstream_connect_failure"), this.target.connectTimeoutMs);
    upstream.on("error", () => this.end(this.connectTimer === undefined ? "upstream_reset" : "upstream_connect_failure"));
    upstream.once("close", () => this.closedOne());
  }

  connected(): void {
    clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
    if (this.ended) return;
    const { client, upstream } = this;
    if (!upstream) return;
    upstream.setNoDelay(true);
    for (const chunk of this.pending) upstream.write(chunk);
    this.pending.length = 0;
    client.on("data", (chunk: Buffer) => (this.bytesIn += chunk.length));
    upstream.on("data", (chunk: Buffer) => (this.bytesOut += chunk.length));
    client.pipe(upstream);
    upstream.pipe(client);
    // Bytes either way pass through the client socket, so its inactivity is the connection's.
    client.setTimeout(this.target.idleTimeoutMs, () => this.end("idle_timeout"));
    client.resume();
  }

  /** Ends both sides at once (a failure, the idle timeout, a drain). */
  end(reason: TcpReason): void {
    if (this.ended) return;
    this.ended = true;
    this.reason ??= reason;
    clearTimeout(this.connectTimer);
    this.client.destroy();
    this.upstream?.destroy();
  }

  closedOne(): void {
    this.closed++;
    if (this.closed === 1) {
      // One side is gone for good: the other cannot carry on alone.
      if (this.client.destroyed && this.upstream && !this.upstream.destroyed) this.upstream.destroySoon();
      else if (this.upstream?.destroyed && !this.client.destroyed) this.client.destroySoon();
      if (this.upstream === undefined) this.closed++;
    }
    if (this.closed < 2) return;
    this.set.pairs.delete(this);
    clearTimeout(this.connectTimer);
    this.session.done(this.bytesIn, this.bytesOut, this.reason);
  }
}
