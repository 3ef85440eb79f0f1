import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import https from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { selfSignedCertificate } from "../harness/external-tls.ts";
import { startGateway, type GatewayProcess } from "../harness/gateway.ts";
import { assertShare, loadLoop } from "../harness/load.ts";
import { deadAddress, replyAs, request, startUpstream, writeRepeated, type TestUpstream } from "../harness/upstream.ts";

// Real traffic through a real `weft gateway` process: load, retries and timeouts against misbehaving
// upstreams, 100 MB bodies both ways under an RSS bound, hop-by-hop framing, and an HTTPS listener.

const MB = 1024 * 1024;

describe("gateway on Node: a 90/10 split under load", () => {
  test("10,000 requests over keep-alive land within two points of 90/10", async () => {
    const a = await startUpstream((_req, res) => res.end("a"));
    const b = await startUpstream((_req, res) => res.end("b"));
    const gw = await startGateway({
      services: { alpha: { endpoints: [{ address: a.address }] }, beta: { endpoints: [{ address: b.address }] } },
      accessLog: "off",
      gateways: {
        edge: {
          listeners: [{ port: 0, address: "127.0.0.1" }],
          routes: [{ name: "split", forward: { to: [{ service: "alpha", weight: 90 }, { service: "beta", weight: 10 }] } }],
        },
      },
    });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
    try {
      const port = gw.ports[0]!;
      const counts = { a: 0, b: 0, other: 0 };
      const total = 10_000;
      const done = await loadLoop(total, 32, 90_000, async () => {
        const r = await request(port, { path: "/split", agent });
        if (r.status !== 200) counts.other++;
        else if (r.body === "a") counts.a++;
        else if (r.body === "b") counts.b++;
        else counts.other++;
      });
      assert.equal(done, total, "the load loop ran out of time");
      assert.equal(counts.other, 0);
      assert.equal(a.requests.length + b.requests.length, total);
      assertShare(counts.a, total, 0.9, "alpha share"); // six deviations here is 1.8 points
    } finally {
      agent.destroy();
      await gw.stop();
      await a.close();
      await b.close();
    }
  });
});

