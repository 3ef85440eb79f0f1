import http from "node:http";
import https from "node:https";
import type { AddressInfo, Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { switchingProtocolsHead, upgradeProtocol, WEBSOCKET, withoutUpgrade, type Exchange, type HeaderMap, type Listener, type ListenOptions, type RequestHead, type ServeTarget } from "../../proxy/index.ts";
import { createNodeBody, type NodeRequestBody } from "./body.ts";
import { createH2Sessions, createHttp2Front } from "./h2-server.ts";
import { createMeshFront, type MeshFront } from "./mesh-tls.ts";
import { createPairSet, serveMeshTcp } from "./tcp-proxy.ts";
import { openTunnel, type Tunnel } from "./tunnel.ts";
import type { BodyReader, NodeUpstreamResponse } from "./upstream.ts";

function writeRawError(socket: Socket, status: number, reason: string) {
  const text = status === 431 ? "Request Header Fields Too Large" : status === 500 ? "Internal Server Error" : "Bad Request";
  if (socket.writable) {
    socket.end(`HTTP/1.1 ${status} ${text}\r\nx-weft-reason: ${reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`);
  }
  socket.destroy();
}

/**
 * listenNode serves the engine over node:http (or node:https with `tls`, or mesh mTLS with `mesh`),
 * streaming bodies and refusing malformed or oversized requests before they reach the engine.
 * @example
 * const l = await listenNode({ port: 8080, maxHeaderCount: 100, maxHeaderBytes: 16384 }, { engine, current: () => view });
 */
export async function listenNode(
  options: ListenOptions,
  target: ServeTarget): Promise<Listener> {
  const serverOptions: http.ServerOptions = {
    maxHeaderSize: options.maxHeaderBytes,
    requireHostHeader: true,
    keepAliveTimeout: 60_000,
    headersTimeout: 30_000,
    // Whole-request timeouts would cut long uploads; the route timeout and idle timeouts bound them instead.
    requestTimeout: 0,
  };
  // With http2 the front terminates TLS (ALPN picks h2 or http/1.1), so node:http sees plain sockets.
  // Mesh ports always offer h2 beside http/1.1: proxies speak HTTP/2 to each other where the port does.
  const h2 = options.http2 === true && !options.mesh;
  const server = options.tls && !h2
    ? https.createServer({ ...serverOptions, cert: options.tls.cert, key: options.tls.key })
    : http.createServer(serverOptions);
  const h2Sessions = h2 || options.mesh ? createH2Sessions(options, target) : undefined;
  const h2Front = h2 ? createHttp2Front(options, server, h2Sessions!) : undefined;
  const meshTcp = options.mesh?.tcp;
  const tcpPairs = meshTcp ? createPairSet() : undefined;
  const meshFront = options.mesh
    ? createMeshFront(options.mesh, server, h2Sessions!.accept, meshTcp && ((socket, peer) => serveMeshTcp(socket, peer, meshTcp, tcpPairs!)))
    : undefined;
  const front: Pick<MeshFront, "server" | "peerOf"> | undefined = meshFront ?? h2Front;
  const accepting = front?.server ?? server;
  let closing = false;

  server.on("clientError", (err: NodeJS.ErrnoException, socket: Socket) => {
    if (err.code === "ECONNRESET" || !socket.writable) {
      socket.destroy();
      return;
    }
    if (err.code === "HPE_HEADER_OVERFLOW") writeRawError(socket, 431, "headers_too_large");
    else writeRawError(socket, 400, "bad_request");
  });

  server.on("request", (req: http.IncomingMessage, res: http.ServerResponse) => {
    const refusal = refusalOf(req, options.maxHeaderCount);
    if (refusal !== undefined) return refuse(res, refusal === "headers_too_large" ? 431 : 400, refusal);
    // Once closing, every response ends its connection so the listener can finish.
    if (closing) res.shouldKeepAlive = false;
    const head = requestHead(req, front);
    const body = createNodeBody(req);
    target.engine.handle(head, body, target.current()).then(
      (exchange) => respond(exchange, res, body),
      (err) => {
        target.onInternalError?.(err);
        if (!res.headersSent) refuse(res, 500, "internal");
        else res.destroy();
      },
    );
  });

  // Upgraded connections, closed when a drain's grace period is over.
  const tunnels = new Set<Tunnel>();
  // A request parsed again as plain HTTP re-enters where node:http takes new connections.
  const plainAgain = server instanceof https.Server ? "secureConnection" : "connection";

  server.on("upgrade", (req: http.IncomingMessage, socket: Socket, early: Buffer) => {
    // node:http let go of the socket and its error listener: an error must not crash the process.
    socket.on("error", destroyOnError);
    const protocol = upgradeProtocol(req.headers);
    if (protocol !== WEBSOCKET) {
      // Only WebSocket is carried; other upgrades (h2c, ...) are ignored, as Envoy does h2c and RFC 9110 §7.8
      // allows: the request head is rewritten without Upgrade and node:http parses it again as plain HTTP.
      socket.off("error", destroyOnError);
      socket.unshift(Buffer.concat([Buffer.from(withoutUpgrade(req.method!, req.url!, req.httpVersion, req.rawHeaders), "latin1"), early]));
      server.emit(plainAgain, socket);
      return;
    }
    const refusal = refusalOf(req, options.maxHeaderCount);
    if (refusal !== undefined) return writeRawError(socket, refusal === "headers_too_large" ? 431 : 400, refusal);
    const head: RequestHead = { ...requestHead(req, front), upgrade: { protocol, tunnel: true } };
    // An upgrade request carries no body (RFC 6455 §4.1): bytes past its head belong to the tunnel.
    const body = createNodeBody(req, { length: 0 });
    target.engine.handle(head, body, target.current()).then(
      (exchange) => answerUpgrade(exchange, req, socket, early, body, tunnels),
      (err) => {
        target.onInternalError?.(err);
        writeRawError(socket, 500, "internal");
      },
    );
  });

  const connections = target.connections;
  if (connections) {
    accepting.on("connection", (socket: Socket) => {
      connections.opened();
      socket.once("close", connections.closed);
    });
  }

  await new Promise<void>((resolve, reject) => {
    accepting.once("error", reject);
    accepting.listen(options.port, options.address ?? "0.0.0.0", () => {
      accepting.off("error", reject);
      resolve();
    });
  });

  return {
    port: (accepting.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        closing = true;
        h2Sessions?.beginClose();
        accepting.close(() => {
          meshFront?.dispose();
          h2Sessions?.dispose();
          resolve();
        });
        server.closeIdleConnections();
      }),
    setTls(tls) {
      if (server instanceof https.Server) server.setSecureContext({ cert: tls.cert, key: tls.key });
      h2Front?.setTls(tls);
    },
    destroy() {
      tcpPairs?.destroyAll("drained");
      for (const tunnel of tunnels) tunnel.close();
    },
  };
}

