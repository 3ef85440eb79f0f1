import { test } from "node:test";
import assert from "node:assert/strict";
import { compileMesh, parseEndpoint, spiffeIdOf } from "./compile.ts";
import { validateMesh } from "./validate.ts";
import type { MeshConfig } from "./schema.ts";

function validated(input: unknown): MeshConfig {
  const r = validateMesh(input);
  if (!r.ok) throw new TypeError(`test config does not validate: ${JSON.stringify(r.issues)}`);
  return r.value;
}

const SMALL_MESH = {
  trustDomain: "shop.example",
  services: {
    web: { endpoints: [{ address: "10.0.0.1:8080" }] },
    reviews: {
      namespace: "shop",
      serviceAccount: "reviews-sa",
      ports: [{ port: 9080, protocol: "http2" }],
      versions: { v1: { version: "v1" }, v2: { version: "v2", track: "canary" } },
      endpoints: [
        { address: "10.0.1.1:9080", version: "v1" },
        { address: "[fd00::2]:9080", version: "v2", weight: 3 },
        { address: "unix:/run/reviews.sock" },
      ],
      routes: [{ forward: { to: [{ service: "reviews", subset: "v1", weight: 90 }, { service: "reviews", subset: "v2", weight: 10 }] } }],
      traffic: { loadBalancer: "least_request" },
      mtls: { mode: "PERMISSIVE" },
    },
  },
  gateways: {
    edge: { namespace: "ingress", listeners: [{ port: 8080 }], routes: [{ forward: { to: [{ service: "web" }] } }] },
    internal: { serviceAccount: "gw-sa", listeners: [{ port: 8081 }], routes: [] },
  },
};

test("compileMesh carries the revision and the mesh-wide settings", () => {
  const snap = compileMesh(validated(SMALL_MESH), 42);
  assert.equal(snap.revision, 42);
  assert.equal(snap.trustDomain, "shop.example");
  assert.equal(snap.outboundTrafficPolicy, "REGISTRY_ONLY");
  assert.equal(snap.accessLog, "json");
  assert.deepEqual(snap.tracing, { sampleRatio: 0.01, console: false });
  assert.equal(compileMesh(validated({})).revision, 0, "a locally loaded file is revision 0");
});

test("compileMesh gives every service its identity, host names, ports and policy", () => {
  const snap = compileMesh(validated(SMALL_MESH), 1);
  assert.deepEqual([...snap.services.keys()].sort(), ["reviews", "web"]);
  const web = snap.services.get("web")!;
  assert.equal(web.name, "web");
  assert.equal(web.namespace, "default");
  assert.equal(web.serviceAccount, "web", "the service account defaults to the service name");
  assert.equal(web.spiffeId, "spiffe://shop.example/ns/default/sa/web");
  assert.deepEqual(web.hostnames, ["web", "web.default", "web.default.svc", "web.default.svc.cluster.local"]);
  assert.deepEqual(web.ports, [{ port: 80, protocol: "http" }]);
  assert.equal(web.mtlsMode, "STRICT");
  assert.equal(web.traffic.loadBalancer, "round_robin");

  const reviews = snap.services.get("reviews")!;
  assert.equal(reviews.serviceAccount, "reviews-sa");
  assert.equal(reviews.spiffeId, "spiffe://shop.example/ns/shop/sa/reviews-sa");
  assert.deepEqual(reviews.hostnames, ["reviews", "reviews.shop", "reviews.shop.svc", "reviews.shop.svc.cluster.local"]);
  assert.deepEqual(reviews.ports, [{ port: 9080, protocol: "http2" }]);
  assert.equal(reviews.mtlsMode, "PERMISSIVE");
  assert.equal(reviews.traffic.loadBalancer, "least_request");
  assert.deepEqual(reviews.subsets, { v1: { version: "v1" }, v2: { version: "v2", track: "canary" } });
});

test("compileMesh parses endpoints and labels each with its version's subset labels", () => {
  const reviews = compileMesh(validated(SMALL_MESH)).services.get("reviews")!;
  assert.deepEqual(reviews.endpoints, [
    { address: "10.0.1.1:9080", host: "10.0.1.1", port: 9080, labels: { version: "v1" }, weight: 1, draining: false },
    { address: "[fd00::2]:9080", host: "fd00::2", port: 9080, labels: { version: "v2", track: "canary" }, weight: 3, draining: false },
    { address: "unix:/run/reviews.sock", host: "localhost", port: 0, socketPath: "/run/reviews.sock", labels: {}, weight: 1, draining: false },
  ]);
});