describe("gateway on Node: retries and timeouts against real flaky upstreams", () => {
  const upstreams: TestUpstream[] = [];
  let flaky: TestUpstream;
  let resetting: TestUpstream;
  let slow: TestUpstream;
  let perTrySlow: TestUpstream;
  let perTryFast: TestUpstream;
  let post503: TestUpstream;
  let live: TestUpstream;
  let reusedReset: TestUpstream;
  let gw: GatewayProcess;
  let port: number;
  const FLAKY_FAILURES = 2;

  before(async () => {
    // Answers 503 to the first FLAKY_FAILURES requests, then 200.
    flaky = await startUpstream((_req, res, i) => {
      res.statusCode = i < FLAKY_FAILURES ? 503 : 200;
      res.end(i < FLAKY_FAILURES ? "unavailable" : "recovered");
    });
    // Drops the connection without a response on the first request.
    resetting = await startUpstream((req, res, i) => {
      if (i === 0) req.socket.destroy();
      else res.end("second try");
    });
    // Never answers within any route timeout used here (the close at the end cuts it).
    slow = await startUpstream((_req, res) => {
      setTimeout(() => res.end("too late"), 5000).unref();
    });
    perTrySlow = await startUpstream((_req, res) => {
      setTimeout(() => res.end("slow"), 5000).unref();
    });
    perTryFast = await startUpstream((_req, res) => res.end("fast"));
    post503 = await startUpstream((req, res) => {
      req.resume();
      req.on("end", () => {
        res.statusCode = 503;
        res.end("busy");
      });
    });
    live = await startUpstream((_req, res) => res.end("live"));
    // Answers the first request, then drops the (kept-alive) connection on the second.
    reusedReset = await startUpstream((req, res, i) => {
      req.resume();
      if (i === 1) req.socket.destroy();
      else req.on("end", () => res.end("ok"));
    });
    upstreams.push(flaky, resetting, slow, perTrySlow, perTryFast, post503, live, reusedReset);
    const dead = await deadAddress();

    const retryStatus = { attempts: 3, retryOn: ["retriable-status-codes"], backoff: { baseMs: 1, maxMs: 5 } };
    gw = await startGateway({
      accessLog: "off",
      services: {
        flaky: { endpoints: [{ address: flaky.address }] },
        resetting: { endpoints: [{ address: resetting.address }] },
        slow: { endpoints: [{ address: slow.address }] },
        pertry: { endpoints: [{ address: perTrySlow.address }, { address: perTryFast.address }] },
        post503: { endpoints: [{ address: post503.address }] },
        halfdead: { endpoints: [{ address: dead }, { address: live.address }] },
        reused: { endpoints: [{ address: reusedReset.address }] },
      },
      gateways: {
        edge: {
          listeners: [{ port: 0, address: "127.0.0.1" }],
          routes: [
            { name: "flaky", match: { path: { prefix: "/flaky" } }, forward: { to: [{ service: "flaky" }], retries: retryStatus } },
            {
              name: "reset",
              match: { path: { prefix: "/reset" } },
              forward: { to: [{ service: "resetting" }], retries: { attempts: 1, retryOn: ["reset"], backoff: { baseMs: 1, maxMs: 5 } } },
            },
            { name: "slow", match: { path: { prefix: "/slow" } }, forward: { to: [{ service: "slow" }], timeoutMs: 300 } },
            {
              name: "pertry",
              match: { path: { prefix: "/pertry" } },
              forward: {
                to: [{ service: "pertry" }],
                timeoutMs: 4000,
                retries: { attempts: 1, perTryTimeoutMs: 250, retryOn: ["reset"], backoff: { baseMs: 1, maxMs: 5 } },
              },
            },
            { name: "post503", match: { path: { prefix: "/post503" } }, forward: { to: [{ service: "post503" }], retries: retryStatus } },
            { name: "halfdead", match: { path: { prefix: "/halfdead" } }, forward: { to: [{ service: "halfdead" }] } },
            { name: "reused", match: { path: { prefix: "/reused" } }, forward: { to: [{ service: "reused" }], retries: { attempts: 0 } } },
          ],
        },
      },
    });
    port = gw.ports[0]!;
  });
  after(async () => {
    await gw?.stop();
    for (const u of upstreams) await u.close();
  });

  test("an upstream failing the first N tries with 503 succeeds on try N+1", async () => {
    const r = await request(port, { path: "/flaky" });
    assert.equal(r.status, 200);
    assert.equal(r.body, "recovered");
    assert.equal(flaky.requests.length, FLAKY_FAILURES + 1);
  });

  test("a connection reset on the first try is retried under retryOn reset", async () => {
    const r = await request(port, { path: "/reset" });
    assert.equal(r.status, 200);
    assert.equal(r.body, "second try");
    assert.equal(resetting.requests.length, 2);
  });

  test("an upstream slower than the route timeout gets 504 with reason timeout", async () => {
    const started = Date.now();
    const r = await request(port, { path: "/slow" });
    assert.equal(r.status, 504);
    assert.equal(r.headers["x-weft-reason"], "timeout");
    assert.equal(slow.requests.length, 1);
    assert.ok(Date.now() - started < 4000, "the gateway waited for the upstream instead of timing out");
  });

  test("a per-try timeout moves the request to the second endpoint, which answers", async () => {
    // Whatever endpoint the balancer starts with, two requests send at least one try to the slow one.
    for (let i = 0; i < 2; i++) {
      const started = Date.now();
      const r = await request(port, { path: "/pertry" });
      assert.equal(r.status, 200);
      assert.equal(r.body, "fast");
      assert.ok(Date.now() - started < 4000, "the per-try timeout did not cut the slow try");
    }
    assert.ok(perTrySlow.requests.length >= 1, "no try reached the slow endpoint");
    assert.equal(perTryFast.requests.length, 2);
  });

  test("a POST is not retried on 503 by default, while a GET on the same route is", async () => {
    const p = await request(port, { method: "POST", path: "/post503", body: "order=1" });
    assert.equal(p.status, 503);
    assert.equal(p.body, "busy");
    assert.equal(post503.requests.length, 1);
    const g = await request(port, { path: "/post503" });
    assert.equal(g.status, 503);
    assert.equal(post503.requests.length, 1 + 4);
  });

  test("a connect failure to a dead endpoint goes to the live endpoint", async () => {
    for (let i = 0; i < 4; i++) {
      const r = await request(port, { path: "/halfdead" });
      assert.equal(r.status, 200);
      assert.equal(r.body, "live");
    }
    assert.equal(live.requests.length, 4);
  });

  test("a POST reset on a reused upstream connection is not sent again", async () => {
    const first = await request(port, { method: "POST", path: "/reused", body: "a=1" });
    assert.equal(first.status, 200);
    const second = await request(port, { method: "POST", path: "/reused", body: "a=2" });
    assert.equal(second.status, 502);
    assert.equal(second.headers["x-weft-reason"], "upstream_reset");
    assert.equal(reusedReset.requests.length, 2);
  });
});

