import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { compileMesh, parseEndpoint, validateMesh, type MeshInput, type Snapshot } from "../shared/config/index.ts";
import { createPolicyGate } from "../shared/policy/index.ts";
import { createEngine, createSidecarViews, type Exchange, type RequestHead, type RequestRecord, type SidecarViews } from "../shared/proxy/index.ts";
import { createNodeUpstreamClient, listenNode } from "../shared/runtime/node/index.ts";
import { createExternalCa, startExternalHttps } from "../test/harness/external-tls.ts";
import { createOutbound, serviceNameOf, type Outbound } from "./outbound.ts";

/** Serves the outbound side on 127.0.0.1 with the node adapter and sends one real request through it. */
async function through(outbound: Outbound, path: string, headers: Record<string, string>): Promise<{ status: number; reason: unknown; body: string }> {
  const listener = await listenNode({ port: 0, address: "127.0.0.1", maxHeaderCount: 100, maxHeaderBytes: 16384 }, outbound);
  try {
    return await new Promise((resolve, reject) => {
      const req = http.request({ host: "127.0.0.1", port: listener.port, path, headers, agent: false }, (res) => {
        let text = "";
        res.on("data", (c: Buffer) => (text += c.toString()));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, reason: res.headers["x-weft-reason"], body: text }));
      });
      req.on("error", reject);
      req.end();
    });
  } finally {
    await listener.close();
  }
}

function snapshot(input: MeshInput, revision = 1): Snapshot {
  const r = validateMesh(input);
  assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
  return compileMesh(r.value, revision);
}

function head(authority: string, path = "/", extra: Partial<RequestHead> = {}): RequestHead {
  return { method: "GET", scheme: "http", authority, path, headers: { host: authority }, clientIp: "127.0.0.1", localPort: 15001, ...extra };
}

const body = { length: 0, replayable: true };

async function withUpstream(run: (address: string) => Promise<void>): Promise<void> {
  const server = http.createServer((req, res) => {
    req.resume();
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ host: req.headers.host, path: req.url }));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  try {
    await run(`127.0.0.1:${(server.address() as AddressInfo).port}`);
  } finally {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  }
}

function settle(exchange: Exchange): { status: number; reason: unknown } {
  if (exchange.kind === "upstream") exchange.response.discard();
  return { status: exchange.status, reason: exchange.headers["x-weft-reason"] };
}


test("serviceNameOf: only mesh-shaped hosts name a service to discover", () => {
  assert.equal(serviceNameOf("orders"), "orders");
  assert.equal(serviceNameOf("orders:8080"), "orders");
  assert.equal(serviceNameOf("orders.shop"), "orders");
  assert.equal(serviceNameOf("orders.shop.svc"), "orders");
  assert.equal(serviceNameOf("orders.shop.svc.cluster.local"), "orders");
  assert.equal(serviceNameOf("api.example.com"), undefined);
  assert.equal(serviceNameOf("10.0.0.1:80"), undefined);
  assert.equal(serviceNameOf("[::1]:80"), undefined);
  assert.equal(serviceNameOf("Bad_Name"), undefined);
});

test("sidecar views: every mesh name of a service resolves; the inbound side forwards to the app under the service's inbound policy", () => {
  const snap = snapshot({
    services: {
      web: { namespace: "shop", inbound: { authz: [{ name: "none", action: "DENY", rules: [{}] }] } },
      orders: { namespace: "shop", endpoints: [{ address: "127.0.0.1:9" }] },
    },
  });
  const seen: unknown[] = [];
  const views = createSidecarViews(snap, "web", {
    app: parseEndpoint("127.0.0.1:8080"),
    createPolicy: (p) => {
      seen.push(p);
      return createPolicyGate(p);
    },
  });
  for (const host of ["orders", "orders.shop", "orders.shop.svc", "orders.shop.svc.cluster.local", "ORDERS.shop:80", "orders.shop.svc.cluster.local."]) {
    assert.equal(views.serviceOf(host), "orders", host);
  }
  assert.equal(views.serviceOf("orders.other"), undefined);
  assert.equal(views.outbound.route(head("orders.shop", "/x"))?.route.forward?.to[0]?.service, "orders");
  assert.equal(views.outbound.route(head("nope", "/x")), undefined);
  const inbound = views.inbound.route(head("web", "/anything"))!;
  const cluster = views.inbound.cluster(inbound.route.forward!.to[0]!.service)!;
  assert.deepEqual(cluster.endpoints(undefined).map((e) => e.address), ["127.0.0.1:8080"]);
  assert.deepEqual(seen, [snap.services.get("web")!.inbound], "the inbound policy is the service's own");
  assert.ok(views.inbound.policy);
  assert.throws(() => createSidecarViews(snap, "missing", { app: parseEndpoint("127.0.0.1:1") }), TypeError);
});

