import http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import WebSocket, { WebSocketServer } from "ws";

export interface WsApp {
  readonly port: number;
  readonly address: string;
  /** Upgrade requests that reached the app (method, url, headers). */
  readonly upgrades: { url: string; headers: http.IncomingHttpHeaders }[];
  /** Plain requests that reached the app. */
  readonly plain: { url: string; headers: http.IncomingHttpHeaders }[];
  close(): Promise<void>;
}

/**
 * startWsApp runs a real app on 127.0.0.1: WebSocket echo on any path (`/push/<n>` first sends n bytes),
 * `/refuse/<status>` answers an upgrade with that status, plain requests get 200 "plain".
 */
export async function startWsApp(listen: { port?: number; path?: string } = {}): Promise<WsApp> {
  const upgrades: WsApp["upgrades"] = [];
  const plain: WsApp["plain"] = [];
  const sockets = new Set<Socket>();
  const server = http.createServer((req, res) => {
    plain.push({ url: req.url!, headers: req.headers });
    req.resume();
    req.on("end", () => res.end("plain"));
  });
  const wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024 * 1024, handleProtocols: (protocols) => (protocols.has("chat") ? "chat" : false) });
  server.on("upgrade", (req: http.IncomingMessage, socket: Socket, head: Buffer) => {
    upgrades.push({ url: req.url!, headers: req.headers });
    const refuse = /^\/refuse\/(\d{3})/.exec(req.url!);
    if (refuse) {
      socket.end(`HTTP/1.1 ${refuse[1]} Refused\r\ncontent-type: text/plain\r\ncontent-length: 8\r\nconnection: close\r\n\r\nrefused\n`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const push = /^\/push\/(\d+)/.exec(req.url!);
      if (push) ws.send(Buffer.alloc(Number(push[1]), 7));
      ws.on("message", (data, isBinary) => ws.send(data as Buffer, { binary: isBinary }));
    });
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  });
  await new Promise<void>((r) => (listen.path ? server.listen(listen.path, r) : server.listen(listen.port ?? 0, "127.0.0.1", r)));
  const port = listen.path ? 0 : (server.address() as AddressInfo).port;
  return {
    port,
    address: `127.0.0.1:${port}`,
    upgrades,
    plain,
    close: () =>
      new Promise<void>((resolve) => {
        for (const client of wss.clients) client.terminate();
        for (const s of sockets) s.destroy();
        wss.close();
        server.close(() => resolve());
      }),
  };
}

/** How a WebSocket handshake ended: open (with the socket), or refused with a status and x-weft-reason. */
export type WsOpen = { ok: true; ws: WebSocket; protocol: string } | { ok: false; status: number; reason: string | undefined; body: string };

/**
 * openWs connects a `ws` client and waits for the handshake's outcome (bounded by timeoutMs).
 * @example
 * const r = await openWs(`ws://127.0.0.1:${port}/chat`, { headers: { host: "shop.test" } });
 */
export function openWs(url: string, options: { headers?: Record<string, string>; protocols?: string[]; timeoutMs?: number; ca?: string } = {}): Promise<WsOpen> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, options.protocols ?? [], {
      headers: options.headers,
      maxPayload: 64 * 1024 * 1024,
      handshakeTimeout: options.timeoutMs ?? 5000,
      ...(options.ca ? { ca: options.ca, servername: "localhost" } : {}),
    });
    ws.once("open", () => resolve({ ok: true, ws, protocol: ws.protocol }));
    ws.once("unexpected-response", (_req, res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ ok: false, status: res.statusCode ?? 0, reason: res.headers["x-weft-reason"] as string | undefined, body }));
      res.on("error", reject);
    });
    ws.once("error", reject);
  });
}

/**
 * roundTrip sends one message and waits for the next message back (bounded by timeoutMs).
 * @example
 * const echoed = await roundTrip(ws, Buffer.from("hi"));
 */
export function roundTrip(ws: WebSocket, data: Buffer | string, timeoutMs = 10_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no message back in time")), timeoutMs);
    ws.once("message", (message) => {
      clearTimeout(timer);
      resolve(message as Buffer);
    });
    ws.send(data);
  });
}

/** Waits for the socket to close, resolving with the close code (bounded by timeoutMs). */
export function closed(ws: WebSocket, timeoutMs = 10_000): Promise<number> {
  return new Promise((resolve, reject) => {
    if (ws.readyState === WebSocket.CLOSED) return resolve(1006);
    const timer = setTimeout(() => reject(new Error("still open")), timeoutMs);
    ws.once("close", (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}
