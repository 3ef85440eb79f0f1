import { readFileSync } from "node:fs";
import type { Socket } from "node:net";
import { PassThrough } from "node:stream";
import { checkServerIdentity, type ConnectionOptions, type PeerCertificate } from "node:tls";
// The package itself, by path: Bun answers a bare "undici" with its own partial copy (no dispatch).
import { Pool } from "undici/index.js";
import type { Dispatcher } from "undici/index.js";
import {
  isIdempotent,
  type HeaderMap,
  type MeshIdentity,
  type UpstreamClient,
  type UpstreamFailure,
  type UpstreamRequest,
  type UpstreamResponse,
  type UpstreamResult,
  type UpstreamTls,
} from "../../proxy/index.ts";
import type { NodeRequestBody } from "./body.ts";
import { meshClientTlsOptions } from "./mesh-tls.ts";

/** Where an upstream response body goes, chunk by chunk: the adapter's relay implements it. */
export interface BodyReader {
  /** A chunk of the body; false asks for a pause until the response's resume(). */
  data(chunk: Buffer): boolean;
  /** The body is complete; its trailers, if the upstream sent any. */
  end(trailers: HeaderMap | undefined): void;
  /** The upstream went away before the body was complete. */
  abort(): void;
}

/** An upstream response whose body the node adapters read through a BodyReader. */
export interface NodeUpstreamResponse extends UpstreamResponse {
  /** Hands the body to `reader` (once): what already arrived, then the rest as it comes. */
  read(reader: BodyReader): void;
  /** Goes on after a reader's data() returned false. */
  resume(): void;
  /** The client went away: the upstream request stops and its connection is not reused. */
  cancel(): void;
  /** An HTTP/2 answer that was HEADERS alone (gRPC trailers-only): there is no body to read. */
  readonly headersOnly?: boolean;
  /** After a 101: the switched connection, the bytes read past the response head, and its idle timeout. */
  readonly upgraded?: { readonly socket: Socket; readonly head: Buffer; readonly idleTimeoutMs: number };
}

const CONNECT_ERRORS = new Set(["ECONNREFUSED", "ENOTFOUND", "EHOSTUNREACH", "ENETUNREACH", "EAI_AGAIN", "ENOENT", "EACCES", "UND_ERR_CONNECT_TIMEOUT"]);
/** Errors of a connection that closed under a request whose answer had not begun. */
const CLOSED_ERRORS = new Set(["UND_ERR_SOCKET", "ECONNRESET", "EPIPE"]);
/** Bytes of an answer held while no reader is attached yet, before the upstream is paused. */
const PENDING_LIMIT = 65536;
const EMPTY = Buffer.alloc(0);

/** How often pools that hold no connection and no request are let go (endpoints come and go with their workloads). */
const POOL_SWEEP_MS = 60_000;

/** The Node upstream client, and how many keep-alive pools it holds. */
export interface NodeUpstreamClient extends UpstreamClient {
  readonly poolCount: number;
}

/**
 * createNodeUpstreamClient sends requests upstream over HTTP/1.1 with undici's dispatcher: one
 * keep-alive pool per endpoint (per expected peer for mesh mTLS, per server name for TLS
 * origination), bodies streamed both ways with backpressure. Every sweepMs, a pool with no
 * connection, no queued and no running request is closed and forgotten, so that the pools of
 * endpoints that left (a workload rescheduled to a new address) do not pile up.
 * @example
 * const client = createNodeUpstreamClient();
 * const result = await client.forward(request);
 */