describe("gateway on Node: 100 MB bodies stream through in bounded memory", () => {
  const SIZE = 100 * MB;
  const CHUNK = Buffer.alloc(64 * 1024, 0x61);
  let up: TestUpstream;
  let gw: GatewayProcess;
  let port: number;
  let baseline: number;

  before(async () => {
    up = await startUpstream((req, res) => {
      if (req.method === "POST") {
        // Reads the upload, pausing now and then (a slower reader than the client is a writer).
        let bytes = 0;
        let sinceBreak = 0;
        req.on("data", (c: Buffer) => {
          bytes += c.length;
          sinceBreak += c.length;
          if (sinceBreak >= 2 * MB) {
            sinceBreak = 0;
            req.pause();
            setTimeout(() => req.resume(), 20);
          }
        });
        req.on("end", () => res.end(String(bytes)));
        return;
      }
      // Generates the download on the fly, honouring backpressure.
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(SIZE) });
      writeRepeated(res, SIZE, CHUNK);
    });
    gw = await startGateway({
      accessLog: "off",
      services: { bulk: { endpoints: [{ address: up.address }] } },
      gateways: { edge: { listeners: [{ port: 0, address: "127.0.0.1" }], routes: [{ forward: { to: [{ service: "bulk" }], timeoutMs: 60_000 } }] } },
    });
    port = gw.ports[0]!;
    // Warm the request path once, then read the idle baseline.
    await request(port, { method: "POST", path: "/warm", body: Buffer.alloc(1024) });
    await new Promise((r) => setTimeout(r, 200));
    baseline = gw.rss();
  });
  after(async () => {
    await gw?.stop();
    await up?.close();
  });

  /** Samples the gateway's RSS every 50 ms while `work` runs; returns the samples. */
  async function sampleRss<T>(work: Promise<T>): Promise<{ result: T; samples: number[] }> {
    const samples: number[] = [];
    const timer = setInterval(() => samples.push(gw.rss()), 50);
    try {
      const result = await work;
      return { result, samples };
    } finally {
      clearInterval(timer);
    }
  }

  test("a 100 MB upload arrives whole and the gateway's RSS stays within 50 MB of idle", async (t) => {
    const upload = new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request(
        { host: "127.0.0.1", port, method: "POST", path: "/upload", agent: false, headers: { "content-length": String(SIZE) } },
        (res) => {
          let body = "";
          res.on("data", (c: Buffer) => (body += c.toString()));
          res.on("end", () => resolve({ status: res.statusCode!, body }));
        },
      );
      req.on("error", reject);
      writeRepeated(req, SIZE, CHUNK);
    });
    const { result, samples } = await sampleRss(upload);
    assert.equal(result.status, 200);
    assert.equal(Number(result.body), SIZE);
    assert.ok(samples.length >= 3, `only ${samples.length} RSS samples taken`);
    const growth = Math.max(...samples) - baseline;
    t.diagnostic(`gateway RSS: idle ${(baseline / MB).toFixed(1)} MB, peak growth ${(growth / MB).toFixed(1)} MB over ${samples.length} samples`);
    assert.ok(growth < 50 * MB, `RSS grew by ${(growth / MB).toFixed(1)} MB`);
  });

  test("a 100 MB download arrives whole and the gateway's RSS stays within 50 MB of idle", async (t) => {
    const download = new Promise<{ status: number; bytes: number; length: string | undefined }>((resolve, reject) => {
      const req = http.get({ host: "127.0.0.1", port, path: "/download", agent: false }, (res) => {
        // A reader slower than the upstream: the gateway has to hold the upstream back, not buffer.
        let bytes = 0;
        let sinceBreak = 0;
        res.on("data", (c: Buffer) => {
          bytes += c.length;
          sinceBreak += c.length;
          if (sinceBreak >= 2 * MB) {
            sinceBreak = 0;
            res.pause();
            setTimeout(() => res.resume(), 20);
          }
        });
        res.on("end", () => resolve({ status: res.statusCode!, bytes, length: res.headers["content-length"] }));
        res.on("error", reject);
      });
      req.on("error", reject);
    });
    const { result, samples } = await sampleRss(download);
    assert.equal(result.status, 200);
    assert.equal(result.bytes, SIZE);
    assert.equal(result.length, String(SIZE));
    assert.ok(samples.length >= 3, `only ${samples.length} RSS samples taken`);
    const growth = Math.max(...samples) - baseline;
    t.diagnostic(`gateway RSS: idle ${(baseline / MB).toFixed(1)} MB, peak growth ${(growth / MB).toFixed(1)} MB over ${samples.length} samples`);
    assert.ok(growth < 50 * MB, `RSS grew by ${(growth / MB).toFixed(1)} MB`);
  });
});

