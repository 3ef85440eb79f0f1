import type { Listener, ListenOptions, ProxyRuntime, ServeTarget, UpstreamClient } from "../../proxy/index.ts";
import { createNodeUpstreamClient } from "../node/upstream.ts";
import { bridgeWebToNode, listenMeshWeb } from "../node/web-bridge.ts";
import { createFetchUpstreamClient } from "../web/fetch-upstream.ts";
import { serveWeb, webHead } from "../web/exchange.ts";

// The subset of Bun.serve this adapter uses; declared here so the tree type-checks without bun-types.
interface BunServer {
  readonly port: number;
  requestIP(request: Request): { address: string } | null;
  stop(closeActiveConnections?: boolean): Promise<void> | void;
  reload(options: Record<string, unknown>): void;
}
interface BunGlobal {
  serve(options: Record<string, unknown>): BunServer;
}
const bun = (globalThis as unknown as { Bun: BunGlobal }).Bun;

const KEEP_BYTES = 65536;

function listenBun(options: ListenOptions, target: ServeTarget): Promise<Listener> {
  if (options.mesh) return listenMeshWeb(options, target);
  const scheme = options.tls ? "https" : "http";
  let port = 0;
  const fetchHandler = (request: Request, server: BunServer) => {
    // Bun's Headers know their count (as many as forEach visits): no walk over them here.
    if ((request.headers as Headers & { count: number }).count > options.maxHeaderCount) {
      return new Response("headers_too_large\n", { status: 431, headers: { "x-weft-reason": "headers_too_large", connection: "close" } });
    }
    const head = webHead(request, scheme, server.requestIP(request)?.address ?? "", port);
    return serveWeb(target, request, head, KEEP_BYTES);
  };
  const server = bun.serve({
    port: options.port,
    hostname: options.address ?? "0.0.0.0",
    tls: options.tls ? { cert: options.tls.cert, key: options.tls.key } : undefined,
    maxRequestBodySize: Number.MAX_SAFE_INTEGER,
    idleTimeout: 60,
    fetch: fetchHandler,
    error: () => new Response("bad_request\n", { status: 400, headers: { "x-weft-reason": "bad_request" } }),
  });
  port = server.port;
  return Promise.resolve({
    port,
    close: async () => {
      await server.stop(false);
    },
    setTls(tls) {
      server.reload({ fetch: fetchHandler, tls: { cert: tls.cert, key: tls.key } });
    },
  });
}

/** Bun's fetch for plain upstreams; the Node client (undici on Bun's node:tls) where mesh mTLS must check the peer's SPIFFE ID or TLS is originated. */
function createBunUpstreamClient(): UpstreamClient {
  const plain = createFetchUpstreamClient({ decompress: false });
  const mesh = bridgeWebToNode(createNodeUpstreamClient());
  return {
    forward: (req) => (req.mesh || req.tls ? mesh.forward(req) : plain.forward(req)),
    close: async () => {
      await Promise.all([plain.close(), mesh.close()]);
    },
  };
}

/** Concurrent fetches a Bun process allows when BUN_CONFIG_MAX_HTTP_REQUESTS is not set. */
const BUN_DEFAULT_MAX_HTTP_REQUESTS = 256;

/**
 * bunWarnings says what this Bun process's settings limit: Bun's fetch keeps at most
 * BUN_CONFIG_MAX_HTTP_REQUESTS requests in flight (256 unless set when the process starts), and
 * every plain upstream request of the gateway goes through fetch.
 * @example
 * for (const w of bunWarnings()) log.warn(w.msg, w.fields);
 */
export function bunWarnings(): { msg: string; fields: Record<string, unknown> }[] {
  const env = (globalThis as unknown as { process?: { env: Record<string, string | undefined> } }).process?.env ?? {};
  const set = Number(env.BUN_CONFIG_MAX_HTTP_REQUESTS);
  if (Number.isFinite(set) && set > BUN_DEFAULT_MAX_HTTP_REQUESTS) return [];
  return [
    {
      msg: "Bun queues upstream requests beyond BUN_CONFIG_MAX_HTTP_REQUESTS in flight; set it (e.g. 4096) in the environment that starts the proxy",
      fields: { limit: Number.isFinite(set) && set > 0 ? set : BUN_DEFAULT_MAX_HTTP_REQUESTS },
    },
  ];
}

/** The Bun runtime: Bun.serve listeners and Bun's fetch (which keeps Host and, told so, compressed bodies). */
export const bunRuntime: ProxyRuntime = {
  name: "bun",
  createUpstreamClient: createBunUpstreamClient,
  listen: listenBun,
  async serveFetch(handler, { port, address }) {
    const server = bun.serve({ port, hostname: address, fetch: handler });
    return { port: server.port, close: async () => void (await server.stop(true)) };
  },
};
