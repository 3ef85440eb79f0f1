import { test } from "node:test";
import assert from "node:assert/strict";
import { SignJWT, UnsecuredJWT } from "jose";
import { generateJoinTokenKey, mintJoinToken, verifyJoinToken } from "./join-token.ts";

const T0 = Date.UTC(2030, 0, 1);

test("a minted join token verifies and returns its namespace, service account and id", async () => {
  const key = generateJoinTokenKey();
  const token = await mintJoinToken({ namespace: "default", serviceAccount: "web", ttlMs: 600_000, now: T0 }, key);
  const r = await verifyJoinToken(token, key, T0 + 1000);
  assert.equal(r.ok, true);
  if (!r.ok) return;
  assert.equal(r.namespace, "default");
  assert.equal(r.serviceAccount, "web");
  assert.match(r.tokenId, /^[0-9a-f-]{36}$/);
  assert.equal(r.expiresAt, T0 + 600_000);
});

test("each minted join token has its own id", async () => {
  const key = generateJoinTokenKey();
  const ids = new Set<string>();
  for (let i = 0; i < 5; i++) {
    const r = await verifyJoinToken(await mintJoinToken({ namespace: "a", serviceAccount: "b", ttlMs: 60_000, now: T0 }, key), key, T0);
    assert.ok(r.ok);
    if (r.ok) ids.add(r.tokenId);
  }
  assert.equal(ids.size, 5);
});

test("an expired join token is refused as expired", async () => {
  const key = generateJoinTokenKey();
  const token = await mintJoinToken({ namespace: "default", serviceAccount: "web", ttlMs: 60_000, now: T0 }, key);
  assert.deepEqual(await verifyJoinToken(token, key, T0 + 61_000), { ok: false, reason: "expired" });
});

test("a join token signed with another key is refused as bad_signature", async () => {
  const token = await mintJoinToken({ namespace: "default", serviceAccount: "web", ttlMs: 60_000, now: T0 }, generateJoinTokenKey());
  assert.deepEqual(await verifyJoinToken(token, generateJoinTokenKey(), T0), { ok: false, reason: "bad_signature" });
});

test("a join token whose claims were edited is refused as bad_signature", async () => {
  const key = generateJoinTokenKey();
  const token = await mintJoinToken({ namespace: "default", serviceAccount: "web", ttlMs: 60_000, now: T0 }, key);
  const [h, p, s] = token.split(".");
  const claims = JSON.parse(Buffer.from(p!, "base64url").toString());
  claims.sa = "admin";
  const forged = [h, Buffer.from(JSON.stringify(claims)).toString("base64url"), s].join(".");
  assert.deepEqual(await verifyJoinToken(forged, key, T0), { ok: false, reason: "bad_signature" });
});

test("garbage, unsigned tokens and other HS256 JWTs under the same key are malformed", async () => {
  const key = generateJoinTokenKey();
  assert.deepEqual(await verifyJoinToken("not-a-token", key, T0), { ok: false, reason: "malformed" });
  const unsecured = new UnsecuredJWT({ ns: "default", sa: "web" }).setAudience("weft-ca").setJti("x").setExpirationTime(T0 / 1000 + 60).encode();
  assert.deepEqual(await verifyJoinToken(unsecured, key, T0), { ok: false, reason: "malformed" });
  // Right key and claims but not a join token (no typ): must not be accepted as one.
  const other = await new SignJWT({ ns: "default", sa: "web" })
    .setProtectedHeader({ alg: "HS256" })
    .setAudience("weft-ca")
    .setJti("x")
    .setExpirationTime(T0 / 1000 + 60)
    .sign(key);
  assert.deepEqual(await verifyJoinToken(other, key, T0), { ok: false, reason: "malformed" });
});

test("minting refuses names that are not Kubernetes labels and short keys", async () => {
  const key = generateJoinTokenKey();
  await assert.rejects(mintJoinToken({ namespace: "a/b", serviceAccount: "web", ttlMs: 1000 }, key));
  await assert.rejects(mintJoinToken({ namespace: "default", serviceAccount: "web", ttlMs: 1000 }, new Uint8Array(8)));
});
