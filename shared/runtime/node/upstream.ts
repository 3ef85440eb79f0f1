import { readFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import type { Socket } from "node:net";
import { checkServerIdentity, type PeerCertificate } from "node:tls";
import {
  isIdempotent,
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

/** An upstream response whose body is a node stream, for the node adapter to write out. */
export interface NodeUpstreamResponse extends UpstreamResponse {
  readonly message: http.IncomingMessage;
  /** The request it answers, destroyed if the client goes away. */
  readonly request: http.ClientRequest;
  /** After a 101: the switched connection, the bytes read past the response head, and its idle timeout. */
  readonly upgraded?: { readonly socket: Socket; readonly head: Buffer; readonly idleTimeoutMs: number };
}

const CONNECT_ERRORS = new Set(["ECONNREFUSED", "ENOTFOUND", "EHOSTUNREACH", "ENETUNREACH", "EAI_AGAIN", "ENOENT", "EACCES"]);

export interface NodeUpstreamOptions {
  /**
   * Send requests with non-idempotent methods (POST, PATCH, ...) on a fresh connection, never a
   * pooled one. For node:http implementations that silently re-send a request whose reused
   * connection was reset (Deno's), since the upstream may already have acted on it.
   */
  readonly freshConnectionForUnsafeMethods?: boolean;
}

/**
 * createNodeUpstreamClient sends requests upstream over node:http with one keep-alive pool per
 * endpoint, streaming bodies both ways.
 * @example
 * const client = createNodeUpstreamClient();
 * const result = await client.forward(request);
 */
export function createNodeUpstreamClient(options: NodeUpstreamOptions = {}): UpstreamClient {
  const agents = new Map<string, http.Agent>();
  /** Mesh pools: one per endpoint and expected peer, rebuilt when the proxy's certificate changes. */
  const meshAgents = new Map<string, { agent: https.Agent; generation: number }>();

  /** TLS-origination pools: one per endpoint, server name and CA file. */
  const tlsAgents = new Map<string, https.Agent>();

  function agentFor(req: UpstreamRequest): http.Agent | string {
    if (req.mesh) return meshAgentFor(req, req.mesh);
    if (req.tls) return tlsAgentFor(req, req.tls);
    let agent = agents.get(req.endpoint.address);
    if (agent === undefined) {
      // LIFO keeps a few connections hot instead of spreading load over all idle ones;
      // the idle timeout stays below the usual 65 s server keep-alive (Node's default).
      agent = new http.Agent({ keepAlive: true, maxSockets: req.maxConnections, scheduling: "lifo", timeout: req.idleTimeoutMs });
      agents.set(req.endpoint.address, agent);
    }
    return agent;
  }

  function meshAgentFor(req: UpstreamRequest, mesh: { identity: MeshIdentity; expectedId: string }): https.Agent {
    const key = `${req.endpoint.address}|${mesh.expectedId}`;
    const held = meshAgents.get(key);
    const generation = mesh.identity.generation;
    if (held !== undefined && held.generation === generation) return held.agent;
    if (held !== undefined) retire(held.agent);
    const agent = new https.Agent({
      keepAlive: true,
      maxSockets: req.maxConnections,
      scheduling: "lifo",
      timeout: req.idleTimeoutMs,
      ...meshClientTlsOptions(mesh.identity, mesh.expectedId, ["http/1.1"]),
    });
    meshAgents.set(key, { agent, generation });
    return agent;
  }

  /** A pool that originates TLS to an external host, verified against the system roots or the CA file; a CA file that cannot be read is a string (the failure detail). */
  function tlsAgentFor(req: UpstreamRequest, tls: UpstreamTls): https.Agent | string {
    const key = `${req.endpoint.address}|${tls.servername}|${tls.caFile ?? ""}`;
    let agent = tlsAgents.get(key);
    if (agent !== undefined) return agent;
    let ca: string | undefined;
    if (tls.caFile !== undefined) {
      try {
        ca = readFileSync(tls.caFile, "utf8");
      } catch (err) {
        return `ca_file_unreadable: ${(err as NodeJS.ErrnoException).code ?? String(err)}`;
      }
    }
    agent = new https.Agent({
      keepAlive: true,
      maxSockets: req.maxConnections,
      scheduling: "lifo",
      timeout: req.idleTimeoutMs,
      servername: tls.servername,
      ...(ca !== undefined ? { ca } : {}),
      rejectUnauthorized: true,
      minVersion: "TLSv1.2",
      ALPNProtocols: ["http/1.1"],
      // The certificate must be valid for the called host, whatever address the endpoint has.
      checkServerIdentity: (_host: string, cert: PeerCertificate) => checkServerIdentity(tls.servername, cert),
    });
    tlsAgents.set(key, agent);
    return agent;
  }

  function forward(req: UpstreamRequest, allowStaleRetry = true): Promise<UpstreamResult> {
    return new Promise((resolve) => {
      const fresh = options.freshConnectionForUnsafeMethods === true && !isIdempotent(req.method);
      const agent = agentFor(req);
      if (typeof agent === "string") {
        resolve({ ok: false, reason: "upstream_tls_failure", detail: agent });
        return;
      }
      const ep = req.endpoint;
      const secure = req.mesh !== undefined || req.tls !== undefined;
      const outgoing = (secure ? https : http).request({
        // A fresh connection still needs the pool's TLS settings: a one-off agent of the same kind.
        agent: fresh ? (secure ? oneShot(agent as https.Agent) : false) : agent,
        host: ep.socketPath ? undefined : ep.host,
        port: ep.socketPath ? undefined : ep.port,
        socketPath: ep.socketPath,
        method: req.method,
        path: req.path,
        headers: req.headers,
        setHost: false,
      }) as CallRequest;
      const call = new UpstreamCall(req, outgoing, resolve, allowStaleRetry ? forward : undefined);
      outgoing[CALL] = call;
      outgoing.on("socket", onSocket);
      outgoing.on("response", onResponse);
      outgoing.on("error", onError);
      if (req.upgrade) outgoing.on("upgrade", onUpgrade);
      const body = req.body as NodeRequestBody;
      if (body.length === 0) outgoing.end();
      else body.sendTo(outgoing, req.maxBodyBytes, req.maxReplayBytes, () => call.fail("body_too_large"));
    });
  }

  return {
    forward: (req) => forward(req),
    async close() {
      for (const agent of agents.values()) agent.destroy();
      for (const held of meshAgents.values()) held.agent.destroy();
      for (const agent of tlsAgents.values()) agent.destroy();
      agents.clear();
      meshAgents.clear();
      tlsAgents.clear();
    },
  };
}

const CALL = Symbol("weft.upstreamCall");
type CallRequest = http.ClientRequest & { [CALL]: UpstreamCall };

/**
 * One try upstream. The hot path allocates this object and no closures: the request's listeners
 * are shared functions that find their call on the request.
 */
class UpstreamCall {
  readonly req: UpstreamRequest;
  readonly outgoing: CallRequest;
  readonly resolve: (result: UpstreamResult | PromiseLike<UpstreamResult>) => void;
  /** Sends the request once more on a fresh connection (a stale pooled one), or undefined on that second send. */
  readonly resend: ((req: UpstreamRequest, allowStaleRetry: boolean) => Promise<UpstreamResult>) | undefined;
  settled = false;
  connected = false;
  /** TLS origination: the TCP connection is up (the handshake may still fail). */
  tcpConnected = false;
  timer: ReturnType<typeof setTimeout>;
  connectTimer: ReturnType<typeof setTimeout> | undefined = undefined;

  constructor(
    req: UpstreamRequest,
    outgoing: CallRequest,
    resolve: (result: UpstreamResult | PromiseLike<UpstreamResult>) => void,
    resend: UpstreamCall["resend"],
  ) {
    this.req = req;
    this.outgoing = outgoing;
    this.resolve = resolve;
    this.resend = resend;
    this.timer = setTimeout(onTimeout, req.timeoutMs, this);
  }

  fail(reason: UpstreamFailure, detail?: string): void {
    if (this.settled) return;
    this.settled = true;
    clearTimeout(this.timer);
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.outgoing.destroy();
    this.resolve({ ok: false, reason, detail });
  }
}

/** The upstream response handed to the engine; its body is read by the node adapter. */
class CallResponse implements NodeUpstreamResponse {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly message: http.IncomingMessage;
  readonly request: http.ClientRequest;
  readonly upgraded: NodeUpstreamResponse["upgraded"];
  constructor(message: http.IncomingMessage, request: http.ClientRequest, upgraded?: NodeUpstreamResponse["upgraded"]) {
    this.status = message.statusCode ?? 502;
    this.headers = message.headers;
    this.message = message;
    this.request = request;
    this.upgraded = upgraded;
  }
  discard(): void {
    if (this.upgraded) this.upgraded.socket.destroy();
    else this.message.resume();
  }
}

function onTimeout(call: UpstreamCall): void {
  call.fail("timeout");
}

function onConnectTimeout(call: UpstreamCall): void {
  call.fail("upstream_connect_failure", "connect timeout");
}

function onSocket(this: CallRequest, socket: Socket & { [CALL]?: UpstreamCall }): void {
  const call = this[CALL];
  if (!socket.connecting) {
    call.connected = true;
    return;
  }
  call.connectTimer = setTimeout(onConnectTimeout, call.req.connectTimeoutMs, call);
  // Over mTLS the upstream is reached once the handshake (and the peer's SPIFFE ID) checked out.
  socket[CALL] = call;
  socket.once(call.req.mesh || call.req.tls ? "secureConnect" : "connect", onConnect);
  if (call.req.tls) socket.once("connect", onTcpConnect);
}

function onTcpConnect(this: Socket & { [CALL]?: UpstreamCall }): void {
  const call = this[CALL];
  if (call !== undefined) call.tcpConnected = true;
}

function onConnect(this: Socket & { [CALL]?: UpstreamCall }): void {
  const call = this[CALL];
  if (call === undefined) return;
  this[CALL] = undefined;
  call.connected = true;
  clearTimeout(call.connectTimer);
}

function onResponse(this: CallRequest, message: http.IncomingMessage): void {
  const call = this[CALL];
  if (call.settled) {
    message.resume();
    return;
  }
  call.settled = true;
  clearTimeout(call.timer);
  call.resolve({ ok: true, response: new CallResponse(message, this) });
}

/** A 101: node:http has let go of the socket; it is the adapter's to tunnel from here. */
function onUpgrade(this: CallRequest, message: http.IncomingMessage, socket: Socket, head: Buffer): void {
  const call = this[CALL];
  if (call.settled) {
    socket.destroy();
    return;
  }
  call.settled = true;
  clearTimeout(call.timer);
  // The pool's idle timeout no longer applies: the tunnel keeps its own. node:http took its error
  // listener away, and an error before the tunnel listens must not crash the process.
  socket.setTimeout(0);
  socket.on("error", destroyOnError);
  call.resolve({ ok: true, response: new CallResponse(message, this, { socket, head, idleTimeoutMs: call.req.upgrade!.idleTimeoutMs }) });
}

function destroyOnError(this: Socket): void {
  this.destroy();
}

function onError(this: CallRequest, err: NodeJS.ErrnoException): void {
  const call = this[CALL];
  if (call.settled) return;
  const req = call.req;
  // A pooled connection the upstream closed while idle fails on first use and is sent once
  // more on a fresh connection. A reset there cannot be told apart from an application that
  // read the request and died, so (as Go's net/http does) only idempotent methods are resent
  // silently; anything else goes back to the engine, whose retry policy decides.
  if (
    call.resend !== undefined &&
    this.reusedSocket &&
    (err.code === "ECONNRESET" || err.code === "EPIPE") &&
    req.body.replayable &&
    isIdempotent(req.method)
  ) {
    call.settled = true;
    clearTimeout(call.timer);
    call.resolve(call.resend(req, false));
    return;
  }
  // Originating TLS, a failure after the TCP connect and before the handshake completed is the TLS layer's.
  if (req.tls && !call.connected && (call.tcpConnected || isTlsError(err.code))) call.fail("upstream_tls_failure", err.code ?? err.message);
  else if (!call.connected || (err.code !== undefined && CONNECT_ERRORS.has(err.code))) call.fail("upstream_connect_failure", err.code);
  else if (err.code?.startsWith("HPE_")) call.fail("upstream_protocol_error", err.code);
  else call.fail("upstream_reset", err.code);
}

// OpenSSL's X509 verification codes as Node reports them, and its TLS/SSL error families.
const TLS_CODES = /^(ERR_TLS_|ERR_SSL_|UNABLE_TO_|CERT_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|HOSTNAME_MISMATCH|INVALID_CA)/;

function isTlsError(code: string | undefined): boolean {
  return code !== undefined && TLS_CODES.test(code);
}

/** Lets a pool made with an older certificate finish its requests, then close every connection. */
function retire(agent: http.Agent): void {
  for (const sockets of Object.values(agent.freeSockets)) for (const socket of sockets ?? []) socket.destroy();
  agent.on("free", (socket: Socket) => socket.destroy());
}

/** A keep-alive-less agent with the TLS settings of `pool`, for one request on its own connection. */
function oneShot(pool: https.Agent): https.Agent {
  return new https.Agent({ ...pool.options, keepAlive: false });
}
