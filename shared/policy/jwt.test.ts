import { test } from "node:test";
import assert from "node:assert/strict";
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, UnsecuredJWT, type CryptoKey, type JSONWebKeySet, type JWTPayload } from "jose";
import { validatePolicySet, type JwtProviderConfig } from "../config/index.ts";
import { createJwtAuthenticator, type AuthnResult } from "./jwt.ts";

const ISS = "https://idp.example";
const NOW_MS = Date.UTC(2030, 0, 1);
const nowSec = NOW_MS / 1000;

const rsa = await generateKeyPair("RS256", { extractable: true });
const rsa2 = await generateKeyPair("RS256", { extractable: true });
const jwkOf = async (key: CryptoKey, kid: string) => ({ ...(await exportJWK(key)), kid, alg: "RS256", use: "sig" });
const JWKS1: JSONWebKeySet = { keys: [await jwkOf(rsa.publicKey, "k1")] };
const JWKS2: JSONWebKeySet = { keys: [await jwkOf(rsa2.publicKey, "k2")] };

function provider(over: Record<string, unknown> = {}): JwtProviderConfig {
  const r = validatePolicySet({ authn: { jwt: [{ issuer: ISS, jwks: JWKS1, audiences: ["shop"], ...over }] } });
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  return r.value.authn!.jwt[0]!;
}

