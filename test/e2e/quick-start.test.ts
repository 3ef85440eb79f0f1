// The README's first command: `npm start` (weft dev) brings up a mesh that reaches both sample
// services through their sidecars, over mTLS, with one trace across every hop.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { request } from "../harness/upstream.ts";
import { spawnWeft, type WeftProcess } from "../harness/weft-process.ts";

describe("weft dev (npm start)", () => {
  let dev: WeftProcess;
  before(async () => {
    dev = spawnWeft(["dev"]);
    await dev.waitForLog((l) => l.msg === "demo mesh ready", 60_000);
  });
  after(async () => {
    await dev?.stop();
  });

  test("serves both sample services through their sidecars over mTLS, and the gateway's own route, on port 8080", async () => {
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
  });

  test("one W3C trace runs client → gateway → sidecar → app: each proxy logs it and hands its own span on", async () => {
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const clientSpan = "00f067aa0ba902b7";
    const r = await request(8080, { path: "/traced", headers: { traceparent: `00-${traceId}-${clientSpan}-01` } });
    assert.equal(r.status, 200);
    const seen = (JSON.parse(r.body) as { headers: Record<string, string> }).headers.traceparent;
    const [version, appTrace, parent, flags] = seen!.split("-");
    assert.deepEqual([version, appTrace, flags], ["00", traceId, "01"]);
    assert.notEqual(parent, clientSpan, "the app's parent span is the sidecar's, not the client's");
    // Both proxies wrote an access-log line for the request, with the same trace id.
    const deadline = Date.now() + 5000;
    let lines: Record<string, unknown>[] = [];
    while (Date.now() < deadline) {
      lines = dev.accessLog().filter((l) => l.trace_id === traceId);
      if (lines.length >= 2) break;
      await new Promise((res) => setTimeout(res, 50));
    }
    assert.equal(lines.length, 2, JSON.stringify(lines));
    assert.deepEqual(new Set(lines.map((l) => l.path)), new Set(["/traced"]));
  });
});
