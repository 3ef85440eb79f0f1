// The leased global rate limiter on the in-memory bus, driven round by round with a hand-held clock
// (timers off), so each case pins who answers `weft.rls.check` at which point of the lease.
import { test } from "node:test";
import assert from "node:assert/strict";
import { BUCKET_HISTORY, CONFIG_BUCKET, createMemoryBus, createMemoryNetwork, decodeJson, encodeJson, type Bus, type Kv, type MemoryNetwork } from "../shared/bus/index.ts";
import type { GlobalRateLimitConfig } from "../shared/config/index.ts";
import { createGlobalRateLimiter, type RateLimitRequest } from "../shared/policy/index.ts";
import { RLS_LEASE_KEY, startLeasedRateLimitService, type LeasedRateLimitService } from "./ratelimit.ts";

const PATHS = { encodedSlashes: "keep", caseInsensitive: false } as const;
const TTL = 6000;
const RENEW = 1500;
const LIMIT: GlobalRateLimitConfig = { name: "api", tokensPerFill: 5, fillIntervalMs: 60_000, maxTokens: 5, key: "none", failureMode: "closed", localFallback: true, timeoutMs: 200 };
const request: RateLimitRequest = { method: "GET", authority: "shop.test", path: "/", headers: {}, sourceIp: "203.0.113.1" };

function mesh() {
  const network: MemoryNetwork = createMemoryNetwork();
  const clock = { t: 10_000 };
  const buses: Bus[] = [];
  const bus = () => {
    const b = createMemoryBus({ network });
    buses.push(b);
    return b;
  };
  const replica = async (holder: string, b = bus()): Promise<LeasedRateLimitService> =>
    startLeasedRateLimitService({ bus: b, kv: await b.kv(CONFIG_BUCKET, { history: BUCKET_HISTORY }), holder, leaseTtlMs: TTL, renewMs: RENEW, now: () => clock.t, timers: false });
  // One client per gateway replica, all in the same domain: they share one bucket.
  const client = () => createGlobalRateLimiter([LIMIT], PATHS, { bus: bus(), domain: "edge", backoffMs: 0 });
  const close = () => Promise.all(buses.map((b) => b.close()));
  return { clock, bus, replica, client, close };
}

async function outcomes(clients: ReturnType<ReturnType<typeof mesh>["client"]>[], count: number): Promise<string[]> {
  const seen: string[] = [];
  for (let i = 0; i < count; i++) {
    const r = await clients[i % clients.length]!.check(request);
    seen.push(r.allowed ? "allowed" : r.detail);
  }
  return seen;
}

const tally = (xs: string[]) => xs.reduce<Record<string, number>>((acc, x) => ((acc[x] = (acc[x] ?? 0) + 1), acc), {});

test("of two replicas exactly one answers, and requests through three gateways take from one bucket", async () => {
  const m = mesh();
  const a = await m.replica("control-a");
  const b = await m.replica("control-b");
  try {
    assert.deepEqual([a.leading, b.leading], [true, false]);
    for (let round = 0; round < 3; round++) {
      m.clock.t += RENEW;
      await a.step();
      await b.step();
      assert.deepEqual([a.leading, b.leading], [true, false], `round ${round}`);
    }
    const gateways = [m.client(), m.client(), m.client()];
    assert.deepEqual(tally(await outcomes(gateways, 15)), { allowed: 5, rate_limited: 10 });
  } finally {
    await a.stop();
    await b.stop();
    await m.close();
  }
});

test("a replica that stops releases the lease and the stand-by answers at its next round, with full buckets", async () => {
  const m = mesh();
  const a = await m.replica("control-a");
  const b = await m.replica("control-b");
  const gateways = [m.client(), m.client()];
  try {
    assert.deepEqual(tally(await outcomes(gateways, 7)), { allowed: 5, rate_limited: 2 });
    await a.stop();
    assert.equal(a.leading, false);
    assert.deepEqual(await outcomes(gateways, 1), ["rls_unavailable"], "nobody answers between the two");
    await b.step();
    assert.equal(b.leading, true, "a released lease is taken without waiting for its ttl");
    // The buckets lived in control-a's memory: the new holder starts them full (documented).
    assert.deepEqual(tally(await outcomes(gateways, 7)), { allowed: 5, rate_limited: 2 });
    const lease = decodeJson((await (await m.bus().kv(CONFIG_BUCKET)).get(RLS_LEASE_KEY))!.value);
    assert.deepEqual(lease.ok && (lease.value as { holder: string }).holder, "control-b");
  } finally {
    await b.stop();
    await m.close();
  }
});

