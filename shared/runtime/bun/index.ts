import type { Listener, ListenOptions, ProxyRuntime, ServeTarget } from "../../proxy/index.ts";
import { createBridgedUpstreamClient, listenMeshWeb } from "../node/web-bridge.ts";
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

/**
 * The Bun runtime: Bun.serve listeners, and upstreams through the Node client (undici on Bun's
 * node:net and node:tls) rather than Bun's fetch. fetch hands every request to its own HTTP client
 * thread and back; the Node client stays on the JavaScript thread and cost less CPU per proxied
 * request (42–44 µs against 50–54 in the gateway bench, `bench/RESULTS.md`).
 */
export const bunRuntime: ProxyRuntime = {
  name: "bun",
  createUpstreamClient: createBridgedUpstreamClient,
  listen: listenBun,
  async serveFetch(handler, { port, address }) {
    const server = bun.serve({ port, hostname: address, fetch: handler });
    return { port: server.port, close: async () => void (await server.stop(true)) };
  },
};
