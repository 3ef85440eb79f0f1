// gRPC through the mesh with real processes: nats-server, the control plane (its CA signs every
// proxy's SVID), a gateway and three sidecars, each its own process. Two chains:
//   @grpc/grpc-js client → gateway (h2c, or TLS with ALPN h2) → (mTLS, ALPN h2) → echo's sidecar → gRPC server (h2c)
//   @grpc/grpc-js client as web's app → web's sidecar outbound (h2c) → (mTLS h2) → echo's sidecar → gRPC server
// and HTTP/1.1 ↔ HTTP/2 translation between a client, the gateway and apps of either protocol.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { connectNatsBus, type Bus } from "../../shared/bus/index.ts";
import { startControlPlane, type ControlPlane } from "../../control/plane.ts";
import { startNatsServer, type NatsServer } from "../harness/nats-server.ts";
import { callUnary, loadProto, type UnaryMethod } from "../harness/grpc.ts";
import { freePort } from "../harness/ports.ts";
import { request } from "../harness/upstream.ts";
import { spawnWeft, type WeftProcess } from "../harness/weft-process.ts";

const PROTO = `
syntax = "proto3";
package weft.test;
message Ping { string text = 1; int32 count = 2; }
message Pong { string text = 1; int32 index = 2; }
service Echo {
  rpc Unary (Ping) returns (Pong);
  rpc Stream (Ping) returns (stream Pong);
  rpc Fail (Ping) returns (Pong);
  rpc Flaky (Ping) returns (Pong);
  rpc Other (Ping) returns (Pong);
}
`;

interface Ping {
  text: string;
  count: number;
}
interface Pong {
  text: string;
  index: number;
}
type Unary = UnaryMethod<Ping, Pong>;
interface EchoClient extends grpc.Client {
  Unary: Unary;
  Fail: Unary;
  Flaky: Unary;
  Other: Unary;
  Stream(request: Ping, metadata?: grpc.Metadata): grpc.ClientReadableStream<Pong>;
}

const unary = (method: Unary, client: grpc.Client, text: string) => callUnary(method, client, { text, count: 0 }, { deadline: Date.now() + 10_000 });

async function stream(client: EchoClient, count: number): Promise<{ indexes: number[]; status: grpc.StatusObject }> {
  const call = client.Stream({ text: "tick", count });
  const indexes: number[] = [];
  call.on("data", (m: Pong) => indexes.push(m.index));
  const status = await new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
  return { indexes, status };
}

/** The second backend of the echo service: plain node:http2 that answers Other by hand, and anything else with the protocol it heard. */
async function startOtherBackend() {
  const server = http2.createServer((req, res) => {
    if (req.url === "/weft.test.Echo/Other") {
      // A Pong { text: "from-b" } in gRPC's length-prefixed framing, status in the trailers.
      const text = Buffer.from("from-b");
      const message = Buffer.concat([Buffer.from([0x0a, text.length]), text]);
      const frame = Buffer.alloc(5);
      frame.writeUInt32BE(message.length, 1);
      res.writeHead(200, { "content-type": "application/grpc" });
      res.addTrailers({ "grpc-status": "0" });
      req.resume();
      req.on("end", () => res.end(Buffer.concat([frame, message])));
      return;
    }
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ app: "b", version: req.httpVersion, path: req.url }));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { port: (server.address() as AddressInfo).port, close: () => new Promise<void>((r) => server.close(() => r())) };
}

/** web's app: HTTP/1.1 only, answers with the protocol it heard. */
async function startWebApp() {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ app: "web", version: req.httpVersion, xfcc: req.headers["x-forwarded-client-cert"] ?? null }));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { port: (server.address() as AddressInfo).port, close: () => new Promise<void>((r) => server.close(() => r())) };
}

