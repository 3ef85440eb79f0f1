// One request, one trace, across every proxy: client → gateway → (mTLS) → sidecar(front) → front app
// → sidecar(front) → (mTLS) → sidecar(back) → back app. Every proxy is its own process exporting spans
// over OTLP/HTTP to a collector on loopback (this test's server); the spans must form the chain.
// The apps only copy `traceparent` from the request they got to the call they make, as Istio asks.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectNatsBus, type Bus } from "../../shared/bus/index.ts";
import { startControlPlane, type ControlPlane } from "../../control/plane.ts";
import { startNatsServer, type NatsServer } from "../harness/nats-server.ts";
import { freePort } from "../harness/ports.ts";
import { request } from "../harness/upstream.ts";
import { spawnWeft, type WeftProcess } from "../harness/weft-process.ts";

interface ExportedSpan {
  service: string;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  /** OTLP's SpanKind: 2 server, 3 client. */
  kind: number;
}

/** A minimal OTLP/HTTP JSON receiver: it keeps every span with the service.name of its resource. */
async function startCollector() {
  const spans: ExportedSpan[] = [];
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      const doc = JSON.parse(body) as {
        resourceSpans: { resource: { attributes: { key: string; value: { stringValue?: string } }[] }; scopeSpans: { spans: Omit<ExportedSpan, "service">[] }[] }[];
      };
      for (const rs of doc.resourceSpans) {
        const service = rs.resource.attributes.find((a) => a.key === "service.name")?.value.stringValue ?? "";
        for (const ss of rs.scopeSpans) for (const s of ss.spans) spans.push({ service, traceId: s.traceId, spanId: s.spanId, parentSpanId: s.parentSpanId, name: s.name, kind: s.kind });
      }
      res.writeHead(200, { "content-type": "application/json" });
      res.end("{}");
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/traces`, spans, close: () => new Promise<void>((r) => server.close(() => r())) };
}

/** An app that calls `back` through its sidecar's outbound port, passing the trace context on. */
async function startFrontApp(outboundPort: () => number) {
  const server = http.createServer((req, res) => {
    const headers: Record<string, string> = { host: "back" };
    for (const name of ["traceparent", "tracestate", "x-request-id"]) {
      const value = req.headers[name];
      if (typeof value === "string") headers[name] = value;
    }
    http
      .get({ host: "127.0.0.1", port: outboundPort(), path: "/back", headers, agent: false }, (up) => {
        let text = "";
        up.on("data", (c) => (text += c));
        up.on("end", () => {
          res.writeHead(up.statusCode ?? 502, { "content-type": "application/json" });
          res.end(JSON.stringify({ front: true, back: text }));
        });
      })
      .on("error", (e) => {
        res.writeHead(502);
        res.end(String(e));
      });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { port: (server.address() as AddressInfo).port, close: () => new Promise<void>((r) => server.close(() => r())) };
}

async function startBackApp() {
  const server = http.createServer((req, res) => res.end(JSON.stringify({ back: true, traceparent: req.headers.traceparent })));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { port: (server.address() as AddressInfo).port, close: () => new Promise<void>((r) => server.close(() => r())) };
}

describe("one trace across gateway and sidecars", () => {
  let dir: string;
  let nats: NatsServer;
  let bus: Bus;
  let control: ControlPlane;
  let collector: Awaited<ReturnType<typeof startCollector>>;
  let front: Awaited<ReturnType<typeof startFrontApp>>;
  let back: Awaited<ReturnType<typeof startBackApp>>;
  const procs: WeftProcess[] = [];
  let gatewayPort: number;
  let frontOutbound = 0;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "weft-trace-"));
    collector = await startCollector();
    nats = await startNatsServer();
    bus = await connectNatsBus({ servers: [nats.url], name: "trace-test" });
    control = await startControlPlane({ bus, id: "control-1", ca: { trustDomain: "cluster.local", stateDir: join(dir, "control") } });
    gatewayPort = await freePort();
    const applied = await control.apply({
      tracing: { sampleRatio: 1, otlpEndpoint: collector.url },
      services: { front: {}, back: {} },
      gateways: { ingress: { listeners: [{ port: gatewayPort, address: "127.0.0.1" }], routes: [{ name: "front", forward: { to: [{ service: "front" }] } }] } },
    });
    assert.equal(applied.ok, true, JSON.stringify(applied));
    front = await startFrontApp(() => frontOutbound);
    back = await startBackApp();
    const common = ["--nats", nats.url, "--inbound-port", "0", "--inbound-address", "127.0.0.1", "--outbound-port", "0", "--admin", "127.0.0.1:0"];
    const env = { WEFT_STATE_DIR: join(dir, "state") };
    const frontSidecar = spawnWeft(["sidecar", "--service", "front", "--app-port", String(front.port), "--proxy-id", "sc-front", "--join-token", await control.ca!.mintToken("default", "front", 600_000), ...common], { env });
    const backSidecar = spawnWeft(["sidecar", "--service", "back", "--app-port", String(back.port), "--proxy-id", "sc-back", "--join-token", await control.ca!.mintToken("default", "back", 600_000), ...common], { env });
    const gateway = spawnWeft(["gateway", "--nats", nats.url, "--name", "ingress", "--admin", "127.0.0.1:0", "--proxy-id", "gw", "--join-token", await control.ca!.mintToken("default", "ingress", 600_000)], { env });
    procs.push(frontSidecar, backSidecar, gateway);
    frontOutbound = (await frontSidecar.waitForLog((l) => l.msg === "sidecar listening")).outbound as number;
    await frontSidecar.waitForLog((l) => l.msg === "sidecar ready");
    await backSidecar.waitForLog((l) => l.msg === "sidecar ready");
    await gateway.waitForLog((l) => l.msg === "certificate held");
  });

  after(async () => {
    for (const p of procs) await p.stop();
    await control?.stop();
    await bus?.close();
    await nats?.stop();
    await front?.close();
    await back?.close();
    await collector?.close();
    await rm(dir, { recursive: true, force: true });
  });

  test("the spans of gateway, front sidecar (in, then out as a client span) and back sidecar form one parent/child chain", async () => {
    const traceId = "0af7651916cd43dd8448eb211c80319c";
    const clientSpan = "b7ad6b7169203331";
    let r = await request(gatewayPort, { path: "/", headers: { traceparent: `00-${traceId}-${clientSpan}-01` } });
    const deadline = Date.now() + 20_000;
    while (r.status !== 200 && Date.now() < deadline) {
      await new Promise((res) => setTimeout(res, 200));
      r = await request(gatewayPort, { path: "/", headers: { traceparent: `00-${traceId}-${clientSpan}-01` } });
    }
    assert.equal(r.status, 200, r.body);
    // Spans are exported as each proxy finishes its request; wait for the four of the last request.
    let chain: ExportedSpan[] = [];
    const until = Date.now() + 15_000;
    while (Date.now() < until) {
      chain = followChain(collector.spans.filter((s) => s.traceId === traceId), clientSpan);
      if (chain.length >= 4) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    assert.deepEqual(
      chain.map((s) => s.service),
      ["weft-gateway-ingress", "weft-sidecar-front", "weft-sidecar-front", "weft-sidecar-back"],
      JSON.stringify(collector.spans.filter((s) => s.traceId === traceId)),
    );
    // Server spans where a proxy serves a caller, a client span where the front app calls out through its sidecar.
    assert.deepEqual(chain.map((s) => s.kind), [2, 2, 3, 2]);
    // The back app got the back sidecar's span as its parent.
    const seen = (JSON.parse((JSON.parse(r.body) as { back: string }).back) as { traceparent: string }).traceparent;
    assert.equal(seen.split("-")[2], chain[3]!.spanId);
  });
});

/** Walks from the client's span to its child, grandchild, ...; the last request's chain when there were retries. */
function followChain(spans: readonly ExportedSpan[], rootParent: string): ExportedSpan[] {
  const chain: ExportedSpan[] = [];
  let parent = rootParent;
  for (;;) {
    const children = spans.filter((s) => s.parentSpanId === parent);
    const next = children.at(-1);
    if (!next) return chain;
    chain.push(next);
    parent = next.spanId;
  }
}
