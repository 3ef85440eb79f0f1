import { test } from "node:test";
import assert from "node:assert/strict";
import { createMemoryBus, createMemoryNetwork } from "../bus/index.ts";
import type { GlobalRateLimitConfig, LocalRateLimitConfig, PathNormalizationConfig } from "../config/index.ts";
import type { AuthzRequest } from "./authz.ts";
import { createGlobalRateLimiter, createLocalRateLimiter, createRateLimitService, createTokenBucket } from "./ratelimit.ts";

const PATHS: PathNormalizationConfig = { encodedSlashes: "keep", caseInsensitive: false };
const req = (over: Partial<AuthzRequest> = {}): AuthzRequest => ({ method: "GET", authority: "a", path: "/", headers: {}, sourceIp: "10.0.0.1", ...over });
const local = (over: Partial<LocalRateLimitConfig> = {}): LocalRateLimitConfig => ({ name: "l", tokensPerFill: 1, fillIntervalMs: 1000, maxTokens: 3, key: "none", maxKeys: 100, ...over });
const header = (headers: readonly (readonly [string, string])[], name: string) => headers.find(([n]) => n === name)?.[1];

test("a token bucket allows its burst at once, then one token per fill", () => {
  const b = createTokenBucket({ tokensPerFill: 1, fillIntervalMs: 1000, maxTokens: 3 }, 0);
  assert.deepEqual([b.take(0).allowed, b.take(0).allowed, b.take(0).allowed, b.take(0).allowed], [true, true, true, false]);
  assert.equal(b.take(999).allowed, false);
  assert.equal(b.take(1000).allowed, true);
  assert.equal(b.take(1500).allowed, false);
  assert.equal(b.take(1500).nextFillMs, 500);
});

test("a token bucket refills by whole intervals and never beyond maxTokens", () => {
  const b = createTokenBucket({ tokensPerFill: 2, fillIntervalMs: 100, maxTokens: 5 }, 0);
  for (let i = 0; i < 5; i++) b.take(0);
  assert.equal(b.peek(250).remaining, 4);
  assert.equal(b.peek(10_000).remaining, 5);
  assert.equal(b.take(10_000).remaining, 4);
});

test("a clock stepping back never mints tokens", () => {
  const b = createTokenBucket({ tokensPerFill: 1, fillIntervalMs: 1000, maxTokens: 1 }, 5000);
  assert.equal(b.take(5000).allowed, true);
  assert.equal(b.take(1000).allowed, false);
  assert.equal(b.take(1999).allowed, false);
  assert.equal(b.take(2000).allowed, true);
});

test("the local limiter keys buckets per source IP and answers with retry-after and RateLimit headers", () => {
  let now = 0;
  const limiter = createLocalRateLimiter([local({ name: "per-ip", key: "sourceIp", maxTokens: 2, fillIntervalMs: 1500 })], PATHS, () => now);
  assert.equal(limiter.check(req()).allowed, true);
  assert.equal(limiter.check(req()).allowed, true);
  const refused = limiter.check(req());
  assert.ok(!refused.allowed);
  assert.equal(refused.detail, "rate_limited");
  assert.equal(refused.limit, "per-ip");
  assert.equal(header(refused.headers, "retry-after"), "2");
  assert.equal(header(refused.headers, "ratelimit"), '"per-ip";r=0;t=2');
  assert.equal(header(refused.headers, "ratelimit-policy"), '"per-ip";q=1;w=2;burst=2');
  assert.equal(header(refused.headers, "x-ratelimit-remaining"), "0");
  assert.equal(limiter.check(req({ sourceIp: "10.0.0.2" })).allowed, true);
  now = 1500;
  assert.equal(limiter.check(req()).allowed, true);
});

test("retry-after is never shorter than the time to the next token", () => {
  let now = 0;
  const limiter = createLocalRateLimiter([local({ maxTokens: 1, fillIntervalMs: 60_000 })], PATHS, () => now);
  limiter.check(req());
  now = 100;
  const r = limiter.check(req());
  assert.ok(!r.allowed);
  assert.ok(Number(header(r.headers, "retry-after")) * 1000 >= 59_900);
});

test("keys by header, claim and path; a request without the header shares one bucket", () => {
  const byHeader = createLocalRateLimiter([local({ key: { header: "x-api-key" }, maxTokens: 1 })], PATHS, () => 0);
  assert.equal(byHeader.check(req({ headers: { "x-api-key": "a" } })).allowed, true);
  assert.equal(byHeader.check(req({ headers: { "x-api-key": "b" } })).allowed, true);
  assert.equal(byHeader.check(req({ headers: { "x-api-key": "a" } })).allowed, false);
  assert.equal(byHeader.check(req()).allowed, true);
  assert.equal(byHeader.check(req()).allowed, false);
  const byClaim = createLocalRateLimiter([local({ key: { claim: "tenant" }, maxTokens: 1 })], PATHS, () => 0);
  assert.equal(byClaim.check(req({ claims: { tenant: "t1" } })).allowed, true);
  assert.equal(byClaim.check(req({ claims: { tenant: "t2" } })).allowed, true);
  assert.equal(byClaim.check(req({ claims: { tenant: "t1" } })).allowed, false);
  const byPath = createLocalRateLimiter([local({ key: "path", maxTokens: 1 })], PATHS, () => 0);
  assert.equal(byPath.check(req({ path: "/a" })).allowed, true);
  assert.equal(byPath.check(req({ path: "//a/./" .slice(0, 3) })).allowed, false);
});

