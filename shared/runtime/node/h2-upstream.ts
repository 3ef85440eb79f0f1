import http2 from "node:http2";
import net from "node:net";
import tls from "node:tls";
import { REFUSED_STREAM_DETAIL, type HeaderMap, type UpstreamClient, type UpstreamFailure, type UpstreamRequest, type UpstreamResult } from "../../proxy/index.ts";
import type { NodeRequestBody } from "./body.ts";
import { meshClientTlsOptions } from "./mesh-tls.ts";
import type { BodyReader, NodeUpstreamResponse } from "./upstream.ts";

const { NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM, NGHTTP2_FLAG_END_STREAM } = http2.constants;

// RFC 9113 §8.2.2: connection-specific fields never go on an HTTP/2 request; `te` only as "trailers".
const NOT_SENT = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host", "http2-settings"]);

/** Streams opened on one session before another connection is made (gRPC servers commonly allow 100). */
const DEFAULT_MAX_STREAMS = 100;

/** The failure detail of a mesh connection whose server chose HTTP/1.1 over ALPN (a peer without h2). */
export const ALPN_HTTP1 = "alpn_http1";

/** How long a mesh peer that chose HTTP/1.1 is called over HTTP/1.1 before h2 is offered again. */
const HTTP1_PEER_MS = 60_000;

export interface NodeH2UpstreamOptions {
  /** Streams per connection before the next request opens another connection (default 100, or less if the server says so). */
  readonly maxConcurrentStreams?: number;
}

interface PooledSession {
  readonly session: http2.ClientHttp2Session;
  /** Pool key: the endpoint, and for mesh calls the expected peer. */
  readonly key: string;
  /** The mesh identity generation the connection was made with (0 for plaintext). */
  readonly generation: number;
  active: number;
  /** The connection was made (a failure before that is a connect failure). */
  connected: boolean;
  /** Why the session failed, if it did. */
  error: string | undefined;
}

/**
 * createNodeH2UpstreamClient reaches upstreams over HTTP/2: cleartext (h2c, prior knowledge) as gRPC
 * servers expect, or mesh mTLS with ALPN h2 to another proxy (`req.mesh`: this proxy's SVID, the
 * expected peer's SPIFFE ID checked). Requests to one endpoint share a multiplexed session, a second
 * connection opens only when every session has its streams' worth in flight (up to `maxConnections`),
 * a certificate renewal sends new requests to new sessions while old ones finish, and response
 * trailers (grpc-status, grpc-message) come back at the end of the response's body (BodyReader.end).
 * @example
 * const client = createNodeH2UpstreamClient({ maxConcurrentStreams: 100 });
 * const result = await client.forward({ ...request, http2: true });
 */
