import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as v from "valibot";
import { OutlierDetectionSchema, compileMesh, parseEndpoint, validateMesh, type Endpoint, type OutlierDetectionConfig } from "../config/index.ts";
import { createCluster, createClusterHealth } from "./cluster.ts";
import { createEngine, type RouteView } from "./engine.ts";
import { createOutlierDetector, type AttemptOutcome } from "./outlier.ts";
import type { RequestHead, UpstreamClient } from "./types.ts";
import { createGatewayView } from "./view.ts";

const config = (input: v.InferInput<typeof OutlierDetectionSchema> = {}): OutlierDetectionConfig => v.parse(OutlierDetectionSchema, input);
const eps = (n: number): Endpoint[] => Array.from({ length: n }, (_, i) => parseEndpoint(`10.0.0.${i + 1}:80`));
const addresses = (list: readonly Endpoint[]) => list.map((e) => e.address);

function clock(start = 1_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

function fail(detector: ReturnType<typeof createOutlierDetector>, ep: Endpoint, n: number, pool: readonly Endpoint[], outcome: AttemptOutcome = { status: 500 }) {
  let ejected = false;
  for (let i = 0; i < n; i++) ejected = detector.report(ep, outcome, pool) || ejected;
  return ejected;
}

test("the schema's defaults are Istio's: 5 consecutive 5xx, 30 s base ejection, 10% at most, panic below 50%", () => {
  assert.deepEqual(config(), {
    consecutive5xxErrors: 5,
    consecutiveGatewayErrors: 0,
    intervalMs: 10000,
    baseEjectionTimeMs: 30000,
    maxEjectionTimeMs: 300000,
    maxEjectionPercent: 10,
    minHealthPercent: 50,
  });
});

test("an endpoint is ejected on its fifth consecutive 5xx and gets no picks while out", () => {
  const c = clock();
  const pool = eps(3);
  const d = createOutlierDetector(config(), c.now);
  assert.equal(fail(d, pool[0]!, 4, pool), false);
  assert.equal(d.available(pool), pool, "nothing ejected: the same list, so balancer state carries on");
  assert.equal(d.report(pool[0]!, { status: 503 }, pool), true);
  assert.deepEqual(addresses(d.available(pool)), ["10.0.0.2:80", "10.0.0.3:80"]);
  assert.equal(d.isEjected("10.0.0.1:80"), true);
  assert.deepEqual(d.ejections(), [{ address: "10.0.0.1:80", untilMs: c.now() + 30000 }]);
});

test("a success between errors resets the count, so scattered 5xx never eject", () => {
  const pool = eps(3);
  const d = createOutlierDetector(config(), clock().now);
  for (let round = 0; round < 10; round++) {
    assert.equal(fail(d, pool[0]!, 4, pool), false);
    d.report(pool[0]!, { status: 200 }, pool);
  }
  assert.equal(d.isEjected("10.0.0.1:80"), false);
});

test("4xx answers are not errors and reset the count", () => {
  const pool = eps(3);
  const d = createOutlierDetector(config({ consecutive5xxErrors: 2 }), clock().now);
  d.report(pool[0]!, { status: 500 }, pool);
  d.report(pool[0]!, { status: 404 }, pool);
  d.report(pool[0]!, { status: 500 }, pool);
  assert.equal(d.isEjected("10.0.0.1:80"), false);
});

test("local connect failures, resets and timeouts count as 5xx; a body too large does not count", () => {
  const pool = eps(3);
  const d = createOutlierDetector(config({ consecutive5xxErrors: 3 }), clock().now);
  fail(d, pool[0]!, 5, pool, { failure: "body_too_large" });
  assert.equal(d.isEjected("10.0.0.1:80"), false);
  d.report(pool[0]!, { failure: "upstream_connect_failure" }, pool);
  d.report(pool[0]!, { failure: "upstream_reset" }, pool);
  assert.equal(d.report(pool[0]!, { failure: "timeout" }, pool), true);
});

test("consecutiveGatewayErrors counts only 502/503/504 and local failures", () => {
  const pool = eps(3);
  const d = createOutlierDetector(config({ consecutive5xxErrors: 0, consecutiveGatewayErrors: 3 }), clock().now);
  fail(d, pool[0]!, 10, pool, { status: 500 });
  assert.equal(d.isEjected("10.0.0.1:80"), false, "500 is not a gateway error and consecutive5xx is off");
  d.report(pool[0]!, { status: 502 }, pool);
  d.report(pool[0]!, { status: 504 }, pool);
  assert.equal(d.report(pool[0]!, { failure: "upstream_connect_failure" }, pool), true);
});

test("an ejected endpoint returns after baseEjectionTime, and the next ejection lasts twice as long", () => {
  const c = clock();
  const pool = eps(3);
  const d = createOutlierDetector(config(), c.now);
  fail(d, pool[0]!, 5, pool);
  c.advance(29_999);
  assert.equal(d.isEjected("10.0.0.1:80"), true);
  c.advance(1);
  assert.equal(d.isEjected("10.0.0.1:80"), false);
  assert.equal(d.available(pool).length, 3);
  fail(d, pool[0]!, 5, pool);
  assert.deepEqual(d.ejections(), [{ address: "10.0.0.1:80", untilMs: c.now() + 60000 }]);
});

test("the multiplier drops by one per interval spent in, and ejections are capped at maxEjectionTime", () => {
  const c = clock();
  const pool = eps(3);
  const d = createOutlierDetector(config({ baseEjectionTimeMs: 1000, maxEjectionTimeMs: 2500, intervalMs: 5000 }), c.now);
  for (let i = 1; i <= 4; i++) {
    fail(d, pool[0]!, 5, pool);
    const until = d.ejections()[0]!.untilMs - c.now();
    assert.equal(until, Math.min(1000 * i, 2500), `ejection ${i}`);
    c.advance(until);
  }
  // Ejected 4 times; two intervals in brings the multiplier to 2, so the next lasts 3 × base.
  c.advance(10_000);
  fail(d, pool[0]!, 5, pool);
  assert.equal(d.ejections()[0]!.untilMs - c.now(), 2500);
  c.advance(2500 + 50_000);
  fail(d, pool[0]!, 5, pool);
  assert.equal(d.ejections()[0]!.untilMs - c.now(), 1000, "fully decayed: back to the base time");
});

test("never more than maxEjectionPercent of the service is out, but one endpoint always may be", () => {
  const pool = eps(3);
  const d = createOutlierDetector(config(), clock().now);
  assert.equal(fail(d, pool[0]!, 5, pool), true, "10% of 3 rounds down to 0, yet one may go");
  assert.equal(fail(d, pool[1]!, 5, pool), false);
  assert.equal(d.isEjected("10.0.0.2:80"), false);

  const twenty = eps(20);
  const e = createOutlierDetector(config({ maxEjectionPercent: 10 }), clock().now);
  assert.equal(fail(e, twenty[0]!, 5, twenty), true);
  assert.equal(fail(e, twenty[1]!, 5, twenty), true);
  assert.equal(fail(e, twenty[2]!, 5, twenty), false, "two of twenty is 10%");
  assert.equal(e.available(twenty).length, 18);
});

test("maxEjectionPercent 0 never ejects", () => {
  const pool = eps(3);
  const d = createOutlierDetector(config({ maxEjectionPercent: 0 }), clock().now);
  assert.equal(fail(d, pool[0]!, 50, pool), false);
});

test("below minHealthPercent the pool panics and every endpoint is picked again", () => {
  const pool = eps(4);
  const d = createOutlierDetector(config({ maxEjectionPercent: 100, minHealthPercent: 60 }), clock().now);
  fail(d, pool[0]!, 5, pool);
  assert.deepEqual(addresses(d.available(pool)), ["10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"], "75% healthy");
  fail(d, pool[1]!, 5, pool);
  assert.equal(d.available(pool), pool, "50% healthy is below 60%: all of them");
});

test("a single-endpoint pool that is ejected is still used under the default panic threshold", () => {
  const pool = eps(1);
  const d = createOutlierDetector(config(), clock().now);
  assert.equal(fail(d, pool[0]!, 5, pool), true);
  assert.equal(d.available(pool), pool);
});

test("minHealthPercent 0 never panics: with every endpoint out, nothing is picked", () => {
  const pool = eps(1);
  const d = createOutlierDetector(config({ minHealthPercent: 0 }), clock().now);
  fail(d, pool[0]!, 5, pool);
  assert.deepEqual(d.available(pool), []);
});

test("a subset pool is filtered by the service-wide ejections", () => {
  const all = eps(4);
  const subset = all.slice(0, 2);
  const d = createOutlierDetector(config({ maxEjectionPercent: 50, minHealthPercent: 0 }), clock().now);
  fail(d, all[0]!, 5, all);
  assert.deepEqual(addresses(d.available(subset)), ["10.0.0.2:80"]);
  assert.equal(d.available(all).length, 3);
});

test("errors reported for an endpoint picked during panic do not extend its ejection", () => {
  const c = clock();
  const pool = eps(1);
  const d = createOutlierDetector(config(), c.now);
  fail(d, pool[0]!, 5, pool);
  const until = d.ejections()[0]!.untilMs;
  assert.equal(fail(d, pool[0]!, 20, pool), false);
  assert.equal(d.ejections()[0]!.untilMs, until);
});

describe("the engine with outlier detection", () => {
  function gateway(traffic: Record<string, unknown>) {
    const r = validateMesh({
      services: { web: { endpoints: [{ address: "10.0.0.1:80" }, { address: "10.0.0.2:80" }, { address: "10.0.0.3:80" }], traffic } },
      gateways: { edge: { listeners: [{ port: 0 }], routes: [{ forward: { to: [{ service: "web" }] } }] } },
    });
    assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
    return compileMesh(r.value, 1);
  }
  const head: RequestHead = { method: "GET", scheme: "http", authority: "web", path: "/", headers: {}, clientIp: "192.0.2.1", localPort: 80 };
  const body = { length: 0, replayable: true };

  /** An upstream client that answers by endpoint address and counts tries per address. */
  function client(statusOf: (address: string) => number | "connect") {
    const tries = new Map<string, number>();
    const c: UpstreamClient = {
      async forward(req) {
        tries.set(req.endpoint.address, (tries.get(req.endpoint.address) ?? 0) + 1);
        const status = statusOf(req.endpoint.address);
        if (status === "connect") return { ok: false, reason: "upstream_connect_failure" };
        return { ok: true, response: { status, headers: {}, discard() {} } };
      },
      async close() {},
    };
    return { client: c, tries };
  }

  async function send(engine: ReturnType<typeof createEngine>, view: RouteView, n: number) {
    const statuses: number[] = [];
    for (let i = 0; i < n; i++) {
      const ex = await engine.handle(head, body, view);
      ex.finish(0, 0);
      statuses.push(ex.status);
    }
    return statuses;
  }

  test("an endpoint answering 500 gets exactly five tries, then none until its ejection ends", async () => {
    const c = clock();
    const up = client((a) => (a === "10.0.0.2:80" ? 500 : 200));
    const engine = createEngine({ client: up.client, edge: true, now: c.now, sleep: async () => {} });
    const snap = gateway({ outlierDetection: {} });
    const statuses = await send(engine, createGatewayView(snap, "edge"), 300);
    assert.equal(up.tries.get("10.0.0.2:80"), 5);
    assert.equal(statuses.filter((s) => s !== 200).length, 5);
    // A config swap builds new clusters; the ejection is kept.
    await send(engine, createGatewayView(gateway({ outlierDetection: {} }), "edge"), 30);
    assert.equal(up.tries.get("10.0.0.2:80"), 5);
    c.advance(30_000);
    await send(engine, createGatewayView(snap, "edge"), 3);
    assert.equal(up.tries.get("10.0.0.2:80"), 6, "back after the base ejection time");
  });

  test("connect failures eject too, so a dead endpoint stops costing retries", async () => {
    const up = client((a) => (a === "10.0.0.3:80" ? "connect" : 200));
    const engine = createEngine({ client: up.client, edge: true, now: clock().now, sleep: async () => {} });
    const statuses = await send(engine, createGatewayView(gateway({ outlierDetection: { consecutive5xxErrors: 2 } }), "edge"), 100);
    assert.equal(up.tries.get("10.0.0.3:80"), 2);
    assert.ok(statuses.every((s) => s === 200), "the default retry on connect failure went elsewhere");
  });

  test("without outlierDetection a failing endpoint keeps its share", async () => {
    const up = client((a) => (a === "10.0.0.2:80" ? 500 : 200));
    const engine = createEngine({ client: up.client, edge: true, now: clock().now, sleep: async () => {} });
    await send(engine, createGatewayView(gateway({}), "edge"), 300);
    assert.equal(up.tries.get("10.0.0.2:80"), 100);
  });

  test("when every endpoint is ejectable the panic threshold keeps traffic flowing to all of them", async () => {
    const up = client(() => 503);
    const engine = createEngine({ client: up.client, edge: true, now: clock().now, sleep: async () => {} });
    await send(engine, createGatewayView(gateway({ outlierDetection: { maxEjectionPercent: 100 } }), "edge"), 60);
    // The first two ejections leave 1 of 3 (33% < 50%): panic, so every endpoint is tried again.
    assert.deepEqual([...up.tries.keys()].sort(), ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]);
    assert.equal([...up.tries.values()].reduce((a, b) => a + b), 60);
  });
});