export function createNodeUpstreamClient(options: { sweepMs?: number } = {}): NodeUpstreamClient {
  const pools = new Map<string, Pool>();
  /** Mesh pools: one per endpoint and expected peer, replaced when the proxy's certificate changes. */
  const meshPools = new Map<string, { pool: Pool; generation: number }>();
  const sweep = setInterval(() => {
    letGoUnused(pools, (pool) => pool);
    letGoUnused(meshPools, (held) => held.pool);
  }, options.sweepMs ?? POOL_SWEEP_MS);
  (sweep as { unref?: () => void }).unref?.();

  function poolFor(req: UpstreamRequest): Pool | string {
    if (req.mesh) return meshPoolFor(req, req.mesh);
    if (req.tls) return tlsPoolFor(req, req.tls);
    let pool = pools.get(req.endpoint.address);
    if (pool === undefined) {
      pool = newPool(req, false, {});
      pools.set(req.endpoint.address, pool);
    }
    return pool;
  }

  function meshPoolFor(req: UpstreamRequest, mesh: { identity: MeshIdentity; expectedId: string }): Pool {
    const key = `${req.endpoint.address}|${mesh.expectedId}`;
    const held = meshPools.get(key);
    const generation = mesh.identity.generation;
    if (held !== undefined && held.generation === generation) return held.pool;
    // Requests in flight on the old certificate finish; its idle connections close.
    if (held !== undefined) held.pool.close().catch(() => {});
    const pool = newPool(req, true, meshClientTlsOptions(mesh.identity, mesh.expectedId, ["http/1.1"]));
    meshPools.set(key, { pool, generation });
    return pool;
  }

  /** A pool that originates TLS to an external host, verified against the system roots or the CA file; a CA file that cannot be read is a string (the failure detail). */
  function tlsPoolFor(req: UpstreamRequest, tls: UpstreamTls): Pool | string {
    const key = `${req.endpoint.address}|${tls.servername}|${tls.caFile ?? ""}`;
    let pool = pools.get(key);
    if (pool !== undefined) return pool;
    let ca: string | undefined;
    if (tls.caFile !== undefined) {
      try {
        ca = readFileSync(tls.caFile, "utf8");
      } catch (err) {
        return `ca_file_unreadable: ${(err as NodeJS.ErrnoException).code ?? String(err)}`;
      }
    }
    pool = newPool(req, true, {
      servername: tls.servername,
      ...(ca !== undefined ? { ca } : {}),
      rejectUnauthorized: true,
      minVersion: "TLSv1.2",
      // The certificate must be valid for the called host, whatever address the endpoint has.
      checkServerIdentity: (_host: string, cert: PeerCertificate) => checkServerIdentity(tls.servername, cert),
    });
    pools.set(key, pool);
    return pool;
  }

  function forward(req: UpstreamRequest, allowStaleRetry = true): Promise<UpstreamResult> {
    return new Promise((resolve) => {
      const pool = poolFor(req);
      if (typeof pool === "string") {
        resolve({ ok: false, reason: "upstream_tls_failure", detail: pool });
        return;
      }
      const call = new UpstreamCall(req, resolve, allowStaleRetry ? forward : undefined);
      const body = req.body as NodeRequestBody;
      let source: PassThrough | null = null;
      if (body.length !== 0) {
        source = new PassThrough();
        body.sendTo(source, req.maxBodyBytes, req.maxReplayBytes, () => call.fail("body_too_large"));
      }
      try {
        pool.dispatch(
          {
            path: req.path,
            method: req.method,
            headers: sendable(req),
            body: source,
            upgrade: req.upgrade?.protocol ?? null,
            // The try's own timer bounds the wait for the answer; a body may pause as long as its reader does.
            headersTimeout: 0,
            bodyTimeout: 0,
          },
          call,
        );
      } catch (err) {
        // undici refused the request itself (a method or header it will not send).
        call.fail("upstream_protocol_error", (err as NodeJS.ErrnoException).code ?? String(err));
      }
    });
  }

  return {
    forward: (req) => forward(req),
    get poolCount() {
      return pools.size + meshPools.size;
    },
    async close() {
      clearInterval(sweep);
      const all = [...pools.values(), ...[...meshPools.values()].map((held) => held.pool)];
      pools.clear();
      meshPools.clear();
      await Promise.all(all.map((pool) => pool.destroy().catch(() => {})));
    },
  };
}

/** Closes and forgets the pools that nothing uses: no connection open, no request queued or sent. */
function letGoUnused<T>(held: Map<string, T>, poolOf: (entry: T) => Pool): void {
  for (const [key, entry] of held) {
    const pool = poolOf(entry);
    const stats = pool.stats;
    if (stats.connected !== 0 || stats.pending !== 0 || stats.running !== 0) continue;
    held.delete(key);
    pool.close().catch(() => {});
  }
}

/** A pool for one endpoint with the request's connection settings (the first request's, as a pool outlives config changes). */
function newPool(req: UpstreamRequest, secure: boolean, tls: ConnectionOptions): Pool {
  const ep = req.endpoint;
  const host = ep.host.includes(":") ? `[${ep.host}]` : ep.host;
  const origin = ep.socketPath ? `${secure ? "https" : "http"}://localhost` : `${secure ? "https" : "http"}://${host}:${ep.port}`;
  return new Pool(origin, {
    connections: req.maxConnections,
    pipelining: 1,
    // Idle connections close before the usual 65 s server keep-alive; a server's shorter Keep-Alive hint wins.
    keepAliveTimeout: req.idleTimeoutMs,
    keepAliveMaxTimeout: req.idleTimeoutMs,
    connect: { ...tls, timeout: req.connectTimeoutMs, ...(ep.socketPath ? { socketPath: ep.socketPath } : {}) },
  });
}

