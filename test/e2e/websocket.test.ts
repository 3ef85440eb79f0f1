// WebSocket upgrades through a gateway process on Node: the upgrade runs through routing, header
// rewrites, JWT, authorization and the access log like any request, then the two sockets are joined.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { createTestIssuer } from "../../shared/policy/testing.ts";
import { selfSignedCertificate } from "../harness/external-tls.ts";
import { startGateway, type GatewayProcess } from "../harness/gateway.ts";
import { rawExchange } from "../harness/upstream.ts";
import { closed, openWs, roundTrip, startWsApp, type WsApp } from "../harness/websocket.ts";

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

async function accessLine(gw: GatewayProcess, match: (l: Record<string, unknown>) => boolean): Promise<Record<string, unknown> | undefined> {
  for (let i = 0; i < 100; i++) {
    const line = gw.accessLog().find(match);
    if (line) return line;
    await new Promise((r) => setTimeout(r, 50));
  }
  return undefined;
}

// A self-signed certificate for the gateway's HTTPS listener (wss://).
const certDir = mkdtempSync(join(tmpdir(), "weft-ws-tls-"));
const { certFile, keyFile, cert } = selfSignedCertificate(certDir);
after(() => rmSync(certDir, { recursive: true, force: true }));

describe("gateway on Node: WebSocket upgrades", () => {
  const idp = createTestIssuer({ issuer: "https://idp.weft.test" });
  let app: WsApp;
  let gw: GatewayProcess;
  let port: number;
  const url = (path: string) => `ws://127.0.0.1:${port}${path}`;

  before(async () => {
    app = await startWsApp();
    gw = await startGateway({
      services: {
        app: { endpoints: [{ address: app.address }] },
        idle: { endpoints: [{ address: app.address }], traffic: { websocket: { idleTimeoutMs: 400 } } },
        closed: { endpoints: [{ address: app.address }], traffic: { websocket: { enabled: false } } },
      },
      gateways: {
        edge: {
          listeners: [
            { port: 0, address: "127.0.0.1" },
            { port: 0, address: "127.0.0.1", http2: true },
            { port: 0, address: "127.0.0.1", protocol: "https", tls: { certFile, keyFile } },
          ],
          routes: [
            { name: "idle", match: { path: { prefix: "/idle" } }, forward: { to: [{ service: "idle" }] } },
            { name: "closed", match: { path: { prefix: "/closed" } }, forward: { to: [{ service: "closed" }] } },
            {
              name: "chat",
              match: { path: { prefix: "/chat" } },
              forward: { to: [{ service: "app" }], rewrite: { pathPrefix: "/echo" } },
              headers: { request: { set: { "x-route": "chat" } } },
            },
            { name: "all", forward: { to: [{ service: "app" }] } },
          ],
          policy: {
            authn: { jwt: [{ issuer: idp.issuer, jwks: await idp.jwks(), audiences: ["shop"] }] },
            authz: [
              {
                name: "shop",
                rules: [
                  { to: [{ paths: ["/chat*", "/push*", "/refuse*", "/idle*", "/closed*", "/plain*", "/limited*"] }] },
                  { from: [{ requestPrincipals: [`${idp.issuer}/*`] }], to: [{ paths: ["/secure*"] }] },
                ],
              },
            ],
            rateLimit: { local: [{ name: "limited", match: { paths: ["/limited*"] }, tokensPerFill: 1, fillIntervalMs: 600_000, maxTokens: 1 }] },
          },
        },
      },
    });
    port = gw.ports[0]!;
  });

  after(async () => {
    await gw?.stop();
    await app?.close();
  });

  test("an upgrade is routed, rewritten and echoed; the subprotocol and the route's headers pass", async () => {
    const r = await openWs(url("/chat/room?x=1"), { headers: { host: "shop.test" }, protocols: ["chat"] });
    assert.ok(r.ok);
    assert.equal(r.protocol, "chat");
    assert.equal((await roundTrip(r.ws, "hello")).toString(), "hello");
    assert.deepEqual(await roundTrip(r.ws, Buffer.from([0, 1, 2, 255])), Buffer.from([0, 1, 2, 255]));
    const seen = app.upgrades.at(-1)!;
    assert.equal(seen.url, "/echo/room?x=1");
    assert.equal(seen.headers["x-route"], "chat");
    assert.equal(seen.headers.upgrade, "websocket");
    assert.equal(seen.headers.host, "shop.test");
    assert.equal(seen.headers["x-forwarded-for"], "127.0.0.1");
    r.ws.close(1000, "bye");
    assert.equal(await closed(r.ws), 1000);
  });

  test("a listener that also serves h2c carries HTTP/1.1 upgrades the same way", async () => {
    const r = await openWs(`ws://127.0.0.1:${gw.ports[1]}/chat/h2-listener`);
    assert.ok(r.ok);
    assert.equal((await roundTrip(r.ws, "on the h2c port")).toString(), "on the h2c port");
    r.ws.close();
    await closed(r.ws);
  });

  test("wss: an upgrade over the HTTPS listener is carried, and an h2c upgrade there goes on as plain HTTP", async () => {
    const r = await openWs(`wss://127.0.0.1:${gw.ports[2]}/chat/tls`, { ca: cert });
    assert.ok(r.ok);
    assert.equal((await roundTrip(r.ws, "over tls")).toString(), "over tls");
    assert.equal(app.upgrades.at(-1)!.headers["x-forwarded-proto"], "https");
    r.ws.close();
    await closed(r.ws);
    const socket = tls.connect({ port: gw.ports[2]!, host: "127.0.0.1", ca: cert, servername: "localhost" });
    let text = "";
    socket.on("data", (d: Buffer) => (text += d.toString("latin1")));
    await once(socket, "secureConnect");
    socket.write("GET /plain/tls HTTP/1.1\r\nHost: shop.test\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMA\r\n\r\n");
    await once(socket, "end");
    socket.destroy();
    assert.match(text, /^HTTP\/1\.1 200 /);
    assert.match(text, /plain$/);
  });

  test("messages of a few MB pass intact both ways", async () => {
    const r = await openWs(url("/push/3145728"));
    assert.ok(r.ok);
    const pushed = await new Promise<Buffer>((resolve) => r.ws.once("message", (m) => resolve(m as Buffer)));
    assert.equal(pushed.length, 3145728);
    assert.ok(pushed.every((b) => b === 7));
    const big = Buffer.alloc(5 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i);
    const back = await roundTrip(r.ws, big, 20_000);
    assert.equal(back.length, big.length);
    assert.equal(sha(back), sha(big));
    r.ws.close();
    await closed(r.ws);
  });

  test("the upgrade is logged once, when it closes: code 101, its lifetime and the bytes both ways", async () => {
    const r = await openWs(url("/chat/logged"), { headers: { "x-request-id": "ignored-at-edge", "user-agent": "ws-log-test" } });
    assert.ok(r.ok);
    await roundTrip(r.ws, Buffer.alloc(1000, 1));
    await new Promise((res) => setTimeout(res, 200));
    r.ws.close();
    await closed(r.ws);
    const line = await accessLine(gw, (l) => l.user_agent === "ws-log-test");
    assert.ok(line, "an access log line for the upgrade");
    assert.equal(line.status, 101);
    assert.equal(line.route, "chat");
    assert.ok((line.bytes_received as number) >= 1000, `bytes_received ${line.bytes_received}`);
    assert.ok((line.bytes_sent as number) >= 1000, `bytes_sent ${line.bytes_sent}`);
    assert.ok((line.duration_ms as number) >= 200, `duration_ms ${line.duration_ms}`);
    assert.equal(gw.accessLog().filter((l) => l.user_agent === "ws-log-test").length, 1);
    const metrics = await (await fetch(`http://127.0.0.1:${gw.adminPort}/stats/prometheus`)).text();
    assert.match(metrics, /weft_requests_total\{[^}]*route="chat"[^}]*code="101"[^}]*\} [1-9]/);
  });

  test("an upgrade no rule allows is denied 403 and never reaches the app", async () => {
    const before = app.upgrades.length;
    const r = await openWs(url("/secure/room"));
    assert.deepEqual(r.ok ? "open" : [r.status, r.reason], [403, "denied"]);
    assert.equal(app.upgrades.length, before);
  });

  test("a refused upgrade's connection is closed after the answer, not left hanging", async () => {
    const socket = net.connect(port, "127.0.0.1");
    let text = "";
    socket.on("data", (d: Buffer) => (text += d.toString("latin1")));
    const ended = once(socket, "end");
    socket.write("GET /secure/x HTTP/1.1\r\nHost: shop.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n\r\n");
    const timer = setTimeout(() => socket.destroy(new Error("not closed by the gateway")), 5000);
    await ended;
    clearTimeout(timer);
    socket.destroy();
    assert.match(text, /^HTTP\/1\.1 403 /);
    assert.match(text, /\r\nx-weft-reason: denied\r\n/i);
    assert.match(text, /\r\nconnection: close\r\n/i);
  });

  test("upgrades count against rate limits: beyond the bucket one gets 429 rate_limited", async () => {
    const first = await openWs(url("/limited/a"));
    assert.ok(first.ok);
    const second = await openWs(url("/limited/b"));
    assert.deepEqual(second.ok ? "open" : [second.status, second.reason], [429, "rate_limited"]);
    first.ws.close();
    await closed(first.ws);
  });

  test("an upgrade with an invalid token is refused 401; a valid one passes", async () => {
    const before = app.upgrades.length;
    const bad = await openWs(url("/secure/room"), { headers: { authorization: "Bearer not.a.token" } });
    assert.deepEqual(bad.ok ? "open" : [bad.status, bad.reason], [401, "jwt_invalid"]);
    assert.equal(app.upgrades.length, before);
    const token = await idp.mint({ sub: "alice" }, { audience: "shop" });
    const good = await openWs(url("/secure/room"), { headers: { authorization: `Bearer ${token}` } });
    assert.ok(good.ok);
    assert.equal((await roundTrip(good.ws, "in")).toString(), "in");
    good.ws.close();
    await closed(good.ws);
  });

  test("an upstream that refuses the upgrade has its status and body relayed", async () => {
    const r = await openWs(url("/refuse/404"));
    assert.deepEqual(r.ok ? "open" : [r.status, r.body], [404, "refused\n"]);
    const r400 = await openWs(url("/refuse/400"));
    assert.deepEqual(r400.ok ? "open" : r400.status, 400);
  });

  test("an upgrade to a destination with websocket disabled is refused 403 upgrade_refused", async () => {
    const before = app.upgrades.length;
    const r = await openWs(url("/closed/x"));
    assert.deepEqual(r.ok ? "open" : [r.status, r.reason], [403, "upgrade_refused"]);
    assert.equal(app.upgrades.length, before);
  });

  test("an idle upgraded connection is closed after the destination's websocket.idleTimeoutMs", async () => {
    const r = await openWs(url("/idle/x"), { headers: { "user-agent": "ws-idle-test" } });
    assert.ok(r.ok);
    // Traffic keeps it open past the timeout...
    for (let i = 0; i < 4; i++) {
      await new Promise((res) => setTimeout(res, 200));
      assert.equal((await roundTrip(r.ws, `k${i}`)).toString(), `k${i}`);
    }
    // ...silence closes it.
    assert.equal(await closed(r.ws, 5000), 1006);
    const line = await accessLine(gw, (l) => l.user_agent === "ws-idle-test");
    assert.equal(line?.reason, "idle_timeout");
  });

  test("an h2c upgrade is ignored: the request goes on as plain HTTP without Upgrade", async () => {
    const before = app.plain.length;
    const raw = await rawExchange(
      port,
      "GET /plain HTTP/1.1\r\nHost: shop.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
    );
    assert.match(raw, /^HTTP\/1\.1 200 /);
    assert.match(raw, /plain$/);
    assert.equal(app.plain.length, before + 1);
    const seen = app.plain.at(-1)!;
    assert.equal(seen.headers.upgrade, undefined);
    assert.equal(seen.headers["http2-settings"], undefined);
  });

  test("a client that sends data before the 101 loses none of it", async () => {
    // A raw handshake with a masked text frame right behind it, in one write.
    const key = Buffer.alloc(16, 3).toString("base64");
    const frame = Buffer.from([0x81, 0x82, 1, 2, 3, 4, "h".charCodeAt(0) ^ 1, "i".charCodeAt(0) ^ 2]);
    const head = `GET /chat/early HTTP/1.1\r\nHost: shop.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${key}\r\n\r\n`;
    const raw = await rawExchange(port, head + frame.toString("latin1"), 500);
    assert.match(raw, /^HTTP\/1\.1 101 /);
    // The echo comes back unmasked: 0x81, length 2, "hi".
    assert.ok(raw.endsWith("\x81\x02hi"), JSON.stringify(raw.slice(-8)));
  });
});

