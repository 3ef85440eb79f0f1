import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { open, rename, writeFile } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import { defaultRuntime, startGateway, type GatewayProcess } from "../harness/gateway.ts";
import { deadAddress, rawExchange, replyAs, request, startUpstream, type TestUpstream } from "../harness/upstream.ts";
import { assertShare } from "../harness/load.ts";
import { until } from "../harness/wait.ts";

// "gone" points at a port nobody listens on (by default the discard port, closed on loopback).
function mesh(a: TestUpstream, b: TestUpstream, goneAddress = "127.0.0.1:9") {
  return {
    services: {
      alpha: { endpoints: [{ address: a.address }] },
      beta: { endpoints: [{ address: b.address }] },
      gone: { endpoints: [{ address: goneAddress }] },
    },
    gateways: {
      edge: {
        listeners: [{ port: 0, address: "127.0.0.1" }],
        maxHeaderCount: 50,
        routes: [
          { name: "beta-header", match: { path: { prefix: "/a" }, headers: { "x-canary": { exact: "1" } } }, forward: { to: [{ service: "beta" }] } },
          { name: "alpha", match: { path: { prefix: "/a" } }, forward: { to: [{ service: "alpha" }] } },
          { name: "beta", match: { path: { prefix: "/b" } }, forward: { to: [{ service: "beta" }], rewrite: { pathPrefix: "/" } } },
          { name: "split", match: { path: { exact: "/split" } }, forward: { to: [{ service: "alpha", weight: 90 }, { service: "beta", weight: 10 }] } },
          { name: "limited", match: { path: { prefix: "/upload" } }, forward: { to: [{ service: "alpha" }], maxBodyBytes: 1000 } },
          { name: "teapot", match: { path: { exact: "/teapot" } }, directResponse: { status: 418, body: "short and stout" } },
          { name: "moved", match: { path: { prefix: "/old" } }, redirect: { prefixRewrite: "/new", status: 308 } },
          { name: "down", match: { path: { prefix: "/down" } }, forward: { to: [{ service: "gone" }] } },
        ],
      },
    },
  };
}

