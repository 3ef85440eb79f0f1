import { afterEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { once } from "node:events";
import { openTunnel, type Tunnel } from "./tunnel.ts";

/** Real loopback sockets: the test's client, the proxy's two sockets, the test's upstream. */
async function sockets() {
  const clientFacing = net.createServer({ allowHalfOpen: true });
  const upstreamServer = net.createServer({ allowHalfOpen: true });
  await Promise.all([once(clientFacing.listen(0, "127.0.0.1"), "listening"), once(upstreamServer.listen(0, "127.0.0.1"), "listening")]);
  const accepted = once(clientFacing, "connection");
  const client = net.connect({ port: (clientFacing.address() as net.AddressInfo).port, host: "127.0.0.1", allowHalfOpen: true });
  const [proxyClient] = (await accepted) as [net.Socket];
  const acceptedUp = once(upstreamServer, "connection");
  const proxyUpstream = net.connect({ port: (upstreamServer.address() as net.AddressInfo).port, host: "127.0.0.1", allowHalfOpen: true });
  const [upstream] = (await acceptedUp) as [net.Socket];
  await once(proxyUpstream, "connect");
  const all = [client, proxyClient, proxyUpstream, upstream];
  opened.push(() => {
    for (const s of all) s.destroy();
    clientFacing.close();
    upstreamServer.close();
  });
  return { client, proxyClient, proxyUpstream, upstream };
}

const opened: (() => void)[] = [];
afterEach(() => {
  for (const close of opened.splice(0)) close();
});

function collect(socket: net.Socket): { bytes: () => Buffer; ended: Promise<unknown> } {
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  return { bytes: () => Buffer.concat(chunks), ended: once(socket, "end") };
}

function tunnelOf(s: Awaited<ReturnType<typeof sockets>>, options: { idleTimeoutMs?: number; clientHead?: Buffer; upstreamHead?: Buffer } = {}) {
  let ended: (v: { bytesIn: number; bytesOut: number; error: string | undefined }) => void;
  const closed = new Promise<{ bytesIn: number; bytesOut: number; error: string | undefined }>((r) => (ended = r));
  const tunnel: Tunnel = openTunnel(s.proxyClient, s.proxyUpstream, {
    clientHead: options.clientHead ?? Buffer.alloc(0),
    upstreamHead: options.upstreamHead ?? Buffer.alloc(0),
    idleTimeoutMs: options.idleTimeoutMs ?? 60_000,
    onClose: (bytesIn, bytesOut, error) => ended({ bytesIn, bytesOut, error }),
  });
  return { tunnel, closed };
}

describe("openTunnel", () => {
  test("carries bytes both ways, heads first, and counts them once both sides closed", async () => {
    const s = await sockets();
    const atUpstream = collect(s.upstream);
    const atClient = collect(s.client);
    const { closed } = tunnelOf(s, { clientHead: Buffer.from("early"), upstreamHead: Buffer.from("HELLO") });
    s.client.end("-request");
    await atUpstream.ended;
    s.upstream.end("-answer");
    await atClient.ended;
    assert.equal(atUpstream.bytes().toString(), "early-request");
    assert.equal(atClient.bytes().toString(), "HELLO-answer");
    assert.deepEqual(await closed, { bytesIn: 13, bytesOut: 12, error: undefined });
  });

  test("a half-close is passed on and the other direction keeps flowing", async () => {
    const s = await sockets();
    const atClient = collect(s.client);
    const atUpstream = collect(s.upstream);
    const { closed } = tunnelOf(s);
    s.client.end("bye");
    await atUpstream.ended;
    // The upstream still answers after the client's end.
    s.upstream.write("still ");
    s.upstream.end("here");
    await atClient.ended;
    assert.equal(atClient.bytes().toString(), "still here");
    assert.equal((await closed).error, undefined);
  });

  test("a slow reader pauses the sender instead of queueing everything, and all bytes still arrive", async () => {
    const s = await sockets();
    s.client.pause();
    const { closed } = tunnelOf(s);
    const big = Buffer.alloc(32 * 1024 * 1024, 9);
    s.upstream.end(big);
    for (let i = 0; i < 200 && !s.proxyUpstream.isPaused(); i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(s.proxyUpstream.isPaused(), true, "reading from the upstream paused");
    assert.ok(s.proxyClient.writableLength < 8 * 1024 * 1024, `queued toward the client: ${s.proxyClient.writableLength}`);
    const atClient = collect(s.client);
    s.client.resume();
    await atClient.ended;
    assert.equal(atClient.bytes().length, big.length);
    s.client.end();
    assert.equal((await closed).bytesOut, big.length);
  });

  test("a reset upstream closes the client side, reason upstream_reset", async () => {
    const s = await sockets();
    const { closed } = tunnelOf(s);
    // The test's sockets allow half-open connections: the proxy's close arrives as an end.
    const clientClosed = once(s.client, "end");
    s.client.on("error", () => {});
    s.upstream.resetAndDestroy();
    await clientClosed;
    assert.equal((await closed).error, "upstream_reset");
  });

  test("a client that resets closes the upstream side, reason downstream_disconnect", async () => {
    const s = await sockets();
    const { closed } = tunnelOf(s);
    const upstreamClosed = once(s.upstream, "end");
    s.upstream.on("error", () => {});
    s.client.resetAndDestroy();
    await upstreamClosed;
    assert.equal((await closed).error, "downstream_disconnect");
  });

  test("no bytes either way for idleTimeoutMs closes both sides, reason idle_timeout", async () => {
    const s = await sockets();
    s.client.on("error", () => {});
    s.upstream.on("error", () => {});
    const { closed } = tunnelOf(s, { idleTimeoutMs: 50 });
    const both = Promise.all([once(s.client, "end"), once(s.upstream, "end")]);
    assert.equal((await closed).error, "idle_timeout");
    await both;
  });

  test("close() ends both sides at once, reason drained", async () => {
    const s = await sockets();
    s.client.on("error", () => {});
    s.upstream.on("error", () => {});
    const { tunnel, closed } = tunnelOf(s);
    tunnel.close();
    assert.equal((await closed).error, "drained");
  });
});
