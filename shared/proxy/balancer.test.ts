import { test } from "node:test";
import assert from "node:assert/strict";
import { parseEndpoint, type Endpoint, type LoadBalancerConfig } from "../config/index.ts";
import { createBalancer, selectSubset, type Balancer, type PickContext } from "./balancer.ts";
import type { HeaderMap, RequestHead } from "./types.ts";

// A seeded PRNG (mulberry32) so every distribution below is the same on every run.
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function head(headers: HeaderMap = {}, clientIp = "192.0.2.10"): RequestHead {
  return { method: "GET", scheme: "http", authority: "web", path: "/", headers, clientIp, localPort: 8080 };
}

function ctx(random: () => number, h: RequestHead = head()): PickContext {
  return { head: h, random };
}

function ep(address: string, weight = 1, labels: Record<string, string> = {}, draining = false): Endpoint {
  return parseEndpoint(address, labels, weight, draining);
}

function endpoints(n: number, prefix = "10.0.0."): Endpoint[] {
  return Array.from({ length: n }, (_, i) => ep(`${prefix}${i + 1}:8080`));
}

/** Picks `count` times and tallies the picks by address. */
function tally(b: Balancer, eps: readonly Endpoint[], count: number, c: (i: number) => PickContext): Map<string, number> {
  const counts = new Map<string, number>();
  for (let i = 0; i < count; i++) {
    const e = b.pick(eps, c(i));
    assert.ok(e, `pick ${i} returned no endpoint`);
    counts.set(e.address, (counts.get(e.address) ?? 0) + 1);
  }
  return counts;
}

const ALL: readonly LoadBalancerConfig[] = [
  "round_robin",
  "random",
  "least_request",
  { consistentHash: { header: "x-user" } },
  { consistentHash: { cookie: "session" } },
  { consistentHash: { sourceIp: true } },
];
const nameOf = (c: LoadBalancerConfig) => (typeof c === "string" ? c : `consistentHash ${JSON.stringify(c.consistentHash)}`);

// --- round robin -------------------------------------------------------------------------

test("round_robin with equal weights cycles through the endpoints in order", () => {
  const eps = endpoints(3);
  const b = createBalancer("round_robin");
  const seq = Array.from({ length: 9 }, () => b.pick(eps, ctx(seeded(1)))!.address);
  assert.deepEqual(seq, [...eps, ...eps, ...eps].map((e) => e.address));
});

test("round_robin with weights 5:1:1 interleaves smoothly (a a b a c a a) and gives exact counts over N cycles", () => {
  const eps = [ep("10.0.0.1:80", 5), ep("10.0.0.2:80", 1), ep("10.0.0.3:80", 1)];
  const label = new Map([[eps[0]!.address, "a"], [eps[1]!.address, "b"], [eps[2]!.address, "c"]]);
  const b = createBalancer("round_robin");
  const random = seeded(2);
  const cycle = () => Array.from({ length: 7 }, () => label.get(b.pick(eps, ctx(random))!.address)).join("");
  // nginx's smooth weighted round robin never sends the heavy endpoint more than its share in a burst.
  assert.equal(cycle(), "aabacaa");
  assert.equal(cycle(), "aabacaa", "the second cycle repeats the first exactly");
  const cycles = 1000;
  const counts = tally(b, eps, 7 * cycles, () => ctx(random));
  assert.deepEqual(
    eps.map((e) => counts.get(e.address)),
    [5 * cycles, cycles, cycles],
  );
});

test("round_robin keeps separate positions for separate endpoint lists", () => {
  const b = createBalancer("round_robin");
  const one = endpoints(2, "10.0.1.");
  const two = endpoints(2, "10.0.2.");
  assert.equal(b.pick(one, ctx(Math.random))!.address, one[0]!.address);
  assert.equal(b.pick(two, ctx(Math.random))!.address, two[0]!.address);
  assert.equal(b.pick(one, ctx(Math.random))!.address, one[1]!.address);
  assert.equal(b.pick(two, ctx(Math.random))!.address, two[1]!.address);
});

// --- random --------------------------------------------------------------------------------