describe("gateway on Node: routing, splitting, framing", () => {
  let a: TestUpstream;
  let b: TestUpstream;
  let gw: GatewayProcess;
  let port: number;

  before(async () => {
    a = await startUpstream(replyAs("alpha"));
    b = await startUpstream(replyAs("beta"));
    const config = mesh(a, b, await deadAddress());
    gw = await startGateway(config);
    port = gw.ports[0]!;
  });
  after(async () => {
    await gw?.stop();
    await a?.close();
    await b?.close();
  });

  test("routes two paths to two upstreams and rewrites the prefix", async () => {
    const ra = await request(port, { path: "/a/x?q=1", headers: { host: "shop.test" } });
    assert.equal(ra.status, 200);
    assert.equal(JSON.parse(ra.body).upstream, "alpha");
    assert.equal(JSON.parse(ra.body).url, "/a/x?q=1");
    const rb = await request(port, { path: "/b/y", headers: { host: "shop.test" } });
    assert.equal(JSON.parse(rb.body).upstream, "beta");
    assert.equal(JSON.parse(rb.body).url, "/y");
  });

  test("a header match wins over the plain prefix route", async () => {
    const r = await request(port, { path: "/a", headers: { "x-canary": "1" } });
    assert.equal(JSON.parse(r.body).upstream, "beta");
  });

  test("a 90/10 weighted split sends 90% of 2,000 requests to the heavier destination, within six standard deviations", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    let alpha = 0;
    const total = 2000;
    for (let i = 0; i < total; i += 50) {
      const batch = await Promise.all(Array.from({ length: 50 }, () => request(port, { path: "/split", agent })));
      for (const r of batch) if (JSON.parse(r.body).upstream === "alpha") alpha++;
    }
    agent.destroy();
    assertShare(alpha, total, 0.9, "alpha share");
  });

  test("hop-by-hop headers, Connection-named headers and client x-weft-* never reach the upstream", async () => {
    const before = a.requests.length;
    await request(port, {
      path: "/a/hop",
      headers: { connection: "keep-alive, x-secret-hop", "x-secret-hop": "1", "keep-alive": "timeout=5", te: "trailers", "proxy-authorization": "Basic eA==", "x-weft-reason": "forged", "x-end": "kept" },
    });
    const seen = a.requests[before]!.headers;
    for (const h of ["x-secret-hop", "keep-alive", "te", "proxy-authorization", "x-weft-reason"]) assert.equal(seen[h], undefined, h);
    assert.equal(seen["x-end"], "kept");
    assert.equal(seen["x-forwarded-for"], "127.0.0.1");
    assert.equal(seen["x-forwarded-proto"], "http");
    assert.match(String(seen["x-request-id"]), /^[0-9a-f-]{36}$/);
  });

  test("direct responses and redirects are answered by the gateway", async () => {
    const t = await request(port, { path: "/teapot" });
    assert.equal(t.status, 418);
    assert.equal(t.body, "short and stout");
    const m = await request(port, { path: "/old/page?x=1", headers: { host: "shop.test" } });
    assert.equal(m.status, 308);
    assert.equal(m.headers.location, "http://shop.test/new/page?x=1");
  });

  test("no route is 404 and an unreachable upstream is 503, each with its reason", async () => {
    const n = await request(port, { path: "/nowhere" });
    assert.equal(n.status, 404);
    assert.equal(n.headers["x-weft-reason"], "no_route");
    const d = await request(port, { path: "/down" });
    assert.equal(d.status, 503);
    assert.ok(["upstream_connect_failure", "retries_exhausted"].includes(String(d.headers["x-weft-reason"])));
  });

  test("a body over the route limit is refused with 413", async () => {
    const r = await request(port, { method: "POST", path: "/upload", body: Buffer.alloc(5000) });
    assert.equal(r.status, 413);
    assert.equal(r.headers["x-weft-reason"], "body_too_large");
  });

  test("malformed requests get 400 and never reach an upstream", async () => {
    const count = a.requests.length + b.requests.length;
    const cases = [
      "GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /a/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
      "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
      "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\na",
      "GET /a HTTP/1.1\r\nHost : x\r\n\r\n",
      "GET /a HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n b\r\n\r\n",
      "GET /a HTTP/1.1\r\nHost: x\rX: y\r\n\r\n",
      "GET /a HTTP/1.1\r\n\r\n",
      "GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
      "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked, identity\r\n\r\n",
      "GARBAGE\r\n\r\n",
    ];
    for (const payload of cases) {
      const out = await rawExchange(port, payload);
      assert.match(out, /^HTTP\/1\.1 400 /, JSON.stringify(payload));
      assert.doesNotMatch(out, /HTTP\/1\.1 200/, JSON.stringify(payload));
    }
    assert.equal(a.requests.length + b.requests.length, count);
  });

  test("an absolute-form target is accepted: its authority replaces Host and the upstream gets origin form (RFC 9112 §3.2.2)", async () => {
    const out = await rawExchange(port, "GET http://shop.test/a/abs?x=1 HTTP/1.1\r\nHost: elsewhere.test\r\nConnection: close\r\n\r\n");
    assert.match(out, /^HTTP\/1\.1 200 /);
    const body = JSON.parse(out.slice(out.indexOf("{"), out.lastIndexOf("}") + 1)) as { upstream: string; url: string; headers: Record<string, string> };
    assert.equal(body.upstream, "alpha");
    assert.equal(body.url, "/a/abs?x=1");
    assert.equal(body.headers.host, "shop.test");
    assert.equal(body.headers["x-forwarded-host"], "shop.test");
    const other = await rawExchange(port, "GET ftp://shop.test/a HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n");
    assert.match(other, /^HTTP\/1\.1 400 /);
  });

  test("too many headers get 431", async () => {
    const headers: Record<string, string> = {};
    for (let i = 0; i < 80; i++) headers[`x-h${i}`] = "v";
    const r = await request(port, { path: "/a", headers });
    assert.equal(r.status, 431);
    const huge = await request(port, { path: "/a", headers: { "x-big": "v".repeat(20000) } }).catch(() => ({ status: 431 }));
    assert.equal(huge.status, 431);
  });
});

