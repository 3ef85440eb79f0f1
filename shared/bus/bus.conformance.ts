// One behaviour suite for every Bus implementation (memory and NATS), so that unit tests written against
// the memory bus hold on the real one. Each test uses its own subjects and bucket, so a shared server is fine.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { BusError } from "./bus.ts";
import type { Bus, BusMessage, BusStatus, Kv, KvEntry } from "./bus.ts";

export interface ConformanceBuses {
  readonly bus: Bus;
  /** A second client on the same server/network. */
  readonly bus2?: Bus;
  cleanup(): Promise<void>;
}

const WAIT_MS = 5000;
const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);
let counter = 0;
const unique = (prefix: string) => `${prefix}${Date.now().toString(36)}${(counter++).toString(36)}${Math.random().toString(36).slice(2, 6)}`;

/** Collects callback arguments and waits (bounded) until enough have arrived. */
function collector<T>() {
  const items: T[] = [];
  let waiters: Array<() => void> = [];
  return {
    items,
    push(item: T) {
      items.push(item);
      const ready = waiters;
      waiters = [];
      ready.forEach((w) => w());
    },
    async until(done: (items: T[]) => boolean, what: string): Promise<T[]> {
      const deadline = Date.now() + WAIT_MS;
      while (!done(items)) {
        const left = deadline - Date.now();
        if (left <= 0) assert.fail(`timed out waiting for ${what}; got ${JSON.stringify(items, (_k, v) => (v instanceof Uint8Array ? dec(v) : v))}`);
        let timer: ReturnType<typeof setTimeout> | undefined;
        await new Promise<void>((r) => {
          waiters.push(r);
          timer = setTimeout(r, left);
        });
        clearTimeout(timer);
      }
      return items;
    },
  };
}

type WatchEvent = { key: string; op: "PUT" | "DEL"; value: string; revision: number } | "caught-up";

function watchInto(kv: Kv, filter: string, options: { updatesOnly?: boolean } = {}) {
  const events = collector<WatchEvent>();
  const watch = kv.watch(filter, (e: KvEntry) => events.push({ key: e.key, op: e.operation, value: dec(e.value), revision: e.revision }), {
    ...options,
    onCaughtUp: () => events.push("caught-up"),
  });
  const entries = () => events.items.filter((e): e is Exclude<WatchEvent, "caught-up"> => e !== "caught-up");
  return {
    events,
    watch,
    entries,
    caughtUp: () => events.until((items) => items.includes("caught-up"), `${filter} caught up`),
    sawKey: (key: string, op: "PUT" | "DEL" = "PUT") => events.until(() => entries().some((e) => e.key === key && e.op === op), `${op} ${key}`),
  };
}

/**
 * runBusConformance registers the Bus behaviour suite for one implementation; makeBus is called per test.
 * @example
 * runBusConformance("memory", async () => {
 *   const network = createMemoryNetwork();
 *   const bus = createMemoryBus({ network }), bus2 = createMemoryBus({ network });
 *   return { bus, bus2, cleanup: async () => { await bus.close(); await bus2.close(); } };
 * });
 */