test("cluster health carries over a config swap, and only the part whose config changed starts fresh", () => {
  const snap = (traffic: Record<string, unknown>) => {
    const r = validateMesh({ services: { web: { endpoints: [{ address: "10.0.0.1:80" }, { address: "10.0.0.2:80" }], traffic } } });
    assert.ok(r.ok);
    return createCluster(compileMesh(r.value, 1).services.get("web")!);
  };
  const table = createClusterHealth(clock().now);
  const first = table.of(snap({ outlierDetection: {}, connectionPool: { maxRequests: 5 } }));
  assert.equal(first.circuit!.enter(), "entered");
  const same = table.of(snap({ outlierDetection: {}, connectionPool: { maxRequests: 5 } }));
  assert.equal(same.outlier, first.outlier);
  assert.equal(same.circuit, first.circuit);
  const retuned = table.of(snap({ outlierDetection: { consecutive5xxErrors: 3 }, connectionPool: { maxRequests: 5 } }));
  assert.notEqual(retuned.outlier, first.outlier);
  assert.equal(retuned.circuit, first.circuit, "requests in flight stay counted");
  assert.equal(retuned.circuit!.active, 1);
  const off = table.of(snap({}));
  assert.equal(off.outlier, undefined);
  assert.equal(off.circuit, undefined);
});