describe("gateway on Node: hop-by-hop headers and framing, both directions", () => {
  let up: TestUpstream;
  let gw: GatewayProcess;
  let port: number;

  before(async () => {
    up = await startUpstream((req, res) => {
      let bytes = 0;
      req.on("data", (c: Buffer) => (bytes += c.length));
      req.on("end", () => {
        // Hop-by-hop headers of the upstream's own connection, and a chunked body (no Content-Length).
        res.setHeader("connection", "keep-alive, x-resp-hop");
        res.setHeader("x-resp-hop", "1");
        res.setHeader("keep-alive", "timeout=7");
        res.setHeader("proxy-connection", "keep-alive");
        res.setHeader("upgrade", "foo/1");
        res.setHeader("x-resp-end", "kept");
        res.write(`got ${bytes} `);
        res.end("done");
      });
    });
    gw = await startGateway({
      accessLog: "off",
      services: { hop: { endpoints: [{ address: up.address }] } },
      gateways: { edge: { listeners: [{ port: 0, address: "127.0.0.1" }], routes: [{ forward: { to: [{ service: "hop" }] } }] } },
    });
    port = gw.ports[0]!;
  });
  after(async () => {
    await gw?.stop();
    await up?.close();
  });

  test("request hop-by-hop headers are stripped and a chunked body is re-framed for the upstream", async () => {
    const before = up.requests.length;
    const r = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request(
        {
          host: "127.0.0.1",
          port,
          method: "POST",
          path: "/in",
          agent: false,
          headers: {
            connection: "x-foo",
            "x-foo": "secret",
            "keep-alive": "timeout=5",
            te: "trailers",
            upgrade: "foo/1",
            "proxy-connection": "keep-alive",
            "transfer-encoding": "chunked",
            "x-end": "kept",
          },
        },
        (res) => {
          let body = "";
          res.on("data", (c: Buffer) => (body += c.toString()));
          res.on("end", () => resolve({ status: res.statusCode!, body }));
        },
      );
      req.on("error", reject);
      req.write("hello ");
      req.end("world");
    });
    assert.equal(r.status, 200);
    assert.equal(r.body, "got 11 done");
    const seen = up.requests[before]!;
    for (const h of ["x-foo", "keep-alive", "te", "upgrade", "proxy-connection"]) assert.equal(seen.headers[h], undefined, h);
    assert.notEqual(seen.headers.connection, "x-foo");
    assert.equal(seen.headers["x-end"], "kept");
    assert.equal(seen.bodyBytes, 11);
    // The gateway frames the upstream request itself: chunked or a length, never both.
    assert.ok((seen.headers["transfer-encoding"] === "chunked") !== (seen.headers["content-length"] === "11"));
  });

  test("response hop-by-hop headers are stripped and the chunked body reaches the client whole", async () => {
    const r = await new Promise<{ status: number; headers: http.IncomingHttpHeaders; rawHeaders: string[]; body: string }>((resolve, reject) => {
      const req = http.get({ host: "127.0.0.1", port, path: "/out", agent: false }, (res) => {
        let body = "";
        res.on("data", (c: Buffer) => (body += c.toString()));
        res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, rawHeaders: res.rawHeaders, body }));
      });
      req.on("error", reject);
    });
    assert.equal(r.status, 200);
    assert.equal(r.body, "got 0 done");
    assert.equal(r.headers["x-resp-hop"], undefined);
    assert.equal(r.headers["proxy-connection"], undefined);
    assert.equal(r.headers.upgrade, undefined);
    assert.notEqual(r.headers["keep-alive"], "timeout=7");
    assert.doesNotMatch(String(r.headers.connection ?? ""), /x-resp-hop/);
    assert.equal(r.headers["x-resp-end"], "kept");
    // Exactly one framing header toward the client.
    const framing = r.rawHeaders.filter((_, i) => i % 2 === 0 && /^(transfer-encoding|content-length)$/i.test(r.rawHeaders[i]!));
    assert.equal(framing.length, 1, JSON.stringify(r.rawHeaders));
  });
});