export function createNodeH2UpstreamClient(options: NodeH2UpstreamOptions = {}): UpstreamClient {
  const pools = new Map<string, PooledSession[]>();
  const maxStreams = options.maxConcurrentStreams ?? DEFAULT_MAX_STREAMS;

  function drop(key: string, pooled: PooledSession): void {
    const pool = pools.get(key);
    if (pool === undefined) return;
    const index = pool.indexOf(pooled);
    if (index >= 0) pool.splice(index, 1);
    if (pool.length === 0) pools.delete(key);
  }

  function connect(req: UpstreamRequest, key: string): PooledSession {
    const ep = req.endpoint;
    const mesh = req.mesh;
    const host = ep.host.includes(":") ? `[${ep.host}]` : ep.host;
    const authority = ep.socketPath ? "http://localhost" : `${mesh ? "https" : "http"}://${host}:${ep.port}`;
    const session = http2.connect(authority, {
      createConnection: () => {
        if (!mesh) return ep.socketPath ? net.connect(ep.socketPath) : net.connect({ host: ep.host, port: ep.port, noDelay: true });
        const socket = connectMesh(req);
        // Heard before the session's own listeners: the streams then fail with the TLS reason (svid_*, ALPN_HTTP1).
        socket.once("error", (err: NodeJS.ErrnoException) => (pooled.error ??= err.code ?? err.message));
        socket.once("secureConnect", () => {
          // node:http2 cannot be stopped from starting here (destroying the socket now crashes it): the
          // peer refuses the preface, and the streams fail as a connect failure the caller may resend.
          if (socket.alpnProtocol !== "h2") pooled.error = ALPN_HTTP1;
        });
        return socket;
      },
    });
    const pooled: PooledSession = { session, key, generation: mesh ? mesh.identity.generation : 0, active: 0, connected: false, error: undefined };
    let pool = pools.get(key);
    if (pool === undefined) pools.set(key, (pool = []));
    pool.push(pooled);
    // Errors reach the streams; the session only leaves the pool. GOAWAY: finish what runs, take no more.
    session.on("error", (err: NodeJS.ErrnoException) => {
      pooled.error = err.code ?? err.message;
      drop(key, pooled);
    });
    session.once("goaway", () => drop(key, pooled));
    session.once("close", () => drop(key, pooled));
    session.setTimeout(req.idleTimeoutMs, () => {
      if (pooled.active === 0) {
        drop(key, pooled);
        session.close();
      }
    });
    const timer = setTimeout(() => {
      if (session.connecting) session.destroy(Object.assign(new Error("connect timeout"), { code: "ETIMEDOUT_CONNECT" }));
    }, req.connectTimeoutMs);
    session.once("connect", () => {
      pooled.connected = true;
      clearTimeout(timer);
    });
    session.once("close", () => clearTimeout(timer));
    return pooled;
  }

  function sessionFor(req: UpstreamRequest): PooledSession {
    const mesh = req.mesh;
    const key = mesh ? `${req.endpoint.address}|${mesh.expectedId}` : req.endpoint.address;
    const pool = pools.get(key);
    let least: PooledSession | undefined;
    if (pool !== undefined) {
      for (let i = pool.length - 1; i >= 0; i--) {
        const pooled = pool[i]!;
        const s = pooled.session;
        if (mesh && pooled.generation !== mesh.identity.generation) {
          // Made with a certificate since renewed: it finishes its streams (GOAWAY), new ones go to a new session.
          pool.splice(i, 1);
          s.close();
          continue;
        }
        if (s.closed || s.destroyed) continue;
        const limit = Math.min(maxStreams, s.remoteSettings.maxConcurrentStreams ?? maxStreams);
        if (pooled.active < limit) return pooled;
        if (least === undefined || pooled.active < least.active) least = pooled;
      }
    }
    // Every session is full: another connection if allowed, else queue on the least busy (nghttp2 holds the stream).
    if (least !== undefined && (pool?.length ?? 0) >= req.maxConnections) return least;
    if (pool !== undefined && pool.length === 0) pools.delete(key);
    return connect(req, key);
  }

  function forward(req: UpstreamRequest): Promise<UpstreamResult> {
    return new Promise((resolve) => {
      const pooled = sessionFor(req);
      const headers: http2.OutgoingHttpHeaders = {
        ":method": req.method,
        ":path": req.path,
        ":scheme": req.mesh ? "https" : "http",
        ":authority": typeof req.headers.host === "string" ? req.headers.host : req.endpoint.address,
      };
      for (const name in req.headers) {
        if (NOT_SENT.has(name)) continue;
        const value = req.headers[name]!;
        if (name === "te" && value !== "trailers") continue;
        headers[name] = value;
      }
      const body = req.body as NodeRequestBody;
      let stream: http2.ClientHttp2Stream;
      try {
        stream = pooled.session.request(headers, { endStream: body.length === 0 });
      } catch (err) {
        resolve({ ok: false, reason: "upstream_connect_failure", detail: (err as NodeJS.ErrnoException).code });
        return;
      }
      pooled.active++;
      new H2Call(req, pooled, stream, resolve).start(body);
    });
  }

  return {
    forward,
    async close() {
      for (const pool of pools.values()) for (const pooled of pool) pooled.session.destroy();
      pools.clear();
    },
  };
}

