// WebSocket upgrades on each runtime's gateway: Node carries them; Bun.serve and Deno.serve cannot hand a
// connection over, so there an upgrade the engine would forward gets a clear 501 upgrade_unsupported
// (and a denied one its 403), never a hang or a half-switched connection.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { startGateway, type GatewayProcess, type RuntimeName } from "../harness/gateway.ts";
import { request } from "../harness/upstream.ts";
import { closed, openWs, roundTrip, startWsApp, type WsApp } from "../harness/websocket.ts";

for (const runtime of ["node", "bun", "deno"] as const satisfies readonly RuntimeName[]) {
  describe(`WebSocket upgrades on ${runtime}`, () => {
    let app: WsApp;
    let gw: GatewayProcess;
    let port: number;

    before(async () => {
      app = await startWsApp();
      gw = await startGateway(
        {
          services: { app: { endpoints: [{ address: app.address }] } },
          gateways: {
            edge: {
              listeners: [{ port: 0, address: "127.0.0.1" }],
              routes: [{ name: "all", forward: { to: [{ service: "app" }] } }],
              policy: { authz: [{ name: "open", rules: [{ to: [{ paths: ["/open*"] }] }] }] },
            },
          },
        },
        { runtime },
      );
      port = gw.ports[0]!;
    });
    after(async () => {
      await gw?.stop();
      await app?.close();
    });

    test("a denied upgrade gets 403 denied and reaches nothing", async () => {
      const r = await openWs(`ws://127.0.0.1:${port}/closed`);
      assert.deepEqual(r.ok ? "open" : [r.status, r.reason], [403, "denied"]);
      assert.equal(app.upgrades.length, 0);
    });

    test(runtime === "node" ? "an allowed upgrade is carried" : "an allowed upgrade is answered 501 upgrade_unsupported, the app untouched", async () => {
      const r = await openWs(`ws://127.0.0.1:${port}/open`);
      if (runtime === "node") {
        assert.ok(r.ok);
        assert.equal((await roundTrip(r.ws, "x")).toString(), "x");
        r.ws.close();
        await closed(r.ws);
        return;
      }
      assert.deepEqual(r.ok ? "open" : [r.status, r.reason], [501, "upgrade_unsupported"]);
      assert.equal(app.upgrades.length, 0);
    });

    test("plain requests still pass after an upgrade was answered", async () => {
      const r = await request(port, { path: "/open/plain" });
      assert.deepEqual([r.status, r.body], [200, "plain"]);
    });
  });
}