/** Why a request is refused before the engine sees it (too many headers, a repeated Host), if it is. */
function refusalOf(req: http.IncomingMessage, maxHeaderCount: number): "headers_too_large" | "bad_request" | undefined {
  const raw = req.rawHeaders;
  if (raw.length / 2 > maxHeaderCount) return "headers_too_large";
  // RFC 9112 §3.2: more than one Host is a bad request (node would silently keep the first).
  let hosts = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 4 && name.toLowerCase() === "host") hosts++;
  }
  return hosts > 1 ? "bad_request" : undefined;
}

function requestHead(req: http.IncomingMessage, front: Pick<MeshFront, "peerOf"> | undefined): RequestHead {
  const socket = req.socket;
  return {
    method: req.method!,
    scheme: (socket as TLSSocket).encrypted ? "https" : "http",
    authority: req.headers.host ?? "",
    path: req.url!,
    headers: req.headers,
    clientIp: socket.remoteAddress ?? "",
    localPort: socket.localPort ?? 0,
    peer: front?.peerOf(socket),
  };
}

function destroyOnError(this: Socket): void {
  this.destroy();
}

function endSocket(this: http.ServerResponse): void {
  (this.socket as Socket | null)?.destroySoon();
}

/**
 * Answers an upgrade request: a 101 from upstream becomes a tunnel between the two sockets; anything
 * else (a local refusal, the upstream's own answer) is written as a plain response and the connection closed.
 */
