import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as v from "valibot";
import { FaultSchema, compileMesh, validateMesh } from "../config/index.ts";
import { createEngine } from "./engine.ts";
import { chance, createFault } from "./fault.ts";
import type { RequestHead, UpstreamClient } from "./types.ts";
import { createGatewayView } from "./view.ts";

const head = (headers: RequestHead["headers"] = {}): RequestHead => ({
  method: "GET",
  scheme: "http",
  authority: "shop",
  path: "/",
  headers,
  clientIp: "192.0.2.1",
  localPort: 80,
});
const fault = (input: v.InferInput<typeof FaultSchema>) => createFault(v.parse(FaultSchema, input));
/** A random source that returns the given values in turn. */
const draws = (...values: number[]) => {
  let i = 0;
  return () => values[i++ % values.length]!;
};

test("a fault needs a delay or an abort, and percentages stay within 0..100", () => {
  assert.equal(v.safeParse(FaultSchema, {}).success, false);
  assert.equal(v.safeParse(FaultSchema, { abort: { httpStatus: 503, percentage: 101 } }).success, false);
  assert.equal(v.safeParse(FaultSchema, { abort: { httpStatus: 42 } }).success, false);
  assert.equal(v.parse(FaultSchema, { abort: { httpStatus: 503 } }).abort?.percentage, 100);
});

test("chance draws only when the outcome is open, and is true below the percentage", () => {
  let drawn = 0;
  const counted = () => (drawn++, 0.5);
  assert.equal(chance(100, counted), true);
  assert.equal(chance(0, counted), false);
  assert.equal(drawn, 0);
  assert.equal(chance(10, () => 0.0999), true);
  assert.equal(chance(10, () => 0.1), false);
  assert.equal(chance(0.5, () => 0.004), true);
});

test("an abort at 10% hits when the draw falls below a tenth", () => {
  const f = fault({ abort: { httpStatus: 503, percentage: 10 } });
  assert.deepEqual(f(head(), () => 0.05), { delayMs: 0, abortStatus: 503 });
  assert.equal(f(head(), () => 0.5), undefined);
});

test("delay and abort are drawn separately, delay first", () => {
  const f = fault({ delay: { fixedDelayMs: 200, percentage: 50 }, abort: { httpStatus: 500, percentage: 50 } });
  assert.deepEqual(f(head(), draws(0.1, 0.9)), { delayMs: 200, abortStatus: undefined });
  assert.deepEqual(f(head(), draws(0.9, 0.1)), { delayMs: 0, abortStatus: 500 });
  assert.deepEqual(f(head(), draws(0.1, 0.1)), { delayMs: 200, abortStatus: 500 });
  assert.equal(f(head(), draws(0.9, 0.9)), undefined);
});

test("only requests whose headers match get faults", () => {
  const f = fault({ abort: { httpStatus: 418 }, headers: { "X-Chaos": { exact: "on" }, "x-user": { prefix: "test-" } } });
  assert.equal(f(head({ "x-chaos": "on" }), Math.random), undefined);
  assert.deepEqual(f(head({ "x-chaos": "on", "x-user": "test-7" }), Math.random), { delayMs: 0, abortStatus: 418 });
  const absent = fault({ abort: { httpStatus: 503 }, headers: { "x-canary": { absent: true }, "x-id": { regex: "[0-9]+" } } });
  assert.deepEqual(absent(head({ "x-id": "42" }), Math.random), { delayMs: 0, abortStatus: 503 });
  assert.equal(absent(head({ "x-id": "42", "x-canary": "1" }), Math.random), undefined);
  assert.equal(absent(head({ "x-id": "4a" }), Math.random), undefined);
});

describe("the engine with a route fault", () => {
  function view(fault: unknown, timeoutMs = 1000) {
    const r = validateMesh({
      services: { shop: { endpoints: [{ address: "10.0.0.1:80" }] } },
      gateways: { edge: { listeners: [{ port: 0 }], routes: [{ forward: { to: [{ service: "shop" }], fault, timeoutMs } }] } },
    });
    assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
    return createGatewayView(compileMesh(r.value, 1), "edge");
  }
  function counting() {
    const seen: { timeoutMs: number }[] = [];
    const client: UpstreamClient = {
      async forward(req) {
        seen.push({ timeoutMs: req.timeoutMs });
        return { ok: true, response: { status: 200, headers: {}, discard() {} } };
      },
      async close() {},
    };
    return { client, seen };
  }

  test("an aborted request answers the configured status with x-weft-reason fault_abort and never reaches the upstream", async () => {
    const up = counting();
    const done: { status: number; reason?: string }[] = [];
    const engine = createEngine({ client: up.client, edge: true, random: () => 0.01, onRequestDone: (r) => done.push(r) });
    const ex = await engine.handle(head(), { length: 0, replayable: true }, view({ abort: { httpStatus: 429, percentage: 5 } }));
    ex.finish(0, 0);
    assert.equal(ex.kind, "local");
    assert.equal(ex.status, 429);
    assert.equal(ex.headers["x-weft-reason"], "fault_abort");
    assert.equal(up.seen.length, 0);
    assert.equal(done[0]?.status, 429);
    assert.equal(done[0]?.reason, "fault_abort");
  });

  test("a request that escapes the abort's percentage is forwarded", async () => {
    const up = counting();
    const engine = createEngine({ client: up.client, edge: true, random: () => 0.99 });
    const ex = await engine.handle(head(), { length: 0, replayable: true }, view({ abort: { httpStatus: 503, percentage: 10 } }));
    assert.equal(ex.status, 200);
    assert.equal(up.seen.length, 1);
  });

  test("a delayed request sleeps the fixed delay through the engine's sleep, then gets its full route timeout", async () => {
    const up = counting();
    let clock = 5000;
    const slept: number[] = [];
    const engine = createEngine({
      client: up.client,
      edge: true,
      now: () => clock,
      sleep: async (ms) => {
        slept.push(ms);
        clock += ms;
      },
    });
    const ex = await engine.handle(head(), { length: 0, replayable: true }, view({ delay: { fixedDelayMs: 1500 } }, 1000));
    assert.equal(ex.status, 200);
    assert.deepEqual(slept, [1500]);
    assert.deepEqual(up.seen, [{ timeoutMs: 1000 }]);
  });

  test("over 10,000 requests a 10% abort hits 10% of them, drawn from the engine's random", async () => {
    const up = counting();
    // A seeded generator (mulberry32) keeps the run reproducible.
    let seed = 42;
    const random = () => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    const engine = createEngine({ client: up.client, edge: true, random });
    const v10 = view({ abort: { httpStatus: 503, percentage: 10 } });
    let aborted = 0;
    for (let i = 0; i < 10_000; i++) {
      const ex = await engine.handle(head(), { length: 0, replayable: true }, v10);
      if (ex.headers["x-weft-reason"] === "fault_abort") aborted++;
    }
    assert.equal(aborted + up.seen.length, 10_000);
    assert.ok(Math.abs(aborted / 100 - 10) <= 1, `${aborted / 100}%`);
  });
});