/** The request's headers as undici sends them: it writes the upgrade pair itself and sends no Expect (the listener answered 100-continue). */
function sendable(req: UpstreamRequest): Record<string, string | string[]> {
  const headers = req.headers;
  if (req.upgrade === undefined && headers.expect === undefined) return headers;
  const out: Record<string, string | string[]> = {};
  for (const name in headers) {
    if (name === "expect" || (req.upgrade !== undefined && (name === "connection" || name === "upgrade"))) continue;
    out[name] = headers[name]!;
  }
  return out;
}

/**
 * One try upstream, and its answer once it comes: the hot path allocates this object, a controller
 * inside undici, and no closures.
 */
class UpstreamCall implements Dispatcher.DispatchHandler, NodeUpstreamResponse {
  readonly req: UpstreamRequest;
  readonly settle: (result: UpstreamResult | PromiseLike<UpstreamResult>) => void;
  /** Sends the request once more (a pooled connection that closed under it), or undefined on that second send. */
  readonly resend: ((req: UpstreamRequest, allowStaleRetry: boolean) => Promise<UpstreamResult>) | undefined;
  readonly timer: ReturnType<typeof setTimeout>;
  controller: Dispatcher.DispatchController | undefined = undefined;
  settled = false;
  /** undici is writing the request: the connection is up (and mTLS checked out). */
  started = false;
  status = 0;
  headers: HeaderMap = {};
  upgraded: NodeUpstreamResponse["upgraded"] = undefined;
  reader: BodyReader | undefined = undefined;
  /** Chunks that came before a reader; `ended`/`aborted` what happened meanwhile. */
  pending: Buffer[] | undefined = undefined;
  /** How many of `pending` the reader has taken. */
  taken = 0;
  pendingBytes = 0;
  ended = false;
  aborted = false;
  trailers: HeaderMap | undefined = undefined;

  constructor(req: UpstreamRequest, settle: UpstreamCall["settle"], resend: UpstreamCall["resend"]) {
    this.req = req;
    this.settle = settle;
    this.resend = resend;
    this.timer = setTimeout(onTimeout, req.timeoutMs, this);
  }

  fail(reason: UpstreamFailure, detail?: string): void {
    if (this.settled) return;
    this.settled = true;
    clearTimeout(this.timer);
    this.controller?.abort(new Error(reason));
    this.settle({ ok: false, reason, detail });
  }

