import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { compileMesh, TLS_MODE_LABEL, validateMesh, type Snapshot } from "../config/index.ts";
import { createEngine } from "./engine.ts";
import type { RequestRecord } from "./engine.ts";
import type { MeshIdentity, RequestHead, UpstreamClient, UpstreamRequest, UpstreamResult } from "./types.ts";
import { createGatewayView } from "./view.ts";

describe("the protocol a request leaves in", () => {
  /** A gateway routing everything to `api`, whose endpoints are mesh sidecars (or not). */
  function view(api: Record<string, unknown>, mesh: boolean) {
    const r = validateMesh({
      services: { api: { endpoints: [{ address: "10.0.0.1:15006" }], ...api } },
      gateways: { edge: { listeners: [{ port: 0 }], routes: [{ forward: { to: [{ service: "api" }] } }] } },
    });
    assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
    const compiled = compileMesh(r.value, 1);
    const services = new Map(
      [...compiled.services].map(([name, svc]) => [
        name,
        mesh ? { ...svc, endpoints: svc.endpoints.map((e) => ({ ...e, labels: { ...e.labels, [TLS_MODE_LABEL]: "mesh" } })) } : svc,
      ]),
    );
    return createGatewayView({ ...compiled, services } as Snapshot, "edge");
  }
  const identity: MeshIdentity = {
    trustDomain: "example.org",
    spiffeId: "spiffe://example.org/ns/default/sa/edge",
    current: () => ({ chainPem: [], keyPem: "", bundlePem: [] }),
    generation: 1,
    onUpdate: () => () => {},
  };
  const head = (headers: RequestHead["headers"] = {}): RequestHead => ({ method: "GET", scheme: "http", authority: "api", path: "/", headers, clientIp: "192.0.2.1", localPort: 80 });

  /** Sends one request through the engine and returns what the upstream client was asked to send. */
  async function sent(api: Record<string, unknown>, mesh: boolean, requestHead = head()): Promise<UpstreamRequest> {
    const asked: UpstreamRequest[] = [];
    const client: UpstreamClient = {
      async forward(req) {
        asked.push(req);
        return { ok: true, response: { status: 200, headers: {}, discard() {} } };
      },
      async close() {},
    };
    const engine = createEngine({ client, edge: true, meshIdentity: identity });
    const exchange = await engine.handle(requestHead, { length: 0, replayable: true }, view(api, mesh));
    assert.equal(exchange.kind, "upstream");
    assert.equal(asked.length, 1);
    return asked[0]!;
  }

  test("a grpc or http2 port is reached over HTTP/2, to mesh and plain endpoints alike", async () => {
    for (const protocol of ["grpc", "http2"]) {
      for (const mesh of [true, false]) {
        const req = await sent({ ports: [{ port: 50051, protocol }] }, mesh);
        assert.equal(req.http2, true, `${protocol} mesh=${mesh}`);
        assert.equal(req.mesh !== undefined, mesh);
      }
    }
  });

  test("an http port stays HTTP/1.1 unless h2UpgradePolicy is UPGRADE, which lifts only mesh endpoints", async () => {
    assert.equal((await sent({}, true)).http2, false);
    assert.equal((await sent({ traffic: { h2UpgradePolicy: "DO_NOT_UPGRADE" } }, true)).http2, false);
    assert.equal((await sent({ traffic: { h2UpgradePolicy: "UPGRADE" } }, true)).http2, true);
    assert.equal((await sent({ traffic: { h2UpgradePolicy: "UPGRADE" } }, false)).http2, false);
  });
});

