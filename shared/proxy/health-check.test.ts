import { test } from "node:test";
import assert from "node:assert/strict";
import { compileMesh, TLS_MODE_LABEL, validateMesh, type Endpoint, type ServiceSnapshot } from "../config/index.ts";
import { createHealthChecker, pickable, type CheckTimers, type HealthChange } from "./health-check.ts";
import { createOutlierDetector } from "./outlier.ts";
import type { UpstreamClient, UpstreamFailure, UpstreamRequest, UpstreamResult } from "./types.ts";

const A = "10.0.0.1:80";
const B = "10.0.0.2:80";
const C = "10.0.0.3:80";

function services(traffic: Record<string, unknown>, addresses: readonly string[] = [A, B], extra: Record<string, unknown> = {}): ServiceSnapshot[] {
  const r = validateMesh({ services: { web: { endpoints: addresses.map((address) => ({ address })), traffic }, ...extra } });
  assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
  return [...compileMesh(r.value, 1).services.values()];
}

/** Answers per address: a status, a local failure, or a held promise. */
function upstream() {
  const answers = new Map<string, number | UpstreamFailure | "hold">();
  const sent: UpstreamRequest[] = [];
  const client: UpstreamClient = {
    forward(req) {
      sent.push(req);
      const answer = answers.get(req.endpoint.address) ?? 200;
      if (answer === "hold") return new Promise<UpstreamResult>(() => {});
      if (typeof answer === "string") return Promise.resolve({ ok: false, reason: answer });
      return Promise.resolve({ ok: true, response: { status: answer, headers: {}, discard() {} } });
    },
    async close() {},
  };
  return { client, answers, sent };
}

/** Timers that only run when the test says so. */
function manualTimers() {
  const pending = new Map<number, { run: () => void; ms: number }>();
  let next = 0;
  const timers: CheckTimers = {
    set(run, ms) {
      pending.set(++next, { run, ms });
      return next;
    },
    clear(handle) {
      pending.delete(handle as number);
    },
  };
  return { timers, pending };
}

function setup(traffic: Record<string, unknown>, addresses?: readonly string[]) {
  const up = upstream();
  const { timers, pending } = manualTimers();
  const changes: HealthChange[] = [];
  const checker = createHealthChecker({ client: up.client, timers, random: () => 0, onChange: (c) => changes.push(c) });
  checker.update(services(traffic, addresses));
  const rounds = async (n: number) => {
    for (let i = 0; i < n; i++) await checker.checkNow();
  };
  return { ...up, checker, changes, pending, rounds };
}

const HC = { healthCheck: { unhealthyThreshold: 3, healthyThreshold: 2 } };

test("an endpoint goes unhealthy after unhealthyThreshold failed checks in a row, and back after healthyThreshold passed ones", async () => {
  const { checker, answers, changes, rounds } = setup(HC);
  answers.set(B, 503);
  await rounds(2);
  assert.equal(checker.of("web")!.isUnhealthy(B), false);
  await rounds(1);
  assert.equal(checker.of("web")!.isUnhealthy(B), true);
  assert.equal(checker.of("web")!.isUnhealthy(A), false);
  assert.deepEqual(changes, [{ service: "web", address: B, healthy: false, last: { status: 503 } }]);
  await rounds(3);
  assert.equal(changes.length, 1, "a state change is told once");
  answers.set(B, 200);
  await rounds(1);
  assert.equal(checker.of("web")!.isUnhealthy(B), true);
  await rounds(1);
  assert.equal(checker.of("web")!.isUnhealthy(B), false);
  assert.deepEqual(changes[1], { service: "web", address: B, healthy: true, last: undefined });
  assert.deepEqual(checker.report(), [{ service: "web", unhealthy: [] }]);
});

test("a pass in between resets the failure count", async () => {
  const { checker, answers, rounds } = setup(HC);
  answers.set(B, 500);
  await rounds(2);
  answers.set(B, 200);
  await rounds(1);
  answers.set(B, 500);
  await rounds(2);
  assert.equal(checker.of("web")!.isUnhealthy(B), false);
  await rounds(1);
  assert.equal(checker.of("web")!.isUnhealthy(B), true);
});

test("timeouts and connect failures fail a check; the check is sent with the configured path, host and timeout", async () => {
  const { checker, answers, sent, changes, rounds } = setup({ healthCheck: { unhealthyThreshold: 2, path: "/ready", host: "web.internal", timeoutMs: 250 } });
  answers.set(A, "timeout");
  answers.set(B, "upstream_connect_failure");
  await rounds(2);
  assert.equal(checker.of("web")!.unhealthyCount, 2);
  assert.deepEqual(
    changes.map((c) => [c.address, c.last]),
    [
      [A, { failure: "timeout" }],
      [B, { failure: "upstream_connect_failure" }],
    ],
  );
  const req = sent[0]!;
  assert.equal(req.method, "GET");
  assert.equal(req.path, "/ready");
  assert.equal(req.headers.host, "web.internal");
  assert.equal(req.timeoutMs, 250);
  assert.equal(req.connectTimeoutMs, 250);
  assert.equal(req.body.length, 0);
});

test("expectedStatuses decide what passes; by default 200 to 399", async () => {
  const byDefault = setup({ healthCheck: { unhealthyThreshold: 1 } });
  byDefault.answers.set(A, 302);
  byDefault.answers.set(B, 404);
  await byDefault.rounds(1);
  assert.deepEqual(byDefault.checker.report(), [{ service: "web", unhealthy: [B] }]);

  const custom = setup({ healthCheck: { unhealthyThreshold: 1, expectedStatuses: [[200, 200], [404, 404]] } });
  custom.answers.set(A, 302);
  custom.answers.set(B, 404);
  await custom.rounds(1);
  assert.deepEqual(custom.checker.report(), [{ service: "web", unhealthy: [A] }]);
});

