import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import https from "node:https";
import http2 from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startGateway, type GatewayProcess } from "../harness/gateway.ts";
import { deadAddress, request, startUpstream, type TestUpstream } from "../harness/upstream.ts";

interface H2Answer {
  status: number;
  headers: http2.IncomingHttpHeaders;
  trailers: http2.IncomingHttpHeaders;
  /** END_STREAM arrived on the response HEADERS frame (no body, no trailers frame). */
  headersOnly: boolean;
  body: string;
}

/** Sends one request on an HTTP/2 session and collects the whole answer, trailers included. */
function h2Request(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: string | Buffer[]): Promise<H2Answer> {
  return new Promise((resolve, reject) => {
    const stream = session.request(headers, { endStream: body === undefined });
    let status = 0;
    let responseHeaders: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    let headersOnly = false;
    let text = "";
    stream.on("response", (h, flags) => {
      status = Number(h[":status"]);
      responseHeaders = h;
      headersOnly = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0;
    });
    stream.on("trailers", (t) => (trailers = t));
    stream.on("data", (c: Buffer) => (text += c.toString()));
    stream.on("end", () => resolve({ status, headers: responseHeaders, trailers, headersOnly, body: text }));
    stream.on("error", reject);
    if (typeof body === "string") stream.end(body);
    else if (body !== undefined) {
      for (const chunk of body) stream.write(chunk);
      stream.end();
    }
  });
}

/** Runs curl with `args`, printing the body then, on the last line, the HTTP version curl used. */
function curl(args: string[]): Promise<{ body: string; httpVersion: string }> {
  return new Promise((resolve, reject) => {
    execFile("curl", ["-sS", "--max-time", "10", "-w", "\\n%{http_version}", ...args], (err, stdout, stderr) => {
      if (err) return reject(new Error(`curl failed: ${stderr}`));
      const nl = stdout.lastIndexOf("\n");
      resolve({ body: stdout.slice(0, nl), httpVersion: stdout.slice(nl + 1) });
    });
  });
}

function connectH2c(port: number): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.once("connect", () => resolve(session));
    session.once("error", reject);
  });
}