/** One HTTP/2 (h2c, prior knowledge) GET. */
function h2Get(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on("error", reject);
    const req = session.request({ ":path": path, ":authority": "edge.test" });
    let status = 0;
    let body = "";
    req.on("response", (h) => (status = Number(h[":status"])));
    req.on("data", (c: Buffer) => (body += c));
    req.on("end", () => {
      session.close();
      resolve({ status, body });
    });
    req.on("error", reject);
  });
}

describe("gRPC and HTTP/2 between weft proxies (gateway → sidecar → app, app → sidecar → sidecar → app)", () => {
  let dir: string;
  let nats: NatsServer;
  let bus: Bus;
  let control: ControlPlane;
  let server: grpc.Server;
  let other: Awaited<ReturnType<typeof startOtherBackend>>;
  let web: Awaited<ReturnType<typeof startWebApp>>;
  const procs: WeftProcess[] = [];
  let echoSidecar: WeftProcess;
  let webSidecar: WeftProcess;
  let gateway: WeftProcess;
  let gatewayPort: number;
  let viaGateway: EchoClient;
  let viaGatewayTls: EchoClient;
  let tlsPort: number;
  let viaOutbound: EchoClient;
  const calls = { Unary: 0, Stream: 0, Fail: 0, Flaky: 0, Other: 0 };
  const callers: string[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "weft-grpc-mesh-"));
    const { Echo } = await loadProto(dir, PROTO, "weft.test");
    server = new grpc.Server();
    server.addService(Echo.service, {
      Unary(call: grpc.ServerUnaryCall<Ping, Pong>, callback: grpc.sendUnaryData<Pong>) {
        calls.Unary++;
        callers.push(String(call.metadata.get("x-forwarded-client-cert")[0] ?? ""));
        callback(null, { text: `echo:${call.request.text}`, index: 0 });
      },
      Stream(call: grpc.ServerWritableStream<Ping, Pong>) {
        calls.Stream++;
        for (let i = 0; i < call.request.count; i++) call.write({ text: call.request.text, index: i });
        const trailers = new grpc.Metadata();
        trailers.set("x-stream-total", String(call.request.count));
        call.end(trailers);
      },
      Fail(_call: grpc.ServerUnaryCall<Ping, Pong>, callback: grpc.sendUnaryData<Pong>) {
        calls.Fail++;
        const metadata = new grpc.Metadata();
        metadata.set("x-error-detail", "order-42-missing");
        callback({ code: grpc.status.NOT_FOUND, details: "no such order", metadata });
      },
      Flaky(_call: grpc.ServerUnaryCall<Ping, Pong>, callback: grpc.sendUnaryData<Pong>) {
        calls.Flaky++;
        if (calls.Flaky % 2 === 1) callback({ code: grpc.status.UNAVAILABLE, details: "warming up" });
        else callback(null, { text: "second time lucky", index: calls.Flaky });
      },
      Other(_call: grpc.ServerUnaryCall<Ping, Pong>, callback: grpc.sendUnaryData<Pong>) {
        calls.Other++;
        callback(null, { text: "from-a", index: 0 });
      },
    });
    const grpcPort = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
    );
    other = await startOtherBackend();
    web = await startWebApp();

    nats = await startNatsServer();
    bus = await connectNatsBus({ servers: [nats.url], name: "grpc-mesh-test" });
    control = await startControlPlane({ bus, id: "control-1", ca: { trustDomain: "cluster.local", stateDir: join(dir, "control") } });
    gatewayPort = await freePort();
    tlsPort = await freePort();
    // The gateway's TLS certificate for the edge (not a mesh SVID): gRPC clients over TLS, ALPN h2.
    const certFile = join(dir, "edge.pem");
    const keyFile = join(dir, "edge.key");
    execFileSync("openssl", [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
      "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-keyout", keyFile, "-out", certFile,
    ], { stdio: "ignore" });
    const byMethod = (service: string) => [
      { name: "other", match: { path: { exact: "/weft.test.Echo/Other" } }, forward: { to: [{ service: "echob" }] } },
      { name: "flaky", match: { path: { exact: "/weft.test.Echo/Flaky" } }, forward: { to: [{ service }], retries: { attempts: 2, retryOn: ["unavailable"] } } },
      { name: "echo", match: { path: { prefix: "/weft.test.Echo/" } }, forward: { to: [{ service }] } },
    ];
    const applied = await control.apply({
      services: {
        echo: { ports: [{ port: 50051, protocol: "grpc" }], routes: byMethod("echo") },
        echob: { ports: [{ port: 50051, protocol: "grpc" }] },
        // Its app speaks HTTP/1.1; proxies speak HTTP/2 to its sidecar all the same.
        web: { ports: [{ port: 8080, protocol: "http" }], traffic: { h2UpgradePolicy: "UPGRADE" } },
      },
      gateways: {
        ingress: {
          listeners: [
            { port: gatewayPort, address: "127.0.0.1", http2: true },
            { port: tlsPort, address: "127.0.0.1", protocol: "https", tls: { certFile, keyFile }, http2: true },
          ],
          routes: [
            ...byMethod("echo"),
            { name: "plain-b", match: { path: { prefix: "/plain" } }, forward: { to: [{ service: "echob" }] } },
            { name: "web", match: { path: { prefix: "/web" } }, forward: { to: [{ service: "web" }] } },
          ],
        },
      },
    });
    assert.equal(applied.ok, true, JSON.stringify(applied));
    const common = ["--nats", nats.url, "--inbound-port", "0", "--inbound-address", "127.0.0.1", "--outbound-port", "0", "--admin", "127.0.0.1:0"];
    const env = { WEFT_STATE_DIR: join(dir, "state") };
    const sidecar = async (service: string, appPort: number) =>
      spawnWeft(["sidecar", "--service", service, "--app-port", String(appPort), "--proxy-id", `sc-${service}`, "--join-token", await control.ca!.mintToken("default", service, 600_000), ...common], { env });
    echoSidecar = await sidecar("echo", grpcPort);
    const echobSidecar = await sidecar("echob", other.port);
    webSidecar = await sidecar("web", web.port);
    gateway = spawnWeft(["gateway", "--nats", nats.url, "--name", "ingress", "--admin", "127.0.0.1:0", "--proxy-id", "gw", "--join-token", await control.ca!.mintToken("default", "ingress", 600_000)], { env });
    procs.push(echoSidecar, echobSidecar, webSidecar, gateway);
    const outboundPort = (await webSidecar.waitForLog((l) => l.msg === "sidecar listening")).outbound as number;
    for (const p of [echoSidecar, echobSidecar, webSidecar]) await p.waitForLog((l) => l.msg === "sidecar ready");
    await gateway.waitForLog((l) => l.msg === "certificate held");

    viaGateway = new Echo(`127.0.0.1:${gatewayPort}`, grpc.credentials.createInsecure()) as unknown as EchoClient;
    viaGatewayTls = new Echo(`127.0.0.1:${tlsPort}`, grpc.credentials.createSsl(readFileSync(certFile)), {
      "grpc.ssl_target_name_override": "localhost",
      "grpc.default_authority": "localhost",
    }) as unknown as EchoClient;
    // The app names the service as its authority, as a client of `echo:50051` in a cluster would.
    viaOutbound = new Echo(`127.0.0.1:${outboundPort}`, grpc.credentials.createInsecure(), { "grpc.default_authority": "echo" }) as unknown as EchoClient;
    // Registration reaches the gateway's view asynchronously: wait until a call gets through.
    const deadline = Date.now() + 20_000;
    for (;;) {
      const [a, b] = await Promise.all([unary(viaGateway.Unary, viaGateway, "warm"), unary(viaOutbound.Unary, viaOutbound, "warm")]);
      if (!a.error && !b.error) break;
      if (Date.now() > deadline) throw new Error(`mesh not ready: ${a.error?.message} / ${b.error?.message}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  });

  after(async () => {
    viaGateway?.close();
    viaGatewayTls?.close();
    viaOutbound?.close();
    for (const p of procs) await p.stop();
    await control?.stop();
    await bus?.close();
    await nats?.stop();
    server?.forceShutdown();
    await other?.close();
    await web?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  for (const [path, client] of [
    ["gateway", () => viaGateway],
    ["gateway over TLS", () => viaGatewayTls],
    ["outbound", () => viaOutbound],
  ] as const) {
    test(`via ${path}: a unary call reaches the server over the mesh, which names the calling proxy's identity`, async () => {
      const { response, error } = await unary(client().Unary, client(), "hello");
      assert.equal(error, undefined);
      assert.equal(response?.text, "echo:hello");
      // echo's sidecar set x-forwarded-client-cert from the mTLS peer it verified.
      const caller = path === "outbound" ? "web" : "ingress";
      assert.equal(callers.at(-1), `URI=spiffe://cluster.local/ns/default/sa/${caller}`);
    });

    test(`via ${path}: a server-streaming call delivers every message in order and the server's trailers`, async () => {
      const { indexes, status } = await stream(client(), 40);
      assert.equal(status.code, grpc.status.OK);
      assert.deepEqual(indexes, Array.from({ length: 40 }, (_, i) => i));
      assert.equal(status.metadata.get("x-stream-total")[0], "40");
    });

    test(`via ${path}: an error status keeps its code, message and custom trailing metadata`, async () => {
      const { error } = await unary(client().Fail, client(), "x");
      assert.equal(error?.code, grpc.status.NOT_FOUND);
      assert.equal(error?.details, "no such order");
      assert.equal(error?.metadata.get("x-error-detail")[0], "order-42-missing");
      assert.equal(error?.metadata.get("x-weft-reason").length, 0, "the server's answer, not one weft made");
    });

    test(`via ${path}: UNAVAILABLE is retried under retryOn: unavailable (two attempts at the server)`, async () => {
      const before = calls.Flaky;
      const { response, error } = await unary(client().Flaky, client(), "x");
      assert.equal(error, undefined);
      assert.equal(response?.text, "second time lucky");
      assert.equal(calls.Flaky - before, 2);
    });

    test(`via ${path}: a route by method sends Other to the second backend and Unary to the first`, async () => {
      const before = calls.Other;
      const { response, error } = await unary(client().Other, client(), "x");
      assert.equal(error, undefined);
      assert.equal(response?.text, "from-b");
      assert.equal(calls.Other, before, "the first backend never saw Other");
      assert.equal((await unary(client().Unary, client(), "y")).response?.text, "echo:y");
    });
  }

  test("echo's sidecar logs the mesh calls as HTTP/2 with the caller's SPIFFE ID", async () => {
    const deadline = Date.now() + 5000;
    const entries = () => echoSidecar.accessLog().filter((l) => l.path === "/weft.test.Echo/Unary");
    while (entries().length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const principals = new Set(entries().map((l) => l.source_principal));
    assert.ok(principals.has("spiffe://cluster.local/ns/default/sa/ingress"), JSON.stringify(entries()));
    assert.ok(principals.has("spiffe://cluster.local/ns/default/sa/web"));
    assert.ok(entries().every((l) => l.protocol === "HTTP/2"));
  });

  test("a trailers-only error stays trailers-only through gateway and sidecar: one HEADERS frame with grpc-status and the metadata", async () => {
    const session = http2.connect(`http://127.0.0.1:${gatewayPort}`);
    try {
      const answer = await new Promise<{ headers: http2.IncomingHttpHeaders; headersOnly: boolean; data: number }>((resolve, reject) => {
        const stream = session.request({ ":method": "POST", ":path": "/weft.test.Echo/Fail", ":authority": "echo", "content-type": "application/grpc", te: "trailers" });
        let headers: http2.IncomingHttpHeaders = {};
        let headersOnly = false;
        let data = 0;
        stream.on("response", (h, flags) => {
          headers = h;
          headersOnly = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0;
        });
        stream.on("data", (c: Buffer) => (data += c.length));
        stream.on("end", () => resolve({ headers, headersOnly, data }));
        stream.on("error", reject);
        // An empty Ping in gRPC's framing: not compressed, length 0.
        stream.end(Buffer.alloc(5));
      });
      assert.equal(answer.headersOnly, true);
      assert.equal(answer.data, 0);
      assert.equal(answer.headers[":status"], 200);
      assert.equal(answer.headers["grpc-status"], String(grpc.status.NOT_FOUND));
      assert.equal(decodeURIComponent(String(answer.headers["grpc-message"])), "no such order");
      assert.equal(answer.headers["x-error-detail"], "order-42-missing");
    } finally {
      session.close();
    }
  });

  test("the access logs of gateway and sidecar carry the call's grpc-status (the server's OK and its error), and the metrics count it", async () => {
    // Only this test's calls: earlier lines (weft's own UNAVAILABLE from before the mesh was ready, the
    // previous test's call, whose line may still be on its way) started before this test did.
    const since = new Date().toISOString();
    const statuses = (p: WeftProcess, method: string) =>
      p.accessLog().filter((l) => l.path === `/weft.test.Echo/${method}` && String(l.start_time) >= since).map((l) => l.grpc_status);
    await unary(viaGateway.Unary, viaGateway, "logged");
    await unary(viaGateway.Fail, viaGateway, "logged");
    const deadline = Date.now() + 5000;
    const written = () => [gateway, echoSidecar].every((p) => statuses(p, "Unary").length > 0 && statuses(p, "Fail").length > 0);
    while (!written() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    for (const p of [gateway, echoSidecar]) {
      assert.deepEqual(statuses(p, "Unary"), [0]);
      assert.deepEqual(statuses(p, "Fail"), [grpc.status.NOT_FOUND]);
    }
    // And the metrics count them by grpc-status.
    const admin = (await echoSidecar.waitForLog((l) => l.msg === "admin listening")).port as number;
    const text = await (await fetch(`http://127.0.0.1:${admin}/stats/prometheus`)).text();
    assert.match(text, /weft_grpc_requests_total\{route="inbound",service="inbound\|app",grpc_status="5"\} [1-9]/);
    assert.match(text, /weft_grpc_requests_total\{route="inbound",service="inbound\|app",grpc_status="0"\} [1-9]/);
  });

  test("an HTTP/1.1 request leaves the gateway as HTTP/2 for an http2 service, and the answer comes back as HTTP/1.1", async () => {
    const r = await request(gatewayPort, { path: "/plain/x" });
    assert.equal(r.status, 200);
    assert.deepEqual(JSON.parse(r.body), { app: "b", version: "2.0", path: "/plain/x" });
  });

  test("h2UpgradePolicy UPGRADE: HTTP/2 and HTTP/1.1 requests for an http service cross the mesh as HTTP/2 and reach its app as HTTP/1.1", async () => {
    const h2 = await h2Get(gatewayPort, "/web/from-h2");
    const h1 = await request(gatewayPort, { path: "/web/from-h1" });
    for (const r of [h2, h1]) {
      assert.equal(r.status, 200);
      const body = JSON.parse(r.body) as { version: string; xfcc: string };
      assert.equal(body.version, "1.1");
      assert.equal(body.xfcc, "URI=spiffe://cluster.local/ns/default/sa/ingress");
    }
    const deadline = Date.now() + 5000;
    const logged = () => webSidecar.accessLog().filter((l) => typeof l.path === "string" && l.path.startsWith("/web/from-"));
    while (logged().length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(logged().map((l) => [l.path, l.protocol]).sort(), [["/web/from-h1", "HTTP/2"], ["/web/from-h2", "HTTP/2"]]);
  });
});
