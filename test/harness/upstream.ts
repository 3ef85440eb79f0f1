import http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { freePort } from "./ports.ts";

export interface TestUpstream {
  readonly port: number;
  readonly address: string;
  /** Requests received, in order. */
  readonly requests: { method: string; url: string; headers: http.IncomingHttpHeaders; bodyBytes: number }[];
  close(): Promise<void>;
}

/**
 * startUpstream runs a real HTTP server on 127.0.0.1 whose behaviour a test scripts per request.
 * The handler gets the request number (0-based) and may answer, delay, or drop the connection.
 */
export async function startUpstream(
  handler: (req: http.IncomingMessage, res: http.ServerResponse, index: number) => void = (_req, res) => res.end("ok"),
): Promise<TestUpstream> {
  const requests: TestUpstream["requests"] = [];
  const sockets = new Set<Socket>();
  const server = http.createServer((req, res) => {
    const index = requests.length;
    const entry = { method: req.method!, url: req.url!, headers: req.headers, bodyBytes: 0 };
    requests.push(entry);
    req.on("data", (c: Buffer) => (entry.bodyBytes += c.length));
    handler(req, res, index);
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    address: `127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A JSON reply naming the upstream, after the request body is drained. */
export function replyAs(name: string): (req: http.IncomingMessage, res: http.ServerResponse) => void {
  return (req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(200, { "content-type": "application/json", "x-upstream": name });
      res.end(JSON.stringify({ upstream: name, url: req.url, headers: req.headers }));
    });
  };
}

/**
 * request sends one HTTP request over a fresh connection to a port on 127.0.0.1 (or a Unix socket) and collects the whole response.
 * @example
 * const r = await request(gw.port, { path: "/a", headers: { host: "api" } });
 * const viaSocket = await request({ socketPath: outSocket }, { path: "/hello" });
 */
export function request(
  target: number | { socketPath: string },
  options: { method?: string; path?: string; headers?: Record<string, string | string[]>; body?: string | Buffer; agent?: http.Agent } = {},
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  const to = typeof target === "number" ? { host: "127.0.0.1", port: target } : target;
  return new Promise((resolve, reject) => {
    const req = http.request(
      { ...to, method: options.method ?? "GET", path: options.path ?? "/", headers: options.headers, agent: options.agent ?? false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString() }));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(options.body);
  });
}

/** Writes raw bytes on a TCP connection and returns everything the server sends until it closes or goes quiet. */
export async function rawExchange(port: number, payload: string, quietMs = 300): Promise<string> {
  const net = await import("node:net");
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    let out = "";
    let timer: ReturnType<typeof setTimeout> | undefined;
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(out);
    };
    socket.on("data", (d) => {
      out += d.toString("latin1");
      clearTimeout(timer);
      timer = setTimeout(done, quietMs);
    });
    socket.on("close", done);
    socket.on("error", (err) => (out ? done() : reject(err)));
    socket.write(payload, "latin1");
    timer = setTimeout(done, quietMs * 4);
  });
}

/**
 * deadAddress returns a 127.0.0.1 address nobody listens on, so a connect to it is refused: a free port
 * below the ephemeral range, which no listener on port 0 (another test's upstream) can be given.
 * @example
 * const services = { gone: { endpoints: [{ address: await deadAddress() }] } };
 */
export async function deadAddress(): Promise<string> {
  return `127.0.0.1:${await freePort()}`;
}

/**
 * writeRepeated writes `chunk` over and over until `size` bytes are out, honouring backpressure,
 * then ends the stream: a large body made on the fly (a download from an upstream, an upload from a client).
 * @example
 * res.writeHead(200, { "content-length": String(size) });
 * writeRepeated(res, size, Buffer.alloc(65536, 0x61));
 */
export function writeRepeated(out: { write(chunk: Buffer): boolean; once(event: "drain", listener: () => void): unknown; end(): unknown }, size: number, chunk: Buffer): void {
  let sent = 0;
  const pump = () => {
    while (sent < size) {
      sent += chunk.length;
      if (!out.write(chunk)) return void out.once("drain", pump);
    }
    out.end();
  };
  pump();
}