describe("gateway on Node: HTTP/2 listeners (h2c prior knowledge and TLS ALPN)", () => {
  let dir: string;
  let cert: string;
  let alpha: TestUpstream;
  let slow: TestUpstream;
  let trailing: TestUpstream;
  let gw: GatewayProcess;
  let h2c: number;
  let tlsPort: number;
  let plain: number;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "weft-h2-"));
    const certFile = join(dir, "cert.pem");
    const keyFile = join(dir, "key.pem");
    execFileSync("openssl", [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
      "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
      "-keyout", keyFile, "-out", certFile,
    ], { stdio: "ignore" });
    cert = await readFile(certFile, "utf8");
    alpha = await startUpstream((req, res) => {
      let bytes = 0;
      req.on("data", (c: Buffer) => (bytes += c.length));
      req.on("end", () => {
        res.writeHead(200, { "content-type": "application/json", "x-upstream": "alpha" });
        res.end(JSON.stringify({ url: req.url, httpVersion: req.httpVersion, headers: req.headers, bytes }));
      });
    });
    slow = await startUpstream((_req, res) => {
      const timer = setTimeout(() => res.end("late"), 3000);
      res.once("close", () => clearTimeout(timer));
    });
    // An HTTP/1.1 upstream that ends its chunked body with trailers.
    trailing = await startUpstream((req, res) => {
      req.resume();
      req.on("end", () => {
        res.writeHead(200, { "content-type": "text/plain", trailer: "x-checksum" });
        res.write("part one, ");
        res.addTrailers({ "x-checksum": "abc123" });
        res.end("part two");
      });
    });
    gw = await startGateway({
      services: {
        alpha: { endpoints: [{ address: alpha.address }] },
        slow: { endpoints: [{ address: slow.address }] },
        trailing: { endpoints: [{ address: trailing.address }] },
        gone: { endpoints: [{ address: await deadAddress() }] },
      },
      gateways: {
        edge: {
          listeners: [
            { port: 0, address: "127.0.0.1", http2: true },
            { port: 0, address: "127.0.0.1", protocol: "https", tls: { certFile, keyFile }, http2: true },
            { port: 0, address: "127.0.0.1" },
          ],
          routes: [
            { name: "alpha", match: { path: { prefix: "/a" } }, forward: { to: [{ service: "alpha" }] } },
            { name: "slow", match: { path: { prefix: "/slow" } }, forward: { to: [{ service: "slow" }], timeoutMs: 5000 } },
            { name: "trailing", match: { path: { prefix: "/trailers" } }, forward: { to: [{ service: "trailing" }] } },
            { name: "gone", match: { path: { prefix: "/gone" } }, forward: { to: [{ service: "gone" }] } },
            { name: "ping", match: { path: { exact: "/ping" } }, directResponse: { status: 200, body: "pong\n" } },
          ],
        },
      },
    });
    [h2c, tlsPort, plain] = gw.ports as [number, number, number];
  });
  after(async () => {
    await gw?.stop();
    await alpha?.close();
    await slow?.close();
    await trailing?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test("an h2c request with prior knowledge leaves as HTTP/1.1 with :authority as Host and no pseudo-headers", async () => {
    const session = await connectH2c(h2c);
    try {
      const r = await h2Request(session, { ":path": "/a/x?q=1", ":authority": "shop.test", "x-custom": "1" });
      assert.equal(r.status, 200);
      assert.equal(r.headers["x-upstream"], "alpha");
      const seen = JSON.parse(r.body);
      assert.equal(seen.httpVersion, "1.1");
      assert.equal(seen.url, "/a/x?q=1");
      assert.equal(seen.headers.host, "shop.test");
      assert.equal(seen.headers["x-forwarded-proto"], "http");
      assert.equal(seen.headers["x-forwarded-host"], "shop.test");
      assert.equal(seen.headers["x-custom"], "1");
      assert.deepEqual(Object.keys(seen.headers).filter((n) => n.startsWith(":")), []);
    } finally {
      session.close();
    }
  });

  test("HTTP/1.1 still works on the h2c port, and a listener without http2 stays HTTP/1.1 only", async () => {
    const r = await request(h2c, { path: "/a/h1", headers: { host: "shop.test" } });
    assert.equal(r.status, 200);
    assert.equal(JSON.parse(r.body).url, "/a/h1");
    const session = http2.connect(`http://127.0.0.1:${plain}`);
    const refused = await new Promise<boolean>((resolve) => {
      session.once("error", () => resolve(true));
      session.once("close", () => resolve(true));
      session.once("connect", () => {
        const s = session.request({ ":path": "/ping" });
        s.on("response", () => resolve(false));
        s.on("error", () => resolve(true));
        s.end();
      });
    });
    session.destroy();
    assert.equal(refused, true);
  });

  test("100 concurrent streams on one connection each get their own answer", async () => {
    const session = await connectH2c(h2c);
    try {
      const answers = await Promise.all(Array.from({ length: 100 }, (_, i) => h2Request(session, { ":path": `/a/${i}`, ":authority": "shop.test" })));
      assert.deepEqual(answers.map((r) => JSON.parse(r.body).url), Array.from({ length: 100 }, (_, i) => `/a/${i}`));
    } finally {
      session.close();
    }
  });

  test("a request body sent in DATA frames without content-length is streamed upstream whole", async () => {
    const session = await connectH2c(h2c);
    try {
      const chunks = Array.from({ length: 64 }, (_, i) => Buffer.alloc(16 * 1024, i));
      const r = await h2Request(session, { ":method": "POST", ":path": "/a/upload", ":authority": "shop.test" }, chunks);
      assert.equal(r.status, 200);
      const seen = JSON.parse(r.body);
      assert.equal(seen.bytes, 64 * 16 * 1024);
      assert.equal(seen.headers["transfer-encoding"], "chunked");
    } finally {
      session.close();
    }
  });

  test("local answers over HTTP/2 carry the reason: no route, direct response", async () => {
    const session = await connectH2c(h2c);
    try {
      const none = await h2Request(session, { ":path": "/nowhere", ":authority": "shop.test" });
      assert.equal(none.status, 404);
      assert.equal(none.headers["x-weft-reason"], "no_route");
      const ping = await h2Request(session, { ":path": "/ping", ":authority": "shop.test" });
      assert.equal(ping.status, 200);
      assert.equal(ping.body, "pong\n");
    } finally {
      session.close();
    }
  });

  test("trailers of an HTTP/1.1 upstream's chunked body reach the HTTP/2 client", async () => {
    const session = await connectH2c(h2c);
    try {
      const r = await h2Request(session, { ":path": "/trailers", ":authority": "shop.test", te: "trailers" });
      assert.equal(r.body, "part one, part two");
      assert.equal(r.trailers["x-checksum"], "abc123");
    } finally {
      session.close();
    }
  });

  test("TLS with ALPN: h2 is negotiated for an HTTP/2 client, http/1.1 for an HTTPS/1.1 client, on one port", async () => {
    const session = http2.connect(`https://127.0.0.1:${tlsPort}`, { ca: cert, servername: "localhost" });
    await new Promise<void>((resolve, reject) => {
      session.once("connect", () => resolve());
      session.once("error", reject);
    });
    try {
      assert.equal(session.alpnProtocol, "h2");
      const r = await h2Request(session, { ":path": "/a/secure", ":authority": "shop.test" });
      assert.equal(r.status, 200);
      assert.equal(JSON.parse(r.body).headers["x-forwarded-proto"], "https");
    } finally {
      session.close();
    }
    const h1 = await new Promise<{ status: number; alpn: string | false | null; body: string }>((resolve, reject) => {
      const req = https.get({ host: "127.0.0.1", port: tlsPort, path: "/a/secure1", ca: cert, servername: "localhost", agent: false, headers: { host: "shop.test" } }, (res) => {
        let body = "";
        res.on("data", (c: Buffer) => (body += c.toString()));
        res.on("end", () => resolve({ status: res.statusCode!, alpn: (res.socket as import("node:tls").TLSSocket).alpnProtocol, body }));
      });
      req.on("error", reject);
    });
    assert.equal(h1.status, 200);
    assert.notEqual(h1.alpn, "h2");
    assert.equal(JSON.parse(h1.body).headers["x-forwarded-proto"], "https");
  });

  test("curl --http2-prior-knowledge speaks HTTP/2 to the h2c listener and gets the upstream's answer", async () => {
    const r = await curl(["--http2-prior-knowledge", "-H", "host: shop.test", `http://127.0.0.1:${h2c}/a/curl-h2c`]);
    assert.equal(r.httpVersion, "2");
    const seen = JSON.parse(r.body);
    assert.equal(seen.url, "/a/curl-h2c");
    assert.equal(seen.headers.host, "shop.test");
    // The upstream is plain HTTP/1.1: the gateway translated.
    assert.equal(seen.httpVersion, "1.1");
  });

  test("curl --http2 over TLS negotiates h2 by ALPN; curl --http1.1 on the same port stays HTTP/1.1", async () => {
    const certFile = join(dir, "cert.pem");
    const target = ["--cacert", certFile, "--resolve", `localhost:${tlsPort}:127.0.0.1`, "-H", "host: shop.test"];
    const h2 = await curl(["--http2", ...target, `https://localhost:${tlsPort}/a/curl-tls`]);
    assert.equal(h2.httpVersion, "2");
    assert.equal(JSON.parse(h2.body).url, "/a/curl-tls");
    assert.equal(JSON.parse(h2.body).headers["x-forwarded-proto"], "https");
    const h1 = await curl(["--http1.1", ...target, `https://localhost:${tlsPort}/a/curl-tls1`]);
    assert.equal(h1.httpVersion, "1.1");
    assert.equal(JSON.parse(h1.body).url, "/a/curl-tls1");
  });

  test("curl --http2 on a plain port asks for an h2c Upgrade, which weft does not do: the answer is HTTP/1.1", async () => {
    const r = await curl(["--http2", "-H", "host: shop.test", `http://127.0.0.1:${h2c}/a/curl-upgrade`]);
    assert.equal(r.httpVersion, "1.1");
    assert.equal(JSON.parse(r.body).url, "/a/curl-upgrade");
  });

  test("a gRPC call without a route is answered trailers-only with UNIMPLEMENTED", async () => {
    const session = await connectH2c(h2c);
    try {
      const r = await h2Request(session, { ":method": "POST", ":path": "/pkg.Missing/Call", ":authority": "shop.test", "content-type": "application/grpc", te: "trailers" }, "");
      assert.equal(r.status, 200);
      assert.equal(r.headersOnly, true);
      assert.equal(r.headers["content-type"], "application/grpc");
      assert.equal(r.headers["grpc-status"], "12");
      assert.equal(r.headers["x-weft-reason"], "no_route");
      assert.equal(r.body, "");
    } finally {
      session.close();
    }
  });

  test("a gRPC call to an unreachable service is UNAVAILABLE; grpc-timeout below the route timeout gives DEADLINE_EXCEEDED", async () => {
    const session = await connectH2c(h2c);
    try {
      const grpc = { ":method": "POST", ":authority": "shop.test", "content-type": "application/grpc", te: "trailers" };
      const down = await h2Request(session, { ...grpc, ":path": "/gone/pkg.S/Call" }, "");
      assert.equal(down.headers["grpc-status"], "14");
      // The default policy retries a failed connect once, so the reason is retries_exhausted.
      assert.equal(down.headers["x-weft-reason"], "retries_exhausted");
      const started = Date.now();
      const late = await h2Request(session, { ...grpc, ":path": "/slow/pkg.S/Call", "grpc-timeout": "200m" }, "");
      assert.equal(late.status, 200);
      assert.equal(late.headers["grpc-status"], "4");
      assert.equal(late.headers["x-weft-reason"], "timeout");
      // The route allows 5 s and the upstream answers after 3 s: only the caller's deadline ended it this early.
      assert.ok(Date.now() - started < 2500, `took ${Date.now() - started} ms`);
    } finally {
      session.close();
    }
  });

  test("the access log names the protocol a request arrived over", async () => {
    const session = await connectH2c(h2c);
    try {
      await h2Request(session, { ":path": "/a/logged-h2", ":authority": "shop.test" });
    } finally {
      session.close();
    }
    await request(h2c, { path: "/a/logged-h1", headers: { host: "shop.test" } });
    const deadline = Date.now() + 3000;
    const find = (path: string) => gw.accessLog().find((l) => l.path === path);
    while ((!find("/a/logged-h2") || !find("/a/logged-h1")) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    assert.equal(find("/a/logged-h2")?.protocol, "HTTP/2");
    assert.equal(find("/a/logged-h1")?.protocol, "HTTP/1.1");
  });
});
