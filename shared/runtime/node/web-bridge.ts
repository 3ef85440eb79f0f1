import http from "node:http";
import { Readable } from "node:stream";
import { getRequestListener } from "@hono/node-server";
import type { HeaderMap, Listener, ListenOptions, ServeTarget, UpstreamClient } from "../../proxy/index.ts";
import { serveWeb, webHead, type WebRequestBody, type WebUpstreamResponse } from "../web/exchange.ts";
import type { NodeRequestBody } from "./body.ts";
import { createMeshFront } from "./mesh-tls.ts";
import { createNodeUpstreamClient, readWhole, type NodeUpstreamResponse } from "./upstream.ts";

/** Lets a Web-runtime adapter send through a Node upstream client: Web request bodies become Node streams, Node response bodies Web ones. */
function bridgeWebToNode(node: UpstreamClient): UpstreamClient {
  return {
    async forward(req) {
      const web = req.body as WebRequestBody;
      const bridged: NodeRequestBody = {
        length: web.length,
        get replayable() {
          return web.replayable;
        },
        get bytesRead() {
          return web.bytesRead;
        },
        sendTo(target) {
          const data = web.take();
          if (data === null) target.end();
          else if (data instanceof Uint8Array) target.end(data);
          else Readable.fromWeb(data as import("node:stream/web").ReadableStream).pipe(target);
        },
      };
      const result = await node.forward({ ...req, body: bridged });
      if (!result.ok) return result;
      return { ok: true, response: new BridgedResponse(result.response as NodeUpstreamResponse) };
    },
    close: () => node.close(),
  };
}

/**
 * createBridgedUpstreamClient is the upstream client of the Web-runtime adapters (Bun, Deno): the
 * Node client (undici on the runtime's node:net and node:tls), with bodies bridged between Web and Node streams.
 * @example
 * const client = createBridgedUpstreamClient();
 */
export function createBridgedUpstreamClient(): UpstreamClient {
  return bridgeWebToNode(createNodeUpstreamClient());
}

/** A node upstream answer as a Web one: its body becomes a Web stream when read as one. */
class BridgedResponse implements WebUpstreamResponse {
  readonly status: number;
  readonly headers: HeaderMap;
  readonly node: NodeUpstreamResponse;
  constructor(node: NodeUpstreamResponse) {
    this.status = node.status;
    this.headers = node.headers;
    this.node = node;
  }
  #body: ReadableStream<Uint8Array> | undefined = undefined;
  /** The body as a Web stream; it starts reading on the consumer's first pull, so looking at it takes nothing. */
  get body(): ReadableStream<Uint8Array> {
    if (this.#body !== undefined) return this.#body;
    const node = this.node;
    let reading = false;
    this.#body = new ReadableStream<Uint8Array>(
      {
        pull(controller) {
          if (reading) {
            node.resume();
            return;
          }
          reading = true;
          node.read({
            data(chunk) {
              controller.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
              return (controller.desiredSize ?? 0) > 0;
            },
            end: () => controller.close(),
            abort: () => controller.error(new Error("upstream_reset")),
          });
        },
        cancel: () => node.cancel(),
      },
      // Nothing is pulled before a consumer reads; each read asks the upstream for more.
      { highWaterMark: 0 },
    );
    return this.#body;
  }
  async bytes(): Promise<Uint8Array<ArrayBuffer>> {
    const whole = await readWhole(this.node);
    if (whole.aborted) throw new Error("upstream_reset");
    const copy = new Uint8Array(whole.body.byteLength);
    copy.set(whole.body);
    return copy;
  }
  discard(): void {
    this.node.discard();
  }
}

const KEEP_BYTES = 65536;

/**
 * listenMeshWeb serves a mesh mTLS port for a Web-runtime adapter: node:tls terminates mTLS (Bun.serve
 * and Deno.serve cannot show the client certificate), node:http parses, and the engine sees Web
 * Requests as on the adapter's own listeners.
 * @example
 * const listener = await listenMeshWeb({ port: 15006, mesh, maxHeaderCount: 100, maxHeaderBytes: 16384 }, target);
 */
export async function listenMeshWeb(
  options: ListenOptions,
  target: ServeTarget): Promise<Listener> {
  let port = 0;
  const handler = getRequestListener(
    (request, env) => {
      let count = 0;
      request.headers.forEach(() => count++);
      if (count > options.maxHeaderCount) {
        return new Response("headers_too_large\n", { status: 431, headers: { "x-weft-reason": "headers_too_large", connection: "close" } });
      }
      const socket = (env as { incoming: http.IncomingMessage }).incoming.socket;
      const head = { ...webHead(request, front.peerOf(socket) ? "https" : "http", socket.remoteAddress ?? "", port), peer: front.peerOf(socket) };
      return serveWeb(target, request, head, KEEP_BYTES);
    },
    { overrideGlobalObjects: false },
  );
  const server = http.createServer({ maxHeaderSize: options.maxHeaderBytes, requireHostHeader: true, keepAliveTimeout: 60_000, requestTimeout: 0 }, handler);
  const front = createMeshFront(options.mesh!, server);
  await new Promise<void>((resolve, reject) => {
    front.server.once("error", reject);
    front.server.listen(options.port, options.address ?? "0.0.0.0", () => resolve());
  });
  port = (front.server.address() as import("node:net").AddressInfo).port;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        front.server.close(() => {
          front.dispose();
          resolve();
        });
        server.closeIdleConnections();
      }),
    setTls() {
      // Mesh listeners follow the identity's rotation themselves.
    },
  };
}