describe("gateway on Node: a drain closes upgraded connections at the end of its grace period", () => {
  test("SIGTERM with an open WebSocket: it closes once the grace period is over and the gateway exits", async () => {
    const app = await startWsApp();
    const gw = await startGateway(
      {
        services: { app: { endpoints: [{ address: app.address }] } },
        gateways: { edge: { listeners: [{ port: 0, address: "127.0.0.1" }], routes: [{ forward: { to: [{ service: "app" }] } }] } },
      },
      { args: ["--grace-ms", "300"] },
    );
    try {
      const r = await openWs(`ws://127.0.0.1:${gw.ports[0]}/chat`);
      assert.ok(r.ok);
      assert.equal((await roundTrip(r.ws, "before")).toString(), "before");
      const code = closed(r.ws, 4000);
      process.kill(gw.pid, "SIGTERM");
      // Open during the grace period...
      await new Promise((res) => setTimeout(res, 100));
      assert.equal(r.ws.readyState, r.ws.OPEN);
      // ...closed after it (the harness would SIGKILL only after 5 s).
      assert.equal(await code, 1006);
      // Closed by the drain itself, not by the process going away.
      const line = await accessLine(gw, (l) => l.path === "/chat");
      assert.deepEqual([line?.status, line?.reason], [101, "drained"]);
    } finally {
      await gw.stop();
      await app.close();
    }
  });
});
