import type { Listener, ListenOptions, ProxyRuntime, ServeTarget } from "../../proxy/index.ts";
import { createBridgedUpstreamClient, listenMeshWeb } from "../node/web-bridge.ts";
import { serveWeb, webHead } from "../web/exchange.ts";

// The subset of Deno.serve this adapter uses; declared here so the tree type-checks without Deno's types.
interface DenoServer {
  readonly addr: { port: number };
  shutdown(): Promise<void>;
}
interface DenoGlobal {
  serve(options: Record<string, unknown>, handler: (request: Request, info: { remoteAddr: { hostname: string } }) => Response | Promise<Response>): DenoServer;
}
const deno = (globalThis as unknown as { Deno: DenoGlobal }).Deno;

const KEEP_BYTES = 65536;

function listenDeno(options: ListenOptions, target: ServeTarget): Promise<Listener> {
  if (options.mesh) return listenMeshWeb(options, target);
  const scheme = options.tls ? "https" : "http";
  return new Promise((resolve) => {
    let port = 0;
    const server = deno.serve(
      {
        port: options.port,
        hostname: options.address ?? "0.0.0.0",
        ...(options.tls ? { cert: options.tls.cert, key: options.tls.key } : {}),
        onListen: (addr: { port: number }) => {
          port = addr.port;
          resolve({
            port,
            close: () => server.shutdown(),
            setTls() {
              // Deno.serve cannot swap certificates in place; the role restarts the listener instead.
            },
          });
        },
      },
      (request, info) => {
        let count = 0;
        request.headers.forEach(() => count++);
        if (count > options.maxHeaderCount) {
          return new Response("headers_too_large\n", { status: 431, headers: { "x-weft-reason": "headers_too_large" } });
        }
        return serveWeb(target, request, webHead(request, scheme, info.remoteAddr.hostname, port), KEEP_BYTES);
      },
    );
  });
}

/** The Deno runtime: Deno.serve listeners, undici upstreams (Deno's fetch drops Host). */
export const denoRuntime: ProxyRuntime = {
  name: "deno",
  // Deno's fetch always sends the URL's host as Host (and re-sends a request whose reused connection
  // was reset): upstreams go through the Node client (undici on Deno's Node compatibility).
  createUpstreamClient: createBridgedUpstreamClient,
  listen: listenDeno,
  serveFetch(handler, { port, address }) {
    return new Promise((resolve) => {
      const server = deno.serve({ port, hostname: address, onListen: (addr: { port: number }) => resolve({ port: addr.port, close: () => server.shutdown() }) }, handler);
    });
  },
};
