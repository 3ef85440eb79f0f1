import { test } from "node:test";
import assert from "node:assert/strict";
import { compileMesh, validateMesh, type MeshConfig, type MeshInput, type ServiceConfig } from "../config/index.ts";
import {
  assembleSnapshot,
  serviceDependencies,
  splitMesh,
  type EndpointsResource,
  type GatewayResource,
  type MeshResource,
  type ProxyResources,
  type ServiceResource,
} from "./resources.ts";

const INPUT: MeshInput = {
  trustDomain: "weft.test",
  services: {
    alpha: { endpoints: [{ address: "127.0.0.1:9101", version: "v1" }], versions: { v1: { track: "stable" } } },
    beta: { routes: [{ forward: { to: [{ service: "gamma" }] } }] },
    gamma: { namespace: "backend" },
  },
  gateways: {
    edge: { listeners: [{ port: 8080 }], routes: [{ forward: { to: [{ service: "alpha", weight: 1 }] } }] },
  },
};

function validConfig(input: MeshInput = INPUT): MeshConfig {
  const r = validateMesh(input);
  if (!r.ok) assert.fail(`fixture does not validate: ${JSON.stringify(r.issues)}`);
  return r.value;
}

/** Everything splitMesh wrote, as a proxy holding every key would pass it to assembleSnapshot. */
function allResources(split: Map<string, unknown>): ProxyResources {
  const services = new Map<string, ServiceResource>();
  const gateways = new Map<string, GatewayResource>();
  for (const [key, value] of split) {
    if (key.startsWith("svc.")) services.set(key.slice(4), value as ServiceResource);
    if (key.startsWith("gw.")) gateways.set(key.slice(3), value as GatewayResource);
  }
  return { mesh: split.get("mesh") as MeshResource, services, gateways, endpoints: new Map() };
}

function issuePaths(r: ReturnType<typeof assembleSnapshot>): string[] {
  assert.equal(r.ok, false, "expected a refusal");
  return r.ok ? [] : r.issues.map((i) => i.path).sort();
}

test("splitMesh writes one mesh record, one svc.<name> per service and one gw.<name> per gateway, all at the generation", () => {
  const config = validConfig();
  const split = splitMesh(config, 7);
  assert.deepEqual([...split.keys()].sort(), ["gw.edge", "mesh", "svc.alpha", "svc.beta", "svc.gamma"]);
  assert.deepEqual(split.get("mesh"), {
    generation: 7,
    trustDomain: "weft.test",
    outboundTrafficPolicy: config.outboundTrafficPolicy,
    accessLog: config.accessLog,
    tracing: config.tracing,
  });
  assert.deepEqual(split.get("svc.gamma"), { generation: 7, name: "gamma", config: config.services.gamma });
  assert.deepEqual(split.get("gw.edge"), { generation: 7, name: "edge", config: config.gateways.edge });
  // The service record carries the validated section (defaults filled in), so a proxy re-checks the same shape.
  assert.equal((split.get("svc.gamma") as ServiceResource).config.namespace, "backend");
  assert.deepEqual((split.get("svc.alpha") as ServiceResource).config.ports, [{ port: 80, protocol: "http" }]);
});

test("assembleSnapshot rebuilds the snapshot the control plane compiled, at the highest generation held", () => {
  const config = validConfig();
  const resources = allResources(splitMesh(config, 4));
  // One section changed by a later apply: the proxy runs that apply's revision.
  const beta = resources.services.get("beta")!;
  (resources.services as Map<string, ServiceResource>).set("beta", { ...beta, generation: 9 });
  const r = assembleSnapshot(resources);
  assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
  assert.deepEqual(r.snapshot, compileMesh(config, 9));
  assert.ok(Object.isFrozen(r.snapshot));
});

test("assembleSnapshot adds registered endpoints after the declared ones, with subset labels and draining, skipping declared addresses", () => {
  const resources = allResources(splitMesh(validConfig(), 2));
  const eps: EndpointsResource = {
    service: "alpha",
    endpoints: [
      { address: "127.0.0.1:9101", labels: { version: "v2" }, weight: 5, draining: false, proxyId: "dup" },
      { address: "10.0.0.7:8080", labels: { version: "v1", zone: "a" }, weight: 3, draining: true, proxyId: "sidecar-alpha-2" },
      { address: "unix:/run/alpha.sock", labels: {}, weight: 1, draining: false, proxyId: "sidecar-alpha-3" },
    ],
  };
  const r = assembleSnapshot({ ...resources, endpoints: new Map([["alpha", eps]]) });
  assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
  const endpoints = r.snapshot.services.get("alpha")!.endpoints;
  assert.deepEqual(
    endpoints.map((e) => [e.address, e.weight, e.draining, e.labels]),
    [
      ["127.0.0.1:9101", 1, false, { version: "v1", track: "stable" }],
      ["10.0.0.7:8080", 3, true, { version: "v1", zone: "a", track: "stable" }],
      ["unix:/run/alpha.sock", 1, false, {}],
    ],
  );
  assert.equal(endpoints[2]!.socketPath, "/run/alpha.sock");
  assert.equal(endpoints[1]!.port, 8080);
  // Services without registered endpoints are passed through untouched.
  assert.deepEqual(r.snapshot.services.get("gamma"), compileMesh(validConfig(), 2).services.get("gamma"));
});

