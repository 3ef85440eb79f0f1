import type { EventEmitter } from "node:events";
import type net from "node:net";

/** RFC 9113 §3.4: every HTTP/2 connection starts with this preface; "PRI" is no HTTP/1.1 method anyone uses. */
const PREFACE_START = "PRI";

/**
 * sniffPreface reads until the first bytes tell HTTP/2's connection preface (h2c with prior knowledge)
 * from an HTTP/1.1 request line, puts them back and hands the socket to `onH2` or to `http1` (a
 * node:http server that never listens itself).
 * @example
 * net.createServer((socket) => sniffPreface(socket, (s) => h2.emit("connection", s), httpServer));
 */
export function sniffPreface(socket: net.Socket, onH2: (socket: net.Socket) => void, http1: EventEmitter): void {
  sniff(socket, Buffer.alloc(0), onH2, http1);
}

function sniff(socket: net.Socket, seen: Buffer, onH2: (socket: net.Socket) => void, http1: EventEmitter): void {
  socket.once("data", (chunk: Buffer) => {
    socket.pause();
    const bytes = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
    const prefix = bytes.toString("latin1", 0, PREFACE_START.length);
    if (bytes.length < PREFACE_START.length && PREFACE_START.startsWith(prefix)) {
      sniff(socket, bytes, onH2, http1);
      return;
    }
    socket.unshift(bytes);
    if (prefix === PREFACE_START) onH2(socket);
    else {
      http1.emit("connection", socket);
      process.nextTick(() => socket.resume());
    }
  });
  // A socket someone paused (a front that peeked at it) flows again; a fresh one starts flowing.
  socket.resume();
}
