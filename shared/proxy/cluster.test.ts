import { test } from "node:test";
import assert from "node:assert/strict";
import { compileMesh, parseEndpoint, validateMesh, type ServiceSnapshot } from "../config/index.ts";
import { createCluster } from "./cluster.ts";
import type { RequestHead } from "./types.ts";

function service(input: unknown, name = "reviews"): ServiceSnapshot {
  const r = validateMesh({ services: { [name]: input } });
  if (!r.ok) throw new TypeError(`test config does not validate: ${JSON.stringify(r.issues)}`);
  return compileMesh(r.value).services.get(name)!;
}

const head: RequestHead = { method: "GET", scheme: "http", authority: "reviews", path: "/", headers: {}, clientIp: "192.0.2.1", localPort: 80 };

const REVIEWS = {
  versions: { v1: { version: "v1" }, v2: { version: "v2" }, canary: { track: "canary" }, empty: { version: "v9" } },
  endpoints: [
    { address: "10.0.0.1:9080", version: "v1" },
    { address: "10.0.0.2:9080", version: "v1" },
    { address: "10.0.0.3:9080", version: "v2" },
    { address: "10.0.0.4:9080", version: "canary" },
  ],
  traffic: { loadBalancer: "round_robin", retries: { attempts: 3 } },
};

const addresses = (eps: readonly { address: string }[]) => eps.map((e) => e.address);

test("a cluster lists every endpoint without a subset and each subset's endpoints by their labels", () => {
  const c = createCluster(service(REVIEWS));
  assert.deepEqual(addresses(c.endpoints(undefined)), ["10.0.0.1:9080", "10.0.0.2:9080", "10.0.0.3:9080", "10.0.0.4:9080"]);
  assert.deepEqual(addresses(c.endpoints("v1")), ["10.0.0.1:9080", "10.0.0.2:9080"]);
  assert.deepEqual(addresses(c.endpoints("v2")), ["10.0.0.3:9080"]);
  assert.deepEqual(addresses(c.endpoints("canary")), ["10.0.0.4:9080"]);
});

test("a subset that matches no endpoint, or that is not declared, gives an empty list and no pick", () => {
  const c = createCluster(service(REVIEWS));
  for (const subset of ["empty", "v3"]) {
    assert.deepEqual(c.endpoints(subset), [], subset);
    assert.equal(c.balancer.pick(c.endpoints(subset), { head, random: () => 0.5 }), undefined, subset);
  }
});

test("a subset's endpoint list is computed once per config, so per-list balancer state carries across requests", () => {
  const c = createCluster(service(REVIEWS));
  assert.equal(c.endpoints("v1"), c.endpoints("v1"));
  const picks = Array.from({ length: 4 }, () => c.balancer.pick(c.endpoints("v1"), { head, random: () => 0 })!.address);
  assert.deepEqual(picks, ["10.0.0.1:9080", "10.0.0.2:9080", "10.0.0.1:9080", "10.0.0.2:9080"]);
});

test("a cluster balances with its service's load balancer and carries its retry policy", () => {
  const c = createCluster(service({ ...REVIEWS, traffic: { loadBalancer: { consistentHash: { header: "x-user" } } } }));
  const keyed: RequestHead = { ...head, headers: { "x-user": "alice" } };
  const first = c.balancer.pick(c.endpoints(undefined), { head: keyed, random: Math.random })!.address;
  for (let i = 0; i < 20; i++) assert.equal(c.balancer.pick(c.endpoints(undefined), { head: keyed, random: Math.random })!.address, first);
  assert.equal(createCluster(service(REVIEWS)).retries?.attempts, 3);
  assert.equal(c.retries, undefined);
});

test("picks through a cluster never return a draining endpoint", () => {
  const base = service(REVIEWS);
  const endpoints = [
    parseEndpoint("10.0.0.1:9080", { version: "v1" }, 1, true),
    parseEndpoint("10.0.0.2:9080", { version: "v1" }),
  ];
  const c = createCluster({ ...base, endpoints });
  for (let i = 0; i < 20; i++) assert.equal(c.balancer.pick(c.endpoints("v1"), { head, random: Math.random })!.address, "10.0.0.2:9080");
});
