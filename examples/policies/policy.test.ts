// Run with `weft test examples/policies` (or `node scripts/test.mjs examples/policies`). Every case here fails when
// the matching rule in policy.ts is weakened or removed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { checkPolicy, mintJwt } from "weft/testing";
import { shopPolicy } from "./policy.ts";

const policy = () => checkPolicy(shopPolicy);
const customer = (claims: Record<string, unknown> = {}) => mintJwt({ sub: "alice", ...claims }, { audience: "shop" });

test("the catalogue is public for reads only", async () => {
  const p = policy();
  assert.equal((await p.request({ path: "/catalog/shoes" })).allowed, true);
  const post = await p.request({ method: "POST", path: "/catalog/shoes" });
  assert.equal(post.allowed, false);
  assert.equal(post.detail, "no_allow_match");
});

test("the admin API is denied from outside the office under every spelling", async () => {
  const p = policy();
  for (const path of ["/admin", "/admin/users", "//admin", "/%61dmin", "/catalog/../admin", "/admin%2F", "/./admin"]) {
    const r = await p.request({ path, sourceIp: "203.0.113.9", token: await customer() });
    assert.equal(r.allowed, false, path);
    assert.equal(r.policy, "no-admin-from-outside", path);
  }
});

test("staff on the office network reach the admin API", async () => {
  const r = await policy().request({ path: "/admin/users", sourceIp: "10.20.3.4" });
  assert.equal(r.allowed, true);
  assert.match(r.explain(), /shop rule 4/);
});

test("signed-in customers manage their orders; anonymous callers do not", async () => {
  const p = policy();
  assert.equal((await p.request({ path: "/orders/42", token: await customer() })).allowed, true);
  const anon = await p.request({ path: "/orders/42" });
  assert.equal(anon.status, 403);
});

test("a token for another audience, an expired one or one from another issuer is refused", async () => {
  const p = policy();
  const wrongAud = await p.request({ path: "/orders", token: await mintJwt({ sub: "alice" }, { audience: "blog" }) });
  assert.equal(wrongAud.detail, "jwt_wrong_audience");
  const expired = await p.request({ path: "/orders", token: await mintJwt({ sub: "alice" }, { audience: "shop", expiresInSec: -600 }) });
  assert.equal(expired.status, 401);
  assert.equal(expired.detail, "jwt_expired");
  const forged = await p.request({ path: "/orders", token: await mintJwt({ sub: "alice", iss: "https://evil.test" }, { audience: "shop" }) });
  assert.equal(forged.detail, "jwt_unknown_issuer");
});

test("banned accounts cannot order, but still browse like anyone else", async () => {
  const p = policy();
  const banned = await customer({ status: "banned" });
  const r = await p.request({ method: "POST", path: "/orders", token: banned });
  assert.equal(r.allowed, false);
  assert.equal(r.policy, "banned");
  assert.equal((await p.request({ path: "/catalog", token: banned })).allowed, true);
});

test("refunds need the support role", async () => {
  const p = policy();
  assert.equal((await p.request({ method: "POST", path: "/refunds", claims: { iss: "https://issuer.weft.test", sub: "sam", roles: ["staff", "support"] } })).allowed, true);
  assert.equal((await p.request({ method: "POST", path: "/refunds", claims: { iss: "https://issuer.weft.test", sub: "al", roles: ["staff"] } })).allowed, false);
});

test("only the billing service may call the payment webhook", async () => {
  const p = policy();
  assert.equal((await p.request({ method: "POST", path: "/webhooks/payment", principal: "spiffe://cluster.local/ns/billing/sa/worker" })).allowed, true);
  assert.equal((await p.request({ method: "POST", path: "/webhooks/payment", principal: "spiffe://cluster.local/ns/shop/sa/web" })).allowed, false);
  assert.equal((await p.request({ method: "POST", path: "/webhooks/payment" })).allowed, false);
});

test("checkout is limited to three orders a minute per customer", async () => {
  let now = Date.now();
  const p = checkPolicy(shopPolicy, { now: () => now });
  const token = await customer();
  const results = [];
  for (let i = 0; i < 4; i++) results.push((await p.request({ method: "POST", path: "/orders", token })).status);
  assert.deepEqual(results, [200, 200, 200, 429]);
  const bob = await mintJwt({ sub: "bob" }, { audience: "shop" });
  assert.equal((await p.request({ method: "POST", path: "/orders", token: bob })).status, 200);
  now += 60_000;
  assert.equal((await p.request({ method: "POST", path: "/orders", token })).status, 200);
});
