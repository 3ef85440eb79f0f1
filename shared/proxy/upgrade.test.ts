import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { compileMesh, validateMesh } from "../config/index.ts";
import { createEngine } from "./engine.ts";
import type { RequestHead, UpstreamClient, UpstreamRequest, UpstreamResult } from "./types.ts";
import { switchingProtocolsHead, upgradeProtocol, withoutUpgrade } from "./upgrade.ts";
import { createGatewayView } from "./view.ts";

describe("upgradeProtocol", () => {
  test("reads the first Upgrade token, lower-case, when Connection lists upgrade", () => {
    assert.equal(upgradeProtocol({ connection: "Upgrade", upgrade: "WebSocket" }), "websocket");
    assert.equal(upgradeProtocol({ connection: "keep-alive, upgrade", upgrade: "h2c, websocket" }), "h2c");
    assert.equal(upgradeProtocol({ connection: ["keep-alive", "Upgrade"], upgrade: ["websocket"] }), "websocket");
  });

  test("drops a protocol version: the name decides", () => {
    assert.equal(upgradeProtocol({ connection: "upgrade", upgrade: "HTTP/2.0" }), "http");
  });

  test("is undefined without both headers or without the upgrade token in Connection", () => {
    assert.equal(upgradeProtocol({ upgrade: "websocket" }), undefined);
    assert.equal(upgradeProtocol({ connection: "upgrade" }), undefined);
    assert.equal(upgradeProtocol({ connection: "keep-alive, x-upgrade", upgrade: "websocket" }), undefined);
    assert.equal(upgradeProtocol({ connection: "upgrade", upgrade: " " }), undefined);
  });
});