function answerUpgrade(exchange: Exchange, req: http.IncomingMessage, socket: Socket, early: Buffer, body: NodeRequestBody, tunnels: Set<Tunnel>): void {
  if (exchange.kind === "upstream" && exchange.status === 101) {
    const upgraded = (exchange.response as NodeUpstreamResponse).upgraded!;
    if (socket.destroyed) {
      upgraded.socket.destroy();
      exchange.finish(0, 0, "downstream_disconnect");
      return;
    }
    socket.off("error", destroyOnError);
    socket.write(switchingProtocolsHead(exchange.headers));
    const tunnel = openTunnel(socket, upgraded.socket, {
      clientHead: early,
      upstreamHead: upgraded.head,
      idleTimeoutMs: upgraded.idleTimeoutMs,
      onClose(bytesIn, bytesOut, error) {
        tunnels.delete(tunnel);
        exchange.finish(bytesIn, bytesOut, error);
      },
    });
    tunnels.add(tunnel);
    return;
  }
  if (socket.destroyed) {
    // The client left while the engine decided: nobody reads the answer.
    if (exchange.kind === "upstream") exchange.response.discard();
    exchange.finish(0, 0, "downstream_disconnect");
    return;
  }
  const res = new http.ServerResponse(req);
  res.assignSocket(socket);
  res.shouldKeepAlive = false;
  res.once("finish", endSocket);
  respond(exchange, res, body);
}

function refuse(res: http.ServerResponse, status: number, reason: string) {
  res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "x-weft-reason": reason, connection: "close" });
  res.end(`${reason}\n`);
}

function respond(exchange: Exchange, res: http.ServerResponse, body: NodeRequestBody) {
  if (res.destroyed) {
    // The client left while the engine worked: its close has passed, and nobody reads the answer.
    if (exchange.kind === "upstream") (exchange.response as NodeUpstreamResponse).cancel();
    exchange.finish(body.bytesRead, 0, "downstream_disconnect");
    return;
  }
  if (exchange.kind === "local") {
    const text = exchange.body;
    const length = Buffer.byteLength(text);
    exchange.headers["content-length"] = String(length);
    res.writeHead(exchange.status, exchange.headers);
    res.end(text);
    exchange.finish(body.bytesRead, length);
    return;
  }
  const upstream = exchange.response as NodeUpstreamResponse;
  res.writeHead(exchange.status, exchange.headers);
  const relay = new Relay(exchange, res, body, upstream);
  (res as RelayResponse)[RELAY] = relay;
  res.once("close", onClientClose);
  upstream.read(relay);
}

const RELAY = Symbol("weft.relay");
type RelayResponse = http.ServerResponse & { [RELAY]: Relay };

/** Copies one upstream response body to the client; shared listeners find it on the response, so no closures per request. */
class Relay implements BodyReader {
  readonly exchange: Exchange;
  readonly res: http.ServerResponse;
  readonly body: NodeRequestBody;
  readonly upstream: NodeUpstreamResponse;
  bytesOut = 0;
  done = false;
  constructor(exchange: Exchange, res: http.ServerResponse, body: NodeRequestBody, upstream: NodeUpstreamResponse) {
    this.exchange = exchange;
    this.res = res;
    this.body = body;
    this.upstream = upstream;
  }

  data(chunk: Buffer): boolean {
    this.bytesOut += chunk.length;
    if (this.res.write(chunk)) return true;
    this.res.once("drain", onClientDrain);
    return false;
  }

  end(trailers: HeaderMap | undefined): void {
    this.res.end();
    // The trailers are not sent to an HTTP/1.1 client, but their grpc-status is logged.
    this.finish(undefined, trailers);
  }

  abort(): void {
    // The upstream went away mid-body: the client cannot get a complete response, so cut it too.
    this.res.destroy();
    this.finish("upstream_reset");
  }

  finish(error?: string, trailers?: HeaderMap): void {
    if (this.done) return;
    this.done = true;
    this.exchange.finish(this.body.bytesRead, this.bytesOut, error, trailers);
  }
}

function onClientDrain(this: RelayResponse): void {
  this[RELAY].upstream.resume();
}

function onClientClose(this: RelayResponse): void {
  if (this.writableFinished) return;
  const relay = this[RELAY];
  relay.upstream.cancel();
  relay.finish("downstream_disconnect");
}
