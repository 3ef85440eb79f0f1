import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import { selfSignedCertificate } from "../harness/external-tls.ts";
import { startGateway, type GatewayProcess, type RuntimeName } from "../harness/gateway.ts";
import { assertShare } from "../harness/load.ts";
import { until } from "../harness/wait.ts";
import { replyAs, request, startUpstream, writeRepeated, type TestUpstream } from "../harness/upstream.ts";

// One smoke body, run as a real `weft gateway --config <file>` process on each runtime.
const BIG = 8 * 1024 * 1024;
const BIG_CHUNK = Buffer.alloc(64 * 1024, 0x62);
// One self-signed certificate for every runtime's HTTPS listener.
const certDir = mkdtempSync(join(tmpdir(), "weft-smoke-tls-"));
const { certFile, keyFile, cert } = selfSignedCertificate(certDir);
after(() => rmSync(certDir, { recursive: true, force: true }));

function mesh(a: TestUpstream, b: TestUpstream, odd: TestUpstream) {
  return {
    services: {
      alpha: { endpoints: [{ address: a.address }] },
      beta: { endpoints: [{ address: b.address }] },
      odd: { endpoints: [{ address: odd.address }] },
    },
    gateways: {
      edge: {
        listeners: [
          { port: 0, address: "127.0.0.1" },
          { port: 0, address: "127.0.0.1", protocol: "https", tls: { certFile, keyFile } },
        ],
        routes: [
          { name: "canary", match: { path: { prefix: "/a" }, headers: { "x-canary": { exact: "1" } } }, forward: { to: [{ service: "beta" }] } },
          { name: "alpha", match: { path: { prefix: "/a" } }, forward: { to: [{ service: "alpha" }] } },
          { name: "beta", match: { path: { prefix: "/b" } }, forward: { to: [{ service: "beta" }], rewrite: { pathPrefix: "/" } } },
          { name: "split", match: { path: { exact: "/split" } }, forward: { to: [{ service: "alpha", weight: 70 }, { service: "beta", weight: 30 }] } },
          { name: "ping", match: { path: { exact: "/ping" } }, directResponse: { status: 200, body: "pong\n" } },
          { name: "slow", match: { path: { prefix: "/odd/slow" } }, forward: { to: [{ service: "odd" }], timeoutMs: 300 } },
          { name: "odd", match: { path: { prefix: "/odd" } }, forward: { to: [{ service: "odd" }] } },
        ],
      },
    },
  };
}

