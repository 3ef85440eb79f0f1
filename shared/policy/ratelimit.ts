import type { Bus } from "../bus/index.ts";
import type { GlobalRateLimitConfig, LocalRateLimitConfig, PathNormalizationConfig, RateLimitKeyConfig } from "../config/index.ts";
import { claimValue, compileOperationMatch, type AuthzRequest } from "./authz.ts";
import { createLru } from "./lru.ts";
import { normalizeAuthzPath } from "./normalize.ts";

/** The shape of a token bucket: `tokensPerFill` added every `fillIntervalMs`, at most `maxTokens` kept. */
export interface BucketShape {
  readonly tokensPerFill: number;
  readonly fillIntervalMs: number;
  readonly maxTokens: number;
}

/** One bucket's state after a take. */
export interface BucketState {
  readonly allowed: boolean;
  readonly remaining: number;
  /** Time until the next fill adds tokens. */
  readonly nextFillMs: number;
}

/** A token bucket with discrete fills (Envoy's local rate limit): starts full. */
export interface TokenBucket {
  /** Tokens available now (after refilling). */
  peek(nowMs: number): BucketState;
  /** Takes one token when one is available. */
  take(nowMs: number): BucketState;
}

/**
 * createTokenBucket makes a bucket that starts with `maxTokens` and gains `tokensPerFill` every
 * `fillIntervalMs` (whole intervals only), never beyond `maxTokens`.
 * @example
 * const b = createTokenBucket({ tokensPerFill: 1, fillIntervalMs: 1000, maxTokens: 5 }, 0);
 * b.take(0).allowed // true, 4 left
 */
export function createTokenBucket(shape: BucketShape, startMs: number): TokenBucket {
  let tokens = shape.maxTokens;
  let lastFillMs = startMs;
  const refill = (nowMs: number) => {
    if (nowMs < lastFillMs) lastFillMs = nowMs; // a clock that steps back must not mint tokens later
    const fills = Math.floor((nowMs - lastFillMs) / shape.fillIntervalMs);
    if (fills > 0) {
      tokens = Math.min(shape.maxTokens, tokens + fills * shape.tokensPerFill);
      lastFillMs += fills * shape.fillIntervalMs;
    }
  };
  const state = (allowed: boolean, nowMs: number): BucketState => ({ allowed, remaining: tokens, nextFillMs: lastFillMs + shape.fillIntervalMs - nowMs });
  return {
    peek(nowMs) {
      refill(nowMs);
      return state(tokens >= 1, nowMs);
    },
    take(nowMs) {
      refill(nowMs);
      if (tokens < 1) return state(false, nowMs);
      tokens -= 1;
      return state(true, nowMs);
    },
  };
}

/** What a rate limit may key on, besides the authorization request. */
export interface RateLimitRequest extends AuthzRequest {}

/** The outcome of all rate limits for one request. */
export type RateLimitResult =
  | { readonly allowed: true; readonly headers: readonly (readonly [string, string])[] }
  | {
      readonly allowed: false;
      /** `rate_limited`, or `rls_unavailable` when a fail-closed global limit got no answer. */
      readonly detail: "rate_limited" | "rls_unavailable";
      readonly limit: string;
      readonly headers: readonly (readonly [string, string])[];
    };

interface CompiledLimit<C> {
  readonly config: C;
  readonly applies: (req: RateLimitRequest, path: string) => boolean;
  readonly keyOf: (req: RateLimitRequest, path: string) => string;
}

function compileLimit<C extends { match?: LocalRateLimitConfig["match"]; key?: RateLimitKeyConfig }>(config: C, paths: PathNormalizationConfig): CompiledLimit<C> {
  const match = config.match ? compileOperationMatch(config.match, paths) : undefined;
  return { config, applies: match ?? (() => true), keyOf: keyReader(config.key ?? "none") };
}

// A request lacking the keyed attribute shares one bucket with every other such request, so leaving a
// header out never escapes the limit.
const MISSING = "\u0000";

function keyReader(key: RateLimitKeyConfig): (req: RateLimitRequest, path: string) => string {
  if (typeof key === "object") {
    if ("header" in key) {
      const name = key.header.toLowerCase();
      return (req) => {
        const v = req.headers[name];
        return v === undefined ? MISSING : typeof v === "string" ? v : v.join(",");
      };
    }
    const path = key.claim.split(".");
    return (req) => {
      const v = claimValue(req.claims, path);
      return v === undefined ? MISSING : typeof v === "string" ? v : v.join(",");
    };
  }
  switch (key) {
    case "none":
      return () => "";
    case "sourceIp":
      return (req) => req.sourceIp;
    case "remoteIp":
      return (req) => req.remoteIp ?? req.sourceIp;
    case "principal":
      return (req) => req.sourcePrincipal ?? MISSING;
    case "requestPrincipal":
      return (req) => req.requestPrincipal ?? MISSING;
    case "path":
      return (_req, path) => path;
  }
}

