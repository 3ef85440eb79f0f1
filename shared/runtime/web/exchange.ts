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
  /** The whole body at once, for small bodies of declared length. */
  bytes(): Promise<Uint8Array<ArrayBuffer>>;
}

/** The body of a request that has none: immutable, so every such request shares it. */
const EMPTY_BODY: WebRequestBody = Object.freeze({ length: 0, replayable: true, bytesRead: 0, take: () => null });

/** A small body of declared length, read whole so that a retry can send it again. */
class KeptBody implements WebRequestBody {
  readonly length: number;
  readonly replayable = true;
  readonly bytesRead: number;
  readonly #bytes: Uint8Array<ArrayBuffer>;
  constructor(length: number, bytes: Uint8Array<ArrayBuffer>) {
    this.length = length;
    this.#bytes = bytes;
    this.bytesRead = bytes.byteLength;
  }
  take(): BodyInit {
    return this.#bytes;
  }
}

/**
 * webBody prepares a Web request body: a body declared no larger than `keepBytes` is read into
 * memory (replayable), anything else streams once; no promise when there is none (most GETs).
 */
function webBody(request: Request, keepBytes: number): WebRequestBody | Promise<WebRequestBody> {
  const declared = request.headers.get("content-length");
  const chunked = request.headers.has("transfer-encoding");
  const length = chunked ? undefined : declared === null ? 0 : Number(declared);
  if (length === 0 || !request.body) return EMPTY_BODY;
  if (length !== undefined && length <= keepBytes) {
    return request.arrayBuffer().then((buffer) => new KeptBody(length, new Uint8Array(buffer)));
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
 * copyHeader is a Headers.forEach callback that copies each header into the map given as `this`.
 * forEach visits each Set-Cookie on its own (they cannot be joined with commas): those gather in a list.
 */
function copyHeader(this: Record<string, string | string[]>, value: string, name: string): void {
  const seen = name === "set-cookie" ? this[name] : undefined;
  if (seen === undefined) this[name] = value;
  else if (typeof seen === "string") this[name] = [seen, value];
  else seen.push(value);
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
  request.headers.forEach(copyHeader, headers);
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
    upgrade: protocol === undefined ? undefined : { protocol, tunnel: false },
  };
}

/** toHeaderPairs flattens engine headers into what a Web Headers/Response accepts. */
function toHeaderPairs(headers: HeaderMap): [string, string][] {
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
 * toHeadersInit gives engine headers to a Web Headers/Response: the map itself when every value is one
 * string (no copy), else the flattened pairs.
 */
function toHeadersInit(headers: HeaderMap): HeadersInit {
  for (const name in headers) {
    if (typeof headers[name] !== "string") return toHeaderPairs(headers);
  }
  return headers as Record<string, string>;
}

/** Statuses whose answer has no body (a Response with one throws). */
const NULL_BODY_STATUS = new Set([101, 103, 204, 205, 304]);

const INTERNAL_HEADERS = { "x-weft-reason": "internal" };
const RESET_HEADERS = { "x-weft-reason": "upstream_reset" };

/**
 * serveWeb runs one request through the engine and turns the exchange into a Web Response,
 * counting response bytes for the access log.
 * @example
 * return serveWeb(target, request, webHead(request, "http", ip, port), 65536);
 */
export function serveWeb(target: ServeTarget, request: Request, head: RequestHead, keepBytes: number): Promise<Response> {
  let body: WebRequestBody | Promise<WebRequestBody>;
  try {
    body = webBody(request, keepBytes);
  } catch (err) {
    return Promise.resolve(internalError(target, err));
  }
  // No body to read (most GETs): straight to the engine, one promise fewer per request.
  if (!(body instanceof Promise)) return handleWeb(target, request, head, body, keepBytes);
  return body.then(
    (read) => handleWeb(target, request, head, read, keepBytes),
    (err: unknown) => internalError(target, err),
  );
}

function internalError(target: ServeTarget, err: unknown): Response {
  target.onInternalError?.(err);
  return new Response("internal\n", { status: 500, headers: INTERNAL_HEADERS });
}

async function handleWeb(target: ServeTarget, request: Request, head: RequestHead, body: WebRequestBody, keepBytes: number): Promise<Response> {
  let exchange: Exchange;
  try {
    exchange = await target.engine.handle(head, body, target.current());
  } catch (err) {
    return internalError(target, err);
  }
  if (request.signal.aborted) {
    // The client left while the engine worked: nobody reads the answer.
    if (exchange.kind === "upstream") exchange.response.discard();
    exchange.finish(body.bytesRead, 0, "downstream_disconnect");
    return new Response(null, { status: 499 });
  }
  if (exchange.kind === "local") {
    exchange.finish(body.bytesRead, exchange.body.length);
    return new Response(exchange.body || null, { status: exchange.status, headers: toHeadersInit(exchange.headers) });
  }
  const upstream = exchange.response as WebUpstreamResponse;
  const headers = toHeadersInit(exchange.headers);
  // A small body of declared length is read whole and answered as bytes: on Bun counting it through a
  // TransformStream instead doubled the CPU per request. It is read before upstream.body is looked at:
  // that look alone builds a ReadableStream.
  const declared = head.method === "HEAD" || NULL_BODY_STATUS.has(exchange.status) ? undefined : declaredLength(exchange.headers["content-length"]);
  if (declared !== undefined && declared <= keepBytes) {
    let bytes: Uint8Array<ArrayBuffer>;
    try {
      bytes = await upstream.bytes();
    } catch {
      exchange.finish(body.bytesRead, 0, "upstream_reset");
      return new Response("upstream_reset\n", { status: 502, headers: RESET_HEADERS });
    }
    exchange.finish(body.bytesRead, bytes.byteLength);
    return new Response(bytes.byteLength === 0 ? null : bytes, { status: exchange.status, headers });
  }
  if (!upstream.body) {
    exchange.finish(body.bytesRead, 0);
    return new Response(null, { status: exchange.status, headers });
  }
  let bytesOut = 0;
  const requestBody = body;
  const finished = exchange;
  const counted = upstream.body.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        bytesOut += chunk.byteLength;
        controller.enqueue(chunk);
      },
      flush() {
        finished.finish(requestBody.bytesRead, bytesOut);
      },
    }),
  );
  return new Response(counted, { status: exchange.status, headers });
}

function declaredLength(value: string | readonly string[] | undefined): number | undefined {
  if (typeof value !== "string" || !/^[0-9]{1,15}$/.test(value)) return undefined;
  return Number(value);
}