test("an unknown Host is asked for once; a service that arrives while the request waits is routed", async () => {
  await withUpstream(async (address) => {
    const engine = createEngine({ client: createNodeUpstreamClient(), edge: false });
    const app = { app: parseEndpoint("127.0.0.1:1") };
    let views: SidecarViews = createSidecarViews(snapshot({ services: { web: {} } }), "web", app);
    const wanted: string[] = [];
    const outbound = createOutbound({
      engine,
      current: () => views,
      proxyId: "sc-web",
      discoveryWaitMs: 5000,
      want(name) {
        wanted.push(name);
        // Discovery brings the service (and its endpoint) a moment later.
        setTimeout(() => {
          views = createSidecarViews(snapshot({ services: { web: {}, orders: { endpoints: [{ address }] } } }, 2), "web", app);
          outbound.applied();
        }, 20);
      },
    });
    const first = await through(outbound, "/one", { host: "orders" });
    assert.equal(first.status, 200, first.body);
    assert.deepEqual(JSON.parse(first.body), { host: "orders", path: "/one" });
    // As an HTTP proxy: absolute-form target, routed by the target's host.
    const second = await through(outbound, "http://orders.default.svc.cluster.local/two", { host: "orders.default.svc.cluster.local" });
    assert.equal(second.status, 200, second.body);
    assert.equal(JSON.parse(second.body).path, "/two");
    assert.deepEqual(wanted, ["orders"]);
  });
});

test("REGISTRY_ONLY: a Host discovery does not find gets 502 no_route, and is not asked for again", async () => {
  const engine = createEngine({ client: createNodeUpstreamClient(), edge: false });
  const views = createSidecarViews(snapshot({ services: { web: {} } }), "web", { app: parseEndpoint("127.0.0.1:1") });
  const wanted: string[] = [];
  const outbound = createOutbound({ engine, current: () => views, proxyId: "sc-web", discoveryWaitMs: 10, want: (n) => void wanted.push(n) });
  for (const host of ["ghost", "ghost.default", "api.example.com:443"]) {
    const r = settle(await outbound.engine.handle(head(host), body, outbound.current()));
    assert.equal(r.status, 502, host);
    assert.equal(r.reason, "no_route", host);
  }
  assert.deepEqual(wanted, ["ghost"], "external names are never asked for; a missing service only once");
  const https = settle(await outbound.engine.handle(head("x", "https://orders/"), body, outbound.current()));
  assert.equal(https.status, 400);
});

test("ALLOW_ANY: an unknown host passes through to the host:port it names, and a request that looped back is refused and logged", async () => {
  await withUpstream(async (address) => {
    const records: RequestRecord[] = [];
    const engine = createEngine({ client: createNodeUpstreamClient(), edge: false, onRequestDone: (r) => void records.push(r) });
    const views = createSidecarViews(snapshot({ outboundTrafficPolicy: "ALLOW_ANY", services: { web: {} } }), "web", { app: parseEndpoint("127.0.0.1:1") });
    const outbound = createOutbound({ engine, current: () => views, proxyId: "sc-web", discoveryWaitMs: 10, want: () => {} });
    const passed = await through(outbound, "/out?x=1", { host: address });
    assert.equal(passed.status, 200, passed.body);
    assert.deepEqual(JSON.parse(passed.body), { host: address, path: "/out?x=1" });
    const looped = await through(outbound, "/", { host: address, "x-weft-outbound": "sc-web" });
    assert.equal(looped.status, 508);
    assert.equal(looped.reason, "loop_detected");
    assert.deepEqual(records.map((r) => r.reason), [undefined, "loop_detected"]);
  });
});

test("REGISTRY_ONLY: a declared external https service is reached directly with TLS originated (SNI = the host); a CA it does not trust fails upstream_tls_failure; an undeclared host is refused and logged", async () => {
  const trusted = await createExternalCa("trusted");
  const stranger = await createExternalCa("stranger");
  const good = await startExternalHttps(await trusted.leaf("api.external.test"));
  const bad = await startExternalHttps(await stranger.leaf("api.external.test"));
  try {
    const records: RequestRecord[] = [];
    const engine = createEngine({ client: createNodeUpstreamClient(), edge: false, onRequestDone: (r) => void records.push(r) });
    const external = (port: number) => ({
      hosts: ["api.external.test"],
      ports: [{ port: 443, protocol: "https" as const }],
      resolution: "STATIC" as const,
      endpoints: [{ address: `127.0.0.1:${port}` }],
      tls: { caFile: trusted.caFile },
    });
    const views = createSidecarViews(
      snapshot({ services: { web: {} }, externalServices: { api: external(good.port), impostor: { ...external(bad.port), hosts: ["impostor.external.test"] } } }),
      "web",
      { app: parseEndpoint("127.0.0.1:1") },
    );
    const outbound = createOutbound({ engine, current: () => views, proxyId: "sc-web", discoveryWaitMs: 10, want: () => {} });

    const ok = await through(outbound, "/v1/things", { host: "api.external.test:443" });
    assert.equal(ok.status, 200, ok.body);
    assert.deepEqual(JSON.parse(ok.body), { external: true, url: "/v1/things", servername: "api.external.test", host: "api.external.test:443" });
    assert.deepEqual(good.connections.map((c) => c.servername), ["api.external.test"]);

    // The impostor's certificate names the host, but its CA is not the one the config trusts.
    const refused = await through(outbound, "/", { host: "impostor.external.test:443" });
    assert.deepEqual([refused.status, refused.reason], [502, "upstream_tls_failure"]);
    assert.equal(bad.requests.length, 0, "nothing was sent over the untrusted connection");

    const undeclared = await through(outbound, "/", { host: "elsewhere.test" });
    assert.deepEqual([undeclared.status, undeclared.reason], [502, "no_route"]);
    assert.deepEqual(
      records.map((r) => [r.authority, r.status, r.reason ?? null]),
      [["api.external.test:443", 200, null], ["impostor.external.test:443", 502, "upstream_tls_failure"], ["elsewhere.test", 502, "no_route"]],
    );
  } finally {
    await good.close();
    await bad.close();
    await trusted.remove();
    await stranger.remove();
  }
});
