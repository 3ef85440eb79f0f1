import { upgradeProtocol, type Exchange, type HeaderMap, type RequestBody, type RequestHead, type ServeTarget, type UpstreamResponse } from "../../proxy/index.ts";

/** A request body as a Web stream: small declared bodies are read whole so a retry can replay them. */
export interface WebRequestBody extends RequestBody {
  /** The bytes to send: the kept buffer when replayable, else the one-shot stream. */
  take(): BodyInit | null;
  readonly bytesRead: number;
}

/** An upstream response whose body is a Web stream. */
export interface WebUpstreamResponse extends UpstreamResponse {
  readonly body: ReadableStream<Uint8Array> | null;
  /** The whole body read natively (Bun's fetch), for small bodies of declared length. */
  bytes?(): Promise<Uint8Array<ArrayBuffer>>;
}

/**
 * readWebBody prepares a Web request body: a body declared no larger than `keepBytes` is read into
 * memory (replayable); anything else streams once.
 * @example
 * const body = await readWebBody(request, 65536);
 */
export async function readWebBody(request: Request, keepBytes: number): Promise<WebRequestBody> {
  const declared = request.headers.get("content-length");
  const chunked = request.headers.has("transfer-encoding");
  const length = chunked ? undefined : declared === null ? 0 : Number(declared);
  if (!request.body || length === 0) {
    return { length: 0, replayable: true, bytesRead: 0, take: () => null };
  }
  if (length !== undefined && length <= keepBytes) {
    const bytes = new Uint8Array(await request.arrayBuffer());
    return { length, replayable: true, bytesRead: bytes.byteLength, take: () => bytes };
  }
  let bytesRead = 0;
  let taken = false;
  const counted = request.body.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        bytesRead += chunk.byteLength;
        controller.enqueue(chunk);
      },
    }),
  );
  return {
    length,
    get replayable() {
      return !taken;
    },
    get bytesRead() {
      return bytesRead;
    },
    take() {
      taken = true;
      return counted;
    },
  };
}

/**
 * webHead builds the engine's request head from a Web Request without parsing a URL object.
 * @example
 * const head = webHead(request, "http", "10.0.0.7", 8080);
 */
export function webHead(request: Request, scheme: "http" | "https", clientIp: string, localPort: number): RequestHead {
  const url = request.url;
  const pathStart = url.indexOf("/", url.indexOf("//") + 2);
  const headers: Record<string, string | string[]> = {};
  request.headers.forEach((value, name) => {
    headers[name] = value;
  });
  const cookies = (request.headers as Headers & { getSetCookie?: () => string[] }).getSetCookie?.();
  if (cookies && cookies.length > 1) headers["set-cookie"] = cookies;
  // The URL's authority is Host, or on Deno an absolute-form target's own, which replaces Host (RFC 9112 §3.2.2);
  // a target of another scheme (ftp://...) has none a gateway serves, so it is left empty (400).
  const host = request.headers.get("host");
  const web = url.startsWith("http://") || url.startsWith("https://");
  const protocol = upgradeProtocol(headers);
  return {
    method: request.method,
    scheme,
    authority: host === null || !web ? "" : pathStart < 0 ? host : url.slice(url.indexOf("//") + 2, pathStart),
    path: pathStart < 0 ? "/" : url.slice(pathStart),
    headers,
    clientIp,
    localPort,
    // A Web Response cannot hand the connection over: the engine answers a WebSocket upgrade 501.
    ...(protocol === undefined ? {} : { upgrade: { protocol, tunnel: false } }),
  };
}

/** toHeaderPairs flattens engine headers into what a Web Headers/Response accepts. */
export function toHeaderPairs(headers: HeaderMap): [string, string][] {
  const pairs: [string, string][] = [];
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined) continue;
    if (typeof value === "string") pairs.push([name, value]);
    else for (const v of value) pairs.push([name, v]);
  }
  return pairs;
}

/**
 * serveWeb runs one request through the engine and turns the exchange into a Web Response,
 * counting response bytes for the access log.
 */
export async function serveWeb(target: ServeTarget, request: Request, head: RequestHead, keepBytes: number): Promise<Response> {
  let exchange: Exchange;
  let body: WebRequestBody | undefined;
  try {
    body = await readWebBody(request, keepBytes);
    exchange = await target.engine.handle(head, body, target.current());
  } catch (err) {
    target.onInternalError?.(err);
    return new Response("internal\n", { status: 500, headers: { "x-weft-reason": "internal" } });
  }
  if (exchange.kind === "local") {
    exchange.finish(body.bytesRead, exchange.body.length);
    return new Response(exchange.body || null, { status: exchange.status, headers: toHeaderPairs(exchange.headers) });
  }
  const upstream = exchange.response as WebUpstreamResponse;
  const headers = toHeaderPairs(exchange.headers);
  if (!upstream.body) {
    exchange.finish(body.bytesRead, 0);
    return new Response(null, { status: exchange.status, headers });
  }
  // A small body of declared length is read whole and answered as bytes: on Bun that costs nothing
  // over handing the stream on, where counting it through a TransformStream doubled the CPU per request.
  const declared = head.method === "HEAD" ? undefined : declaredLength(exchange.headers["content-length"]);
  if (upstream.bytes !== undefined && declared !== undefined && declared <= keepBytes) {
    let bytes: Uint8Array<ArrayBuffer>;
    try {
      bytes = await upstream.bytes();
    } catch {
      exchange.finish(body.bytesRead, 0, "upstream_reset");
      return new Response("upstream_reset\n", { status: 502, headers: { "x-weft-reason": "upstream_reset" } });
    }
    exchange.finish(body.bytesRead, bytes.byteLength);
    return new Response(bytes, { status: exchange.status, headers });
  }
  let bytesOut = 0;
  const requestBody = body;
  const counted = upstream.body.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        bytesOut += chunk.byteLength;
        controller.enqueue(chunk);
      },
      flush() {
        exchange.finish(requestBody.bytesRead, bytesOut);
      },
    }),
  );
  return new Response(counted, { status: exchange.status, headers });
}

function declaredLength(value: string | readonly string[] | undefined): number | undefined {
  if (typeof value !== "string" || !/^[0-9]{1,15}$/.test(value)) return undefined;
  return Number(value);
}
