import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { PerformanceObserver, constants } from "node:perf_hooks";
import { createIdleGc, minorCollector } from "./idle-gc.ts";

/** An idle collector with a hand-driven clock, heap and deferral queue. */
function harness(fill: number, options: { minIntervalMs?: number; capacity?: number } = {}) {
  const state = { fill, capacity: options.capacity ?? 16 * 1024 * 1024, now: 0, collected: 0, looks: 0 };
  const deferred: (() => void)[] = [];
  const load = createIdleGc({
    threshold: 0.6,
    minIntervalMs: options.minIntervalMs ?? 10,
    now: () => state.now,
    young: () => {
      state.looks++;
      return { used: state.fill * state.capacity, capacity: state.capacity };
    },
    collect: () => state.collected++,
    defer: (fn) => deferred.push(fn),
  });
  const runDeferred = () => {
    for (const fn of deferred.splice(0)) fn();
  };
  return { state, load, deferred, runDeferred };
}

/** The kinds of the GCs that ran during fn and the 50 ms after it. */
async function gcKindsDuring(fn: () => void): Promise<number[]> {
  const kinds: number[] = [];
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) kinds.push((entry as unknown as { detail: { kind: number } }).detail.kind);
  });
  observer.observe({ entryTypes: ["gc"] });
  fn();
  await new Promise((resolve) => setTimeout(resolve, 50));
  observer.disconnect();
  return kinds;
}

describe("young-generation collection between requests (Node)", () => {
  test("collects once the last request in flight has finished and the young generation is past the threshold", () => {
    const { state, load, deferred, runDeferred } = harness(0.7);
    load.started();
    load.started();
    load.done();
    assert.equal(deferred.length, 0, "one request is still in flight");
    load.done();
    assert.equal(deferred.length, 1, "the look waits for the I/O being handled");
    assert.equal(state.collected, 0);
    runDeferred();
    assert.equal(state.collected, 1);
  });

  test("does not collect when a request started before the deferred look ran", () => {
    const { state, load, runDeferred } = harness(0.9);
    load.started();
    load.done();
    load.started();
    runDeferred();
    assert.equal(state.collected, 0);
    assert.equal(state.looks, 0, "the heap is not even looked at while busy");
  });

  test("leaves a young generation below the threshold to V8", () => {
    const { state, load, runDeferred } = harness(0.5);
    load.started();
    load.done();
    runDeferred();
    assert.equal(state.looks, 1);
    assert.equal(state.collected, 0);
  });

  test("leaves a young generation smaller than minCapacityBytes to V8, however full, so that V8 can grow it", () => {
    const { state, load, runDeferred } = harness(0.95, { capacity: 1024 * 1024 });
    load.started();
    load.done();
    runDeferred();
    assert.equal(state.looks, 1);
    assert.equal(state.collected, 0);
  });

  test("looks at the heap at most once per minIntervalMs however many idle moments come", () => {
    const { state, load, runDeferred } = harness(0.1, { minIntervalMs: 10 });
    for (let i = 0; i < 50; i++) {
      state.now += 1;
      load.started();
      load.done();
      runDeferred();
    }
    assert.equal(state.looks, 5);
  });

  test("a request finished twice does not make the next request look finished", () => {
    const { state, load, runDeferred } = harness(0.9);
    load.started();
    load.done();
    load.done();
    runDeferred();
    assert.equal(state.collected, 1);
    state.now += 100;
    load.started();
    load.started();
    load.done();
    runDeferred();
    assert.equal(state.collected, 1, "one of the two is still in flight");
  });

  test("minorCollector runs a real scavenge and leaves no gc function behind", async () => {
    const collect = minorCollector();
    assert.ok(collect, "Node hands out a collector");
    const kinds = await gcKindsDuring(collect);
    assert.ok(kinds.includes(constants.NODE_PERFORMANCE_GC_MINOR), `gc kinds seen: ${kinds.join(",")}`);
    if (!process.execArgv.includes("--expose-gc")) assert.equal(typeof (globalThis as { gc?: unknown }).gc, "undefined");
  });

  test("with the defaults, reads the real heap and collects in a real idle moment", async () => {
    const load = createIdleGc({ threshold: 0, minCapacityBytes: 0 });
    const kinds = await gcKindsDuring(() => {
      load.started();
      load.done();
    });
    assert.ok(kinds.includes(constants.NODE_PERFORMANCE_GC_MINOR), `gc kinds seen: ${kinds.join(",")}`);
  });
});
