import type { Duplex } from "node:stream";

/** An upgraded connection carried between a client and an upstream socket. */
export interface Tunnel {
  /** Ends both sides now (a drain whose grace period is over). */
  close(): void;
}

export interface TunnelOptions {
  /** Bytes the client sent past its request head, for the upstream. */
  readonly clientHead: Buffer;
  /** Bytes the upstream sent past its 101 head, for the client. */
  readonly upstreamHead: Buffer;
  /** No bytes either way for this long closes both sides (reason `idle_timeout`). */
  readonly idleTimeoutMs: number;
  /** Called once, when both sides are closed: bytes client→upstream, upstream→client, and why it ended early. */
  onClose(bytesIn: number, bytesOut: number, error: string | undefined): void;
}

const SIDE = Symbol("weft.tunnelSide");
type Side = Duplex & { [SIDE]: TunnelSide };

/** One socket of a tunnel and the socket its bytes go to; listeners are shared functions that find it here. */
class TunnelSide {
  readonly tunnel: TunnelImpl;
  readonly socket: Side;
  peer!: TunnelSide;
  bytes = 0;
  closed = false;
  constructor(tunnel: TunnelImpl, socket: Duplex) {
    this.tunnel = tunnel;
    this.socket = socket as Side;
    this.socket[SIDE] = this;
  }
}

class TunnelImpl implements Tunnel {
  readonly client: TunnelSide;
  readonly upstream: TunnelSide;
  readonly onClose: TunnelOptions["onClose"];
  error: string | undefined = undefined;
  done = false;
  constructor(client: Duplex, upstream: Duplex, onClose: TunnelOptions["onClose"]) {
    this.client = new TunnelSide(this, client);
    this.upstream = new TunnelSide(this, upstream);
    this.client.peer = this.upstream;
    this.upstream.peer = this.client;
    this.onClose = onClose;
  }
  fail(error: string): void {
    this.error ??= error;
    this.client.socket.destroy();
    this.upstream.socket.destroy();
  }
  close(): void {
    this.fail("drained");
    // Told now rather than on the sockets' close events: a stopping proxy flushes its log next.
    this.finish();
  }
  finish(): void {
    if (this.done) return;
    this.done = true;
    this.onClose(this.client.bytes, this.upstream.bytes, this.error);
  }
}

/**
 * openTunnel carries an upgraded connection: bytes flow both ways with backpressure, an end (half-close)
 * is passed on, a close or error on one side closes the other, and idle connections are closed.
 * @example
 * const tunnel = openTunnel(clientSocket, upstreamSocket, { clientHead, upstreamHead, idleTimeoutMs: 3_600_000, onClose });
 */
export function openTunnel(client: Duplex, upstream: Duplex, options: TunnelOptions): Tunnel {
  const tunnel = new TunnelImpl(client, upstream, options.onClose);
  for (const side of [tunnel.client, tunnel.upstream]) {
    const socket = side.socket;
    socket.on("data", onData);
    socket.on("end", onEnd);
    socket.on("error", onError);
    socket.on("close", onClose);
    socket.on("drain", onDrain);
  }
  // Activity in either direction reads or writes the client socket, so its timeout is the tunnel's.
  (client as Duplex & { setTimeout?(ms: number): void }).setTimeout?.(options.idleTimeoutMs);
  client.on("timeout", onIdle);
  if (options.clientHead.length > 0) {
    tunnel.client.bytes += options.clientHead.length;
    upstream.write(options.clientHead);
  }
  if (options.upstreamHead.length > 0) {
    tunnel.upstream.bytes += options.upstreamHead.length;
    client.write(options.upstreamHead);
  }
  client.resume();
  upstream.resume();
  return tunnel;
}

function onData(this: Side, chunk: Buffer): void {
  const side = this[SIDE];
  side.bytes += chunk.length;
  const to = side.peer.socket;
  if (!to.write(chunk)) this.pause();
}

/** The peer took what was queued: let the socket feeding it read again. */
function onDrain(this: Side): void {
  const from = this[SIDE].peer.socket;
  if (!from.destroyed) from.resume();
}

function onEnd(this: Side): void {
  // Half-close: no more bytes this way, the other direction may go on (RFC 9293 §3.6).
  const to = this[SIDE].peer.socket;
  if (!to.destroyed) to.end();
}

function onError(this: Side): void {
  const side = this[SIDE];
  side.tunnel.fail(side === side.tunnel.client ? "downstream_disconnect" : "upstream_reset");
}

function onIdle(this: Side): void {
  this[SIDE].tunnel.fail("idle_timeout");
}

function onClose(this: Side): void {
  const side = this[SIDE];
  side.closed = true;
  const tunnel = side.tunnel;
  const peer = side.peer;
  if (!peer.closed) {
    // Whatever is still queued for the peer goes out first, then it closes too.
    const socket = peer.socket as Duplex & { destroySoon?(): void };
    if (socket.destroySoon) socket.destroySoon();
    else socket.end();
    return;
  }
  tunnel.finish();
}
