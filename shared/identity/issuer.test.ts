import { test } from "node:test";
import assert from "node:assert/strict";
import { createCertificateAuthority } from "./ca.ts";
import { createKeyAndCsr } from "./csr.ts";
import { generateJoinTokenKey, mintJoinToken } from "./join-token.ts";
import {
  createAttestationVerifier,
  decodeSignResponse,
  encodeSignRequest,
  handleSignRequest,
  serviceAccountFromUsername,
  type ReviewServiceAccountToken,
} from "./issuer.ts";
import { validateSvid } from "./svid.ts";

const TD = "example.org";
const WEB = "spiffe://example.org/ns/default/sa/web";
const T0 = Date.UTC(2030, 0, 1);

async function setup(options: { singleUse?: boolean; review?: ReviewServiceAccountToken } = {}) {
  const ca = await createCertificateAuthority({ trustDomain: TD, now: () => T0 });
  const joinTokenKey = generateJoinTokenKey();
  const verify = createAttestationVerifier({
    joinTokenKey,
    now: () => T0,
    ...(options.singleUse ? { singleUse: true } : {}),
    ...(options.review ? { reviewServiceAccountToken: options.review } : {}),
  });
  const handle = handleSignRequest(ca, verify);
  const token = (ns = "default", sa = "web", ttlMs = 600_000) => mintJoinToken({ namespace: ns, serviceAccount: sa, ttlMs, now: T0 }, joinTokenKey);
  return { ca, handle, token };
}

test("a join token gets an SVID for exactly its namespace and service account, plus the bundle", async () => {
  const { ca, handle, token } = await setup();
  const { csrPem } = await createKeyAndCsr(WEB);
  const r = decodeSignResponse(await handle(encodeSignRequest({ csrPem, attestation: { kind: "join_token", token: await token() } })));
  assert.equal(r.ok, true);
  if (!r.ok) return;
  assert.equal(r.spiffeId, WEB);
  assert.deepEqual(r.bundlePem, ca.bundle());
  assert.equal(r.notAfter, new Date(T0 + 3_600_000).toISOString());
  assert.deepEqual(await validateSvid(r.chainPem, r.bundlePem, { now: T0, trustDomain: TD, expectedId: WEB }), { ok: true, spiffeId: WEB });
});

test("a CSR asking for an ID the token does not prove is refused as id_not_attested", async () => {
  const { handle, token } = await setup();
  const { csrPem } = await createKeyAndCsr("spiffe://example.org/ns/kube-system/sa/admin");
  const r = decodeSignResponse(await handle(encodeSignRequest({ csrPem, attestation: { kind: "join_token", token: await token() } })));
  assert.deepEqual(r, { ok: false, reason: "id_not_attested" });
});

test("a join token signed with another key is refused as join_token_invalid", async () => {
  const { handle } = await setup();
  const { csrPem } = await createKeyAndCsr(WEB);
  const foreign = await mintJoinToken({ namespace: "default", serviceAccount: "web", ttlMs: 60_000, now: T0 }, generateJoinTokenKey());
  assert.deepEqual(decodeSignResponse(await handle(encodeSignRequest({ csrPem, attestation: { kind: "join_token", token: foreign } }))), {
    ok: false,
    reason: "join_token_invalid",
  });
});

test("a join token past its expiry is refused as join_token_expired", async () => {
  const ca = await createCertificateAuthority({ trustDomain: TD });
  const key = generateJoinTokenKey();
  const handle = handleSignRequest(ca, createAttestationVerifier({ joinTokenKey: key, now: () => T0 + 120_000 }));
  const token = await mintJoinToken({ namespace: "default", serviceAccount: "web", ttlMs: 60_000, now: T0 }, key);
  const { csrPem } = await createKeyAndCsr(WEB);
  assert.deepEqual(decodeSignResponse(await handle(encodeSignRequest({ csrPem, attestation: { kind: "join_token", token } }))), {
    ok: false,
    reason: "join_token_expired",
  });
});

test("with singleUse a join token works once", async () => {
  const { handle, token } = await setup({ singleUse: true });
  const t = await token();
  const req = async () => decodeSignResponse(await handle(encodeSignRequest({ csrPem: (await createKeyAndCsr(WEB)).csrPem, attestation: { kind: "join_token", token: t } })));
  assert.equal((await req()).ok, true);
  assert.deepEqual(await req(), { ok: false, reason: "join_token_reused" });
});

test("a service-account token is checked by the injected TokenReview; failures fail closed", async () => {
  const review: ReviewServiceAccountToken = async (t) => {
    if (t === "down") throw new Error("apiserver unreachable");
    return t === "good" ? { ok: true, namespace: "shop", serviceAccount: "cart" } : { ok: false };
  };
  const { handle } = await setup({ review });
  const id = "spiffe://example.org/ns/shop/sa/cart";
  const { csrPem } = await createKeyAndCsr(id);
  const ask = async (token: string) => decodeSignResponse(await handle(encodeSignRequest({ csrPem, attestation: { kind: "k8s_sa_token", token } })));
  const ok = await ask("good");
  assert.ok(ok.ok && ok.spiffeId === id);
  assert.deepEqual(await ask("bad"), { ok: false, reason: "sa_token_invalid" });
  assert.deepEqual(await ask("down"), { ok: false, reason: "sa_token_invalid" });
});

test("an attestation kind the control plane is not set up for is refused", async () => {
  const { handle } = await setup();
  const { csrPem } = await createKeyAndCsr(WEB);
  assert.deepEqual(decodeSignResponse(await handle(encodeSignRequest({ csrPem, attestation: { kind: "k8s_sa_token", token: "x" } }))), {
    ok: false,
    reason: "unsupported_attestation",
  });
});

test("malformed and oversized requests are refused before any attestation", async () => {
  const { handle } = await setup();
  const bad = (s: string) => handle(new TextEncoder().encode(s)).then(decodeSignResponse);
  assert.deepEqual(await bad("{"), { ok: false, reason: "bad_request" });
  assert.deepEqual(await bad(JSON.stringify({ csrPem: 1, attestation: {} })), { ok: false, reason: "bad_request" });
  assert.deepEqual(await bad(JSON.stringify({ csrPem: "x", attestation: { kind: "magic", token: "t" } })), { ok: false, reason: "bad_request" });
  assert.deepEqual(await handle(new Uint8Array(70 * 1024)).then(decodeSignResponse), { ok: false, reason: "request_too_large" });
  assert.deepEqual(await bad(JSON.stringify({ csrPem: "not a csr", attestation: { kind: "join_token", token: "t" } })), { ok: false, reason: "bad_csr" });
});

test("a CSR with no URI SAN gets the attested ID", async () => {
  const { handle, token } = await setup();
  const keys = (await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"])) as CryptoKeyPair;
  const { x509 } = await import("./x509.ts");
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: "O=weft", keys, signingAlgorithm: { name: "ECDSA", hash: "SHA-256" } });
  const r = decodeSignResponse(await handle(encodeSignRequest({ csrPem: csr.toString("pem"), attestation: { kind: "join_token", token: await token("shop", "cart") } })));
  assert.ok(r.ok);
  if (r.ok) assert.equal(r.spiffeId, "spiffe://example.org/ns/shop/sa/cart");
});

test("serviceAccountFromUsername reads TokenReview usernames and refuses other users", () => {
  assert.deepEqual(serviceAccountFromUsername("system:serviceaccount:default:web"), { namespace: "default", serviceAccount: "web" });
  assert.equal(serviceAccountFromUsername("kubernetes-admin"), null);
  assert.equal(serviceAccountFromUsername("system:serviceaccount:default:web:extra"), null);
});