test("compileMesh keeps a service's own routes and gives a service without routes one route to itself", () => {
  const snap = compileMesh(validated(SMALL_MESH));
  assert.deepEqual(snap.services.get("web")!.routes, [{ forward: { to: [{ service: "web", weight: 1 }] } }]);
  assert.deepEqual(snap.services.get("reviews")!.routes[0]!.forward!.to, [
    { service: "reviews", subset: "v1", weight: 90 },
    { service: "reviews", subset: "v2", weight: 10 },
  ]);
  assert.deepEqual(compileMesh(validated({ services: { lonely: {} } })).services.get("lonely")!.endpoints, []);
});

test("compileMesh gives every gateway a name and a SPIFFE ID from its namespace and service account", () => {
  const snap = compileMesh(validated(SMALL_MESH));
  const edge = snap.gateways.get("edge")!;
  assert.equal(edge.name, "edge");
  assert.equal(edge.spiffeId, "spiffe://shop.example/ns/ingress/sa/edge");
  assert.deepEqual(edge.listeners, [{ port: 8080, address: "0.0.0.0", protocol: "http" }]);
  assert.equal(edge.routes.length, 1);
  const internal = snap.gateways.get("internal")!;
  assert.equal(internal.spiffeId, "spiffe://shop.example/ns/default/sa/gw-sa");
});

test("compileMesh output is frozen all the way down", () => {
  const snap = compileMesh(validated(SMALL_MESH), 3);
  const reviews = snap.services.get("reviews")!;
  assert.ok(Object.isFrozen(snap));
  assert.ok(Object.isFrozen(reviews));
  assert.ok(Object.isFrozen(reviews.endpoints));
  assert.ok(Object.isFrozen(reviews.endpoints[1]!.labels));
  assert.ok(Object.isFrozen(reviews.routes[0]!.forward!.to[0]));
  assert.ok(Object.isFrozen(reviews.traffic));
  assert.ok(Object.isFrozen(snap.gateways.get("edge")!.listeners[0]));
  assert.throws(() => {
    (reviews.endpoints as unknown as { push(x: unknown): void }).push({});
  }, TypeError);
});

test("spiffeIdOf names a workload by trust domain, namespace and service account", () => {
  assert.equal(spiffeIdOf("cluster.local", "default", "web"), "spiffe://cluster.local/ns/default/sa/web");
  assert.equal(spiffeIdOf("prod.example", "shop", "reviews-sa"), "spiffe://prod.example/ns/shop/sa/reviews-sa");
});

test("parseEndpoint reads host:port, [v6]:port and unix:/path", () => {
  assert.deepEqual(parseEndpoint("127.0.0.1:9001"), { address: "127.0.0.1:9001", host: "127.0.0.1", port: 9001, labels: {}, weight: 1, draining: false });
  assert.deepEqual(parseEndpoint("web.internal:80", { version: "v1" }, 5, true), {
    address: "web.internal:80",
    host: "web.internal",
    port: 80,
    labels: { version: "v1" },
    weight: 5,
    draining: true,
  });
  const v6 = parseEndpoint("[::1]:8443");
  assert.equal(v6.host, "::1");
  assert.equal(v6.port, 8443);
  assert.equal(v6.socketPath, undefined);
  const full = parseEndpoint("[2001:db8::1:2]:65535");
  assert.equal(full.host, "2001:db8::1:2");
  assert.equal(full.port, 65535);
  const unix = parseEndpoint("unix:/var/run/app:v1.sock");
  assert.equal(unix.socketPath, "/var/run/app:v1.sock", "a colon in a socket path is not a port separator");
  assert.equal(unix.port, 0);
  assert.equal(unix.host, "localhost");
  assert.equal(unix.address, "unix:/var/run/app:v1.sock");
});

test("every address validateMesh accepts compiles to an endpoint with a usable host and port", () => {
  const addresses = ["10.0.0.1:1", "Host.Example:65535", "[fd00::1]:80", "[::ffff:10.0.0.1]:8080", "unix:/tmp/a.sock"];
  const snap = compileMesh(validated({ services: { web: { endpoints: addresses.map((address) => ({ address })) } } }));
  for (const e of snap.services.get("web")!.endpoints) {
    if (e.socketPath !== undefined) {
      assert.ok(e.socketPath.startsWith("/"), e.address);
      continue;
    }
    assert.ok(Number.isInteger(e.port) && e.port >= 1 && e.port <= 65535, e.address);
    assert.ok(e.host.length > 0 && !e.host.includes("[") && !e.host.includes("]"), e.address);
  }
});
