import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as v from "valibot";
import { ConnectionPoolSchema, compileMesh, validateMesh } from "../config/index.ts";
import { createCircuitBreaker, type PendingSlot } from "./circuit.ts";
import { createEngine } from "./engine.ts";
import type { RequestHead, UpstreamClient, UpstreamResult } from "./types.ts";
import { createGatewayView } from "./view.ts";

const breaker = (input: v.InferInput<typeof ConnectionPoolSchema>) => createCircuitBreaker(v.parse(ConnectionPoolSchema, input));

test("an empty connectionPool limits nothing", () => {
  const c = breaker({});
  for (let i = 0; i < 1000; i++) assert.equal(c.enter(), "entered");
  for (let i = 0; i < 1000; i++) assert.equal(c.tryRetry(), true);
  assert.equal(c.active, 1000);
  assert.equal(c.retries, 1000);
});

test("beyond maxRequests in flight a request overflows, and a freed slot admits the next", () => {
  const c = breaker({ maxRequests: 2 });
  assert.equal(c.enter(), "entered");
  assert.equal(c.enter(), "entered");
  assert.equal(c.enter(), "overflow");
  c.leave();
  assert.equal(c.enter(), "entered");
  assert.equal(c.active, 2);
});

test("up to maxPendingRequests wait for a slot, in order, and the rest overflow", async () => {
  const c = breaker({ maxRequests: 1, maxPendingRequests: 2 });
  assert.equal(c.enter(), "entered");
  const first = c.enter() as PendingSlot;
  const second = c.enter() as PendingSlot;
  assert.equal(typeof first, "object");
  assert.equal(c.enter(), "overflow");
  assert.equal(c.pending, 2);
  const order: string[] = [];
  void first.granted.then(() => order.push("first"));
  void second.granted.then(() => order.push("second"));
  c.leave();
  await first.granted;
  assert.deepEqual(order, ["first"]);
  assert.equal(c.active, 1, "the slot passed to the waiter");
  c.leave();
  await second.granted;
  assert.deepEqual(order, ["first", "second"]);
  c.leave();
  assert.equal(c.active, 0);
  assert.equal(c.pending, 0);
});

test("a waiter that gives up leaves the queue; one granted meanwhile gives its slot back", async () => {
  const c = breaker({ maxRequests: 1, maxPendingRequests: 2 });
  c.enter();
  const gaveUp = c.enter() as PendingSlot;
  const lateCancel = c.enter() as PendingSlot;
  gaveUp.cancel();
  assert.equal(c.pending, 1);
  c.leave();
  await lateCancel.granted;
  lateCancel.cancel();
  assert.equal(c.active, 0);
  assert.equal(c.enter(), "entered");
});

test("maxRetries caps retries in flight; a finished retry frees its slot; refusals are counted", () => {
  const c = breaker({ maxRetries: 2 });
  assert.equal(c.tryRetry(), true);
  assert.equal(c.tryRetry(), true);
  assert.equal(c.tryRetry(), false);
  assert.equal(c.retryOverflows, 1);
  c.retryDone();
  assert.equal(c.tryRetry(), true);
  assert.equal(c.retryOverflows, 1);
});

test("maxRetries 0 allows no retry at all", () => {
  assert.equal(breaker({ maxRetries: 0 }).tryRetry(), false);
});

test("the retry budget allows minRetryConcurrency retries however few requests are in flight", () => {
  const c = breaker({ retryBudget: {} });
  c.enter();
  assert.equal(c.tryRetry(), true);
  assert.equal(c.tryRetry(), true);
  assert.equal(c.tryRetry(), true);
  assert.equal(c.tryRetry(), false, "default minRetryConcurrency is 3");
});

test("the retry budget grows with requests in flight: 20% of 50 is 10 retries", () => {
  const c = breaker({ retryBudget: { budgetPercent: 20, minRetryConcurrency: 3 } });
  for (let i = 0; i < 50; i++) c.enter();
  let allowed = 0;
  while (c.tryRetry()) allowed++;
  assert.equal(allowed, 10);
  for (let i = 0; i < 25; i++) c.leave();
  c.retryDone();
  assert.equal(c.tryRetry(), false, "25 in flight allow 5, and 9 are still out");
});