for (const runtime of ["node", "bun", "deno"] as const satisfies readonly RuntimeName[]) {
  describe(`gateway smoke on ${runtime}`, () => {
    let a: TestUpstream;
    let b: TestUpstream;
    let odd: TestUpstream;
    let resets = 0;
    let gw: GatewayProcess;
    let port: number;

    before(async () => {
      a = await startUpstream(replyAs("alpha"));
      b = await startUpstream(replyAs("beta"));
      // Misbehaviours a runtime's HTTP client has to report faithfully.
      odd = await startUpstream((req, res) => {
        req.resume();
        if (req.url === "/odd/slow") return void setTimeout(() => res.end("late"), 3000).unref();
        if (req.url === "/odd/reset") {
          resets++;
          return void req.socket.destroy();
        }
        if (req.url === "/odd/short") {
          // Declares 100 bytes, sends 10, then the connection dies.
          res.writeHead(200, { "content-length": "100", "content-type": "text/plain" });
          res.write("0123456789");
          return void setTimeout(() => req.socket.destroy(), 20);
        }
        if (req.url === "/odd/cookies") {
          res.setHeader("set-cookie", ["a=1; Path=/", "b=2; Path=/"]);
          return void res.end("two cookies");
        }
        if (req.url === "/odd/big") {
          // More than the gateway reads whole (64 KiB) and than undici holds before a reader comes.
          res.writeHead(200, { "content-length": String(BIG), "content-type": "application/octet-stream" });
          return writeRepeated(res, BIG, BIG_CHUNK);
        }
        if (req.url === "/odd/gzip") {
          res.writeHead(200, { "content-encoding": "gzip", "content-type": "text/plain" });
          return void res.end(gzipSync("squeezed ".repeat(100)));
        }
        req.on("end", () => res.end("ok"));
      });
      gw = await startGateway(mesh(a, b, odd), { runtime });
      port = gw.ports[0]!;
    });
    after(async () => {
      await gw?.stop();
      await a?.close();
      await b?.close();
      await odd?.close();
    });

    test(`the gateway process serves on ${runtime}'s own adapter`, () => {
      const listening = gw.logs().find((l) => l.msg === "listening");
      assert.equal(listening?.runtime, runtime);
    });

    test("routes two paths to two upstreams, keeping Host and rewriting the prefix", async () => {
      const ra = await request(port, { path: "/a/x?q=1", headers: { host: "shop.test" } });
      assert.equal(ra.status, 200);
      const bodyA = JSON.parse(ra.body);
      assert.equal(bodyA.upstream, "alpha");
      assert.equal(bodyA.url, "/a/x?q=1");
      assert.equal(bodyA.headers.host, "shop.test");
      assert.equal(bodyA.headers["x-forwarded-proto"], "http");
      const rb = await request(port, { path: "/b/y", headers: { host: "shop.test" } });
      assert.equal(rb.status, 200);
      assert.equal(JSON.parse(rb.body).upstream, "beta");
      assert.equal(JSON.parse(rb.body).url, "/y");
    });

    test("a header match sends the request to the canary", async () => {
      const r = await request(port, { path: "/a/z", headers: { "x-canary": "1" } });
      assert.equal(JSON.parse(r.body).upstream, "beta");
    });

    test("hop-by-hop request headers do not reach the upstream", async () => {
      const r = await request(port, {
        path: "/a/hop",
        headers: { connection: "keep-alive, x-hop", "x-hop": "1", "keep-alive": "timeout=5", te: "trailers", "x-end": "kept" },
      });
      const seen = JSON.parse(r.body).headers as Record<string, string>;
      for (const h of ["x-hop", "keep-alive", "te"]) assert.equal(seen[h], undefined, h);
      assert.equal(seen["x-end"], "kept");
    });

    test("a 70/30 weighted split sends 70% of 1,000 requests to the heavier destination, within six standard deviations", async () => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
      let alpha = 0;
      const total = 1000;
      try {
        for (let i = 0; i < total; i += 50) {
          const batch = await Promise.all(Array.from({ length: 50 }, () => request(port, { path: "/split", agent })));
          for (const r of batch) {
            assert.equal(r.status, 200);
            if (JSON.parse(r.body).upstream === "alpha") alpha++;
          }
        }
      } finally {
        agent.destroy();
      }
      assertShare(alpha, total, 0.7, "alpha share");
    });

    test("a direct response is answered by the gateway", async () => {
      const before = a.requests.length + b.requests.length;
      const r = await request(port, { path: "/ping" });
      assert.equal(r.status, 200);
      assert.equal(r.body, "pong\n");
      assert.equal(a.requests.length + b.requests.length, before);
    });

    test("no route is a 404 with x-weft-reason no_route", async () => {
      const r = await request(port, { path: "/nowhere" });
      assert.equal(r.status, 404);
      assert.equal(r.headers["x-weft-reason"], "no_route");
    });

    test("an upstream slower than the route timeout is a 504 with x-weft-reason timeout", async () => {
      const r = await request(port, { path: "/odd/slow" });
      assert.equal(r.status, 504);
      assert.equal(r.headers["x-weft-reason"], "timeout");
    });

    test("a POST whose kept-alive upstream connection is reset reaches the upstream once", async () => {
      // The first request leaves a pooled connection behind; the reset happens on the next one.
      assert.equal((await request(port, { method: "POST", path: "/odd/warm", body: "x" })).status, 200);
      const before = resets;
      const r = await request(port, { method: "POST", path: "/odd/reset", body: "order=1" });
      assert.equal(r.status, 502);
      assert.equal(r.headers["x-weft-reason"], "upstream_reset");
      assert.equal(resets - before, 1);
    });

    test("every Set-Cookie header of the upstream's answer reaches the client", async () => {
      const r = await request(port, { path: "/odd/cookies" });
      assert.equal(r.status, 200);
      assert.deepEqual(r.headers["set-cookie"], ["a=1; Path=/", "b=2; Path=/"]);
    });

    test("a body the upstream cuts short never reaches the client as complete", async () => {
      const r = await new Promise<{ status: number; reason: unknown; bytes: number; complete: boolean }>((resolve) => {
        http
          .get({ host: "127.0.0.1", port, path: "/odd/short", agent: false }, (res) => {
            let bytes = 0;
            res.on("data", (c: Buffer) => (bytes += c.length));
            res.on("end", () => resolve({ status: res.statusCode!, reason: res.headers["x-weft-reason"], bytes, complete: res.complete }));
            res.on("error", () => resolve({ status: res.statusCode!, reason: res.headers["x-weft-reason"], bytes, complete: false }));
          })
          .on("error", () => resolve({ status: 0, reason: undefined, bytes: 0, complete: false }));
      });
      if (runtime === "bun") {
        // Bun reads a small body of declared length whole before answering: the cut is a clean 502.
        assert.equal(r.status, 502);
        assert.equal(r.reason, "upstream_reset");
      } else {
        // Streamed: the status is already sent, so the client connection is cut too.
        assert.ok(r.status === 0 || !r.complete || r.bytes < 100, JSON.stringify(r));
      }
    });

    test("a body larger than the gateway reads whole streams through to the last byte", { timeout: 30_000 }, async () => {
      const r = await new Promise<{ status: number; length: string | undefined; bytes: number; foreign: number }>((resolve, reject) => {
        http
          .get({ host: "127.0.0.1", port, path: "/odd/big", agent: false }, (res) => {
            let bytes = 0;
            let foreign = 0;
            res.on("data", (c: Buffer) => {
              bytes += c.length;
              for (const byte of c) if (byte !== 0x62) foreign++;
            });
            res.on("end", () => resolve({ status: res.statusCode!, length: res.headers["content-length"], bytes, foreign }));
            res.on("error", reject);
          })
          .on("error", reject);
      });
      // Bun.serve frames a streamed answer itself (chunked), whatever Content-Length it carries.
      assert.deepEqual(r, { status: 200, length: runtime === "bun" ? undefined : String(BIG), bytes: BIG, foreign: 0 });
    });

    test("a gzip response passes through with its encoding and its bytes intact", async () => {
      const r = await new Promise<{ headers: http.IncomingHttpHeaders; body: Buffer }>((resolve, reject) => {
        http
          .get({ host: "127.0.0.1", port, path: "/odd/gzip", agent: false, headers: { "accept-encoding": "gzip" } }, (res) => {
            const chunks: Buffer[] = [];
            res.on("data", (c: Buffer) => chunks.push(c));
            res.on("end", () => resolve({ headers: res.headers, body: Buffer.concat(chunks) }));
          })
          .on("error", reject);
      });
      assert.equal(r.headers["content-encoding"], "gzip");
      assert.equal(gunzipSync(r.body).toString(), "squeezed ".repeat(100));
    });

    test("the HTTPS listener serves the same routes with x-forwarded-proto https", async () => {
      const r = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        https
          .get({ host: "127.0.0.1", port: gw.ports[1]!, path: "/a/tls", ca: cert, servername: "localhost", agent: false }, (res) => {
            let body = "";
            res.on("data", (c: Buffer) => (body += c.toString()));
            res.on("end", () => resolve({ status: res.statusCode!, body }));
          })
          .on("error", reject);
      });
      assert.equal(r.status, 200);
      const body = JSON.parse(r.body);
      assert.equal(body.upstream, "alpha");
      assert.equal(body.headers["x-forwarded-proto"], "https");
    });

    test("an edit of the config file in place reloads it; an invalid one keeps the last good", { timeout: 20_000 }, async () => {
      const config = mesh(a, b, odd);
      const pong = async () => (await request(port, { path: "/ping" })).body;
      const edited = structuredClone(config);
      edited.gateways.edge.routes[4] = { name: "ping", match: { path: { exact: "/ping" } }, directResponse: { status: 200, body: "edited\n" } };
      try {
        await gw.writeConfig(edited);
        await until("the edited config answering /ping", async () => (await pong()) === "edited\n");
        const invalid = structuredClone(edited);
        (invalid.gateways.edge.routes[5] as { forward: { timeoutMs: number } }).forward.timeoutMs = -1;
        await gw.writeConfig(invalid);
        await until("the invalid edit refused", async () => gw.logs().some((l) => l.msg === "invalid config" && l.path === "gateways.edge.routes.5.forward.timeoutMs"));
        assert.equal(await pong(), "edited\n");
      } finally {
        // Leave the first config serving, whichever of the above failed.
        await gw.writeConfig(config);
        await until("the first config answering /ping again", async () => (await pong()) === "pong\n");
      }
    });
  });
}
