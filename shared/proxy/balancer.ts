import type { Endpoint, LoadBalancerConfig } from "../config/index.ts";
import { firstValue } from "./headers.ts";
import type { RequestHead } from "./types.ts";

export interface PickContext {
  readonly head: RequestHead;
  readonly random: () => number;
}

/**
 * Picks an endpoint for one try. Endpoint lists are immutable per config, so per-list state
 * (round-robin position, hash ring) is kept in a WeakMap and dropped with the config.
 */
export interface Balancer {
  /** An endpoint that is not draining, or undefined when none is left. */
  pick(endpoints: readonly Endpoint[], ctx: PickContext): Endpoint | undefined;
  /** A request to the endpoint started / ended (least_request counts them). */
  start?(endpoint: Endpoint): void;
  end?(endpoint: Endpoint): void;
}

/**
 * createBalancer returns the balancer a destination policy names.
 * - round_robin: smooth weighted round robin (nginx's), so weights spread evenly over time;
 * - random: weighted random;
 * - least_request: power of two choices on in-flight requests divided by weight (Envoy's);
 * - consistentHash: a ring with 160 points per unit of weight, keyed by a header, a cookie or
 *   the client address; requests without a key are spread at random.
 * @example
 * createBalancer("least_request").pick(endpoints, { head, random: Math.random })
 */
export function createBalancer(config: LoadBalancerConfig): Balancer {
  if (config === "round_robin") return roundRobin();
  if (config === "random") return { pick: (eps, ctx) => weightedRandom(ready(eps), ctx.random) };
  if (config === "least_request") return leastRequest();
  return consistentHash(config.consistentHash);
}

/** Endpoints whose labels include every given label (a version subset). */
export function selectSubset(endpoints: readonly Endpoint[], labels: Readonly<Record<string, string>>): readonly Endpoint[] {
  const wanted = Object.entries(labels);
  return endpoints.filter((ep) => wanted.every(([k, v]) => ep.labels[k] === v));
}

const readyCache = new WeakMap<readonly Endpoint[], readonly Endpoint[]>();

/** The endpoints that may take new requests: not draining and with a positive weight. */
function ready(endpoints: readonly Endpoint[]): readonly Endpoint[] {
  let r = readyCache.get(endpoints);
  if (!r) {
    r = endpoints.every((e) => !e.draining && e.weight > 0) ? endpoints : endpoints.filter((e) => !e.draining && e.weight > 0);
    readyCache.set(endpoints, r);
  }
  return r;
}

function weightedRandom(eps: readonly Endpoint[], random: () => number): Endpoint | undefined {
  if (eps.length <= 1) return eps[0];
  let total = 0;
  for (const e of eps) total += e.weight;
  let point = random() * total;
  for (const e of eps) {
    point -= e.weight;
    if (point < 0) return e;
  }
  return eps[eps.length - 1];
}

interface RoundRobinState {
  next: number;
  /** Smooth WRR current weights; absent when all weights are equal. */
  current: number[] | undefined;
  total: number;
}

function roundRobin(): Balancer {
  const states = new WeakMap<readonly Endpoint[], RoundRobinState>();
  return {
    pick(endpoints) {
      const eps = ready(endpoints);
      if (eps.length <= 1) return eps[0];
      let s = states.get(eps);
      if (!s) {
        const equal = eps.every((e) => e.weight === eps[0]!.weight);
        s = { next: 0, current: equal ? undefined : eps.map(() => 0), total: eps.reduce((t, e) => t + e.weight, 0) };
        states.set(eps, s);
      }
      if (!s.current) {
        const e = eps[s.next]!;
        s.next = (s.next + 1) % eps.length;
        return e;
      }
      let best = 0;
      for (let i = 0; i < eps.length; i++) {
        s.current[i]! += eps[i]!.weight;
        if (s.current[i]! > s.current[best]!) best = i;
      }
      s.current[best]! -= s.total;
      return eps[best];
    },
  };
}

function leastRequest(): Balancer {
  const active = new Map<string, number>();
  const load = (e: Endpoint) => ((active.get(e.address) ?? 0) + 1) / e.weight;
  return {
    pick(endpoints, ctx) {
      const eps = ready(endpoints);
      if (eps.length <= 1) return eps[0];
      const a = Math.floor(ctx.random() * eps.length);
      let b = Math.floor(ctx.random() * (eps.length - 1));
      if (b >= a) b++;
      const ea = eps[a]!;
      const eb = eps[b]!;
      return load(eb) < load(ea) ? eb : ea;
    },
    start(e) {
      active.set(e.address, (active.get(e.address) ?? 0) + 1);
    },
    end(e) {
      const n = (active.get(e.address) ?? 1) - 1;
      if (n <= 0) active.delete(e.address);
      else active.set(e.address, n);
    },
  };
}

const POINTS_PER_WEIGHT = 160;
const MAX_RING_POINTS = 1 << 16;

interface Ring {
  readonly hashes: Uint32Array;
  readonly owners: readonly Endpoint[];
}

type HashOn = Extract<LoadBalancerConfig, { consistentHash: unknown }>["consistentHash"];

function consistentHash(on: HashOn): Balancer {
  const rings = new WeakMap<readonly Endpoint[], Ring>();
  const keyOf = (head: RequestHead): string | undefined => {
    if ("header" in on) return firstValue(head.headers, on.header.toLowerCase());
    if ("cookie" in on) return cookie(head, on.cookie);
    return head.clientIp;
  };
  return {
    pick(endpoints, ctx) {
      const eps = ready(endpoints);
      if (eps.length <= 1) return eps[0];
      const key = keyOf(ctx.head);
      if (key === undefined) return weightedRandom(eps, ctx.random);
      let ring = rings.get(eps);
      if (!ring) rings.set(eps, (ring = buildRing(eps)));
      const h = fnv1a(key);
      // First point at or after the key's hash, wrapping around.
      let lo = 0;
      let hi = ring.hashes.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (ring.hashes[mid]! < h) lo = mid + 1;
        else hi = mid;
      }
      return ring.owners[lo === ring.hashes.length ? 0 : lo];
    },
  };
}

/** Ketama-style ring: each endpoint gets points in proportion to its weight, placed by hashing its address. */
function buildRing(eps: readonly Endpoint[]): Ring {
  const totalWeight = eps.reduce((t, e) => t + e.weight, 0);
  const scale = Math.min(POINTS_PER_WEIGHT, MAX_RING_POINTS / totalWeight);
  const points: { hash: number; owner: Endpoint }[] = [];
  for (const e of eps) {
    const n = Math.max(1, Math.round(e.weight * scale));
    for (let i = 0; i < n; i++) points.push({ hash: fnv1a(`${e.address}#${i}`), owner: e });
  }
  points.sort((a, b) => a.hash - b.hash || (a.owner.address < b.owner.address ? -1 : 1));
  return { hashes: Uint32Array.from(points, (p) => p.hash), owners: points.map((p) => p.owner) };
}

/** 32-bit FNV-1a with a final avalanche (murmur3 fmix32) so nearby keys spread over the ring. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function cookie(head: RequestHead, name: string): string | undefined {
  const raw = head.headers.cookie;
  if (raw === undefined) return undefined;
  const text = typeof raw === "string" ? raw : raw.join("; ");
  for (const part of text.split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}