test("the lease of a replica that died is taken over only after its revision stayed unchanged for the ttl", async () => {
  const m = mesh();
  const aBus = m.bus();
  const a = await m.replica("control-a", aBus);
  const b = await m.replica("control-b");
  try {
    assert.equal(a.leading, true);
    await aBus.close(); // dies: no release, no more renewals, its subscription is gone
    await b.step(); // first sight of the lease revision starts b's count
    m.clock.t += TTL - 1;
    await b.step();
    assert.equal(b.leading, false, "one millisecond before the ttl the old lease still stands");
    m.clock.t += 1;
    await b.step();
    assert.equal(b.leading, true);
    assert.deepEqual(tally(await outcomes([m.client()], 6)), { allowed: 5, rate_limited: 1 });
  } finally {
    await a.stop();
    await b.stop();
    await m.close();
  }
});

test("a holder that cannot renew stops answering before a stand-by may take over", async () => {
  const m = mesh();
  const aBus = m.bus();
  const a = await m.replica("control-a", aBus);
  const b = await m.replica("control-b");
  try {
    await b.step();
    // control-a's renewals stop reaching the bucket (its bus is gone) but the process lives on.
    await aBus.close();
    m.clock.t += TTL - RENEW;
    await a.step();
    await b.step();
    assert.deepEqual([a.leading, b.leading], [false, false], "the holder gave up first; the stand-by still waits");
    m.clock.t += RENEW;
    await b.step();
    assert.deepEqual([a.leading, b.leading], [false, true]);
  } finally {
    await a.stop();
    await b.stop();
    await m.close();
  }
});

test("a holder that finds its lease rewritten by someone else stops answering at once", async () => {
  const m = mesh();
  const a = await m.replica("control-a");
  const gateways = [m.client()];
  try {
    assert.deepEqual(await outcomes(gateways, 1), ["allowed"]);
    const kv = await m.bus().kv(CONFIG_BUCKET);
    await kv.put(RLS_LEASE_KEY, encodeJson({ holder: "operator", renewedAt: 0, ttlMs: TTL }));
    m.clock.t += RENEW;
    await a.step();
    assert.equal(a.leading, false);
    assert.deepEqual(await outcomes(gateways, 1), ["rls_unavailable"]);
  } finally {
    await a.stop();
    await m.close();
  }
});

test("a renewal that landed although its confirmation timed out is recognised as the holder's own", async () => {
  const m = mesh();
  const aBus = m.bus();
  const real = await aBus.kv(CONFIG_BUCKET, { history: BUCKET_HISTORY });
  let dropConfirmations = 0;
  // The bucket takes the write; the answer is lost on the way back (what a NATS timeout can mean).
  const kv: Kv = {
    get: (key) => real.get(key),
    put: (key, value) => real.put(key, value),
    create: (key, value) => real.create(key, value),
    update: async (key, value, revision) => {
      const r = await real.update(key, value, revision);
      return dropConfirmations-- > 0 ? { ok: false, reason: "timeout" } : r;
    },
    delete: (key) => real.delete(key),
    keys: (filter) => real.keys(filter),
    watch: (filter, onEntry, options) => real.watch(filter, onEntry, options),
  };
  const a = await startLeasedRateLimitService({ bus: aBus, kv, holder: "control-a", leaseTtlMs: TTL, renewMs: RENEW, now: () => m.clock.t, timers: false });
  const b = await m.replica("control-b");
  try {
    dropConfirmations = 1;
    for (let round = 0; round < 6; round++) {
      m.clock.t += RENEW;
      await a.step();
      await b.step();
      assert.deepEqual([a.leading, b.leading], [true, false], `round ${round}`);
    }
  } finally {
    await a.stop();
    await b.stop();
    await m.close();
  }
});

test("a lease timing that cannot renew in time is refused at start", async () => {
  const m = mesh();
  const b = m.bus();
  const kv = await b.kv(CONFIG_BUCKET);
  await assert.rejects(startLeasedRateLimitService({ bus: b, kv, holder: "x", leaseTtlMs: 1000, renewMs: 600, timers: false }), TypeError);
  await m.close();
});