describe("withoutUpgrade", () => {
  test("removes Upgrade, Connection and the headers Connection names, keeping the rest as received", () => {
    const text = withoutUpgrade("POST", "/a?b=1", "1.1", [
      "Host", "shop.test", "Connection", "Upgrade, HTTP2-Settings", "Upgrade", "h2c", "HTTP2-Settings", "AAMA", "Content-Length", "2", "X-Keep", "yes",
    ]);
    assert.equal(text, "POST /a?b=1 HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 2\r\nX-Keep: yes\r\n\r\n");
  });

  test("keeps a Connection: close the client asked for", () => {
    assert.equal(withoutUpgrade("GET", "/", "1.1", ["Host", "a", "Connection", "close, upgrade", "Upgrade", "h2c"]), "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
  });
});

test("switchingProtocolsHead writes a 101 head with every header, repeated ones on their own lines", () => {
  assert.equal(
    switchingProtocolsHead({ connection: "upgrade", upgrade: "websocket", "sec-websocket-extensions": ["a", "b"] }),
    "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-extensions: a\r\nsec-websocket-extensions: b\r\n\r\n",
  );
});

describe("the engine with a WebSocket upgrade", () => {
  function gateway(traffic: Record<string, unknown> = {}, forward: Record<string, unknown> = {}) {
    const r = validateMesh({
      services: {
        api: { endpoints: [{ address: "10.0.0.1:80" }, { address: "10.0.0.2:80" }], traffic, ports: [{ port: 80, protocol: "http2" }] },
        shadow: { endpoints: [{ address: "10.0.0.9:80" }] },
      },
      gateways: { edge: { listeners: [{ port: 0 }], routes: [{ forward: { to: [{ service: "api" }], ...forward } }] } },
    });
    assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
    return createGatewayView(compileMesh(r.value, 1), "edge");
  }
  const headers = { connection: "Upgrade", upgrade: "websocket", "sec-websocket-key": "k", "sec-websocket-version": "13" };
  const head = (tunnel: boolean, more: Partial<RequestHead> = {}): RequestHead => ({
    method: "GET", scheme: "http", authority: "api", path: "/ws", headers, clientIp: "192.0.2.1", localPort: 80, upgrade: { protocol: "websocket", tunnel }, ...more,
  });
  const body = { length: 0, replayable: true };

  /** An upstream client answering each try from a script, recording what it was asked. */
  function scripted(answers: UpstreamResult[]) {
    const sent: UpstreamRequest[] = [];
    const client: UpstreamClient = {
      async forward(req) {
        sent.push(req);
        return answers[Math.min(sent.length - 1, answers.length - 1)]!;
      },
      async close() {},
    };
    return { client, sent };
  }
  const switched: UpstreamResult = { ok: true, response: { status: 101, headers: { upgrade: "websocket", connection: "Upgrade", "sec-websocket-accept": "a" }, discard() {} } };

  test("keeps Connection: upgrade and Upgrade upstream, over HTTP/1.1, with the destination's idle timeout", async () => {
    const up = scripted([switched]);
    const engine = createEngine({ client: up.client, edge: true });
    const exchange = await engine.handle(head(true), body, gateway({ websocket: { idleTimeoutMs: 1234 } }));
    assert.equal(exchange.status, 101);
    const sent = up.sent[0]!;
    assert.equal(sent.headers.connection, "upgrade");
    assert.equal(sent.headers.upgrade, "websocket");
    assert.equal(sent.headers["sec-websocket-key"], "k");
    assert.equal(sent.http2, false, "an upgrade never goes over HTTP/2");
    assert.deepEqual(sent.upgrade, { protocol: "websocket", idleTimeoutMs: 1234 });
    assert.equal(exchange.headers.connection, "upgrade");
    assert.equal(exchange.headers.upgrade, "websocket");
    assert.equal(exchange.headers["sec-websocket-accept"], "a");
  });

  test("the default idle timeout of an upgraded connection is one hour", async () => {
    const up = scripted([switched]);
    await createEngine({ client: up.client, edge: true }).handle(head(true), body, gateway());
    assert.equal(up.sent[0]!.upgrade!.idleTimeoutMs, 3_600_000);
  });

  test("a connect failure before the 101 is retried; the 101 itself ends the tries", async () => {
    const up = scripted([{ ok: false, reason: "upstream_connect_failure" }, switched, switched]);
    const engine = createEngine({ client: up.client, edge: true, sleep: async () => {} });
    const exchange = await engine.handle(head(true), body, gateway({}, { retries: { attempts: 3, retryOn: ["connect-failure"] } }));
    assert.equal(exchange.status, 101);
    assert.equal(up.sent.length, 2);
  });

  test("a plain request keeps no Upgrade and gets no upgrade field", async () => {
    const up = scripted([{ ok: true, response: { status: 200, headers: {}, discard() {} } }]);
    await createEngine({ client: up.client, edge: true }).handle(head(true, { upgrade: undefined }), body, gateway());
    assert.equal(up.sent[0]!.headers.upgrade, undefined);
    assert.equal(up.sent[0]!.headers.connection, undefined);
    assert.equal(up.sent[0]!.upgrade, undefined);
  });

  test("an upgrade the listener cannot carry is answered 501 upgrade_unsupported without a try", async () => {
    const up = scripted([switched]);
    const exchange = await createEngine({ client: up.client, edge: true }).handle(head(false), body, gateway());
    assert.deepEqual([exchange.status, exchange.headers["x-weft-reason"]], [501, "upgrade_unsupported"]);
    assert.equal(up.sent.length, 0);
  });

  test("an upgrade to a destination with websocket.enabled false is refused 403 upgrade_refused", async () => {
    const up = scripted([switched]);
    const exchange = await createEngine({ client: up.client, edge: true }).handle(head(true), body, gateway({ websocket: { enabled: false } }));
    assert.deepEqual([exchange.status, exchange.headers["x-weft-reason"]], [403, "upgrade_refused"]);
    assert.equal(up.sent.length, 0);
  });

  test("a non-WebSocket upgrade goes on as a plain request, its Upgrade dropped", async () => {
    const up = scripted([{ ok: true, response: { status: 200, headers: {}, discard() {} } }]);
    const h2c = head(false, { headers: { connection: "Upgrade, HTTP2-Settings", upgrade: "h2c", "http2-settings": "x" }, upgrade: { protocol: "h2c", tunnel: false } });
    const exchange = await createEngine({ client: up.client, edge: true }).handle(h2c, body, gateway());
    assert.equal(exchange.status, 200);
    assert.equal(up.sent[0]!.headers.upgrade, undefined);
    assert.equal(up.sent[0]!.headers["http2-settings"], undefined);
    assert.equal(up.sent[0]!.upgrade, undefined);
  });

  test("an upgrade is never mirrored", async () => {
    const up = scripted([switched]);
    await createEngine({ client: up.client, edge: true }).handle(head(true), body, gateway({}, { mirror: { service: "shadow" } }));
    await new Promise((r) => setImmediate(r));
    assert.equal(up.sent.length, 1);
    assert.notEqual(up.sent[0]!.endpoint.address, "10.0.0.9:80");
  });
});