test("a check still out is not sent again; the next round waits for it", async () => {
  const { answers, sent, checker } = setup(HC);
  answers.set(B, "hold");
  void checker.checkNow();
  await new Promise((r) => setImmediate(r));
  void checker.checkNow();
  await Promise.resolve();
  assert.equal(sent.filter((r) => r.endpoint.address === B).length, 1);
  assert.equal(sent.filter((r) => r.endpoint.address === A).length, 2);
});

test("a changed healthCheck starts over, a removed endpoint is forgotten, a service without healthCheck is not checked", async () => {
  const { checker, answers, rounds, pending } = setup({ healthCheck: { unhealthyThreshold: 1 } }, [A, B, C]);
  assert.equal(pending.size, 1, "one timer per checked service");
  answers.set(B, 503);
  answers.set(C, 503);
  await rounds(1);
  assert.equal(checker.of("web")!.unhealthyCount, 2);

  // C leaves: it is forgotten; B keeps its state across the same healthCheck.
  checker.update(services({ healthCheck: { unhealthyThreshold: 1 } }, [A, B]));
  assert.equal(checker.of("web")!.unhealthyCount, 1);
  assert.deepEqual(checker.report(), [{ service: "web", unhealthy: [B] }]);
  // C comes back: it starts healthy.
  checker.update(services({ healthCheck: { unhealthyThreshold: 1 } }, [A, B, C]));
  assert.equal(checker.of("web")!.isUnhealthy(C), false);

  // Another healthCheck: every endpoint starts healthy again, under a new timer.
  checker.update(services({ healthCheck: { unhealthyThreshold: 2 } }, [A, B, C]));
  assert.equal(checker.of("web")!.unhealthyCount, 0);
  assert.equal(pending.size, 1);

  // healthCheck removed, and a service without one: nothing is checked, no timer is left.
  checker.update(services({}, [A, B], { api: { endpoints: [{ address: C }] } }));
  assert.equal(checker.of("web"), undefined);
  assert.equal(checker.of("api"), undefined);
  assert.equal(pending.size, 0);
});

test("the timer runs a round and schedules the next, jittered up to 10% above intervalMs; stop clears it", async () => {
  const up = upstream();
  const { timers, pending } = manualTimers();
  const checker = createHealthChecker({ client: up.client, timers, random: () => 0.5 });
  checker.update(services({ healthCheck: { intervalMs: 1000 } }));
  const [first] = [...pending.values()];
  assert.equal(first!.ms, 1050);
  pending.clear();
  first!.run();
  assert.equal(up.sent.length, 2);
  await new Promise((r) => setImmediate(r));
  assert.equal(pending.size, 1, "the next round is scheduled once this one is over");
  checker.stop();
  assert.equal(pending.size, 0);
});

test("a check of a mesh endpoint without a certificate fails mtls_unavailable and sends nothing", async () => {
  const up = upstream();
  const { timers } = manualTimers();
  const changes: HealthChange[] = [];
  const checker = createHealthChecker({ client: up.client, timers, onChange: (c) => changes.push(c) });
  const [web] = services({ healthCheck: { unhealthyThreshold: 1 } }, [A]);
  checker.update([{ ...web!, endpoints: [{ ...web!.endpoints[0]!, labels: { [TLS_MODE_LABEL]: "mesh" } }] }]);
  await checker.checkNow();
  assert.equal(up.sent.length, 0);
  assert.deepEqual(changes[0]?.last, { failure: "mtls_unavailable" });
});

const ep = (address: string): Endpoint => ({ address, weight: 1, labels: {} }) as Endpoint;

test("pickable leaves out actively unhealthy and outlier-ejected endpoints, and panics below minHealthPercent of both together", async () => {
  const pool = [ep(A), ep(B), ep(C), ep("10.0.0.4:80")];
  const { checker, answers, rounds } = setup({ healthCheck: { unhealthyThreshold: 1 } }, pool.map((e) => e.address));
  const outlier = createOutlierDetector(
    { consecutive5xxErrors: 1, consecutiveGatewayErrors: 0, intervalMs: 10000, baseEjectionTimeMs: 30000, maxEjectionTimeMs: 300000, maxEjectionPercent: 100, minHealthPercent: 50 },
    () => 0,
  );
  const active = checker.of("web")!;
  assert.equal(pickable(pool, outlier, active, 50), pool, "nothing out: the pool itself");
  answers.set(A, 503);
  await rounds(1);
  const withoutA = pickable(pool, outlier, active, 50);
  assert.deepEqual(withoutA.map((e) => e.address), [B, C, "10.0.0.4:80"]);
  assert.equal(pickable(pool, outlier, active, 50), withoutA, "cached while nothing changes");
  outlier.report(pool[1]!, { status: 500 }, pool);
  assert.deepEqual(pickable(pool, outlier, active, 50).map((e) => e.address), [C, "10.0.0.4:80"], "50% left: no panic");
  assert.equal(pickable(pool, outlier, active, 51), pool, "below the threshold: the whole pool");
  answers.set(C, 503);
  await rounds(1);
  assert.equal(pickable(pool, outlier, active, 50), pool, "one of four left: panic");
  assert.deepEqual(pickable(pool, undefined, active, 0).map((e) => e.address), [B, "10.0.0.4:80"], "without outlier detection, 0 never panics");
  answers.clear();
  await rounds(2);
  assert.deepEqual(pickable(pool, outlier, active, 50).map((e) => e.address), [A, C, "10.0.0.4:80"], "recovered endpoints return; B is still ejected");
});