  // undici's handler

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    this.started = true;
    // Failed (timed out, body too large) while it waited for a connection: it is not sent.
    if (this.settled) controller.abort(new Error("abandoned"));
  }

  onResponseStart(controller: Dispatcher.DispatchController, status: number, headers: HeaderMap): void {
    if (this.settled) {
      controller.abort(new Error("abandoned"));
      return;
    }
    this.settled = true;
    clearTimeout(this.timer);
    this.status = status;
    this.headers = headers;
    this.settle({ ok: true, response: this });
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    // undici flushes its parser with an empty read on resume; on Bun's node:net that is all a resume
    // gets at first. Handed on, it would satisfy a Web stream's pull with nothing, and the next pull
    // would resume again: a loop of empty chunks that never lets the socket be read.
    if (chunk.length === 0) return;
    const reader = this.reader;
    if (reader !== undefined && this.pending === undefined) {
      if (!reader.data(chunk)) controller.pause();
      return;
    }
    // Held until a reader comes, or behind chunks it has not taken yet.
    (this.pending ??= []).push(chunk);
    this.pendingBytes += chunk.length;
    if (reader !== undefined || this.pendingBytes > PENDING_LIMIT) controller.pause();
  }

  onResponseEnd(_controller: Dispatcher.DispatchController, trailers: HeaderMap): void {
    const some = hasAny(trailers) ? trailers : undefined;
    if (this.reader !== undefined && this.pending === undefined) this.reader.end(some);
    else {
      this.ended = true;
      this.trailers = some;
    }
  }

  onRequestUpgrade(_controller: Dispatcher.DispatchController, status: number, headers: HeaderMap, socket: Socket): void {
    if (this.settled) {
      socket.destroy();
      return;
    }
    this.settled = true;
    clearTimeout(this.timer);
    // undici put back the bytes past the response head and let go of the socket (and its error
    // listener): an error before the tunnel listens must not crash the process.
    socket.setTimeout(0);
    socket.on("error", destroyOnError);
    this.status = status;
    this.headers = headers;
    this.upgraded = { socket, head: EMPTY, idleTimeoutMs: this.req.upgrade!.idleTimeoutMs };
    this.settle({ ok: true, response: this });
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    if (this.settled) {
      if (this.status === 0 || this.upgraded !== undefined) return;
      // The upstream went away mid-body.
      if (this.reader !== undefined && this.pending === undefined) this.reader.abort();
      else this.aborted = true;
      return;
    }
    const req = this.req;
    const code = (err as NodeJS.ErrnoException).code;
    // A pooled connection the upstream closed as the request went out, with nothing of an answer
    // read: sent once more on another connection. A close there cannot be told apart from an
    // application that read the request and died, so (as Go's net/http does) only idempotent
    // methods are resent silently; anything else goes back to the engine, whose retry policy decides.
    if (this.resend !== undefined && this.started && code !== undefined && CLOSED_ERRORS.has(code) && reusedConnection(err) && req.body.replayable && isIdempotent(req.method)) {
      this.settled = true;
      clearTimeout(this.timer);
      this.settle(this.resend(req, false));
      return;
    }
    // Originating TLS, a failure before the request went out with a TLS error is the TLS layer's.
    if (req.tls && !this.started && isTlsError(code)) this.fail("upstream_tls_failure", code);
    else if (!this.started || (code !== undefined && CONNECT_ERRORS.has(code))) this.fail("upstream_connect_failure", code === "UND_ERR_CONNECT_TIMEOUT" ? "connect timeout" : (code ?? err.message));
    else if (code?.startsWith("HPE_") || code === "UND_ERR_HEADERS_OVERFLOW") this.fail("upstream_protocol_error", code);
    else this.fail("upstream_reset", code);
  }

  // The answer, as the adapters read it

  read(reader: BodyReader): void {
    this.reader = reader;
    this.flush();
  }

  resume(): void {
    this.flush();
  }

  /** Hands the reader what is held, as far as it takes it, then what happened meanwhile; or lets undici go on. */
  flush(): void {
    const reader = this.reader!;
    const pending = this.pending;
    if (pending !== undefined) {
      while (this.taken < pending.length) {
        const chunk = pending[this.taken++]!;
        if (!reader.data(chunk)) return;
      }
      this.pending = undefined;
      this.taken = 0;
      this.pendingBytes = 0;
    }
    if (this.ended) {
      this.ended = false;
      reader.end(this.trailers);
    } else if (this.aborted) {
      this.aborted = false;
      reader.abort();
    } else this.controller?.resume();
  }

  cancel(): void {
    if (this.upgraded !== undefined) this.upgraded.socket.destroy();
    else this.controller?.abort(new Error("downstream_disconnect"));
  }

  discard(): void {
    if (this.upgraded !== undefined) this.upgraded.socket.destroy();
    else this.read(DRAIN);
  }
}

/** Reads a body to its end and forgets it, so that the connection can serve the next request. */
const DRAIN: BodyReader = { data: () => true, end: () => {}, abort: () => {} };

function onTimeout(call: UpstreamCall): void {
  call.fail("timeout");
}

function destroyOnError(this: Socket): void {
  this.destroy();
}

function hasAny(headers: HeaderMap | undefined): boolean {
  if (headers === undefined) return false;
  for (const _ in headers) return true;
  return false;
}

/** undici says how much its connection had read when it closed: anything means it had answered before. */
function reusedConnection(err: Error): boolean {
  const socket = (err as { socket?: { bytesRead?: number } }).socket;
  return (socket?.bytesRead ?? 0) > 0;
}

// OpenSSL's X509 verification codes as Node reports them, and its TLS/SSL error families.
const TLS_CODES = /^(ERR_TLS_|ERR_SSL_|UNABLE_TO_|CERT_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|HOSTNAME_MISMATCH|INVALID_CA|EPROTO$)/;

function isTlsError(code: string | undefined): boolean {
  return code !== undefined && TLS_CODES.test(code);
}

/**
 * readWhole reads a response body into memory with its trailers: for small bodies of declared
 * length (the Web bridge) and for callers that need the whole answer; `aborted` if it broke off.
 * @example
 * const { body, trailers } = await readWhole(result.response as NodeUpstreamResponse);
 */
export function readWhole(response: NodeUpstreamResponse): Promise<{ body: Buffer; trailers: HeaderMap | undefined; aborted: boolean }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    response.read({
      data(chunk) {
        chunks.push(chunk);
        return true;
      },
      end(trailers) {
        resolve({ body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks), trailers, aborted: false });
      },
      abort() {
        resolve({ body: Buffer.concat(chunks), trailers: undefined, aborted: true });
      },
    });
  });
}
