import { test } from "node:test";
import assert from "node:assert/strict";
import { compileMesh, validateMesh, type MeshInput, type Snapshot } from "../config/index.ts";
import { createExternalHosts, createExternalView } from "./external.ts";
import type { RequestHead } from "./types.ts";

function snapshot(input: MeshInput, options?: Parameters<typeof compileMesh>[2]): Snapshot {
  const r = validateMesh(input, { partialGateways: options !== undefined });
  assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
  return compileMesh(r.value, 1, options);
}

function head(authority: string, path = "/"): RequestHead {
  return { method: "GET", scheme: "http", authority, path, headers: { host: authority }, clientIp: "127.0.0.1", localPort: 15001 };
}

const MESH: MeshInput = {
  externalServices: {
    exact: { hosts: ["api.example.com"], ports: [{ port: 443, protocol: "https" }, { port: 80, protocol: "http" }] },
    wide: { hosts: ["*.example.com"], ports: [{ port: 443, protocol: "https" }] },
    narrow: { hosts: ["*.eu.example.com"], ports: [{ port: 443, protocol: "https" }] },
    raw: { hosts: ["db.example.net"], ports: [{ port: 5432, protocol: "tcp" }, { port: 8443, protocol: "tls" }] },
  },
};

test("an exact host wins over wildcards, and the longest *.suffix wins over a shorter one", () => {
  const hosts = createExternalHosts(snapshot(MESH).externalServices!.values());
  assert.equal(hosts.match("api.example.com:443")?.service.name, "exact");
  assert.equal(hosts.match("www.example.com:443")?.service.name, "wide");
  assert.equal(hosts.match("a.b.example.com:443")?.service.name, "wide");
  assert.equal(hosts.match("x.eu.example.com:443")?.service.name, "narrow");
  assert.equal(hosts.match("eu.example.com:443")?.service.name, "wide");
});

test("a wildcard never matches its bare suffix, nor a name that merely ends with it", () => {
  const hosts = createExternalHosts(snapshot(MESH).externalServices!.values());
  assert.equal(hosts.match("example.com:443"), undefined);
  assert.equal(hosts.match("badexample.com:443"), undefined);
  assert.equal(hosts.match("api.example.org"), undefined);
});

test("host matching ignores case and a trailing dot; a missing port is 80; an undeclared port is told apart", () => {
  const hosts = createExternalHosts(snapshot(MESH).externalServices!.values());
  const upper = hosts.match("API.Example.COM.:443");
  assert.deepEqual([upper?.service.name, upper?.host, upper?.port, upper?.declared?.protocol], ["exact", "api.example.com", 443, "https"]);
  const noPort = hosts.match("api.example.com");
  assert.deepEqual([noPort?.port, noPort?.declared?.protocol], [80, "http"]);
  const other = hosts.match("api.example.com:8080");
  assert.deepEqual([other?.service.name, other?.declared], ["exact", undefined]);
  assert.equal(hosts.match("api.example.com:99999"), undefined);
  assert.equal(hosts.match("[::1]:443"), undefined);
});

test("a sidecar accepts only http and https ports of declared hosts", () => {
  const view = createExternalView(snapshot(MESH));
  assert.equal(view.accepts("api.example.com:443"), true);
  assert.equal(view.accepts("api.example.com"), true);
  assert.equal(view.accepts("api.example.com:8080"), false);
  assert.equal(view.accepts("db.example.net:5432"), false);
  assert.equal(view.accepts("db.example.net:8443"), false);
  assert.equal(view.accepts("unknown.test"), false);
});

test("direct calls go to the called host on the target port, with TLS originated (SNI = host) only on https ports", () => {
  const view = createExternalView(
    snapshot({
      externalServices: {
        api: { hosts: ["*.example.com"], ports: [{ port: 80, protocol: "https", targetPort: 443 }, { port: 8080, protocol: "http" }], tls: { caFile: "/etc/ca.pem" } },
      },
    }),
  );
  const tlsRoute = view.route(head("pay.example.com", "/a/../b"));
  assert.equal(tlsRoute?.path, "/b");
  const tlsCluster = view.cluster(tlsRoute!.route.forward!.to[0]!.service)!;
  assert.deepEqual(tlsCluster.endpoints(undefined).map((e) => e.address), ["pay.example.com:443"]);
  assert.deepEqual(tlsCluster.service.originateTls, { servername: "pay.example.com", caFile: "/etc/ca.pem" });
  assert.deepEqual(tlsRoute!.route.headers?.request?.remove, ["x-forwarded-client-cert"]);

  const plain = view.route(head("pay.example.com:8080"));
  const plainCluster = view.cluster(plain!.route.forward!.to[0]!.service)!;
  assert.deepEqual(plainCluster.endpoints(undefined).map((e) => e.address), ["pay.example.com:8080"]);
  assert.equal(plainCluster.service.originateTls, undefined);
  assert.equal(view.route(head("pay.example.com:9999")), undefined);
});

