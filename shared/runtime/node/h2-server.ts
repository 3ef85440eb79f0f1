import http2 from "node:http2";
import net from "node:net";
import tls from "node:tls";
import type { EventEmitter } from "node:events";
import type { Exchange, HeaderMap, ListenOptions, PeerIdentity, RequestHead, ServeTarget } from "../../proxy/index.ts";
import { createNodeBody, type NodeRequestBody } from "./body.ts";
import { sniffPreface } from "./h2-preface.ts";
import type { BodyReader, NodeUpstreamResponse } from "./upstream.ts";

// RFC 9113 §8.2.2: connection-specific fields must not appear in HTTP/2 (node refuses to send them).
const CONNECTION_SPECIFIC = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host"]);

/** The HTTP/2 side of a listener: takes connections a front hands it and serves their streams to the engine. */
export interface H2Sessions {
  /** Serves one connection (h2c or TLS with ALPN h2); `peer` is the mesh identity verified behind it, if any. */
  accept(socket: net.Socket, peer?: PeerIdentity): void;
  /** Sends GOAWAY on every open session: in-flight streams finish, then the connections close. */
  beginClose(): void;
  /** Ends every open session at once. */
  dispose(): void;
}

/**
 * createH2Sessions serves HTTP/2 connections to the engine: requests reach it like HTTP/1.1 ones,
 * with `protocol: "HTTP/2"` and the connection's peer identity, and their answers keep upstream
 * trailers (and trailers-only answers stay one HEADERS frame).
 * @example
 * const sessions = createH2Sessions({ port: 0, maxHeaderCount: 100, maxHeaderBytes: 16384 }, target);
 * tlsServer.on("secureConnection", (socket) => sessions.accept(socket, peerOf(socket)));
 */
export function createH2Sessions(options: ListenOptions, target: ServeTarget): H2Sessions {
  const sessions = new Set<http2.ServerHttp2Session>();
  const peers = new WeakMap<object, PeerIdentity>();
  // node:http2 makes the session synchronously inside emit("connection"): this is its peer.
  let accepting: PeerIdentity | undefined;
  const h2 = http2.createServer({
    // nghttp2 refuses header blocks beyond this (the HTTP/1.1 side answers 431 at the same size).
    maxHeaderListPairs: options.maxHeaderCount + 8,
    settings: { maxHeaderListSize: options.maxHeaderBytes, maxConcurrentStreams: 1000 },
  });
  h2.on("session", (session: http2.ServerHttp2Session) => {
    sessions.add(session);
    if (accepting) peers.set(session, accepting);
    session.once("close", () => sessions.delete(session));
    session.on("error", () => session.destroy());
    // As the HTTP/1.1 side's keep-alive timeout: an idle connection is told to go away.
    session.setTimeout(60_000, () => session.close());
  });
  h2.on("request", (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => {
    const session = req.stream.session;
    onRequest(req, res, options, target, session ? peers.get(session) : undefined);
  });
  return {
    accept(socket, peer) {
      accepting = peer;
      try {
        h2.emit("connection", socket);
      } finally {
        accepting = undefined;
      }
    },
    beginClose() {
      for (const session of sessions) session.close();
    },
    dispose() {
      for (const session of sessions) session.destroy();
    },
  };
}

/** The TCP (or TLS) front of a listener that speaks HTTP/2 and HTTP/1.1 on one port. */
export interface Http2Front {
  /** The socket server to listen on. */
  readonly server: net.Server;
  /** No peer identity on these listeners (mesh ports have their own front, mesh-tls.ts). */
  peerOf(socket: object): PeerIdentity | undefined;
  /** Replaces the TLS certificate for new connections. */
  setTls(tls: { readonly cert: string; readonly key: string }): void;
}

/**
 * createHttp2Front serves HTTP/2 beside HTTP/1.1 on one port: on a plain port a connection that opens
 * with the HTTP/2 preface (h2c, prior knowledge) goes to `sessions`, any other to `http1` (a node:http
 * server that never listens itself); with `tls`, ALPN picks h2 or http/1.1.
 * @example
 * const front = createHttp2Front({ port: 8080, http2: true, maxHeaderCount: 100, maxHeaderBytes: 16384 }, httpServer, createH2Sessions(options, target));
 * front.server.listen(8080);
 */
export function createHttp2Front(options: ListenOptions, http1: EventEmitter, sessions: H2Sessions): Http2Front {
  const toH2 = (socket: net.Socket) => sessions.accept(socket);
  let secure: tls.Server | undefined;
  let server: net.Server;
  if (options.tls) {
    const tlsServer = tls.createServer(
      { cert: options.tls.cert, key: options.tls.key, minVersion: "TLSv1.2", ALPNProtocols: ["h2", "http/1.1"] },
      (socket) => {
        if (socket.alpnProtocol === "h2") toH2(socket);
        else http1.emit("connection", socket);
      },
    );
    tlsServer.on("tlsClientError", (_err: Error, socket: tls.TLSSocket) => socket.destroy());
    secure = tlsServer;
    server = tlsServer;
  } else {
    server = net.createServer({ noDelay: true }, (socket) => {
      socket.on("error", () => socket.destroy());
      sniffPreface(socket, toH2, http1);
    });
  }
  // node:http tracks connections (closeIdleConnections, header timeouts) from its 'listening' event on.
  server.once("listening", () => http1.emit("listening"));

  return {
    server,
    peerOf: () => undefined,
    setTls(next) {
      secure?.setSecureContext({ cert: next.cert, key: next.key });
    },
  };
}

function onRequest(
  req: http2.Http2ServerRequest,
  res: http2.Http2ServerResponse,
  options: ListenOptions,
  target: ServeTarget,
  peer: PeerIdentity | undefined,
): void {
  const raw = req.headers;
  const headers: Record<string, string | string[]> = {};
  let count = 0;
  for (const name in raw) {
    if (name.charCodeAt(0) === 0x3a) continue;
    const value = raw[name];
    if (value === undefined) continue;
    headers[name] = value;
    count++;
  }
  if (count > options.maxHeaderCount) return refuse(res, 431, "headers_too_large");
  const method = raw[":method"];
  const path = raw[":path"];
  // Extended CONNECT and plain CONNECT carry no :path: nothing weft can route (RFC 9113 §8.5).
  if (method === undefined || path === undefined || method === "CONNECT") return refuse(res, 400, "bad_request");
  // RFC 9113 §8.3.1: :authority is the host; a Host header is only a fallback.
  const authority = raw[":authority"] ?? (typeof raw.host === "string" ? raw.host : "");
  if (authority) headers.host = authority;
  const stream = req.stream;
  const socket = stream.session?.socket;
  const head: RequestHead = {
    method,
    scheme: socket !== undefined && (socket as tls.TLSSocket).encrypted ? "https" : "http",
    authority,
    path,
    headers,
    clientIp: socket?.remoteAddress ?? "",
    localPort: socket?.localPort ?? 0,
    protocol: "HTTP/2",
    peer,
  };
  const body = createNodeBody(req, { length: stream.endAfterHeaders ? 0 : declaredLength(raw["content-length"]) });
  target.engine.handle(head, body, target.current()).then(
    (exchange) => respond(exchange, res, body),
    (err) => {
      target.onInternalError?.(err);
      if (!res.headersSent) refuse(res, 500, "internal");
      else res.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    },
  );
}

function declaredLength(value: string | undefined): number | undefined {
  return value !== undefined && /^[0-9]{1,15}$/.test(value) ? Number(value) : undefined;
}

function refuse(res: http2.Http2ServerResponse, status: number, reason: string): void {
  res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "x-weft-reason": reason });
  res.end(`${reason}\n`);
}