describe("the grpc-status a gRPC call is recorded with", () => {
  const r = validateMesh({
    services: { api: { ports: [{ port: 50051, protocol: "grpc" }], endpoints: [{ address: "10.0.0.1:50051" }] } },
    gateways: { edge: { listeners: [{ port: 0 }], routes: [{ match: { path: { prefix: "/pkg.Api/" } }, forward: { to: [{ service: "api" }] } }] } },
  });
  assert.ok(r.ok);
  const view = createGatewayView(compileMesh(r.value, 1), "edge");
  const grpcHead = (path: string, contentType = "application/grpc"): RequestHead => ({
    method: "POST",
    scheme: "http",
    authority: "api",
    path,
    headers: { "content-type": contentType, te: "trailers" },
    clientIp: "192.0.2.1",
    localPort: 80,
    protocol: "HTTP/2",
  });

  /** Runs one request; the upstream answers `answer`; the adapter reports `trailers` when it finishes. */
  async function recorded(head: RequestHead, answer: UpstreamResult, trailers?: Record<string, string>): Promise<RequestRecord> {
    const done: RequestRecord[] = [];
    const client: UpstreamClient = { forward: async () => answer, async close() {} };
    const engine = createEngine({ client, edge: true, onRequestDone: (record) => done.push({ ...record }) });
    const exchange = await engine.handle(head, { length: undefined, replayable: true }, view);
    exchange.finish(0, 0, undefined, trailers);
    return done[0]!;
  }
  const ok = (headers: Record<string, string>): UpstreamResult => ({ ok: true, response: { status: 200, headers, discard() {} } });

  test("weft's own answer: no route is 12 UNIMPLEMENTED", async () => {
    assert.equal((await recorded(grpcHead("/pkg.Other/Call"), ok({}))).grpcStatus, 12);
  });

  test("the upstream's trailers-only answer, or its trailers at the end of the body", async () => {
    assert.equal((await recorded(grpcHead("/pkg.Api/Call"), ok({ "content-type": "application/grpc", "grpc-status": "5" }))).grpcStatus, 5);
    assert.equal((await recorded(grpcHead("/pkg.Api/Call"), ok({ "content-type": "application/grpc" }), { "grpc-status": "0" })).grpcStatus, 0);
  });

  test("a request that is not gRPC has none, whatever its trailers say", async () => {
    assert.equal((await recorded(grpcHead("/pkg.Api/Call", "application/json"), ok({}), { "grpc-status": "0" })).grpcStatus, undefined);
  });
});

describe("a refused HTTP/2 stream", () => {
  const r = validateMesh({
    services: { api: { ports: [{ port: 50051, protocol: "grpc" }], endpoints: [{ address: "10.0.0.1:50051" }, { address: "10.0.0.2:50051" }] } },
    gateways: { edge: { listeners: [{ port: 0 }], routes: [{ forward: { to: [{ service: "api" }] } }] } },
  });
  assert.ok(r.ok);
  const view = createGatewayView(compileMesh(r.value, 1), "edge");
  const post: RequestHead = { method: "POST", scheme: "http", authority: "api", path: "/pkg.Api/Call", headers: { "content-type": "application/grpc" }, clientIp: "192.0.2.1", localPort: 80 };

  /** The first try fails with `first`, the next one is answered 200; returns the tries and the status. */
  async function run(first: UpstreamResult): Promise<{ tries: number; status: number }> {
    let tries = 0;
    const client: UpstreamClient = {
      async forward() {
        tries++;
        return tries === 1 ? first : { ok: true, response: { status: 200, headers: { "grpc-status": "0" }, discard() {} } };
      },
      async close() {},
    };
    const engine = createEngine({ client, edge: true, sleep: async () => {} });
    const exchange = await engine.handle(post, { length: 0, replayable: true }, view);
    return { tries, status: exchange.status };
  }

  test("is retried by default even for a POST: the upstream never saw it", async () => {
    assert.deepEqual(await run({ ok: false, reason: "upstream_reset", detail: "refused_stream" }), { tries: 2, status: 200 });
  });

  test("another reset of a POST is not retried by default", async () => {
    const r = await run({ ok: false, reason: "upstream_reset", detail: "ECONNRESET" });
    assert.equal(r.tries, 1);
  });
});

describe("the runtime's request load", () => {
  const r = validateMesh({
    services: { api: { endpoints: [{ address: "10.0.0.1:80" }] } },
    gateways: { edge: { listeners: [{ port: 0 }], routes: [{ match: { path: { prefix: "/api" } }, forward: { to: [{ service: "api" }] } }] } },
  });
  assert.ok(r.ok);
  const view = createGatewayView(compileMesh(r.value, 1), "edge");
  const head = (path: string): RequestHead => ({ method: "GET", scheme: "http", authority: "api", path, headers: {}, clientIp: "192.0.2.1", localPort: 80 });

  test("is told when each request starts and when its exchange finishes, forwarded or answered locally", async () => {
    const events: string[] = [];
    const client: UpstreamClient = { forward: async () => ({ ok: true, response: { status: 200, headers: {}, discard() {} } }), async close() {} };
    const engine = createEngine({ client, edge: true, load: { started: () => events.push("started"), done: () => events.push("done") } });
    const forwarded = await engine.handle(head("/api/x"), { length: 0, replayable: true }, view);
    const refused = await engine.handle(head("/elsewhere"), { length: 0, replayable: true }, view);
    assert.deepEqual(events, ["started", "started"]);
    forwarded.finish(0, 2);
    refused.finish(0, 9);
    assert.deepEqual(events, ["started", "started", "done", "done"]);
  });
});