describe("gateway on Node: an HTTPS listener serves the same routes", () => {
  let dir: string;
  let up: TestUpstream;
  let gw: GatewayProcess;
  let cert: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "weft-tls-"));
    const { certFile, keyFile, cert: pem } = selfSignedCertificate(dir);
    cert = pem;
    up = await startUpstream(replyAs("alpha"));
    gw = await startGateway({
      accessLog: "off",
      services: { alpha: { endpoints: [{ address: up.address }] } },
      gateways: {
        edge: {
          listeners: [
            { port: 0, address: "127.0.0.1" },
            { port: 0, address: "127.0.0.1", protocol: "https", tls: { certFile, keyFile } },
          ],
          routes: [
            { name: "alpha", match: { path: { prefix: "/a" } }, forward: { to: [{ service: "alpha" }] } },
            { name: "ping", match: { path: { exact: "/ping" } }, directResponse: { status: 200, body: "pong\n" } },
          ],
        },
      },
    });
  });
  after(async () => {
    await gw?.stop();
    await up?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  function httpsGet(path: string): Promise<{ status: number; body: string; authorized: boolean }> {
    return new Promise((resolve, reject) => {
      const req = https.get({ host: "127.0.0.1", port: gw.ports[1]!, path, ca: cert, servername: "localhost", agent: false, headers: { host: "shop.test" } }, (res) => {
        let body = "";
        res.on("data", (c: Buffer) => (body += c.toString()));
        res.on("end", () => resolve({ status: res.statusCode!, body, authorized: (res.socket as import("node:tls").TLSSocket).authorized }));
      });
      req.on("error", reject);
    });
  }

  test("the https listener forwards with x-forwarded-proto https and answers local routes", async () => {
    const r = await httpsGet("/a/secure");
    assert.equal(r.status, 200);
    assert.ok(r.authorized);
    const body = JSON.parse(r.body);
    assert.equal(body.upstream, "alpha");
    assert.equal(body.headers["x-forwarded-proto"], "https");
    assert.equal(body.headers.host, "shop.test");
    const p = await httpsGet("/ping");
    assert.equal(p.status, 200);
    assert.equal(p.body, "pong\n");
  });

  test("the plain listener still serves the same routes over http", async () => {
    const r = await request(gw.ports[0]!, { path: "/a/plain" });
    assert.equal(r.status, 200);
    assert.equal(JSON.parse(r.body).headers["x-forwarded-proto"], "http");
  });
});
