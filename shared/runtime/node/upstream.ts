import http from "node:http";
import https from "node:https";
import type { Socket } from "node:net";
import type { PeerCertificate } from "node:tls";
import { checkSvidLeaf } from "../../identity/index.ts";
import { isIdempotent, type MeshIdentity, type UpstreamClient, type UpstreamFailure, type UpstreamRequest, type UpstreamResponse, type UpstreamResult } from "../../proxy/index.ts";
import type { NodeRequestBody } from "./body.ts";
import { meshTlsOptions } from "./mesh-tls.ts";

/** An upstream response whose body is a node stream, for the node adapter to write out. */
export interface NodeUpstreamResponse extends UpstreamResponse {
  readonly message: http.IncomingMessage;
  /** The request it answers, destroyed if the client goes away. */
  readonly request: http.ClientRequest;
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

  function agentFor(req: UpstreamRequest): http.Agent {
    if (req.mesh) return meshAgentFor(req, req.mesh);
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
    const trustDomain = mesh.identity.trustDomain;
    const agent = new https.Agent({
      keepAlive: true,
      maxSockets: req.maxConnections,
      scheduling: "lifo",
      timeout: req.idleTimeoutMs,
      ...meshTlsOptions(mesh.identity.current()!),
      minVersion: "TLSv1.2",
      ALPNProtocols: ["http/1.1"],
      // node:tls has verified the chain against the bundle; the peer must also be the expected workload.
      checkServerIdentity: (_host: string, cert: PeerCertificate) => {
        const r = checkSvidLeaf(new Uint8Array(cert.raw), { trustDomain, expectedId: mesh.expectedId });
        return r.ok ? undefined : Object.assign(new Error(`peer certificate refused: ${r.reason}`), { code: `svid_${r.reason}` });
      },
    });
    meshAgents.set(key, { agent, generation });
    return agent;
  }

  function forward(req: UpstreamRequest, allowStaleRetry = true): Promise<UpstreamResult> {
    return new Promise((resolve) => {
      const body = req.body as NodeRequestBody;
      const ep = req.endpoint;
      let settled = false;
      let connected = false;
      let connectTimer: ReturnType<typeof setTimeout> | undefined;
      const fresh = options.freshConnectionForUnsafeMethods && !isIdempotent(req.method);
      const agent = agentFor(req);
      const outgoing = (req.mesh ? https : http).request({
        // A fresh connection still needs the pool's TLS settings: a one-off agent of the same kind.
        agent: fresh ? (req.mesh ? oneShot(agent as https.Agent) : false) : agent,
        host: ep.socketPath ? undefined : ep.host,
        port: ep.socketPath ? undefined : ep.port,
        socketPath: ep.socketPath,
        method: req.method,
        path: req.path,
        headers: req.headers,
        setHost: false,
      });
      const timer = setTimeout(() => fail("timeout"), req.timeoutMs);

      function fail(reason: UpstreamFailure, detail?: string) {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (connectTimer) clearTimeout(connectTimer);
        outgoing.destroy();
        resolve({ ok: false, reason, detail });
      }

      outgoing.on("socket", (socket: Socket) => {
        if (!socket.connecting) {
          connected = true;
          return;
        }
        connectTimer = setTimeout(() => fail("upstream_connect_failure", "connect timeout"), req.connectTimeoutMs);
        // Over mTLS the upstream is reached once the handshake (and the peer's SPIFFE ID) checked out.
        socket.once(req.mesh ? "secureConnect" : "connect", () => {
          connected = true;
          clearTimeout(connectTimer);
        });
      });
      outgoing.on("response", (message) => {
        if (settled) {
          message.resume();
          return;
        }
        settled = true;
        clearTimeout(timer);
        const response: NodeUpstreamResponse = {
          status: message.statusCode ?? 502,
          headers: message.headers,
          message,
          request: outgoing,
          discard: () => {
            message.resume();
          },
        };
        resolve({ ok: true, response });
      });
      outgoing.on("error", (err: NodeJS.ErrnoException) => {
        if (settled) return;
        // A pooled connection the upstream closed while idle fails on first use and is sent once
        // more on a fresh connection. A reset there cannot be told apart from an application that
        // read the request and died, so (as Go's net/http does) only idempotent methods are resent
        // silently; anything else goes back to the engine, whose retry policy decides.
        if (
          allowStaleRetry &&
          outgoing.reusedSocket &&
          (err.code === "ECONNRESET" || err.code === "EPIPE") &&
          body.replayable &&
          isIdempotent(req.method)
        ) {
          settled = true;
          clearTimeout(timer);
          resolve(forward(req, false));
          return;
        }
        if (!connected || (err.code !== undefined && CONNECT_ERRORS.has(err.code))) fail("upstream_connect_failure", err.code);
        else if (err.code === "HPE_INVALID_CONSTANT" || err.code?.startsWith("HPE_")) fail("upstream_protocol_error", err.code);
        else fail("upstream_reset", err.code);
      });
      body.sendTo(outgoing, req.maxBodyBytes, req.maxReplayBytes, () => fail("body_too_large"));
    });
  }

  return {
    forward: (req) => forward(req),
    async close() {
      for (const agent of agents.values()) agent.destroy();
      for (const held of meshAgents.values()) held.agent.destroy();
      agents.clear();
      meshAgents.clear();
    },
  };
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
