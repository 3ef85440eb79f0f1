import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { startGateway, type GatewayProcess } from "../harness/gateway.ts";
import { callUnary, loadProto, type UnaryMethod } from "../harness/grpc.ts";

const PROTO = `
syntax = "proto3";
package weft.test;
message Ping { string text = 1; int32 count = 2; int32 delay_ms = 3; }
message Pong { string text = 1; int32 index = 2; }
service Echo {
  rpc Unary (Ping) returns (Pong);
  rpc Stream (Ping) returns (stream Pong);
  rpc Slow (Ping) returns (Pong);
  rpc Flaky (Ping) returns (Pong);
}
service Hidden {
  rpc Call (Ping) returns (Pong);
}
`;

interface Ping {
  text: string;
  count: number;
  delay_ms: number;
}
interface Pong {
  text: string;
  index: number;
}
type Unary = UnaryMethod<Ping, Pong>;
interface EchoClient extends grpc.Client {
  Unary: Unary;
  Slow: Unary;
  Flaky: Unary;
  Stream(request: Ping, metadata?: grpc.Metadata): grpc.ClientReadableStream<Pong>;
}
interface HiddenClient extends grpc.Client {
  Call: Unary;
}

const unary = (method: Unary, client: grpc.Client, request: Partial<Ping>, options: grpc.CallOptions = {}) =>
  callUnary(method, client, { text: "", count: 0, delay_ms: 0, ...request }, options);

