import { test } from "node:test";
import assert from "node:assert/strict";
import { createCertificateAuthority, importCaKey } from "./ca.ts";
import { createKeyAndCsr } from "./csr.ts";
import { checkSvidLeaf, nextRefreshAt, svidTlsOptions, validateSvid } from "./svid.ts";
import { EC_KEY, EC_SIGN, x509 } from "./x509.ts";

const TD = "example.org";
const WEB = "spiffe://example.org/ns/default/sa/web";
const HOUR = 3_600_000;
const T0 = Date.UTC(2030, 0, 1);

async function issued(options: { intermediate?: boolean; now?: number; ttlMs?: number } = {}) {
  const now = options.now ?? T0;
  const ca = await createCertificateAuthority({ trustDomain: TD, now: () => now, intermediate: options.intermediate ?? false });
  const r = await ca.sign((await createKeyAndCsr(WEB)).csrPem, { spiffeId: WEB, ttlMs: options.ttlMs ?? HOUR });
  if (!r.ok) throw new Error(r.reason);
  return { ca, chainPem: r.chainPem };
}

/** Signs an arbitrary certificate with the CA's own root key, to build certificates our CA would never issue. */
async function forge(
  ca: Awaited<ReturnType<typeof createCertificateAuthority>>,
  opts: { ca?: boolean; usages?: number; uris?: string[]; notBefore?: number; notAfter?: number },
) {
  const exported = await ca.exportRoot();
  const root = new x509.X509Certificate(exported.certPem);
  const key = await importCaKey(exported.keyPem);
  const subject = (await crypto.subtle.generateKey(EC_KEY, true, ["sign", "verify"])) as CryptoKeyPair;
  const ext: x509.Extension[] = [
    new x509.BasicConstraintsExtension(opts.ca ?? false, undefined, true),
    new x509.KeyUsagesExtension(opts.usages ?? x509.KeyUsageFlags.digitalSignature, true),
  ];
  if (opts.uris?.length) ext.push(new x509.SubjectAlternativeNameExtension(opts.uris.map((value) => ({ type: "url" as const, value }))));
  const cert = await x509.X509CertificateGenerator.create({
    subject: "O=forged",
    issuer: root.subjectName,
    notBefore: new Date(opts.notBefore ?? T0 - HOUR),
    notAfter: new Date(opts.notAfter ?? T0 + HOUR),
    publicKey: subject.publicKey,
    signingKey: key,
    signingAlgorithm: EC_SIGN,
    extensions: ext,
  });
  return { pem: cert.toString("pem"), key: subject.privateKey, cert };
}

test("an issued SVID validates against its bundle and yields its SPIFFE ID", async () => {
  const { ca, chainPem } = await issued();
  assert.deepEqual(await validateSvid(chainPem, ca.bundle(), { now: T0, trustDomain: TD }), { ok: true, spiffeId: WEB });
  assert.deepEqual(await validateSvid(chainPem, ca.bundle(), { now: T0, trustDomain: TD, expectedId: WEB }), { ok: true, spiffeId: WEB });
});

test("an SVID signed by an intermediate validates up to the root in the bundle", async () => {
  const { ca, chainPem } = await issued({ intermediate: true });
  assert.equal(chainPem.length, 2);
  assert.deepEqual(await validateSvid(chainPem, ca.bundle(), { now: T0, trustDomain: TD }), { ok: true, spiffeId: WEB });
  // Without the intermediate the leaf cannot be chained to the root.
  assert.deepEqual(await validateSvid(chainPem.slice(0, 1), ca.bundle(), { now: T0, trustDomain: TD }), { ok: false, reason: "untrusted" });
});

test("validity is checked on the leaf: expired and not yet valid", async () => {
  const { ca, chainPem } = await issued({ ttlMs: 60_000 });
  assert.deepEqual(await validateSvid(chainPem, ca.bundle(), { now: T0 + 61_000, trustDomain: TD }), { ok: false, reason: "expired" });
  assert.deepEqual(await validateSvid(chainPem, ca.bundle(), { now: T0 - HOUR, trustDomain: TD }), { ok: false, reason: "not_yet_valid" });
});

test("validity is checked on the issuing root too", async () => {
  const ca = await createCertificateAuthority({ trustDomain: TD, now: () => T0 });
  const forged = await forge(ca, { uris: [WEB], notAfter: T0 + 400 * 24 * HOUR });
  // The root lives 365 days by default; a leaf claiming longer is caught once the root has expired.
  assert.deepEqual(await validateSvid([forged.pem], ca.bundle(), { now: T0 + 380 * 24 * HOUR, trustDomain: TD }), { ok: false, reason: "expired" });
});

test("an SVID from another root of the same trust domain is untrusted", async () => {
  const a = await issued();
  const b = await issued();
  assert.deepEqual(await validateSvid(a.chainPem, b.ca.bundle(), { now: T0, trustDomain: TD }), { ok: false, reason: "untrusted" });
});

