import { test } from "node:test";
import assert from "node:assert/strict";
import { createMemoryBus, createMemoryNetwork, encodeJson, telemetrySubject } from "../shared/bus/index.ts";
import { startMeshView } from "./mesh-view.ts";

test("the graph sums each proxy's latest interval into requests/s per edge, and forgets silent proxies", async () => {
  const network = createMemoryNetwork();
  const bus = createMemoryBus({ network });
  let now = 10_000;
  const view = startMeshView({ bus: createMemoryBus({ network }), status: () => [], now: () => now, staleAfterMs: 6000 });
  const summary = (proxyId: string, requests: number, errors: number, p99Ms: number) => ({
    v: 1,
    proxyId,
    role: "sidecar",
    workload: "web",
    revision: 3,
    intervalMs: 2000,
    sentAt: now,
    edges: [{ source: "web", destination: "api", requests, errors, p50Ms: 1, p99Ms }],
    denials: [],
  });
  bus.publish(telemetrySubject("sc-web-1"), encodeJson(summary("sc-web-1", 40, 2, 9)));
  bus.publish(telemetrySubject("sc-web-2"), encodeJson(summary("sc-web-2", 20, 0, 15)));
  bus.publish(telemetrySubject("sc-bad"), encodeJson({ v: 1, proxyId: "sc-bad", edges: "nope" }));
  await bus.flush();
  const g = view.graph();
  assert.deepEqual(g.edges, [{ source: "web", destination: "api", rps: 30, errorRate: 2 / 60, p99Ms: 15 }]);
  assert.deepEqual(g.nodes.map((n) => n.name).sort(), ["api", "web"]);
  now += 7000;
  assert.deepEqual(view.graph().edges, []);
  view.stop();
});
