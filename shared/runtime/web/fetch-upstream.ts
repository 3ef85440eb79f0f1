import type { UpstreamClient, UpstreamFailure, UpstreamRequest, UpstreamResult } from "../../proxy/index.ts";
import { toHeaderPairs, type WebRequestBody, type WebUpstreamResponse } from "./exchange.ts";

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
    let reason: UpstreamFailure | undefined;
    const timer = setTimeout(() => {
      reason = "timeout";
      controller.abort();
    }, req.timeoutMs);
    try {
      const init: Record<string, unknown> = {
        method: req.method,
        headers: toHeaderPairs(req.headers),
        body: req.method === "GET" || req.method === "HEAD" ? null : body.take(),
        redirect: "manual",
        signal: controller.signal,
        duplex: "half",
        ...extraInit,
      };
      if (ep.socketPath) init.unix = ep.socketPath;
      const response = await fetch(url, init as RequestInit);
      clearTimeout(timer);
      const headers: Record<string, string | string[]> = {};
      response.headers.forEach((value, name) => {
        headers[name] = value;
      });
      const upstream: WebUpstreamResponse = {
        status: response.status,
        headers,
        body: response.body,
        bytes: async () => new Uint8Array(await response.arrayBuffer()),
        discard: () => {
          response.body?.cancel().catch(() => {});
        },
      };
      return { ok: true, response: upstream };
    } catch (err) {
      clearTimeout(timer);
      if (reason) return { ok: false, reason };
      const code = String((err as { code?: string }).code ?? (err as Error).message);
      const refused = /refused|ECONNREFUSED|FailedToOpenSocket|ENOTFOUND|unable to connect|ConnectionClosed/i.test(code);
      return { ok: false, reason: refused ? "upstream_connect_failure" : "upstream_reset", detail: code };
    }
  }
  return { forward, close: async () => {} };
}
