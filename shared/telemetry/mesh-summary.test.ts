import { test } from "node:test";
import assert from "node:assert/strict";
import { createMeshSummary } from "./mesh-summary.ts";
import type { TelemetryRecord } from "./record.ts";

const base: TelemetryRecord = {
  startTimeMs: 1000,
  durationMs: 10,
  method: "GET",
  authority: "web",
  path: "/x?y=1",
  protocol: "HTTP/1.1",
  status: 200,
  route: "default",
  service: "api",
  bytesIn: 0,
  bytesOut: 10,
  requestId: "r",
  clientIp: "127.0.0.1",
  attempts: 1,
};

test("a sidecar counts its outbound calls as edges and leaves inbound ones to the caller, but reports inbound denials", () => {
  const s = createMeshSummary({ proxyId: "sc-web", role: "sidecar", workload: "web", inboundService: "inbound|app" });
  s.take(0);
  for (let i = 1; i <= 100; i++) s.record({ ...base, durationMs: i, status: i % 10 === 0 ? 503 : 200 });
  s.record({ ...base, service: "inbound|app" });
  s.record({ ...base, service: "inbound|app", status: 403, reason: "denied", sourcePrincipal: "spiffe://cluster.local/ns/default/sa/intruder" });
  const out = s.take(2000);
  assert.equal(out.intervalMs, 2000);
  assert.deepEqual(out.edges, [{ source: "web", destination: "api", requests: 100, errors: 10, p50Ms: 50, p99Ms: 99 }]);
  assert.deepEqual(out.denials, [{ at: 1000, source: "intruder", destination: "web", method: "GET", path: "/x", status: 403, reason: "denied" }]);
  // Each take starts a new interval.
  assert.deepEqual(s.take(4000).edges, []);
});

test("a gateway reports calls from clients to itself and from itself to each destination", () => {
  const s = createMeshSummary({ proxyId: "gw", role: "gateway", workload: "ingress" });
  s.record({ ...base, service: "web" });
  s.record({ ...base, service: undefined, status: 404, reason: "no_route" });
  s.record({ ...base, service: undefined, status: 401, reason: "jwt_invalid" });
  const out = s.take(1);
  assert.deepEqual(
    out.edges.map((e) => [e.source, e.destination, e.requests]),
    [["clients", "ingress", 3], ["ingress", "web", 1]],
  );
  assert.deepEqual(out.denials.map((d) => [d.source, d.destination, d.status]), [["clients", "ingress", 401]]);
});

test("durations beyond the sample size keep a bounded uniform sample", () => {
  const s = createMeshSummary({ proxyId: "gw", role: "sidecar", workload: "web", sampleSize: 8, random: () => 0.5 });
  for (let i = 0; i < 1000; i++) s.record({ ...base, durationMs: 5 });
  const [edge] = s.take(1).edges;
  assert.equal(edge!.requests, 1000);
  assert.equal(edge!.p99Ms, 5);
});