test("static endpoints replace the DNS name; one without a port takes the target port, and SNI stays the called host", () => {
  const view = createExternalView(
    snapshot({
      externalServices: {
        api: {
          hosts: ["api.external.test"],
          ports: [{ port: 443, protocol: "https" }],
          resolution: "STATIC",
          endpoints: [{ address: "127.0.0.1:9443" }, { address: "10.1.2.3" }],
        },
      },
    }),
  );
  const match = view.route(head("api.external.test:443"))!;
  const cluster = view.cluster(match.route.forward!.to[0]!.service)!;
  assert.deepEqual(cluster.endpoints(undefined).map((e) => [e.host, e.port]), [["127.0.0.1", 9443], ["10.1.2.3", 443]]);
  assert.deepEqual(cluster.service.originateTls, { servername: "api.external.test" });
});

test("a sidecar sends an egress-routed service to the gateway's mesh endpoints, expecting the gateway's SPIFFE ID, never directly", () => {
  const input: MeshInput = {
    trustDomain: "example.org",
    gateways: { egress: { kind: "egress", serviceAccount: "egress-sa", listeners: [{ port: 15443 }], routes: [] } },
    externalServices: { api: { hosts: ["api.external.test"], ports: [{ port: 443, protocol: "https" }], egress: { gateway: "egress" } } },
  };
  const snap = snapshot(input);
  const withEndpoints: Snapshot = {
    ...snap,
    egressGateways: new Map([["egress", { ...snap.egressGateways!.get("egress")!, endpoints: [{ address: "10.0.0.9:15443", host: "10.0.0.9", port: 15443, labels: { "security.weft.dev/tlsMode": "mesh" }, weight: 1, draining: false }] }]]),
  };
  const view = createExternalView(withEndpoints);
  const cluster = view.cluster(view.route(head("api.external.test:443"))!.route.forward!.to[0]!.service)!;
  assert.equal(cluster.service.spiffeId, "spiffe://example.org/ns/default/sa/egress-sa");
  assert.deepEqual(cluster.endpoints(undefined).map((e) => e.address), ["10.0.0.9:15443"]);
  assert.equal(cluster.service.originateTls, undefined, "the gateway originates TLS, not the sidecar");

  // A sidecar that does not know the gateway's identity has nowhere to send the call.
  const unknown = createExternalView(snapshot({ externalServices: input.externalServices }, { egressIdentities: {} }));
  const none = unknown.cluster(unknown.route(head("api.external.test:443"))!.route.forward!.to[0]!.service)!;
  assert.deepEqual(none.endpoints(undefined), []);
});

test("an egress gateway serves only the external services routed through it, and originates their TLS", () => {
  const snap = snapshot({
    gateways: {
      egress: { kind: "egress", listeners: [{ port: 15443 }], routes: [] },
      other: { kind: "egress", listeners: [{ port: 15444 }], routes: [] },
    },
    externalServices: {
      mine: { hosts: ["mine.test"], ports: [{ port: 443, protocol: "https" }], egress: { gateway: "egress" } },
      theirs: { hosts: ["theirs.test"], ports: [{ port: 443, protocol: "https" }], egress: { gateway: "other" } },
      direct: { hosts: ["direct.test"], ports: [{ port: 443, protocol: "https" }] },
    },
  });
  const view = createExternalView(snap, { gateway: "egress" });
  const match = view.route(head("mine.test:443"))!;
  const cluster = view.cluster(match.route.forward!.to[0]!.service)!;
  assert.deepEqual(cluster.endpoints(undefined).map((e) => e.address), ["mine.test:443"]);
  assert.deepEqual(cluster.service.originateTls, { servername: "mine.test" });
  assert.equal(view.route(head("theirs.test:443")), undefined);
  assert.equal(view.route(head("direct.test:443")), undefined);
});
