import http from "node:http";
import type { Socket } from "node:net";
import { isIdempotent, type UpstreamClient, type UpstreamFailure, type UpstreamRequest, type UpstreamResponse, type UpstreamResult } from "../../proxy/index.ts";
import type { NodeRequestBody } from "./body.ts";

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

  function agentFor(req: UpstreamRequest): http.Agent {
    let agent = agents.get(req.endpoint.address);
    if (agent === undefined) {
      // LIFO keeps a few connections hot instead of spreading load over all idle ones;
      // the idle timeout stays below the usual 65 s server keep-alive (Node's default).
      agent = new http.Agent({ keepAlive: true, maxSockets: req.maxConnections, scheduling: "lifo", timeout: req.idleTimeoutMs });
      agents.set(req.endpoint.address, agent);
    }
    return agent;
  }

  function forward(req: UpstreamRequest, allowStaleRetry = true): Promise<UpstreamResult> {
    return new Promise((resolve) => {
      const body = req.body as NodeRequestBody;
      const ep = req.endpoint;
      let settled = false;
      let connected = false;
      let connectTimer: ReturnType<typeof setTimeout> | undefined;
      const outgoing = http.request({
        agent: options.freshConnectionForUnsafeMethods && !isIdempotent(req.method) ? false : agentFor(req),
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
        socket.once("connect", () => {
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
      agents.clear();
    },
  };
}