async function sign(claims: JWTPayload = {}, opts: { kid?: string; key?: CryptoKey } = {}): Promise<string> {
  return new SignJWT({ iss: ISS, sub: "alice", aud: "shop", iat: nowSec, exp: nowSec + 600, ...claims })
    .setProtectedHeader({ alg: "RS256", kid: opts.kid ?? "k1" })
    .sign(opts.key ?? rsa.privateKey);
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
function failure(r: AuthnResult): string {
  assert.equal(r.ok, false, "the token was accepted");
  return r.ok ? "" : r.failure;
}

test("a valid token yields the iss/sub principal and is not forwarded by default", async () => {
  const authn = createJwtAuthenticator([provider()], { now: () => NOW_MS });
  const r = await authn.authenticate(bearer(await sign()));
  assert.ok(r.ok);
  assert.equal(r.requestPrincipal, `${ISS}/alice`);
  assert.deepEqual(r.removeHeaders, ["authorization"]);
});

test("a request without a token passes as anonymous; another auth scheme is not a token", async () => {
  const authn = createJwtAuthenticator([provider()], { now: () => NOW_MS });
  const anon = await authn.authenticate({});
  assert.ok(anon.ok);
  assert.equal(anon.requestPrincipal, undefined);
  const basic = await authn.authenticate({ authorization: "Basic YWxpY2U6cHc=" });
  assert.ok(basic.ok);
  assert.equal(basic.requestPrincipal, undefined);
});

test("an invalid token answers 401 with WWW-Authenticate", async () => {
  const authn = createJwtAuthenticator([provider()], { now: () => NOW_MS });
  const r = await authn.authenticate(bearer("not.a.jwt"));
  assert.equal(failure(r), "jwt_malformed");
  assert.ok(!r.ok && r.status === 401 && r.headers.some(([n, v]) => n === "www-authenticate" && v.startsWith("Bearer")));
});

test("alg none is refused", async () => {
  const authn = createJwtAuthenticator([provider()], { now: () => NOW_MS });
  const token = new UnsecuredJWT({ iss: ISS, sub: "alice", aud: "shop", exp: nowSec + 600 }).encode();
  assert.equal(failure(await authn.authenticate(bearer(token))), "jwt_alg_not_allowed");
});

test("algorithm confusion: HS256 signed with the RSA public key as secret is refused", async () => {
  const pem = new TextEncoder().encode(await exportSPKI(rsa.publicKey));
  const forged = await new SignJWT({ iss: ISS, sub: "mallory", aud: "shop", exp: nowSec + 600 }).setProtectedHeader({ alg: "HS256", kid: "k1" }).sign(pem);
  const jwkSecret = new TextEncoder().encode(JSON.stringify(JWKS1.keys[0]));
  const forged2 = await new SignJWT({ iss: ISS, sub: "mallory", aud: "shop", exp: nowSec + 600 }).setProtectedHeader({ alg: "HS256", kid: "k1" }).sign(jwkSecret);
  const pinned = createJwtAuthenticator([provider()], { now: () => NOW_MS });
  assert.equal(failure(await pinned.authenticate(bearer(forged))), "jwt_alg_not_allowed");
  assert.equal(failure(await pinned.authenticate(bearer(forged2))), "jwt_alg_not_allowed");
  // HS* cannot even be configured: the allow-list is asymmetric only.
  assert.equal(validatePolicySet({ authn: { jwt: [{ issuer: ISS, jwks: JWKS1, algorithms: ["RS256", "HS256"] }] } }).ok, false);
});

test("expired tokens are refused beyond the clock skew and accepted within it", async () => {
  const authn = createJwtAuthenticator([provider({ clockSkewSec: 30 })], { now: () => NOW_MS });
  assert.equal(failure(await authn.authenticate(bearer(await sign({ exp: nowSec - 31 })))), "jwt_expired");
  assert.ok((await authn.authenticate(bearer(await sign({ exp: nowSec - 29 })))).ok);
});

test("a token not valid yet (nbf in the future) is refused", async () => {
  const authn = createJwtAuthenticator([provider({ clockSkewSec: 60 })], { now: () => NOW_MS });
  assert.equal(failure(await authn.authenticate(bearer(await sign({ nbf: nowSec + 120 })))), "jwt_not_yet_valid");
  assert.ok((await authn.authenticate(bearer(await sign({ nbf: nowSec + 30 })))).ok);
});

test("a token from an unknown issuer is refused", async () => {
  const authn = createJwtAuthenticator([provider()], { now: () => NOW_MS });
  assert.equal(failure(await authn.authenticate(bearer(await sign({ iss: "https://evil.example" })))), "jwt_unknown_issuer");
});

test("a token for another audience is refused with 403, as Envoy does", async () => {
  const authn = createJwtAuthenticator([provider()], { now: () => NOW_MS });
  const r = await authn.authenticate(bearer(await sign({ aud: "billing" })));
  assert.equal(failure(r), "jwt_wrong_audience");
  assert.ok(!r.ok && r.status === 403);
});

test("a bad signature is refused: tampered payload and a foreign key under a known kid", async () => {
  const authn = createJwtAuthenticator([provider()], { now: () => NOW_MS });
  const [h, , s] = (await sign()).split(".");
  const payload = Buffer.from(JSON.stringify({ iss: ISS, sub: "admin", aud: "shop", exp: nowSec + 600 })).toString("base64url");
  assert.equal(failure(await authn.authenticate(bearer(`${h}.${payload}.${s}`))), "jwt_bad_signature");
  assert.equal(failure(await authn.authenticate(bearer(await sign({}, { key: rsa2.privateKey })))), "jwt_bad_signature");
});

test("an unknown kid is refused", async () => {
  const authn = createJwtAuthenticator([provider()], { now: () => NOW_MS });
  assert.equal(failure(await authn.authenticate(bearer(await sign({}, { kid: "nope" })))), "jwt_unknown_kid");
});

test("an oversize token is refused before it is decoded", async () => {
  const authn = createJwtAuthenticator([provider({ maxTokenBytes: 512 })], { now: () => NOW_MS });
  const big = await sign({ pad: "x".repeat(600) });
  assert.equal(failure(await authn.authenticate(bearer(big))), "jwt_too_large");
  assert.equal(failure(await authn.authenticate(bearer("A".repeat(100_000)))), "jwt_too_large");
});

test("a token in two places, or two Authorization headers, is refused", async () => {
  const authn = createJwtAuthenticator([provider({ fromCookies: ["session"] })], { now: () => NOW_MS });
  const token = await sign();
  assert.equal(failure(await authn.authenticate({ ...bearer(token), cookie: `session=${token}` })), "jwt_multiple_tokens");
  assert.equal(failure(await authn.authenticate({ authorization: [`Bearer ${token}`, `Bearer ${token}`] })), "jwt_multiple_tokens");
  assert.equal(failure(await authn.authenticate({ authorization: `Bearer ${token}, Bearer ${token}` })), "jwt_multiple_tokens");
});

test("a token without exp is refused (jose does not require it unless told)", async () => {
  const authn = createJwtAuthenticator([provider()], { now: () => NOW_MS });
  const token = await new SignJWT({ iss: ISS, sub: "alice", aud: "shop" }).setProtectedHeader({ alg: "RS256", kid: "k1" }).sign(rsa.privateKey);
  assert.equal(failure(await authn.authenticate(bearer(token))), "jwt_missing_claim");
});

test("a cookie token is removed from the cookie header, other cookies kept", async () => {
  const authn = createJwtAuthenticator([provider({ fromCookies: ["session"], fromHeaders: [] })], { now: () => NOW_MS });
  const r = await authn.authenticate({ cookie: `theme=dark; session=${await sign()}; lang=en` });
  assert.ok(r.ok);
  assert.equal(r.requestPrincipal, `${ISS}/alice`);
  assert.ok(r.removeHeaders.includes("cookie"));
  assert.deepEqual(r.requestHeaders, [["cookie", "theme=dark; lang=en"]]);
});

test("claims are copied to headers, never with CR/LF, and client-sent copies are always removed", async () => {
  const authn = createJwtAuthenticator([provider({ forwardOriginalToken: true, outputClaimToHeaders: [{ header: "x-user", claim: "sub" }, { header: "x-tier", claim: "tier" }, { header: "x-groups", claim: "groups" }] })], { now: () => NOW_MS });
  const r = await authn.authenticate(bearer(await sign({ tier: "gold\r\nx-admin: 1", groups: ["a", "b"] })));
  assert.ok(r.ok);
  assert.deepEqual(r.requestHeaders, [["x-user", "alice"], ["x-groups", "a,b"]]);
  assert.deepEqual(r.removeHeaders, ["x-user", "x-tier", "x-groups"]);
  const anon = await authn.authenticate({ "x-user": "admin" });
  assert.ok(anon.ok && anon.removeHeaders.includes("x-user"));
});

test("a cached token is still refused once it expires", async () => {
  let now = NOW_MS;
  const authn = createJwtAuthenticator([provider({ clockSkewSec: 0 })], { now: () => now });
  const token = await sign({ exp: nowSec + 10 });
  assert.ok((await authn.authenticate(bearer(token))).ok);
  now += 5000;
  assert.ok((await authn.authenticate(bearer(token))).ok);
  now += 6000;
  assert.equal(failure(await authn.authenticate(bearer(token))), "jwt_expired");
});

function remoteJwks(initial: JSONWebKeySet) {
  let served: JSONWebKeySet | Error = initial;
  let fetches = 0;
  return {
    fetchJwks: async () => {
      fetches++;
      if (served instanceof Error) throw served;
      return structuredClone(served);
    },
    serve(next: JSONWebKeySet | Error) {
      served = next;
    },
    get fetches() {
      return fetches;
    },
  };
}

test("JWKS rotation: a new kid is picked up, and the removed key stops working (cached tokens too)", async () => {
  let now = NOW_MS;
  const idp = remoteJwks(JWKS1);
  const authn = createJwtAuthenticator([provider({ jwks: undefined, jwksUri: "https://idp.example/jwks", jwksCooldownMs: 1000 })], { now: () => now, fetchJwks: idp.fetchJwks });
  const old = await sign();
  assert.ok((await authn.authenticate(bearer(old))).ok);
  assert.equal(idp.fetches, 1);
  idp.serve(JWKS2);
  now += 1500;
  const fresh = await sign({}, { kid: "k2", key: rsa2.privateKey });
  const r = await authn.authenticate(bearer(fresh));
  assert.ok(r.ok, "the new kid was not picked up");
  assert.equal(idp.fetches, 2);
  assert.equal(failure(await authn.authenticate(bearer(old))), "jwt_unknown_kid");
  assert.equal(failure(await authn.authenticate(bearer(await sign({ sub: "bob" })))), "jwt_unknown_kid");
});

test("unknown kids refetch the JWKS at most once per cooldown", async () => {
  let now = NOW_MS;
  const idp = remoteJwks(JWKS1);
  const authn = createJwtAuthenticator([provider({ jwks: undefined, jwksUri: "https://idp.example/jwks", jwksCooldownMs: 30_000 })], { now: () => now, fetchJwks: idp.fetchJwks });
  assert.ok((await authn.authenticate(bearer(await sign()))).ok);
  for (let i = 0; i < 5; i++) {
    now += 1000;
    assert.equal(failure(await authn.authenticate(bearer(await sign({}, { kid: `bogus-${i}` })))), "jwt_unknown_kid");
  }
  assert.equal(idp.fetches, 1);
  now += 30_000;
  await authn.authenticate(bearer(await sign({}, { kid: "bogus-late" })));
  assert.equal(idp.fetches, 2);
});

test("a key endpoint down past the cache lifetime: known keys keep working, unknown kids fail closed", async () => {
  let now = NOW_MS;
  const idp = remoteJwks(JWKS1);
  const authn = createJwtAuthenticator([provider({ jwks: undefined, jwksUri: "https://idp.example/jwks", jwksCacheMs: 60_000, jwksCooldownMs: 1000 })], { now: () => now, fetchJwks: idp.fetchJwks });
  assert.ok((await authn.authenticate(bearer(await sign()))).ok);
  idp.serve(new Error("down"));
  now += 120_000;
  assert.ok((await authn.authenticate(bearer(await sign({ sub: "carol", iat: (now / 1000) | 0, exp: now / 1000 + 60 })))).ok);
  now += 2000;
  assert.equal(failure(await authn.authenticate(bearer(await sign({ exp: now / 1000 + 60 }, { kid: "k2", key: rsa2.privateKey })))), "jwt_unknown_kid");
});

test("with no keys ever loaded every token is refused (fail closed)", async () => {
  const idp = remoteJwks(JWKS1);
  idp.serve(new Error("down"));
  const authn = createJwtAuthenticator([provider({ jwks: undefined, jwksUri: "https://idp.example/jwks" })], { now: () => NOW_MS, fetchJwks: idp.fetchJwks });
  assert.equal(failure(await authn.authenticate(bearer(await sign()))), "jwks_unavailable");
});

test("the schema refuses HS*, symmetric keys and alg none", () => {
  const hs = validatePolicySet({ authn: { jwt: [{ issuer: ISS, jwksUri: "https://idp/jwks", algorithms: ["HS256"] }] } });
  assert.equal(hs.ok, false);
  const oct = validatePolicySet({ authn: { jwt: [{ issuer: ISS, jwks: { keys: [{ kty: "oct", k: "c2VjcmV0" }] } }] } });
  assert.equal(oct.ok, false);
  const none = validatePolicySet({ authn: { jwt: [{ issuer: ISS, jwksUri: "https://idp/jwks", algorithms: ["none"] }] } });
  assert.equal(none.ok, false);
  const both = validatePolicySet({ authn: { jwt: [{ issuer: ISS }] } });
  assert.ok(!both.ok && both.issues.some((i) => i.path === "authn.jwt.0"));
});