test("assembleSnapshot refuses malformed resources, listing every problem by key path", () => {
  const resources = allResources(splitMesh(validConfig(), 3));
  const services = new Map(resources.services);
  services.set("alpha", { generation: -1, name: "alpha", config: resources.services.get("alpha")!.config });
  services.set("beta", { generation: 3, name: "beta", config: "not an object" as unknown as ServiceConfig });
  const badEps = { service: "alpha", endpoints: [{ address: "no port here", labels: {}, weight: 1, draining: false, proxyId: "p" }] };
  const r = assembleSnapshot({
    ...resources,
    mesh: { ...resources.mesh, outboundTrafficPolicy: "SOMETIMES" as MeshResource["outboundTrafficPolicy"] },
    services,
    endpoints: new Map([["alpha", badEps as EndpointsResource]]),
  });
  assert.deepEqual(issuePaths(r), ["eps.alpha.endpoints.0.address", "mesh.outboundTrafficPolicy", "svc.alpha.generation", "svc.beta.config"]);
});

test("assembleSnapshot re-validates the assembled config and refuses a route to a service it does not hold", () => {
  const resources = allResources(splitMesh(validConfig(), 3));
  const services = new Map(resources.services);
  services.delete("alpha");
  const r = assembleSnapshot({ ...resources, services });
  assert.deepEqual(issuePaths(r), ["gateways.edge.routes.0.forward.to.0.service"]);
});

test("assembleSnapshot refuses a section that the schema rejects, by the config path", () => {
  const resources = allResources(splitMesh(validConfig(), 3));
  const services = new Map(resources.services);
  const gamma = resources.services.get("gamma")!;
  services.set("gamma", { ...gamma, config: { ...gamma.config, ports: [{ port: 70000, protocol: "http" }] } });
  const r = assembleSnapshot({ ...resources, services });
  const paths = issuePaths(r);
  assert.ok(paths.length > 0 && paths.every((p) => p.startsWith("services.gamma.ports.0")), paths.join());
});

test("serviceDependencies lists every route target, following each target's own routes, once each", () => {
  const config = validConfig({
    services: {
      a: { routes: [{ forward: { to: [{ service: "b" }, { service: "c" }] } }] },
      b: { routes: [{ forward: { to: [{ service: "a" }] } }] },
      c: {},
      d: {},
      unused: { routes: [{ forward: { to: [{ service: "d" }] } }] },
    },
    gateways: {
      edge: {
        listeners: [{ port: 8080 }],
        routes: [{ directResponse: { status: 204 } }, { forward: { to: [{ service: "a" }] } }],
      },
    },
  });
  const lookup = (name: string): ServiceConfig | undefined => config.services[name];
  assert.deepEqual([...serviceDependencies(config.gateways.edge!.routes, lookup)].sort(), ["a", "b", "c"]);
  assert.deepEqual([...serviceDependencies([], lookup)], []);
  // A mirror's shadow is a target too: the copies need its endpoints.
  assert.deepEqual([...serviceDependencies([{ forward: { to: [{ service: "c" }], mirror: { service: "d" } } }], lookup)].sort(), ["c", "d"]);
  // A target the lookup does not know is still listed: the proxy must watch its key to learn it.
  assert.deepEqual([...serviceDependencies([{ forward: { to: [{ service: "ghost" }] } }], lookup)], ["ghost"]);
});

test("a sidecar's resources carry the external services and the egress gateway's identity and registered mesh endpoints, without the gateway key", () => {
  const split = splitMesh(
    validConfig({
      trustDomain: "weft.test",
      services: { web: {} },
      gateways: { egress: { kind: "egress", serviceAccount: "egress-sa", listeners: [{ port: 15443 }], routes: [] } },
      externalServices: { api: { hosts: ["api.external.test"], ports: [{ port: 443, protocol: "https" }], egress: { gateway: "egress" } } },
    }),
    3,
  );
  const mesh = split.get("mesh") as MeshResource;
  assert.deepEqual(mesh.egressGateways, { egress: "spiffe://weft.test/ns/default/sa/egress-sa" });
  const eps: EndpointsResource = {
    service: "egress",
    endpoints: [
      { address: "10.0.0.9:15443", labels: { "security.weft.dev/tlsMode": "mesh" }, weight: 1, draining: false, proxyId: "gw-1" },
      { address: "10.0.0.8:8080", labels: {}, weight: 1, draining: false, proxyId: "gw-2" },
    ],
  };
  const r = assembleSnapshot({
    mesh,
    gateways: new Map(),
    services: new Map([["web", split.get("svc.web") as ServiceResource]]),
    endpoints: new Map([["egress", eps]]),
  });
  assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
  assert.deepEqual(r.snapshot.externalServices?.get("api")?.egress, { gateway: "egress", spiffeId: "spiffe://weft.test/ns/default/sa/egress-sa" });
  assert.deepEqual(r.snapshot.egressGateways?.get("egress")?.endpoints.map((e) => e.address), ["10.0.0.9:15443"]);
});

test("a mesh record from the wire with a malformed egress identity is refused", () => {
  const split = splitMesh(validConfig(), 1);
  const resources = allResources(split);
  const r = assembleSnapshot({ ...resources, mesh: { ...resources.mesh, egressGateways: { egress: "https://not-spiffe" } } });
  assert.deepEqual(issuePaths(r), ["mesh.egressGateways.egress"]);
});