/**
 * rateLimitHeaders renders the IETF draft `RateLimit-Policy` / `RateLimit` fields, the common
 * `x-ratelimit-*` trio and, when refused, `retry-after` (never shorter than the time to the next token).
 * @example
 * rateLimitHeaders("per-ip", shape, { allowed: false, remaining: 0, nextFillMs: 1200 }) // includes ["retry-after", "2"]
 */
export function rateLimitHeaders(name: string, shape: BucketShape, state: BucketState): [string, string][] {
  const resetSec = Math.max(1, Math.ceil(state.nextFillMs / 1000));
  const windowSec = Math.max(1, Math.ceil(shape.fillIntervalMs / 1000));
  const remaining = Math.max(0, Math.floor(state.remaining));
  const headers: [string, string][] = [
    ["ratelimit-policy", `"${name}";q=${shape.tokensPerFill};w=${windowSec};burst=${shape.maxTokens}`],
    ["ratelimit", `"${name}";r=${remaining};t=${resetSec}`],
    ["x-ratelimit-limit", String(shape.maxTokens)],
    ["x-ratelimit-remaining", String(remaining)],
    ["x-ratelimit-reset", String(resetSec)],
  ];
  if (!state.allowed) headers.push(["retry-after", String(resetSec)]);
  return headers;
}

export interface LocalRateLimiter {
  check(req: RateLimitRequest): RateLimitResult;
  readonly active: boolean;
}

/**
 * createLocalRateLimiter keeps a token bucket per limit and key in this proxy (bounded per limit,
 * least recently used keys forgotten). A request takes one token from every limit that applies, or
 * none when any of them is empty.
 * @example
 * const limiter = createLocalRateLimiter([{ name: "per-ip", key: "sourceIp", tokensPerFill: 10, fillIntervalMs: 1000, maxTokens: 20, maxKeys: 10000 }], paths);
 * limiter.check(request).allowed
 */
export function createLocalRateLimiter(
  limits: readonly LocalRateLimitConfig[],
  paths: PathNormalizationConfig,
  now: () => number = Date.now,
): LocalRateLimiter {
  const compiled = limits.map((config) => ({ ...compileLimit(config, paths), buckets: createLru<TokenBucket>(config.maxKeys ?? 10_000) }));
  return {
    active: compiled.length > 0,
    check(req) {
      if (compiled.length === 0) return { allowed: true, headers: [] };
      const path = normalizeAuthzPath(req.path, paths) ?? req.path;
      const t = now();
      const hits: { limit: (typeof compiled)[number]; bucket: TokenBucket }[] = [];
      for (const limit of compiled) {
        if (!limit.applies(req, path)) continue;
        const key = limit.keyOf(req, path);
        let bucket = limit.buckets.get(key);
        if (!bucket) {
          bucket = createTokenBucket(limit.config, t);
          limit.buckets.set(key, bucket);
        }
        const state = bucket.peek(t);
        if (!state.allowed) {
          return { allowed: false, detail: "rate_limited", limit: limit.config.name, headers: rateLimitHeaders(limit.config.name, limit.config, state) };
        }
        hits.push({ limit, bucket });
      }
      let tightest: [string, string][] = [];
      let least = Infinity;
      for (const { limit, bucket } of hits) {
        const state = bucket.take(t);
        if (state.remaining < least) {
          least = state.remaining;
          tightest = rateLimitHeaders(limit.config.name, limit.config, state);
        }
      }
      return { allowed: true, headers: tightest };
    },
  };
}

/** Subject of the global rate-limit service (request/reply). */
export const RLS_SUBJECT = "weft.rls.check";

/** One descriptor sent to the global limiter. */
export interface RlsDescriptor extends BucketShape {
  readonly name: string;
  readonly key: string;
}
export interface RlsRequest {
  /** Who shares the counters: one gateway's replicas (the gateway name) or one service. */
  readonly domain: string;
  readonly descriptors: readonly RlsDescriptor[];
}
export interface RlsReply {
  readonly results: readonly BucketState[];
}

export interface GlobalRateLimiterOptions {
  readonly bus: Bus;
  readonly domain: string;
  readonly now?: () => number;
  /** After the limiter fails to answer, use the failure mode without asking for this long (default 1000 ms). */
  readonly backoffMs?: number;
}

export interface GlobalRateLimiter {
  check(req: RateLimitRequest): Promise<RateLimitResult>;
  readonly active: boolean;
}

/**
 * createGlobalRateLimiter asks the control plane's limiter over `weft.rls.check` (one request per
 * proxied request, every applicable limit in it). When the limiter does not answer: a fail-closed
 * limit refuses (429 `rls_unavailable`); a fail-open one allows, enforcing the same bucket locally
 * while `localFallback` is on (the default), so one replica alone still holds the limit.
 * @example
 * const global = createGlobalRateLimiter(policy.rateLimit.global, paths, { bus, domain: "ingress" });
 * const r = await global.check(request);
 */