describe("gateway on Node: live reload", () => {
  /** A gateway routing /a to alpha (`config`), the same config routing it to beta (`rerouted`), torn down after `run`. */
  async function withReloadingGateway(run: (gw: Awaited<ReturnType<typeof startGateway>>, config: ReturnType<typeof mesh>, rerouted: ReturnType<typeof mesh>) => Promise<void>) {
    const a = await startUpstream(replyAs("alpha"));
    const b = await startUpstream(replyAs("beta"));
    const config = mesh(a, b);
    const gw = await startGateway(config);
    try {
      const rerouted = structuredClone(config);
      (rerouted.gateways.edge.routes[1] as { forward: { to: { service: string }[] } }).forward.to = [{ service: "beta" }];
      await run(gw, config, rerouted);
    } finally {
      await gw.stop();
      await a.close();
      await b.close();
    }
  }

  test("a valid change reroutes and an invalid one keeps the last good config", () =>
    withReloadingGateway(async (gw, _config, rerouted) => {
      const port = gw.ports[0]!;
      assert.equal(JSON.parse((await request(port, { path: "/a" })).body).upstream, "alpha");
      await gw.writeConfig(rerouted);
      await until("the reloaded config routing /a to beta", async () => JSON.parse((await request(port, { path: "/a" })).body).upstream === "beta");
      const broken = structuredClone(rerouted) as unknown as { gateways: { edge: { routes: unknown[] } } };
      broken.gateways.edge.routes.push({ forward: { to: [{ service: "nope" }] } }, { match: { path: { regex: "(a+)+$" } }, directResponse: { status: 200 } });
      await gw.writeConfig(broken);
      await until("the invalid config logged", async () => gw.logs().some((l) => l.msg === "invalid config" && l.path === "gateways.edge.routes.9.match.path.regex"));
      const paths = gw.logs().filter((l) => l.msg === "invalid config").map((l) => l.path);
      assert.ok(paths.includes("gateways.edge.routes.8.forward.to.0.service"), JSON.stringify(paths));
      assert.equal(JSON.parse((await request(port, { path: "/a" })).body).upstream, "beta");
    }));

  test("a config replaced by a rename reloads, and so does a later in-place edit of the new file", () =>
    withReloadingGateway(async (gw, config, rerouted) => {
      const port = gw.ports[0]!;
      // As editors save: write a temporary file beside it, then rename it over the config.
      const temporary = `${gw.configFile}.tmp`;
      await writeFile(temporary, `export default ${JSON.stringify(rerouted)};\n`);
      await rename(temporary, gw.configFile);
      await until("the replaced config routing /a to beta", async () => JSON.parse((await request(port, { path: "/a" })).body).upstream === "beta");
      await gw.writeConfig(config);
      await until("the new file's edit routing /a back to alpha", async () => JSON.parse((await request(port, { path: "/a" })).body).upstream === "alpha");
    }));

  test("a load that reads a save half-written in place reports nothing, and the finished save reloads", () =>
    withReloadingGateway(async (gw, _config, rerouted) => {
      const port = gw.ports[0]!;
      const text = `export default ${JSON.stringify(rerouted, null, 2)};\n`;
      // As an editor saving in place: truncate, write, and here a pause long enough for the load
      // (100 ms after the first change) to read the first half, a module that does not parse.
      const file = await open(gw.configFile, "w");
      try {
        await file.write(text.slice(0, text.length >> 1));
        await new Promise((r) => setTimeout(r, 150));
        await file.write(text.slice(text.length >> 1));
      } finally {
        await file.close();
      }
      await until("the finished save routing /a to beta", async () => JSON.parse((await request(port, { path: "/a" })).body).upstream === "beta");
      assert.deepEqual(gw.logs().filter((l) => l.level === "error").map((l) => l.msg), []);
    }));

  test("edits arriving faster than the reload delay still reload while they go on", () =>
    withReloadingGateway(async (gw, config, rerouted) => {
      // 50 writes 30 ms apart: a reload delay restarted by every change would never fire during them.
      for (let i = 0; i < 50; i++) {
        await gw.writeConfig(i % 2 === 0 ? rerouted : config);
        await new Promise((r) => setTimeout(r, 30));
      }
      const during = gw.logs().filter((l) => l.msg === "config reloaded").length;
      assert.ok(during >= 1, `reloads during the edits: ${during}`);
      assert.equal(gw.logs().filter((l) => l.msg === "invalid config").length, 0);
    }));
});

describe("gateway on Node: a client that leaves before the answer", () => {
  test("is logged as downstream_disconnect and leaves no request in flight", async () => {
    let answer: (() => void) | undefined;
    const slow = await startUpstream((_req, res) => {
      answer = () => res.end("late");
    });
    const fast = await startUpstream(replyAs("alpha"));
    const gw = await startGateway(mesh(slow, fast));
    try {
      const client = net.connect(gw.ports[0]!, "127.0.0.1");
      client.on("error", () => {});
      client.write("GET /a/slow HTTP/1.1\r\nHost: shop.test\r\n\r\n");
      await until("the request at the upstream", () => answer);
      client.destroy();
      // The client is gone before the upstream answers: the answer has nobody to go to.
      await new Promise((r) => setTimeout(r, 100));
      answer!();
      const entry = await until("the access-log line", () => gw.accessLog().find((l) => l.path === "/a/slow"));
      // Deno.serve aborts request.signal only once it fails to write the answer: there the line shows the answer.
      assert.equal(entry.reason, defaultRuntime() === "deno" ? null : "downstream_disconnect");
      // The proxy still serves, and nothing stays counted in flight.
      assert.equal((await request(gw.ports[0]!, { path: "/b/" })).status, 200);
      await until("no request in flight", async () => {
        const metrics = (await request(gw.adminPort, { path: "/stats/prometheus" })).body;
        return /^weft_requests_in_flight 0$/m.test(metrics);
      });
    } finally {
      await gw.stop();
      await slow.close();
      await fast.close();
    }
  });
});