/** Opens a mesh mTLS connection offering h2 (and http/1.1, so that a peer without h2 says so). */
function connectMesh(req: UpstreamRequest): tls.TLSSocket {
  const { endpoint: ep, mesh } = req;
  const options = meshClientTlsOptions(mesh!.identity, mesh!.expectedId, ["h2", "http/1.1"]);
  const socket = ep.socketPath ? tls.connect({ ...options, path: ep.socketPath }) : tls.connect({ ...options, host: ep.host, port: ep.port });
  socket.setNoDelay(true);
  return socket;
}

/**
 * withHttp2Upstreams sends requests marked `http2` (services whose port speaks http2 or grpc) over
 * HTTP/2, to mesh peers too (mTLS with ALPN h2), and every other request through `http1`. A mesh peer
 * that answers ALPN with http/1.1 (a proxy without h2) gets this request, and for a minute its
 * requests, over `http1` instead.
 * @example
 * const client = withHttp2Upstreams(createNodeUpstreamClient());
 */
export function withHttp2Upstreams(http1: UpstreamClient, h2: UpstreamClient = createNodeH2UpstreamClient()): UpstreamClient {
  const http1Peers = new Map<string, number>();
  async function forwardMesh(req: UpstreamRequest): Promise<UpstreamResult> {
    const key = req.endpoint.address;
    const until = http1Peers.get(key);
    if (until !== undefined) {
      if (until > Date.now()) return http1.forward(req);
      http1Peers.delete(key);
    }
    const result = await h2.forward(req);
    if (result.ok || result.detail !== ALPN_HTTP1) return result;
    // Bounded: a mesh of many old peers must not grow this without limit.
    if (http1Peers.size >= 1024) http1Peers.clear();
    http1Peers.set(key, Date.now() + HTTP1_PEER_MS);
    // The request never reached the peer; it can go again if its body is still held.
    return req.body.replayable ? http1.forward(req) : result;
  }
  return {
    forward: (req) => (req.http2 !== true ? http1.forward(req) : req.mesh === undefined ? h2.forward(req) : forwardMesh(req)),
    async close() {
      await Promise.all([http1.close(), h2.close()]);
    },
  };
}

/**
 * The stream as H2Response reads an upstream body: data, end, aborted, trailers once they came,
 * and `headersOnly` when the response HEADERS frame ended the stream (node's endAfterHeaders stays
 * false on client streams).
 */
export type RelayedStream = http2.ClientHttp2Stream & { trailers?: HeaderMap; headersOnly?: boolean };

const CALL = Symbol("weft.h2Call");
type CallStream = RelayedStream & { [CALL]: H2Call };

/**
 * One try on an HTTP/2 stream. The hot path allocates this object and no closures (but the body's
 * size guard): the stream's listeners are shared functions that find their call on the stream.
 */
class H2Call {
  readonly req: UpstreamRequest;
  readonly pooled: PooledSession;
  readonly stream: RelayedStream;
  readonly resolve: (result: UpstreamResult) => void;
  readonly timer: ReturnType<typeof setTimeout>;
  settled = false;
  responded = false;
  released = false;
  /** The code of the error the stream ended with, if any. */
  error: string | undefined = undefined;

  constructor(req: UpstreamRequest, pooled: PooledSession, stream: http2.ClientHttp2Stream, resolve: (result: UpstreamResult) => void) {
    this.req = req;
    this.pooled = pooled;
    this.stream = stream;
    this.resolve = resolve;
    this.timer = setTimeout(onCallTimeout, req.timeoutMs, this);
  }