export function createGlobalRateLimiter(
  limits: readonly GlobalRateLimitConfig[],
  paths: PathNormalizationConfig,
  options: GlobalRateLimiterOptions,
): GlobalRateLimiter {
  const now = options.now ?? Date.now;
  const backoffMs = options.backoffMs ?? 1000;
  const compiled = limits.map((config) => compileLimit(config, paths));
  const fallback = createLocalRateLimiter(
    limits.filter((l) => l.failureMode === "open" && l.localFallback !== false).map((l) => ({ ...l, maxKeys: 10_000 })),
    paths,
    now,
  );
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  let downUntil = -Infinity;

  function unavailable(req: RateLimitRequest, applicable: readonly CompiledLimit<GlobalRateLimitConfig>[]): RateLimitResult {
    const closed = applicable.find((l) => l.config.failureMode === "closed");
    if (closed) {
      const state = { allowed: false, remaining: 0, nextFillMs: closed.config.fillIntervalMs };
      return { allowed: false, detail: "rls_unavailable", limit: closed.config.name, headers: rateLimitHeaders(closed.config.name, closed.config, state) };
    }
    return fallback.check(req);
  }

  return {
    active: compiled.length > 0,
    async check(req) {
      if (compiled.length === 0) return { allowed: true, headers: [] };
      const path = normalizeAuthzPath(req.path, paths) ?? req.path;
      const applicable = compiled.filter((l) => l.applies(req, path));
      if (applicable.length === 0) return { allowed: true, headers: [] };
      if (now() < downUntil) return unavailable(req, applicable);
      const body: RlsRequest = {
        domain: options.domain,
        descriptors: applicable.map((l) => ({
          name: l.config.name,
          key: l.keyOf(req, path),
          tokensPerFill: l.config.tokensPerFill,
          fillIntervalMs: l.config.fillIntervalMs,
          maxTokens: l.config.maxTokens,
        })),
      };
      const timeoutMs = Math.max(...applicable.map((l) => l.config.timeoutMs ?? 100));
      const reply = await options.bus.request(RLS_SUBJECT, encoder.encode(JSON.stringify(body)), { timeoutMs });
      let parsed: RlsReply | undefined;
      if (reply.ok) {
        try {
          parsed = JSON.parse(decoder.decode(reply.data)) as RlsReply;
        } catch {
          parsed = undefined;
        }
      }
      if (!parsed || !Array.isArray(parsed.results) || parsed.results.length !== applicable.length) {
        downUntil = now() + backoffMs;
        return unavailable(req, applicable);
      }
      let tightest: [string, string][] = [];
      let least = Infinity;
      for (let i = 0; i < applicable.length; i++) {
        const limit = applicable[i]!.config;
        const state = parsed.results[i]!;
        if (!state.allowed) return { allowed: false, detail: "rate_limited", limit: limit.name, headers: rateLimitHeaders(limit.name, limit, state) };
        if (state.remaining < least) {
          least = state.remaining;
          tightest = rateLimitHeaders(limit.name, limit, state);
        }
      }
      return { allowed: true, headers: tightest };
    },
  };
}

export interface RateLimitServiceOptions {
  readonly now?: () => number;
  /** Buckets kept; least recently used forgotten beyond (default 100000). */
  readonly maxKeys?: number;
}

/**
 * createRateLimitService answers `weft.rls.check` for every replica: it keeps one token bucket per
 * (domain, limit, shape, key) and takes from all descriptors of a request or from none. Mounted by
 * the control plane; a malformed request gets no reply (the caller applies its failure mode).
 * @example
 * const rls = createRateLimitService(bus);
 * // later: rls.close();
 */
export function createRateLimitService(bus: Bus, options: RateLimitServiceOptions = {}): { close(): void; readonly size: number } {
  const now = options.now ?? Date.now;
  const buckets = createLru<TokenBucket>(options.maxKeys ?? 100_000);
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  const validShape = (d: RlsDescriptor) =>
    typeof d?.name === "string" &&
    typeof d.key === "string" &&
    d.name.length <= 128 &&
    d.key.length <= 4096 &&
    [d.tokensPerFill, d.fillIntervalMs, d.maxTokens].every((n) => Number.isInteger(n) && n >= 1 && n <= 1_000_000_000);

  const sub = bus.subscribe(RLS_SUBJECT, (msg) => {
    if (!msg.respond) return;
    let req: RlsRequest;
    try {
      req = JSON.parse(decoder.decode(msg.data)) as RlsRequest;
    } catch {
      return;
    }
    if (typeof req?.domain !== "string" || !Array.isArray(req.descriptors) || req.descriptors.length > 64 || !req.descriptors.every(validShape)) return;
    const t = now();
    const found = req.descriptors.map((d) => {
      const id = JSON.stringify([req.domain, d.name, d.tokensPerFill, d.fillIntervalMs, d.maxTokens, d.key]);
      let bucket = buckets.get(id);
      if (!bucket) {
        bucket = createTokenBucket(d, t);
        buckets.set(id, bucket);
      }
      return bucket;
    });
    const peeked = found.map((b) => b.peek(t));
    const results = peeked.some((s) => !s.allowed) ? peeked : found.map((b) => b.take(t));
    const reply: RlsReply = { results };
    msg.respond(encoder.encode(JSON.stringify(reply)));
  });
  return {
    close: () => sub.unsubscribe(),
    get size() {
      return buckets.size;
    },
  };
}