test("an empty bundle trusts nothing", async () => {
  const { chainPem } = await issued();
  assert.deepEqual(await validateSvid(chainPem, [], { now: T0, trustDomain: TD }), { ok: false, reason: "untrusted" });
  assert.deepEqual(await validateSvid([], [], { now: T0, trustDomain: TD }), { ok: false, reason: "no_certificate" });
});

test("an SVID of another trust domain is refused as wrong_trust_domain, and another ID as id_mismatch", async () => {
  const { ca, chainPem } = await issued();
  assert.deepEqual(await validateSvid(chainPem, ca.bundle(), { now: T0, trustDomain: "other.org" }), { ok: false, reason: "wrong_trust_domain" });
  assert.deepEqual(await validateSvid(chainPem, ca.bundle(), { now: T0, trustDomain: TD, expectedId: "spiffe://example.org/ns/default/sa/api" }), {
    ok: false,
    reason: "id_mismatch",
  });
  assert.deepEqual(
    await validateSvid(chainPem, ca.bundle(), { now: T0, trustDomain: TD, expectedId: ["spiffe://example.org/ns/default/sa/api", WEB] }),
    { ok: true, spiffeId: WEB },
  );
});

test("leaf rules: no URI SAN, several URI SANs, a CA flag, CA key usages or no digitalSignature are refused", async () => {
  const ca = await createCertificateAuthority({ trustDomain: TD, now: () => T0 });
  const cases: [Parameters<typeof forge>[1], string][] = [
    [{ uris: [] }, "no_uri_san"],
    [{ uris: [WEB, "spiffe://example.org/ns/default/sa/api"] }, "multiple_uri_sans"],
    [{ uris: [WEB], ca: true }, "not_a_leaf"],
    [{ uris: [WEB], usages: x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyCertSign }, "not_a_leaf"],
    [{ uris: [WEB], usages: x509.KeyUsageFlags.keyEncipherment }, "bad_key_usage"],
    [{ uris: ["spiffe://example.org/ns/../sa/x"] }, "invalid_spiffe_id"],
  ];
  for (const [opts, reason] of cases) {
    const { pem } = await forge(ca, opts);
    assert.deepEqual(await validateSvid([pem], ca.bundle(), { now: T0, trustDomain: TD }), { ok: false, reason }, reason);
    assert.deepEqual(checkSvidLeaf(pem, { trustDomain: TD }), { ok: false, reason }, reason);
  }
});

test("a certificate signed by a leaf does not chain: the leaf is not a CA", async () => {
  const ca = await createCertificateAuthority({ trustDomain: TD, now: () => T0 });
  const leaf = await forge(ca, { uris: ["spiffe://example.org/ns/default/sa/signer"] });
  const keys = (await crypto.subtle.generateKey(EC_KEY, true, ["sign", "verify"])) as CryptoKeyPair;
  const child = await x509.X509CertificateGenerator.create({
    subject: "O=child",
    issuer: leaf.cert.subjectName,
    notBefore: new Date(T0 - HOUR),
    notAfter: new Date(T0 + HOUR),
    publicKey: keys.publicKey,
    signingKey: leaf.key,
    signingAlgorithm: EC_SIGN,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.SubjectAlternativeNameExtension([{ type: "url", value: WEB }]),
    ],
  });
  assert.deepEqual(await validateSvid([child.toString("pem"), leaf.pem], ca.bundle(), { now: T0, trustDomain: TD }), { ok: false, reason: "issuer_not_ca" });
});

test("checkSvidLeaf reads the SPIFFE ID from DER bytes as node:tls hands them over", async () => {
  const { chainPem } = await issued();
  const der = new Uint8Array(new x509.X509Certificate(chainPem[0]!).rawData);
  assert.deepEqual(checkSvidLeaf(der, { trustDomain: TD, expectedId: WEB }), { ok: true, spiffeId: WEB });
  assert.deepEqual(checkSvidLeaf(der, { trustDomain: TD, now: T0 + 2 * HOUR }), { ok: false, reason: "expired" });
  assert.deepEqual(checkSvidLeaf(new Uint8Array([1, 2, 3]), { trustDomain: TD }), { ok: false, reason: "malformed" });
});

test("nextRefreshAt renews at half the remaining life within ±10% jitter", () => {
  const svid = { notAfter: new Date(T0 + HOUR) };
  assert.equal(nextRefreshAt(svid, T0, () => 0.5), T0 + HOUR / 2);
  assert.equal(nextRefreshAt(svid, T0, () => 0), T0 + HOUR / 2 - HOUR / 10);
  assert.equal(nextRefreshAt(svid, T0, () => 1), T0 + HOUR / 2 + HOUR / 10);
  assert.equal(nextRefreshAt({ notAfter: new Date(T0 - 1) }, T0, () => 0.5), T0);
});

test("svidTlsOptions requires and verifies peer certificates against the bundle", () => {
  const o = svidTlsOptions({ chainPem: ["LEAF\n", "INT\n"], keyPem: "KEY" }, ["ROOT"]);
  assert.deepEqual(o, { key: "KEY", cert: "LEAF\nINT\n", ca: ["ROOT"], requestCert: true, rejectUnauthorized: true });
});