/** Copies headers minus pseudo-headers and the fields HTTP/2 forbids. */
function h2Fields(headers: HeaderMap): http2.OutgoingHttpHeaders {
  const out: http2.OutgoingHttpHeaders = {};
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || name.charCodeAt(0) === 0x3a || CONNECTION_SPECIFIC.has(name)) continue;
    if (name === "te" && value !== "trailers") continue;
    out[name] = value as string | string[];
  }
  return out;
}

function respond(exchange: Exchange, res: http2.Http2ServerResponse, body: NodeRequestBody): void {
  const stream = res.stream;
  if (stream.destroyed || stream.closed) {
    // The client reset the stream while the engine worked.
    if (exchange.kind === "upstream") (exchange.response as NodeUpstreamResponse).cancel();
    exchange.finish(body.bytesRead, 0, "downstream_disconnect");
    return;
  }
  if (exchange.kind === "local") {
    const text = exchange.body;
    if (text.length === 0) {
      // A single HEADERS frame with END_STREAM: what gRPC calls a trailers-only response.
      stream.respond({ ...h2Fields(exchange.headers), ":status": exchange.status }, { endStream: true });
      exchange.finish(body.bytesRead, 0);
      return;
    }
    const length = Buffer.byteLength(text);
    const headers = h2Fields(exchange.headers);
    headers["content-length"] = String(length);
    res.writeHead(exchange.status, headers);
    res.end(text);
    exchange.finish(body.bytesRead, length);
    return;
  }
  const upstream = exchange.response as NodeUpstreamResponse;
  if (upstream.headersOnly === true) {
    // An HTTP/2 upstream answered with HEADERS alone (gRPC trailers-only): pass it on as one frame too.
    stream.respond({ ...h2Fields(exchange.headers), ":status": exchange.status }, { endStream: true });
    upstream.discard();
    exchange.finish(body.bytesRead, 0);
    return;
  }
  res.writeHead(exchange.status, h2Fields(exchange.headers));
  new H2Relay(exchange, res, body, upstream).start();
}

/** Copies one upstream response body (and its trailers) onto an HTTP/2 stream. */
class H2Relay implements BodyReader {
  readonly exchange: Exchange;
  readonly res: http2.Http2ServerResponse;
  readonly body: NodeRequestBody;
  readonly upstream: NodeUpstreamResponse;
  bytesOut = 0;
  done = false;
  ended = false;
  constructor(exchange: Exchange, res: http2.Http2ServerResponse, body: NodeRequestBody, upstream: NodeUpstreamResponse) {
    this.exchange = exchange;
    this.res = res;
    this.body = body;
    this.upstream = upstream;
  }

  start(): void {
    this.res.once("close", () => {
      if (this.ended) return;
      this.upstream.cancel();
      this.finish("downstream_disconnect");
    });
    this.upstream.read(this);
  }

  data(chunk: Buffer): boolean {
    this.bytesOut += chunk.length;
    if (this.res.write(chunk)) return true;
    this.res.once("drain", () => this.upstream.resume());
    return false;
  }

  end(trailers: HeaderMap | undefined): void {
    this.ended = true;
    if (trailers !== undefined) {
      const fields = h2Fields(trailers);
      if (Object.keys(fields).length > 0) this.res.addTrailers(fields);
    }
    this.res.end();
    this.finish(undefined, trailers);
  }

  abort(): void {
    // The upstream went away mid-body: the client cannot get a complete response, so reset the stream too.
    this.res.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    this.finish("upstream_reset");
  }

  finish(error?: string, trailers?: HeaderMap): void {
    if (this.done) return;
    this.done = true;
    this.exchange.finish(this.body.bytesRead, this.bytesOut, error, trailers);
  }
}
