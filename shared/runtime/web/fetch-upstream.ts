import type { HeaderMap, UpstreamClient, UpstreamRequest, UpstreamResult } from "../../proxy/index.ts";
import { copyHeader, toHeadersInit, type WebRequestBody, type WebUpstreamResponse } from "./exchange.ts";

/** An upstream answer from fetch: the headers copied once for the engine, the body left in the Response until asked for. */
class FetchUpstreamResponse implements WebUpstreamResponse {
  readonly status: number;
  readonly headers: HeaderMap;
  readonly #response: Response;
  constructor(response: Response, headers: HeaderMap) {
    this.status = response.status;
    this.headers = headers;
    this.#response = response;
  }
  /** Made on first use: on Bun, asking a fetch Response for its body builds a ReadableStream, which bytes() does not need. */
  get body(): ReadableStream<Uint8Array> | null {
    return this.#response.body;
  }
  async bytes(): Promise<Uint8Array<ArrayBuffer>> {
    const response = this.#response as Response & { bytes?: () => Promise<Uint8Array<ArrayBuffer>> };
    return response.bytes ? response.bytes() : new Uint8Array(await response.arrayBuffer());
  }
  discard(): void {
    this.#response.body?.cancel().catch(ignore);
  }
}

function ignore(): void {}

/** The timer's abort: only it aborts a forward's controller, so an aborted signal means the timeout passed. */
function abortOnTimeout(controller: AbortController): void {
  controller.abort();
}

/**
 * createFetchUpstreamClient reaches upstreams with the runtime's own fetch (pooled, streaming).
 * Use it only where fetch keeps the Host header and can leave bodies compressed (Bun).
 * @example
 * const client = createFetchUpstreamClient({ decompress: false });
 */
export function createFetchUpstreamClient(extraInit: Record<string, unknown> = {}): UpstreamClient {
  async function forward(req: UpstreamRequest): Promise<UpstreamResult> {
    const ep = req.endpoint;
    const body = req.body as WebRequestBody;
    const url = ep.socketPath ? `http://localhost${req.path}` : `http://${ep.host.includes(":") ? `[${ep.host}]` : ep.host}:${ep.port}${req.path}`;
    const controller = new AbortController();
    const timer = setTimeout(abortOnTimeout, req.timeoutMs, controller);
    try {
      const init: Record<string, unknown> = {
        method: req.method,
        headers: toHeadersInit(req.headers),
        body: req.method === "GET" || req.method === "HEAD" ? null : body.take(),
        redirect: "manual",
        signal: controller.signal,
        duplex: "half",
      };
      for (const key in extraInit) init[key] = extraInit[key];
      if (ep.socketPath) init.unix = ep.socketPath;
      const response = await fetch(url, init as RequestInit);
      clearTimeout(timer);
      const headers: Record<string, string | string[]> = {};
      response.headers.forEach(copyHeader, headers);
      return { ok: true, response: new FetchUpstreamResponse(response, headers) };
    } catch (err) {
      clearTimeout(timer);
      if (controller.signal.aborted) return { ok: false, reason: "timeout" };
      const code = String((err as { code?: string }).code ?? (err as Error).message);
      const refused = /refused|ECONNREFUSED|FailedToOpenSocket|ENOTFOUND|unable to connect|ConnectionClosed/i.test(code);
      return { ok: false, reason: refused ? "upstream_connect_failure" : "upstream_reset", detail: code };
    }
  }
  return { forward, close: async () => {} };
}