  start(body: NodeRequestBody): void {
    const stream = this.stream as CallStream;
    stream[CALL] = this;
    stream.on("response", onCallResponse);
    stream.on("trailers", onCallTrailers);
    // A stream error is reported through `close` below; without a listener it would throw.
    stream.on("error", onCallError);
    stream.once("close", onCallClose);
    if (body.length !== 0) body.sendTo(stream, this.req.maxBodyBytes, this.req.maxReplayBytes, () => this.fail("body_too_large"));
  }

  onResponse(raw: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader): void {
    if (this.settled) return;
    this.settled = true;
    this.responded = true;
    clearTimeout(this.timer);
    this.resolve({ ok: true, response: new H2Response(raw, this.stream) });
  }

  onClose(): void {
    this.release();
    const stream = this.stream;
    if (!this.settled) {
      // Closed before any response: refused streams never reached the application (RFC 9113 §8.7).
      const code = stream.rstCode;
      if (this.pooled.error === ALPN_HTTP1 || !this.pooled.connected) this.fail("upstream_connect_failure", this.pooled.error ?? this.error);
      else if (code === NGHTTP2_REFUSED_STREAM) this.fail("upstream_reset", REFUSED_STREAM_DETAIL);
      else this.fail("upstream_reset", this.pooled.error ?? `rst_stream ${code}`);
      return;
    }
    // The upstream reset the stream mid-body: tell the relay as node:http does.
    if (this.responded && !stream.readableEnded) stream.emit("aborted");
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.pooled.active--;
  }

  fail(reason: UpstreamFailure, detail?: string): void {
    if (this.settled) return;
    this.settled = true;
    clearTimeout(this.timer);
    if (!this.stream.closed) this.stream.close(NGHTTP2_CANCEL);
    this.resolve({ ok: false, reason, detail });
  }
}

/** An HTTP/2 upstream answer; its body and trailers are read off the stream. */
class H2Response implements NodeUpstreamResponse {
  readonly status: number;
  readonly headers: HeaderMap;
  readonly stream: RelayedStream;
  readonly headersOnly: boolean;
  constructor(raw: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader, stream: RelayedStream) {
    this.status = Number(raw[":status"] ?? 502);
    this.headers = withoutPseudo(raw);
    this.stream = stream;
    this.headersOnly = stream.headersOnly === true;
  }
  read(reader: BodyReader): void {
    const stream = this.stream;
    stream.on("data", (chunk: Buffer) => {
      if (!reader.data(chunk)) stream.pause();
    });
    stream.once("end", () => reader.end(stream.trailers));
    stream.once("aborted", () => reader.abort());
  }
  resume(): void {
    this.stream.resume();
  }
  cancel(): void {
    closeUnread(this.stream);
  }
  discard(): void {
    closeUnread(this.stream);
  }
}

/** Resets a stream nobody will read: it must still flow to its end, or it never closes (nor its draining session). */
function closeUnread(stream: RelayedStream): void {
  stream.resume();
  stream.close(NGHTTP2_CANCEL);
}

function onCallTimeout(call: H2Call): void {
  call.fail("timeout");
}

function onCallResponse(this: CallStream, raw: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader, flags: number): void {
  this.headersOnly = (flags & NGHTTP2_FLAG_END_STREAM) !== 0;
  this[CALL].onResponse(raw);
}

function onCallTrailers(this: CallStream, raw: http2.IncomingHttpHeaders): void {
  this.trailers = withoutPseudo(raw);
}

function onCallError(this: CallStream, err: NodeJS.ErrnoException): void {
  this[CALL].error ??= err.code;
}

function onCallClose(this: CallStream): void {
  this[CALL].onClose();
}

function withoutPseudo(raw: http2.IncomingHttpHeaders): HeaderMap {
  const out: Record<string, string | string[]> = {};
  for (const name in raw) {
    if (name.charCodeAt(0) === 0x3a) continue;
    const value = raw[name];
    if (value !== undefined) out[name] = value;
  }
  return out;
}

