import { test } from "node:test";
import assert from "node:assert/strict";
import { compileMesh, TLS_MODE_LABEL, parseEndpoint, validateMesh, type MeshInput, type Snapshot } from "../config/index.ts";
import { createTcpGatewayView, createTcpProxy, decodeTransportHeader, encodeTransportHeader, TRANSPORT_HEADER_BYTES, type TcpRecord } from "./tcp.ts";
import type { MeshIdentity } from "./types.ts";

function snapshotOf(input: MeshInput): Snapshot {
  const r = validateMesh(input);
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  return compileMesh(r.value);
}

const identity: MeshIdentity = {
  trustDomain: "cluster.local",
  spiffeId: "spiffe://cluster.local/ns/default/sa/edge",
  current: () => ({ chainPem: ["c"], keyPem: "k", bundlePem: ["b"] }),
  generation: 1,
  onUpdate: () => () => {},
};

test("the transport header round-trips every port and refuses other bytes as soon as they differ", () => {
  for (const port of [1, 80, 5432, 65535]) {
    const bytes = encodeTransportHeader(port);
    assert.equal(bytes.length, TRANSPORT_HEADER_BYTES);
    assert.deepEqual(decodeTransportHeader(bytes), { ok: true, port });
    for (let n = 0; n < bytes.length; n++) assert.deepEqual(decodeTransportHeader(bytes.subarray(0, n)), { ok: false, reason: "incomplete" });
  }
  assert.deepEqual(decodeTransportHeader(new TextEncoder().encode("GET / HTTP/1.1")), { ok: false, reason: "bad_transport_header" });
  assert.deepEqual(decodeTransportHeader(new Uint8Array([0x57, 0x54, 0x50, 2, 0, 80])), { ok: false, reason: "bad_transport_header" });
  assert.deepEqual(decodeTransportHeader(new Uint8Array([0x57, 0x54, 0x50, 1, 0, 0])), { ok: false, reason: "bad_transport_header" });
  assert.throws(() => encodeTransportHeader(0), TypeError);
});

const mesh: MeshInput = {
  services: {
    db: { ports: [{ port: 8080 }, { port: 5432, protocol: "tcp" }], endpoints: [{ address: "10.0.0.1:15006" }], traffic: { connectionPool: { maxConnections: 2 } } },
    cache: { ports: [{ port: 6379, protocol: "tcp" }], endpoints: [{ address: "10.0.0.2:6379" }], traffic: { tcpIdleTimeoutMs: 5000 } },
  },
  gateways: {
    edge: {
      listeners: [{ port: 5432, protocol: "tcp" }, { port: 6379, protocol: "tcp" }],
      routes: [],
      tcpRoutes: [{ name: "db", match: { ports: [5432] }, to: [{ service: "db" }] }, { name: "cache", match: { ports: [6379] }, to: [{ service: "cache" }] }],
    },
  },
};

test("open: the route by port, its service's first tcp port, the endpoint, and the destination's timeouts", () => {
  const proxy = createTcpProxy({ now: () => 1000 });
  const view = createTcpGatewayView(snapshotOf(mesh), "edge");
  const s = proxy.open({ clientIp: "1.2.3.4", localPort: 6379 }, "tcp", view);
  assert.deepEqual([s.record.route, s.record.service, s.record.upstream], ["cache", "cache", "10.0.0.2:6379"]);
  assert.deepEqual([s.upstream?.connectTimeoutMs, s.upstream?.idleTimeoutMs, s.upstream?.mesh], [2000, 5000, undefined]);
  const none = proxy.open({ clientIp: "1.2.3.4", localPort: 9999 }, "tcp", view);
  assert.deepEqual([none.upstream, none.record.reason], [undefined, "no_route"]);
});

test("open: a sidecar endpoint gets mesh mTLS naming the destination port, or mtls_unavailable without an identity", () => {
  const base = snapshotOf(mesh);
  const db = base.services.get("db")!;
  const services = new Map(base.services);
  services.set("db", { ...db, endpoints: [parseEndpoint("10.0.0.1:15006", { [TLS_MODE_LABEL]: "mesh" })] });
  const view = createTcpGatewayView({ ...base, services }, "edge");
  const withId = createTcpProxy({ meshIdentity: identity }).open({ clientIp: "1.2.3.4", localPort: 5432 }, "tcp", view);
  assert.deepEqual(withId.upstream?.mesh && { expectedId: withId.upstream.mesh.expectedId, port: withId.upstream.mesh.port }, {
    expectedId: "spiffe://cluster.local/ns/default/sa/db",
    port: 5432,
  });
  const without = createTcpProxy().open({ clientIp: "1.2.3.4", localPort: 5432 }, "tcp", view);
  assert.equal(without.record.reason, "mtls_unavailable");
});

test("open: maxConnections counts open connections per service; a finished one frees its slot; every session is recorded once", () => {
  const done: TcpRecord[] = [];
  const proxy = createTcpProxy({ onConnectionDone: (r) => done.push(r) });
  const view = createTcpGatewayView(snapshotOf(mesh), "edge");
  const head = { clientIp: "1.2.3.4", localPort: 5432 };
  const a = proxy.open(head, "tcp", view);
  const b = proxy.open(head, "tcp", view);
  const c = proxy.open(head, "tcp", view);
  assert.deepEqual([a.record.reason, b.record.reason, c.record.reason], [undefined, undefined, "overflow"]);
  assert.equal(proxy.active().get("db"), 2);
  c.done(0, 0);
  a.done(10, 20);
  a.done(10, 20);
  assert.equal(proxy.active().get("db"), 1);
  assert.equal(proxy.open(head, "tcp", view).record.reason, undefined);
  assert.deepEqual(done.map((r) => [r.reason, r.bytesIn, r.bytesOut]), [["overflow", 0, 0], [undefined, 10, 20]]);
});

test("openInbound: only declared tcp/tls ports, only authorized peers, then the app on loopback", () => {
  const snapshot = snapshotOf(mesh);
  const proxy = createTcpProxy();
  const view = { revision: 0, service: snapshot.services.get("db")!, appHost: "127.0.0.1", authorize: (h: { peer?: { spiffeId: string } }) => h.peer?.spiffeId === identity.spiffeId };
  const peer = { spiffeId: identity.spiffeId };
  assert.equal(proxy.openInbound({ clientIp: "10.0.0.9", localPort: 8080, peer }, view).record.reason, "unknown_port");
  assert.equal(proxy.openInbound({ clientIp: "10.0.0.9", localPort: 22, peer }, view).record.reason, "unknown_port");
  assert.equal(proxy.openInbound({ clientIp: "10.0.0.9", localPort: 5432, peer: { spiffeId: "spiffe://cluster.local/ns/x/sa/y" } }, view).record.reason, "denied");
  const ok = proxy.openInbound({ clientIp: "10.0.0.9", localPort: 5432, peer }, view);
  assert.deepEqual([ok.record.reason, ok.upstream?.endpoint.address, ok.record.sourcePrincipal], [undefined, "127.0.0.1:5432", identity.spiffeId]);
});