test("a retry budget replaces maxRetries", () => {
  const c = breaker({ maxRetries: 100, retryBudget: { budgetPercent: 0, minRetryConcurrency: 1 } });
  assert.equal(c.tryRetry(), true);
  assert.equal(c.tryRetry(), false);
});

describe("the engine with a connectionPool", () => {
  function gateway(traffic: Record<string, unknown>, retries?: Record<string, unknown>) {
    const r = validateMesh({
      services: { api: { endpoints: [{ address: "10.0.0.1:80" }, { address: "10.0.0.2:80" }], traffic } },
      gateways: { edge: { listeners: [{ port: 0 }], routes: [{ forward: { to: [{ service: "api" }], retries } }] } },
    });
    assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
    return createGatewayView(compileMesh(r.value, 1), "edge");
  }
  const head: RequestHead = { method: "GET", scheme: "http", authority: "api", path: "/", headers: {}, clientIp: "192.0.2.1", localPort: 80 };
  const body = { length: 0, replayable: true };
  const retry503 = { attempts: 3, retryOn: ["retriable-status-codes"], retriableStatusCodes: [503] };

  /** An upstream client whose answers the test releases one by one; counts tries. */
  function heldClient(status: number) {
    const waiting: (() => void)[] = [];
    let tries = 0;
    const client: UpstreamClient = {
      forward() {
        tries++;
        return new Promise<UpstreamResult>((resolve) => waiting.push(() => resolve({ ok: true, response: { status, headers: {}, discard() {} } })));
      },
      async close() {},
    };
    return {
      client,
      get tries() {
        return tries;
      },
      /** Answers every try in flight; returns how many. */
      release() {
        const n = waiting.length;
        for (const answer of waiting.splice(0)) answer();
        return n;
      },
    };
  }
  const ticks = () => new Promise<void>((r) => setImmediate(r));

  test("beyond maxRequests in flight the engine answers overflow without a try, and a sent answer frees the slot", async () => {
    const up = heldClient(200);
    const engine = createEngine({ client: up.client, edge: true, sleep: async () => {} });
    const view = gateway({ connectionPool: { maxRequests: 2 } });
    const first = engine.handle(head, body, view);
    const second = engine.handle(head, body, view);
    await ticks();
    const third = await engine.handle(head, body, view);
    assert.equal(third.status, 503);
    assert.equal(third.headers["x-weft-reason"], "overflow");
    assert.equal(up.tries, 2);
    up.release();
    const answered = await first;
    await second;
    assert.equal(answered.kind, "upstream");
    const whileSending = await engine.handle(head, body, view);
    assert.equal(whileSending.headers["x-weft-reason"], "overflow", "an answer holds its slot until it is sent");
    answered.finish(0, 0);
    answered.finish(0, 0);
    (await second).finish(0, 0);
    const third2 = engine.handle(head, body, view);
    const fourth = engine.handle(head, body, view);
    await ticks();
    assert.equal(up.release(), 2, "both slots were given back once, whatever finish was called twice");
    assert.equal((await third2).status, 200);
    assert.equal((await fourth).status, 200);
    assert.equal((await engine.handle(head, body, view)).headers["x-weft-reason"], "overflow");
  });

  test("a request may wait for a slot up to maxPendingRequests, and one waiting past its deadline times out", async () => {
    const up = heldClient(200);
    let clock = 0;
    let wake: (() => void) | undefined;
    const engine = createEngine({
      client: up.client,
      edge: true,
      now: () => clock,
      sleep: (ms) => new Promise<void>((r) => (wake = () => ((clock += ms), r()))),
    });
    const view = gateway({ connectionPool: { maxRequests: 1, maxPendingRequests: 1 } });
    const first = engine.handle(head, body, view);
    await ticks();
    const waiting = engine.handle(head, body, view);
    await ticks();
    const overflow = await engine.handle(head, body, view);
    assert.equal(overflow.headers["x-weft-reason"], "overflow");
    wake!();
    const timedOut = await waiting;
    assert.equal(timedOut.headers["x-weft-reason"], "timeout");
    up.release();
    (await first).finish(0, 0);
    assert.equal(up.tries, 1);
  });

  test("with no budget left a 503 is answered as it is, after one try", async () => {
    const up = heldClient(503);
    const engine = createEngine({ client: up.client, edge: true, sleep: async () => {} });
    const view = gateway({ connectionPool: { retryBudget: { budgetPercent: 50, minRetryConcurrency: 0 } } }, retry503);
    const pending = engine.handle(head, body, view);
    await ticks();
    up.release();
    const ex = await pending;
    assert.equal(ex.kind, "upstream");
    assert.equal(ex.status, 503);
    assert.equal(up.tries, 1, "half of one request in flight rounds down to no retry");
  });

  test("minRetryConcurrency lets a lone request use every retry of its policy", async () => {
    let tries = 0;
    const client: UpstreamClient = {
      async forward() {
        tries++;
        return { ok: true, response: { status: 503, headers: {}, discard() {} } };
      },
      async close() {},
    };
    const engine = createEngine({ client, edge: true, sleep: async () => {} });
    const view = gateway({ connectionPool: { retryBudget: {} } }, retry503);
    for (let i = 0; i < 5; i++) (await engine.handle(head, body, view)).finish(0, 0);
    assert.equal(tries, 20);
  });

  test("under a storm of concurrent failing requests, retries in flight stay within the budget", async () => {
    const up = heldClient(503);
    const engine = createEngine({ client: up.client, edge: true, sleep: async () => {} });
    const view = gateway({ connectionPool: { retryBudget: { budgetPercent: 20, minRetryConcurrency: 1 } } }, retry503);
    const requests = Array.from({ length: 20 }, () => engine.handle(head, body, view));
    await ticks();
    assert.equal(up.release(), 20, "every first try goes out");
    await ticks();
    // 20 requests in flight allow 4 retries; the other 16 end with the upstream's 503.
    assert.equal(up.release(), 4);
    const done = await Promise.all(requests.map((r) => Promise.race([r, ticks().then(() => undefined)])));
    assert.equal(done.filter((d) => d !== undefined).length, 16);
    for (const d of done) d?.finish(0, 0);
    await ticks();
    // The 4 left, alone now, may retry under minRetryConcurrency (1) and 20% of 4 (0): one at a time.
    let more = 0;
    for (let i = 0; i < 20 && more < 100; i++) {
      more += up.release();
      await ticks();
    }
    for (const r of await Promise.all(requests)) r.finish(0, 0);
    assert.equal(up.tries, 20 + 4 + more);
    assert.ok(up.tries < 20 * 4, `${up.tries} tries, not the 80 an unbudgeted storm makes`);
  });

  test("without a connectionPool every retry of the policy is made", async () => {
    let tries = 0;
    const client: UpstreamClient = {
      async forward() {
        tries++;
        return { ok: true, response: { status: 503, headers: {}, discard() {} } };
      },
      async close() {},
    };
    const engine = createEngine({ client, edge: true, sleep: async () => {} });
    const all = await Promise.all(Array.from({ length: 20 }, () => engine.handle(head, body, gateway({}, retry503))));
    for (const ex of all) ex.finish(0, 0);
    assert.equal(tries, 80);
  });
});

test("connectionPool is off unless given, and refuses maxRequests 0 and percentages above 100", () => {
  const r = validateMesh({ services: { api: {} } });
  assert.ok(r.ok);
  assert.equal(r.value.services.api!.traffic.connectionPool, undefined);
  assert.equal(r.value.services.api!.traffic.outlierDetection, undefined);
  assert.equal(v.safeParse(ConnectionPoolSchema, { maxRequests: 0 }).success, false);
  assert.equal(v.safeParse(ConnectionPoolSchema, { retryBudget: { budgetPercent: 120 } }).success, false);
  assert.deepEqual(v.parse(ConnectionPoolSchema, { retryBudget: {} }), { maxPendingRequests: 0, retryBudget: { budgetPercent: 20, minRetryConcurrency: 3 } });
});
