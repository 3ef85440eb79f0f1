import { test } from "node:test";
import assert from "node:assert/strict";
import { validatePolicySet, type PolicySetInput } from "../config/index.ts";
import type { RequestHead } from "../proxy/types.ts";
import { createPolicyGate } from "./gate.ts";
import { createTestIssuer } from "./testing.ts";

const idp = createTestIssuer({ issuer: "https://idp.gate.test", kid: "gate-1" });
const head = (over: Partial<RequestHead> = {}): RequestHead => ({
  method: "GET",
  scheme: "http",
  authority: "shop.example.com",
  path: "/",
  headers: {},
  clientIp: "10.0.0.1",
  localPort: 8080,
  ...over,
});
function gate(input: PolicySetInput, now = () => Date.now()) {
  const r = validatePolicySet(input);
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  return createPolicyGate(r.value, { now, fetchJwks: () => idp.jwks() });
}
const POLICY: PolicySetInput = {
  authn: { jwt: [{ issuer: idp.issuer, jwksUri: "https://idp.gate.test/jwks", audiences: ["shop"], outputClaimToHeaders: [{ header: "x-user", claim: "sub" }] }] },
  authz: [
    { name: "no-admin", action: "DENY", rules: [{ to: [{ paths: ["/admin*"] }] }] },
    { name: "users", action: "ALLOW", rules: [{ from: [{ requestPrincipals: [`${idp.issuer}/*`] }] }, { to: [{ paths: ["/public*"] }] }] },
  ],
  rateLimit: { local: [{ name: "per-user", key: "requestPrincipal", tokensPerFill: 1, fillIntervalMs: 60_000, maxTokens: 2 }] },
};

test("an empty policy set lets every request through untouched", async () => {
  const v = await gate({}).evaluate(head());
  assert.deepEqual(v, { ok: true });
});

test("a verified token becomes the principal; the token and client claim headers are dropped upstream", async () => {
  const g = gate(POLICY);
  const token = await idp.mint({ sub: "alice" }, { audience: "shop" });
  const v = await g.evaluate(head({ path: "/orders", headers: { authorization: `Bearer ${token}`, "x-user": "root" } }));
  assert.ok(v.ok);
  assert.equal(v.principal, `${idp.issuer}/alice`);
  assert.deepEqual(v.requestHeaders, [["x-user", "alice"]]);
  assert.deepEqual([...(v.removeHeaders ?? [])].sort(), ["authorization", "x-user"]);
});

test("a bad token is jwt_invalid with WWW-Authenticate; anonymous requests reach authorization", async () => {
  const g = gate(POLICY);
  const expired = await idp.mint({ sub: "alice" }, { audience: "shop", expiresInSec: -3600 });
  const bad = await g.evaluate(head({ path: "/public/x", headers: { authorization: `Bearer ${expired}` } }));
  assert.ok(!bad.ok);
  assert.equal(bad.reason, "jwt_invalid");
  assert.ok(bad.headers?.some(([n]) => n === "www-authenticate"));
  const pub = await g.evaluate(head({ path: "/public/x" }));
  assert.ok(pub.ok);
  assert.equal(pub.principal, undefined);
  assert.deepEqual(pub.removeHeaders, ["x-user"]);
  const anon = await g.evaluate(head({ path: "/orders" }));
  assert.ok(!anon.ok && anon.reason === "denied");
});

test("authorization sees the normalised path and a DENY beats the principal's ALLOW", async () => {
  const g = gate(POLICY);
  const token = await idp.mint({ sub: "alice" }, { audience: "shop" });
  const v = await g.evaluate(head({ path: "//%61dmin/../admin/keys", headers: { authorization: `Bearer ${token}` } }));
  assert.ok(!v.ok && v.reason === "denied");
  const d = await g.decide({ method: "GET", authority: "a", path: "/admin%2F", headers: {}, sourceIp: "10.0.0.1" });
  assert.equal(d.detail, "denied_by_policy");
  assert.equal(d.policy, "no-admin");
});

test("rate limits apply after authorization, per request principal, with 429 headers", async () => {
  const g = gate(POLICY);
  const alice = await idp.mint({ sub: "alice" }, { audience: "shop" });
  const bob = await idp.mint({ sub: "bob" }, { audience: "shop" });
  const as = (t: string) => head({ path: "/orders", headers: { authorization: `Bearer ${t}` } });
  assert.ok((await g.evaluate(as(alice))).ok);
  assert.ok((await g.evaluate(as(alice))).ok);
  const third = await g.evaluate(as(alice));
  assert.ok(!third.ok && third.reason === "rate_limited");
  assert.ok(third.headers?.some(([n]) => n === "retry-after"));
  assert.ok((await g.evaluate(as(bob))).ok);
});

test("remoteIpBlocks use x-forwarded-for only as far as the trusted hops allow", async () => {
  const r = validatePolicySet({ authz: [{ name: "office", rules: [{ from: [{ remoteIpBlocks: ["203.0.113.0/24"] }] }] }] });
  assert.ok(r.ok);
  const trusting = createPolicyGate(r.value, { xffTrustedHops: 1 });
  const blind = createPolicyGate(r.value);
  const h = head({ headers: { "x-forwarded-for": "198.51.100.7, 203.0.113.5" } });
  assert.equal((await trusting.evaluate(h)).ok, true);
  assert.equal((await blind.evaluate(h)).ok, false);
});

test("the gate fits the engine's PolicyGate contract", () => {
  const fits: import("../proxy/engine.ts").PolicyGate = gate({});
  assert.equal(typeof fits.evaluate, "function");
});