export function runBusConformance(name: string, makeBus: () => Promise<ConformanceBuses>): void {
  const withBuses = (fn: (b: ConformanceBuses & { bus2: Bus }) => Promise<void>) => async (t: { skip(message?: string): void }) => {
    const buses = await makeBus();
    try {
      if (!buses.bus2) {
        t.skip("no second client");
        return;
      }
      await fn({ ...buses, bus2: buses.bus2 });
    } finally {
      await buses.cleanup();
    }
  };

  describe(`bus conformance: ${name}`, () => {
    describe("publish/subscribe", () => {
      test("a subscriber receives what is published on its subject, as bytes", withBuses(async ({ bus }) => {
        const s = unique("t");
        const got = collector<BusMessage>();
        bus.subscribe(`${s}.hello`, (m) => got.push(m));
        const payload = new Uint8Array([0, 1, 2, 255]);
        bus.publish(`${s}.hello`, payload);
        const [m] = await got.until((i) => i.length === 1, "one message");
        assert.equal(m!.subject, `${s}.hello`);
        assert.deepEqual([...m!.data], [0, 1, 2, 255]);
        assert.equal(m!.respond, undefined);
      }));

      test("`*` matches exactly one token and `>` one or more, in publish order", withBuses(async ({ bus }) => {
        const s = unique("t");
        const star = collector<string>();
        const rest = collector<string>();
        const exact = collector<string>();
        bus.subscribe(`${s}.*`, (m) => star.push(m.subject));
        bus.subscribe(`${s}.>`, (m) => rest.push(m.subject));
        bus.subscribe(`${s}.a`, (m) => exact.push(m.subject));
        for (const subject of [`${s}`, `${s}.a`, `${s}.a.b`, `${s}.b.c.d`, `${s}.end`]) bus.publish(subject, enc("x"));
        await star.until((i) => i.includes(`${s}.end`), "end on *");
        await rest.until((i) => i.includes(`${s}.end`), "end on >");
        await exact.until((i) => i.length === 1, "exact");
        assert.deepEqual(star.items, [`${s}.a`, `${s}.end`]);
        assert.deepEqual(rest.items, [`${s}.a`, `${s}.a.b`, `${s}.b.c.d`, `${s}.end`]);
        assert.deepEqual(exact.items, [`${s}.a`]);
      }));

      test("unsubscribe stops delivery to that subscription only", withBuses(async ({ bus }) => {
        const s = unique("t");
        const gone = collector<string>();
        const kept = collector<string>();
        const sub = bus.subscribe(`${s}.x`, (m) => gone.push(dec(m.data)));
        bus.subscribe(`${s}.x`, (m) => kept.push(dec(m.data)));
        sub.unsubscribe();
        bus.publish(`${s}.x`, enc("after"));
        await kept.until((i) => i.length === 1, "kept subscriber");
        assert.deepEqual(gone.items, []);
      }));

      test("two clients see each other's messages", withBuses(async ({ bus, bus2 }) => {
        const s = unique("t");
        const got = collector<string>();
        bus2.subscribe(`${s}.>`, (m) => got.push(dec(m.data)));
        await bus2.flush();
        bus.publish(`${s}.one`, enc("from bus 1"));
        await got.until((i) => i.length === 1, "cross-client message");
        assert.deepEqual(got.items, ["from bus 1"]);
      }));

      test("publishing to a wildcard or malformed subject is a TypeError", withBuses(async ({ bus }) => {
        for (const subject of ["a.*", "a.>", "", "a..b", ".a", "a.", "a b"]) {
          assert.throws(() => bus.publish(subject, enc("x")), TypeError, subject);
        }
        assert.throws(() => bus.subscribe("a.>.b", () => {}), TypeError);
      }));
    });

    describe("request/reply", () => {
      test("a request gets the responder's reply across clients", withBuses(async ({ bus, bus2 }) => {
        const s = unique("t");
        bus2.subscribe(`${s}.echo`, (m) => m.respond?.(enc(`echo:${dec(m.data)}`)));
        await bus2.flush();
        const r = await bus.request(`${s}.echo`, enc("ping"), { timeoutMs: WAIT_MS });
        assert.equal(r.ok, true);
        assert.equal(r.ok && dec(r.data), "echo:ping");
      }));

      test("a request with no subscriber fails with no_responders", withBuses(async ({ bus }) => {
        const r = await bus.request(`${unique("t")}.nobody`, enc("?"), { timeoutMs: WAIT_MS });
        assert.deepEqual(r, { ok: false, reason: "no_responders" });
      }));

      test("a request that nobody answers fails with timeout", withBuses(async ({ bus }) => {
        const s = unique("t");
        const seen = collector<BusMessage>();
        bus.subscribe(`${s}.mute`, (m) => seen.push(m));
        const r = await bus.request(`${s}.mute`, enc("?"), { timeoutMs: 150 });
        assert.deepEqual(r, { ok: false, reason: "timeout" });
        assert.equal(typeof seen.items[0]?.respond, "function");
      }));
    });

    describe("KV", () => {
      test("revisions are bucket-wide sequence numbers and get returns the value at its revision", withBuses(async ({ bus }) => {
        const kv = await bus.kv(unique("b"));
        const r1 = await kv.put("svc.a", enc("a1"));
        const r2 = await kv.put("svc.b", enc("b1"));
        const r3 = await kv.put("svc.a", enc("a2"));
        assert.ok(r1.ok && r2.ok && r3.ok);
        assert.equal(r2.revision, r1.revision + 1);
        assert.equal(r3.revision, r2.revision + 1);
        const a = await kv.get("svc.a");
        assert.equal(a && dec(a.value), "a2");
        assert.equal(a?.revision, r3.revision);
        assert.equal(a?.operation, "PUT");
        assert.equal(await kv.get("svc.none"), undefined);
      }));

      test("values are bytes, kept exactly", withBuses(async ({ bus }) => {
        const kv = await bus.kv(unique("b"));
        const bytes = Uint8Array.from({ length: 256 }, (_, i) => i);
        await kv.put("bin", bytes);
        assert.deepEqual([...(await kv.get("bin"))!.value], [...bytes]);
      }));

      test("create writes only a key that does not exist, and again after a delete", withBuses(async ({ bus }) => {
        const kv = await bus.kv(unique("b"));
        const first = await kv.create("svc.a", enc("1"));
        assert.equal(first.ok, true);
        assert.deepEqual(await kv.create("svc.a", enc("2")), { ok: false, reason: "conflict" });
        await kv.delete("svc.a");
        const again = await kv.create("svc.a", enc("3"));
        assert.equal(again.ok, true);
        assert.equal(dec((await kv.get("svc.a"))!.value), "3");
      }));

      test("update succeeds at the key's last revision and is a conflict at a stale one", withBuses(async ({ bus }) => {
        const kv = await bus.kv(unique("b"));
        const w1 = await kv.put("svc.a", enc("1"));
        assert.ok(w1.ok);
        await kv.put("svc.other", enc("x"));
        const w2 = await kv.update("svc.a", enc("2"), w1.revision);
        assert.ok(w2.ok);
        assert.deepEqual(await kv.update("svc.a", enc("3"), w1.revision), { ok: false, reason: "conflict" });
        assert.equal(dec((await kv.get("svc.a"))!.value), "2");
        const fresh = await kv.update("svc.new", enc("n"), 0);
        assert.equal(fresh.ok, true);
        assert.deepEqual(await kv.update("svc.new", enc("n2"), 0), { ok: false, reason: "conflict" });
      }));

      test("delete hides the key from get and keys", withBuses(async ({ bus }) => {
        const kv = await bus.kv(unique("b"));
        await kv.put("svc.a", enc("1"));
        await kv.delete("svc.a");
        await kv.delete("svc.never");
        assert.equal(await kv.get("svc.a"), undefined);
        assert.deepEqual(await kv.keys(), []);
      }));

      test("keys lists the live keys matching a filter, sorted", withBuses(async ({ bus }) => {
        const kv = await bus.kv(unique("b"));
        assert.deepEqual(await kv.keys(), []);
        for (const key of ["svc.b", "svc.a", "gw.edge", "svc.c", "eps.a", "mesh"]) await kv.put(key, enc(key));
        await kv.delete("svc.c");
        assert.deepEqual(await kv.keys("svc.*"), ["svc.a", "svc.b"]);
        assert.deepEqual(await kv.keys("gw.>"), ["gw.edge"]);
        assert.deepEqual(await kv.keys("mesh"), ["mesh"]);
        assert.deepEqual(await kv.keys(), ["eps.a", "gw.edge", "mesh", "svc.a", "svc.b"]);
      }));

      test("malformed keys, filters and bucket names are TypeErrors", withBuses(async ({ bus }) => {
        const kv = await bus.kv(unique("b"));
        for (const key of ["", "a b", ".a", "a.", "svc.*", "svc.>", "a:b"]) {
          await assert.rejects(kv.put(key, enc("x")), TypeError, key);
          await assert.rejects(kv.get(key), TypeError, key);
        }
        await assert.rejects(kv.keys("a.>.b"), TypeError);
        assert.throws(() => kv.watch("a..b", () => {}), TypeError);
        await assert.rejects(bus.kv("bad.name"), TypeError);
      }));

      test("two clients share a bucket: writes, reads and CAS across clients", withBuses(async ({ bus, bus2 }) => {
        const bucket = unique("b");
        const kv1 = await bus.kv(bucket);
        const kv2 = await bus2.kv(bucket);
        const w = await kv1.put("svc.a", enc("from 1"));
        assert.ok(w.ok);
        assert.equal(dec((await kv2.get("svc.a"))!.value), "from 1");
        const u = await kv2.update("svc.a", enc("from 2"), w.revision);
        assert.equal(u.ok, true);
        assert.deepEqual(await kv1.update("svc.a", enc("stale"), w.revision), { ok: false, reason: "conflict" });
        assert.equal(dec((await kv1.get("svc.a"))!.value), "from 2");
      }));

      test("opening the same bucket from two clients at once works", withBuses(async ({ bus, bus2 }) => {
        const bucket = unique("b");
        const [kv1, kv2] = await Promise.all([bus.kv(bucket, { history: 5 }), bus2.kv(bucket, { history: 5 })]);
        await kv1.put("k", enc("v"));
        assert.equal(dec((await kv2.get("k"))!.value), "v");
      }));
    });

    describe("KV watch", () => {
      test("delivers current values, then onCaughtUp once, then updates and deletes", withBuses(async ({ bus }) => {
        const kv = await bus.kv(unique("b"));
        const a = await kv.put("svc.a", enc("a1"));
        const b = await kv.put("svc.b", enc("b1"));
        await kv.put("svc.gone", enc("x"));
        await kv.delete("svc.gone");
        assert.ok(a.ok && b.ok);
        const w = watchInto(kv, "svc.>");
        await w.caughtUp();
        assert.deepEqual(w.events.items, [
          { key: "svc.a", op: "PUT", value: "a1", revision: a.revision },
          { key: "svc.b", op: "PUT", value: "b1", revision: b.revision },
          "caught-up",
        ]);
        const a2 = await kv.put("svc.a", enc("a2"));
        await kv.delete("svc.b");
        await w.sawKey("svc.b", "DEL");
        assert.ok(a2.ok);
        const after = w.events.items.slice(3);
        assert.deepEqual(after[0], { key: "svc.a", op: "PUT", value: "a2", revision: a2.revision });
        assert.deepEqual(after[1], { key: "svc.b", op: "DEL", value: "", revision: a2.revision + 1 });
        assert.equal(w.events.items.filter((e) => e === "caught-up").length, 1);
        w.watch.stop();
      }));

      test("onCaughtUp is called for an empty bucket and for a filter with no keys", withBuses(async ({ bus }) => {
        const kv = await bus.kv(unique("b"));
        const empty = watchInto(kv, ">");
        await empty.caughtUp();
        await kv.put("gw.edge", enc("x"));
        const none = watchInto(kv, "svc.*");
        await none.caughtUp();
        assert.deepEqual(none.entries(), []);
        await empty.sawKey("gw.edge");
        empty.watch.stop();
        none.watch.stop();
      }));

      test("a watch on svc.a does not see svc.b", withBuses(async ({ bus }) => {
        const kv = await bus.kv(unique("b"));
        await kv.put("svc.b", enc("before"));
        const w = watchInto(kv, "svc.a");
        await w.caughtUp();
        await kv.put("svc.b", enc("b"));
        await kv.put("svc.ab", enc("ab"));
        await kv.put("svc.a.sub", enc("deeper"));
        await kv.put("svc.a", enc("a"));
        await w.sawKey("svc.a");
        assert.deepEqual(w.entries().map((e) => e.key), ["svc.a"]);
        w.watch.stop();
      }));

      test("updatesOnly skips current values but reports caught up", withBuses(async ({ bus }) => {
        const kv = await bus.kv(unique("b"));
        await kv.put("svc.old", enc("old"));
        const w = watchInto(kv, "svc.*", { updatesOnly: true });
        await w.caughtUp();
        await kv.put("svc.new", enc("new"));
        await w.sawKey("svc.new");
        assert.deepEqual(w.entries().map((e) => e.key), ["svc.new"]);
        w.watch.stop();
      }));

      test("stop ends delivery to that watch", withBuses(async ({ bus }) => {
        const kv = await bus.kv(unique("b"));
        const stopped = watchInto(kv, "svc.*");
        const kept = watchInto(kv, "svc.*");
        await stopped.caughtUp();
        await kept.caughtUp();
        stopped.watch.stop();
        await kv.put("svc.a", enc("a"));
        await kept.sawKey("svc.a");
        assert.deepEqual(stopped.entries(), []);
        kept.watch.stop();
      }));

      test("a watch sees the other client's writes", withBuses(async ({ bus, bus2 }) => {
        const bucket = unique("b");
        const kv1 = await bus.kv(bucket);
        const kv2 = await bus2.kv(bucket);
        await kv1.put("svc.a", enc("first"));
        const w = watchInto(kv2, "svc.>");
        await w.caughtUp();
        await kv1.put("svc.b", enc("second"));
        await w.sawKey("svc.b");
        assert.deepEqual(w.entries().map((e) => `${e.key}=${e.value}`), ["svc.a=first", "svc.b=second"]);
        w.watch.stop();
      }));
    });

    describe("close", () => {
      test("after close: requests and writes report closed, reads reject closed, the rest is inert", withBuses(async ({ bus }) => {
        const kv = await bus.kv(unique("b"));
        const statuses: BusStatus[] = [];
        bus.onStatus((s) => statuses.push(s));
        const s = unique("t");
        const got = collector<string>();
        bus.subscribe(`${s}.x`, (m) => got.push(m.subject));
        await bus.close();
        assert.deepEqual(statuses, ["closed"]);
        assert.deepEqual(await bus.request(`${s}.x`, enc("?")), { ok: false, reason: "closed" });
        assert.deepEqual(await kv.put("k", enc("v")), { ok: false, reason: "closed" });
        await assert.rejects(kv.get("k"), (err: unknown) => err instanceof BusError && err.code === "closed");
        await assert.rejects(bus.kv(unique("b")), (err: unknown) => err instanceof BusError && err.code === "closed");
        bus.publish(`${s}.x`, enc("dropped"));
        bus.subscribe(`${s}.x`, () => assert.fail("a closed bus delivered")).unsubscribe();
        kv.watch(">", () => assert.fail("a closed bus delivered")).stop();
        assert.deepEqual(got.items, []);
        await bus.close();
      }));
    });
  });
}