test("a limit with match counts only matching requests; all limits or none take a token", () => {
  const limiter = createLocalRateLimiter(
    [local({ name: "writes", match: { methods: ["POST"] }, maxTokens: 1 }), local({ name: "all", maxTokens: 3 })],
    PATHS,
    () => 0,
  );
  assert.equal(limiter.check(req({ method: "POST" })).allowed, true);
  const r = limiter.check(req({ method: "POST" }));
  assert.ok(!r.allowed && r.limit === "writes");
  assert.equal(limiter.check(req()).allowed, true);
  assert.equal(limiter.check(req()).allowed, true);
  assert.equal(limiter.check(req()).allowed, false);
});

test("the key map is bounded: the least recently used key is forgotten", () => {
  const limiter = createLocalRateLimiter([local({ key: "sourceIp", maxTokens: 1, maxKeys: 2 })], PATHS, () => 0);
  limiter.check(req({ sourceIp: "1.1.1.1" }));
  limiter.check(req({ sourceIp: "2.2.2.2" }));
  limiter.check(req({ sourceIp: "3.3.3.3" }));
  // 1.1.1.1 was evicted, so it starts a full bucket again; 3.3.3.3 is still remembered.
  assert.equal(limiter.check(req({ sourceIp: "1.1.1.1" })).allowed, true);
  assert.equal(limiter.check(req({ sourceIp: "3.3.3.3" })).allowed, false);
});

const global = (over: Partial<GlobalRateLimitConfig> = {}): GlobalRateLimitConfig => ({
  name: "g",
  tokensPerFill: 1,
  fillIntervalMs: 60_000,
  maxTokens: 5,
  key: "none",
  failureMode: "open",
  localFallback: true,
  timeoutMs: 50,
  ...over,
});

test("global limits are shared by every replica through weft.rls.check", async () => {
  const network = createMemoryNetwork();
  const control = createMemoryBus({ network });
  const service = createRateLimitService(control, { now: () => 0 });
  const replicas = [0, 1, 2].map(() => createGlobalRateLimiter([global()], PATHS, { bus: createMemoryBus({ network }), domain: "ingress", now: () => 0 }));
  let allowed = 0;
  for (let i = 0; i < 12; i++) if ((await replicas[i % 3]!.check(req())).allowed) allowed++;
  assert.equal(allowed, 5);
  const other = createGlobalRateLimiter([global()], PATHS, { bus: createMemoryBus({ network }), domain: "egress", now: () => 0 });
  assert.equal((await other.check(req())).allowed, true);
  service.close();
});

test("an unreachable global limiter: fail open applies the bucket locally, fail closed refuses", async () => {
  const bus = createMemoryBus();
  const open = createGlobalRateLimiter([global({ maxTokens: 2 })], PATHS, { bus, domain: "d", now: () => 0 });
  assert.deepEqual([(await open.check(req())).allowed, (await open.check(req())).allowed, (await open.check(req())).allowed], [true, true, false]);
  const noFallback = createGlobalRateLimiter([global({ maxTokens: 1, localFallback: false })], PATHS, { bus, domain: "d", now: () => 0 });
  for (let i = 0; i < 3; i++) assert.equal((await noFallback.check(req())).allowed, true);
  const closed = createGlobalRateLimiter([global({ failureMode: "closed" })], PATHS, { bus, domain: "d", now: () => 0 });
  const r = await closed.check(req());
  assert.ok(!r.allowed && r.detail === "rls_unavailable");
});

test("the rate-limit service ignores malformed requests instead of crashing", async () => {
  const network = createMemoryNetwork();
  const service = createRateLimitService(createMemoryBus({ network }));
  const client = createMemoryBus({ network });
  const bad = await client.request("weft.rls.check", new TextEncoder().encode("{not json"), { timeoutMs: 30 });
  assert.equal(bad.ok, false);
  const huge = await client.request(
    "weft.rls.check",
    new TextEncoder().encode(JSON.stringify({ domain: "d", descriptors: [{ name: "x", key: "", tokensPerFill: 1e12, fillIntervalMs: 1, maxTokens: 1 }] })),
    { timeoutMs: 30 },
  );
  assert.equal(huge.ok, false);
  assert.equal(service.size, 0);
  service.close();
});