describe("gateway on Node: gRPC through an h2c listener to an HTTP/2 upstream", () => {
  let dir: string;
  let server: grpc.Server;
  let gw: GatewayProcess;
  let echo: EchoClient;
  let hidden: HiddenClient;
  const seen: { method: string; requestId: string | undefined; te?: string }[] = [];
  let flakyCalls = 0;
  let slowCancelled = false;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "weft-grpc-"));
    const { Echo, Hidden } = await loadProto(dir, PROTO, "weft.test");
    server = new grpc.Server();
    const note = (method: string, call: grpc.ServerUnaryCall<Ping, Pong> | grpc.ServerWritableStream<Ping, Pong>) =>
      seen.push({ method, requestId: call.metadata.get("x-request-id")[0] as string | undefined });
    server.addService(Echo.service, {
      Unary(call: grpc.ServerUnaryCall<Ping, Pong>, callback: grpc.sendUnaryData<Pong>) {
        note("Unary", call);
        callback(null, { text: `echo:${call.request.text}`, index: 0 });
      },
      Stream(call: grpc.ServerWritableStream<Ping, Pong>) {
        note("Stream", call);
        for (let i = 0; i < call.request.count; i++) call.write({ text: call.request.text, index: i });
        const trailers = new grpc.Metadata();
        trailers.set("x-stream-total", String(call.request.count));
        call.end(trailers);
      },
      Slow(call: grpc.ServerUnaryCall<Ping, Pong>, callback: grpc.sendUnaryData<Pong>) {
        note("Slow", call);
        const timer = setTimeout(() => callback(null, { text: "late", index: 0 }), call.request.delay_ms);
        call.on("cancelled", () => {
          slowCancelled = true;
          clearTimeout(timer);
        });
      },
      Flaky(call: grpc.ServerUnaryCall<Ping, Pong>, callback: grpc.sendUnaryData<Pong>) {
        note("Flaky", call);
        flakyCalls++;
        if (flakyCalls % 2 === 1) callback({ code: grpc.status.UNAVAILABLE, details: "warming up" });
        else callback(null, { text: "second time lucky", index: flakyCalls });
      },
    });
    const upstreamPort = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
    );
    gw = await startGateway({
      services: {
        echo: { ports: [{ port: upstreamPort, protocol: "grpc" }], endpoints: [{ address: `127.0.0.1:${upstreamPort}` }] },
      },
      gateways: {
        edge: {
          listeners: [{ port: 0, address: "127.0.0.1", http2: true }],
          routes: [
            {
              name: "flaky",
              match: { path: { exact: "/weft.test.Echo/Flaky" } },
              forward: { to: [{ service: "echo" }], retries: { attempts: 2, retryOn: ["unavailable"] } },
            },
            { name: "echo", match: { path: { prefix: "/weft.test.Echo/" } }, forward: { to: [{ service: "echo" }], timeoutMs: 10_000 } },
          ],
        },
      },
    });
    const target = `127.0.0.1:${gw.ports[0]}`;
    echo = new Echo(target, grpc.credentials.createInsecure()) as unknown as EchoClient;
    hidden = new Hidden(target, grpc.credentials.createInsecure()) as unknown as HiddenClient;
  });
  after(async () => {
    echo?.close();
    hidden?.close();
    await gw?.stop();
    server?.forceShutdown();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test("a unary call goes through the gateway to the gRPC server and back", async () => {
    const { response, error } = await unary(echo.Unary, echo, { text: "hello" });
    assert.equal(error, undefined);
    assert.equal(response?.text, "echo:hello");
    // Proof it went through weft: the gateway set a request id on the way.
    const last = seen.findLast((s) => s.method === "Unary");
    assert.match(last?.requestId ?? "", /^[0-9a-f-]{36}$/);
  });

  test("a server-streaming call delivers every message in order and the server's trailers", async () => {
    const call = echo.Stream({ text: "tick", count: 25, delay_ms: 0 });
    const got: Pong[] = [];
    call.on("data", (m: Pong) => got.push(m));
    const status = await new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
    assert.equal(status.code, grpc.status.OK);
    assert.deepEqual(got.map((m) => m.index), Array.from({ length: 25 }, (_, i) => i));
    assert.equal(status.metadata.get("x-stream-total")[0], "25");
  });

  test("50 concurrent unary calls are multiplexed and each gets its own answer", async () => {
    const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => unary(echo.Unary, echo, { text: `n${i}` })));
    assert.deepEqual(answers.map((a) => a.response?.text), Array.from({ length: 50 }, (_, i) => `echo:n${i}`));
  });

  test("a method no route matches is UNIMPLEMENTED from the gateway itself", async () => {
    const { error } = await unary(hidden.Call, hidden, { text: "x" });
    assert.equal(error?.code, grpc.status.UNIMPLEMENTED);
    assert.equal(error?.metadata.get("x-weft-reason")[0], "no_route");
  });

  test("a deadline shorter than the server's delay is DEADLINE_EXCEEDED, and the gateway ends the upstream call too", async () => {
    const { error } = await unary(echo.Slow, echo, { delay_ms: 3000 }, { deadline: Date.now() + 300 });
    assert.equal(error?.code, grpc.status.DEADLINE_EXCEEDED);
    // The upstream call ends long before the server's 3 s. grpc-js sends grpc-timeout and cancels at the
    // same deadline, so either the gateway's timer (grpc-timeout capping the 10 s route timeout: reason
    // timeout) or the client's cancel (downstream_disconnect) gets there first, by a millisecond or so;
    // http2.test.ts pins the gateway's own timer with a grpc-timeout and no cancel.
    const deadline = Date.now() + 3000;
    const entry = () => gw.accessLog().find((l) => l.path === "/weft.test.Echo/Slow");
    while ((!entry() || !slowCancelled) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    assert.ok(["timeout", "downstream_disconnect"].includes(entry()?.reason as string), String(entry()?.reason));
    assert.equal(slowCancelled, true);
  });

  test("a trailers-only UNAVAILABLE is retried when the route's retryOn lists unavailable", async () => {
    const before = flakyCalls;
    const { response, error } = await unary(echo.Flaky, echo, { text: "x" });
    assert.equal(error, undefined);
    assert.equal(response?.text, "second time lucky");
    assert.equal(flakyCalls - before, 2);
  });

  test("the access log records gRPC calls as HTTP/2 with status 200", async () => {
    const deadline = Date.now() + 3000;
    const entry = () => gw.accessLog().find((l) => l.path === "/weft.test.Echo/Unary");
    while (!entry() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    assert.equal(entry()?.protocol, "HTTP/2");
    assert.equal(entry()?.status, 200);
  });
});
