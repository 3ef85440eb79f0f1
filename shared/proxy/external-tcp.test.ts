import { test } from "node:test";
import assert from "node:assert/strict";
import { compileMesh, validateMesh, type Endpoint, type Snapshot } from "../config/index.ts";
import { createEgressTcpView, createExternalTcpForwardView } from "./external-tcp.ts";
import { createTcpProxy, type TcpRecord } from "./tcp.ts";
import type { MeshIdentity } from "./types.ts";

function snapshot(egress: boolean, gatewayEndpoints: Endpoint[] = [], maxConnections?: number): Snapshot {
  const r = validateMesh({
    gateways: { egress: { kind: "egress", listeners: [{ port: 15443 }], routes: [] } },
    externalServices: {
      api: {
        hosts: ["api.example.test", "*.apis.example.test"],
        ports: [{ port: 443, protocol: "tls", targetPort: 8443 }, { port: 80, protocol: "http" }],
        ...(egress ? { egress: { gateway: "egress" } } : {}),
      },
      pg: {
        hosts: ["pg.example.test"],
        ports: [{ port: 5432, protocol: "tcp" }],
        resolution: "STATIC",
        endpoints: [{ address: "10.0.0.9" }],
        ...(egress ? { egress: { gateway: "egress" } } : {}),
        ...(maxConnections ? { traffic: { connectionPool: { maxConnections } } } : {}),
      },
    },
  });
  assert.equal(r.ok, true, JSON.stringify(!r.ok && r.issues));
  const s = compileMesh(r.ok ? r.value : (undefined as never), 1);
  if (gatewayEndpoints.length === 0) return s;
  const gws = new Map(s.egressGateways);
  gws.set("egress", { ...gws.get("egress")!, endpoints: gatewayEndpoints });
  return { ...s, egressGateways: gws };
}

const head = (localPort: number, sni?: string, principal?: string) => ({ clientIp: "10.0.0.1", localPort, sni, peer: principal ? { spiffeId: principal } : undefined });
const gwEndpoint: Endpoint = { address: "10.1.0.1:15443", host: "10.1.0.1", port: 15443, labels: { "security.weft.dev/tlsMode": "mesh" }, weight: 1, draining: false };

test("a sidecar's direct external tls listener: a declared SNI goes to that name on the target port; another SNI is sni_mismatch", () => {
  const view = createExternalTcpForwardView(snapshot(false), "api.example.test", 443);
  assert.equal(view.protocolOf(443), "tls");
  const ok = view.resolve(head(18443, "x.apis.example.test"), () => 0);
  assert.ok(ok.ok);
  assert.deepEqual([ok.endpoint.address, ok.cluster, ok.route, ok.mesh], ["x.apis.example.test:8443", "api|x.apis.example.test:443", "api", undefined]);
  const bad = view.resolve(head(18443, "apis.example.test"), () => 0);
  assert.deepEqual(bad, { ok: false, reason: "sni_mismatch", route: "api" });
});

test("a sidecar's external listener through an egress gateway: mesh to a registered gateway endpoint with its SPIFFE ID and the declared port; none registered is no_healthy_upstream", () => {
  assert.deepEqual(createExternalTcpForwardView(snapshot(true), "pg.example.test", 5432).resolve(head(15432), () => 0), { ok: false, reason: "no_healthy_upstream", route: "pg" });
  const r = createExternalTcpForwardView(snapshot(true, [gwEndpoint]), "pg.example.test", 5432).resolve(head(15432), () => 0);
  assert.ok(r.ok);
  assert.deepEqual([r.endpoint.address, r.cluster, r.mesh], ["10.1.0.1:15443", "pg|egress", { expectedId: "spiffe://cluster.local/ns/default/sa/egress", port: 5432 }]);
});

test("a sidecar listener naming an http port or an undeclared host refuses with no_route", () => {
  assert.equal(createExternalTcpForwardView(snapshot(false), "api.example.test", 80).protocolOf(80), undefined);
  assert.deepEqual(createExternalTcpForwardView(snapshot(false), "nowhere.test", 443).resolve(head(1, "nowhere.test"), () => 0), { ok: false, reason: "no_route" });
});

test("the egress gateway: authorizes first, routes tls by SNI among its services and tcp by the declared port", () => {
  const allowed = "spiffe://cluster.local/ns/default/sa/web";
  const view = createEgressTcpView(snapshot(true), "egress", (h) => h.peer?.spiffeId === allowed);
  assert.deepEqual([view.protocolOf(443), view.protocolOf(5432), view.protocolOf(80)], ["tls", "tcp", undefined]);
  assert.deepEqual(view.resolve(head(443, "api.example.test", "spiffe://cluster.local/ns/default/sa/batch"), () => 0), { ok: false, reason: "denied" });
  assert.deepEqual(view.resolve(head(443, "evil.example.test", allowed), () => 0), { ok: false, reason: "sni_mismatch" });
  assert.deepEqual(view.resolve(head(80, undefined, allowed), () => 0), { ok: false, reason: "unknown_port" });
  const tls = view.resolve(head(443, "API.example.test", allowed), () => 0);
  assert.ok(tls.ok);
  assert.deepEqual([tls.endpoint.address, tls.mesh], ["api.example.test:8443", undefined]);
  const tcp = view.resolve(head(5432, undefined, allowed), () => 0);
  assert.ok(tcp.ok);
  assert.deepEqual([tcp.endpoint.address, tcp.route], ["10.0.0.9:5432", "pg"]);
});

const identity: MeshIdentity = {
  trustDomain: "cluster.local",
  spiffeId: "spiffe://cluster.local/ns/default/sa/web",
  current: () => ({ chainPem: ["c"], keyPem: "k", bundlePem: ["b"] }),
  generation: 1,
  onUpdate: () => () => {},
};

test("openExternal: through the gateway it needs the proxy's mesh identity (mtls_unavailable), records route and cluster, and counts maxConnections per cluster (overflow)", () => {
  const records: TcpRecord[] = [];
  const view = createExternalTcpForwardView(snapshot(true, [gwEndpoint], 1), "pg.example.test", 5432);
  const without = createTcpProxy({ onConnectionDone: (r) => records.push(r) }).openExternal(head(15432), "tcp", view);
  assert.equal(without.upstream, undefined);
  assert.equal(without.record.reason, "mtls_unavailable");
  const proxy = createTcpProxy({ meshIdentity: identity, onConnectionDone: (r) => records.push(r) });
  const first = proxy.openExternal(head(15432), "tcp", view);
  assert.deepEqual(first.upstream?.mesh, { identity, expectedId: "spiffe://cluster.local/ns/default/sa/egress", port: 5432 });
  assert.deepEqual([first.record.route, first.record.service, first.record.upstream], ["pg", "pg|egress", "10.1.0.1:15443"]);
  assert.equal(proxy.openExternal(head(15432), "tcp", view).record.reason, "overflow");
  first.done(3, 4);
  assert.equal(proxy.active().size, 0);
  assert.ok(proxy.openExternal(head(15432), "tcp", view).upstream, "the slot is free again once the first connection ended");
});