test("random follows the injected random source: 0 picks the first endpoint, just below 1 the last", () => {
  const eps = endpoints(3);
  const b = createBalancer("random");
  assert.equal(b.pick(eps, ctx(() => 0))!.address, eps[0]!.address);
  assert.equal(b.pick(eps, ctx(() => 0.5))!.address, eps[1]!.address);
  assert.equal(b.pick(eps, ctx(() => 0.999999))!.address, eps[2]!.address);
});

test("random over 30,000 picks gives each of 3 equal endpoints its third within 2 percentage points", () => {
  const eps = endpoints(3);
  const b = createBalancer("random");
  const random = seeded(3);
  const picks = 30_000;
  const counts = tally(b, eps, picks, () => ctx(random));
  for (const e of eps) {
    const share = (counts.get(e.address) ?? 0) / picks;
    assert.ok(Math.abs(share - 1 / 3) < 0.02, `${e.address} got ${share}`);
  }
});

test("random is weighted: weights 3:1 give shares 75% and 25% within 2 percentage points over 30,000 picks", () => {
  const eps = [ep("10.0.0.1:80", 3), ep("10.0.0.2:80", 1)];
  const b = createBalancer("random");
  const random = seeded(4);
  const picks = 30_000;
  const counts = tally(b, eps, picks, () => ctx(random));
  assert.ok(Math.abs(counts.get(eps[0]!.address)! / picks - 0.75) < 0.02);
  assert.ok(Math.abs(counts.get(eps[1]!.address)! / picks - 0.25) < 0.02);
});

// --- least_request -------------------------------------------------------------------------

test("least_request picks the endpoint with fewer in-flight requests when it is one of the two choices", () => {
  const eps = endpoints(2);
  const b = createBalancer("least_request");
  for (let i = 0; i < 3; i++) b.start!(eps[0]!);
  const random = seeded(5);
  const counts = tally(b, eps, 1000, () => ctx(random));
  assert.equal(counts.get(eps[1]!.address), 1000);
  assert.equal(counts.get(eps[0]!.address), undefined);
});

test("least_request never picks the busiest of three endpoints (P2C always sees a less loaded one beside it)", () => {
  const eps = endpoints(3);
  const b = createBalancer("least_request");
  for (let i = 0; i < 10; i++) b.start!(eps[1]!);
  const random = seeded(6);
  const counts = tally(b, eps, 3000, () => ctx(random));
  assert.equal(counts.get(eps[1]!.address), undefined);
  assert.ok(counts.get(eps[0]!.address)! > 0 && counts.get(eps[2]!.address)! > 0);
});

test("least_request forgets requests once they end, so a drained endpoint is picked again", () => {
  const eps = endpoints(2);
  const b = createBalancer("least_request");
  b.start!(eps[0]!);
  b.start!(eps[0]!);
  assert.equal(b.pick(eps, ctx(() => 0))!.address, eps[1]!.address);
  b.end!(eps[0]!);
  b.end!(eps[0]!);
  b.start!(eps[1]!);
  assert.equal(b.pick(eps, ctx(() => 0.99))!.address, eps[0]!.address);
  // Ending more than started does not leave a negative count behind.
  b.end!(eps[0]!);
  b.end!(eps[1]!);
  b.start!(eps[0]!);
  assert.equal(b.pick(eps, ctx(() => 0))!.address, eps[1]!.address);
});

test("least_request divides in-flight requests by weight: a weight-4 endpoint with 2 in flight beats a weight-1 endpoint with 1", () => {
  const heavy = ep("10.0.0.1:80", 4);
  const light = ep("10.0.0.2:80", 1);
  const b = createBalancer("least_request");
  b.start!(heavy);
  b.start!(heavy);
  b.start!(light);
  // (2+1)/4 = 0.75 against (1+1)/1 = 2, whichever of the two P2C draws first.
  assert.equal(b.pick([heavy, light], ctx(() => 0))!.address, heavy.address);
  assert.equal(b.pick([heavy, light], ctx(() => 0.99))!.address, heavy.address);
});

test("least_request never starves an endpoint: with requests held open, every endpoint keeps getting picks", () => {
  const eps = endpoints(4);
  const b = createBalancer("least_request");
  const random = seeded(7);
  const open: Endpoint[] = [];
  const counts = new Map<string, number>();
  for (let i = 0; i < 4000; i++) {
    const e = b.pick(eps, ctx(random))!;
    b.start!(e);
    open.push(e);
    counts.set(e.address, (counts.get(e.address) ?? 0) + 1);
    // Up to 20 requests in flight at a time; the oldest completes first.
    if (open.length > 20) b.end!(open.shift()!);
  }
  for (const e of eps) {
    const share = (counts.get(e.address) ?? 0) / 4000;
    assert.ok(share > 0.2 && share < 0.3, `${e.address} got ${share}`);
  }
});

