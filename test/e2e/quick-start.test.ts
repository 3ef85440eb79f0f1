// The README's first command: `npm start` (weft dev) brings up a mesh that reaches both sample services.
import { test } from "node:test";
import assert from "node:assert/strict";
import { request } from "../harness/upstream.ts";
import { spawnWeft } from "../harness/weft-process.ts";

test("weft dev serves both sample services through their sidecars over mTLS, and the gateway's own route, on port 8080", async () => {
  const dev = spawnWeft(["dev"]);
  try {
    await dev.waitForLog((l) => l.msg === "demo mesh ready", 60_000);
    const web = await request(8080, { path: "/" });
    assert.equal(web.status, 200);
    assert.equal(JSON.parse(web.body).service, "web");
    // The web app's sidecar verified the gateway's certificate on the way in.
    assert.equal(JSON.parse(web.body).headers["x-forwarded-client-cert"], "URI=spiffe://weft.local/ns/default/sa/ingress");
    const api = await request(8080, { path: "/api/items?x=1" });
    assert.equal(api.status, 200);
    assert.equal(JSON.parse(api.body).service, "api");
    assert.equal(JSON.parse(api.body).path, "/items?x=1");
    assert.equal(api.headers["x-weft-route"], "api");
    const ping = await request(8080, { path: "/ping" });
    assert.equal(ping.body, "pong\n");
  } finally {
    await dev.stop();
  }
});