// --- consistent hash -----------------------------------------------------------------------

function byKey(b: Balancer, eps: readonly Endpoint[], keys: number, random = seeded(8)): string[] {
  return Array.from({ length: keys }, (_, k) => b.pick(eps, ctx(random, head({ "x-user": `user-${k}` })))!.address);
}

test("consistentHash maps the same header value to the same endpoint every time, whatever the random source says", () => {
  const eps = endpoints(5);
  const b = createBalancer({ consistentHash: { header: "X-User" } });
  const first = byKey(b, eps, 200, seeded(9));
  const again = byKey(b, eps, 200, seeded(10));
  assert.deepEqual(again, first);
  // A fresh balancer (a new config) builds the same ring.
  assert.deepEqual(byKey(createBalancer({ consistentHash: { header: "x-user" } }), eps, 200), first);
});

test("consistentHash spreads 10,000 keys over 10 endpoints within ±25% of an even share", () => {
  const eps = endpoints(10);
  const b = createBalancer({ consistentHash: { header: "x-user" } });
  const counts = new Map<string, number>();
  for (const a of byKey(b, eps, 10_000)) counts.set(a, (counts.get(a) ?? 0) + 1);
  for (const e of eps) {
    const n = counts.get(e.address) ?? 0;
    assert.ok(n > 750 && n < 1250, `${e.address} got ${n} keys`);
  }
});

test("consistentHash: removing one of 10 endpoints moves only that endpoint's keys (about 1/10), the rest stay put", () => {
  const eps = endpoints(10);
  const b = createBalancer({ consistentHash: { header: "x-user" } });
  const keys = 10_000;
  const before = byKey(b, eps, keys);
  const removed = eps[3]!.address;
  const after = byKey(b, eps.filter((e) => e.address !== removed), keys);
  let moved = 0;
  for (let k = 0; k < keys; k++) {
    if (before[k] === after[k]) continue;
    moved++;
    assert.equal(before[k], removed, `key ${k} moved although its endpoint stayed`);
  }
  assert.ok(moved / keys > 0.075 && moved / keys < 0.125, `moved ${moved / keys}`);
});

test("consistentHash gives a weight-3 endpoint about three times the keys of a weight-1 endpoint", () => {
  const eps = [ep("10.0.0.1:80", 3), ep("10.0.0.2:80", 1)];
  const b = createBalancer({ consistentHash: { header: "x-user" } });
  const picks = byKey(b, eps, 8000);
  const heavy = picks.filter((a) => a === eps[0]!.address).length / picks.length;
  assert.ok(heavy > 0.68 && heavy < 0.82, `weight-3 share ${heavy}`);
});

test("consistentHash by cookie reads only the named cookie", () => {
  const eps = endpoints(8);
  const b = createBalancer({ consistentHash: { cookie: "session" } });
  const random = seeded(11);
  for (let k = 0; k < 100; k++) {
    const alone = b.pick(eps, ctx(random, head({ cookie: `session=s${k}` })))!;
    const among = b.pick(eps, ctx(random, head({ cookie: `theme=dark${k}; session=s${k} ; lang=en` })))!;
    const split = b.pick(eps, ctx(random, head({ cookie: ["a=1", `session=s${k}`] })))!;
    assert.equal(among.address, alone.address);
    assert.equal(split.address, alone.address);
  }
  // Different sessions do not all land on one endpoint.
  const spread = new Set(Array.from({ length: 100 }, (_, k) => b.pick(eps, ctx(random, head({ cookie: `session=s${k}` })))!.address));
  assert.ok(spread.size > 4);
});

test("consistentHash by source IP keeps one client on one endpoint", () => {
  const eps = endpoints(8);
  const b = createBalancer({ consistentHash: { sourceIp: true } });
  const random = seeded(12);
  const ips = Array.from({ length: 50 }, (_, i) => `198.51.100.${i + 1}`);
  const first = ips.map((ip) => b.pick(eps, ctx(random, head({}, ip)))!.address);
  const again = ips.map((ip) => b.pick(eps, ctx(random, head({ "x-user": "ignored" }, ip)))!.address);
  assert.deepEqual(again, first);
  assert.ok(new Set(first).size > 4);
});

test("consistentHash spreads requests without a key at random (weighted), using the injected random source", () => {
  const eps = endpoints(3);
  const b = createBalancer({ consistentHash: { header: "x-user" } });
  assert.equal(b.pick(eps, ctx(() => 0))!.address, eps[0]!.address);
  assert.equal(b.pick(eps, ctx(() => 0.999))!.address, eps[2]!.address);
  const random = seeded(13);
  const counts = tally(b, eps, 30_000, () => ctx(random));
  for (const e of eps) assert.ok(Math.abs(counts.get(e.address)! / 30_000 - 1 / 3) < 0.02);
});

test("consistentHash builds a bounded ring even for huge weights, still honouring their ratio", () => {
  const eps = [ep("10.0.0.1:80", 900_000), ep("10.0.0.2:80", 100_000)];
  const b = createBalancer({ consistentHash: { header: "x-user" } });
  const picks = byKey(b, eps, 5000);
  const heavy = picks.filter((a) => a === eps[0]!.address).length / picks.length;
  assert.ok(heavy > 0.84 && heavy < 0.96, `weight-900k share ${heavy}`);
});

// --- every algorithm ---------------------------------------------------------------------

for (const config of ALL) {
  const name = nameOf(config);

  test(`${name}: an empty endpoint list gives no pick`, () => {
    assert.equal(createBalancer(config).pick([], ctx(seeded(14))), undefined);
  });

  test(`${name}: draining endpoints and zero-weight endpoints get no new picks`, () => {
    const eps = [
      ep("10.0.0.1:80", 1, {}, true),
      ep("10.0.0.2:80"),
      ep("10.0.0.3:80", 0),
      ep("10.0.0.4:80"),
      ep("10.0.0.5:80", 2, {}, true),
    ];
    const b = createBalancer(config);
    const random = seeded(15);
    const counts = tally(b, eps, 2000, (i) =>
      ctx(random, head({ "x-user": `u${i}`, cookie: `session=s${i}` }, `203.0.113.${i % 250}`)),
    );
    assert.deepEqual([...counts.keys()].sort(), ["10.0.0.2:80", "10.0.0.4:80"]);
  });

  test(`${name}: when every endpoint is draining there is no pick`, () => {
    const eps = [ep("10.0.0.1:80", 1, {}, true), ep("10.0.0.2:80", 1, {}, true)];
    assert.equal(createBalancer(config).pick(eps, ctx(seeded(16), head({ "x-user": "u", cookie: "session=s" }))), undefined);
  });

  test(`${name}: a single ready endpoint is always the pick`, () => {
    const eps = [ep("10.0.0.1:80", 1, {}, true), ep("10.0.0.2:80")];
    const b = createBalancer(config);
    const random = seeded(17);
    const counts = tally(b, eps, 50, (i) => ctx(random, head({ "x-user": `u${i}` })));
    assert.deepEqual([...counts], [["10.0.0.2:80", 50]]);
  });
}

// --- subsets --------------------------------------------------------------------------------

test("selectSubset keeps the endpoints carrying every wanted label", () => {
  const eps = [
    ep("10.0.0.1:80", 1, { version: "v1", zone: "a" }),
    ep("10.0.0.2:80", 1, { version: "v2", zone: "a" }),
    ep("10.0.0.3:80", 1, { version: "v1", zone: "b" }),
    ep("10.0.0.4:80", 1, {}),
  ];
  const addresses = (list: readonly Endpoint[]) => list.map((e) => e.address);
  assert.deepEqual(addresses(selectSubset(eps, { version: "v1" })), ["10.0.0.1:80", "10.0.0.3:80"]);
  assert.deepEqual(addresses(selectSubset(eps, { version: "v1", zone: "b" })), ["10.0.0.3:80"]);
  assert.deepEqual(addresses(selectSubset(eps, { version: "v3" })), []);
  assert.deepEqual(addresses(selectSubset(eps, {})), addresses(eps), "no labels selects everything");
});
