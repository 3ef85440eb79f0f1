import { test } from "node:test";
import assert from "node:assert/strict";
import { CLOCK_SKEW_MS, createCertificateAuthority, importCaKey } from "./ca.ts";
import { createKeyAndCsr } from "./csr.ts";
import { validateSvid } from "./svid.ts";
import { x509 } from "./x509.ts";

const TD = "example.org";
const WEB = "spiffe://example.org/ns/default/sa/web";
const T0 = Date.UTC(2030, 0, 1);

test("sign issues exactly the attested ID as the only URI SAN, whatever the CSR asked for", async () => {
  const ca = await createCertificateAuthority({ trustDomain: TD, now: () => T0 });
  const { csrPem } = await createKeyAndCsr("spiffe://example.org/ns/kube-system/sa/admin");
  const r = await ca.sign(csrPem, { spiffeId: WEB });
  assert.ok(r.ok);
  if (!r.ok) return;
  const leaf = new x509.X509Certificate(r.chainPem[0]!);
  const names = Array.from(leaf.getExtensions(x509.SubjectAlternativeNameExtension)).flatMap((s) => s.names.items.map((n) => n.toJSON()));
  assert.deepEqual(names, [{ type: "url", value: WEB }]);
  const bc = leaf.getExtension(x509.BasicConstraintsExtension)!;
  assert.equal(bc.ca, false);
  assert.equal(bc.critical, true);
  const ku = leaf.getExtension(x509.KeyUsagesExtension)!;
  assert.equal(ku.usages, x509.KeyUsageFlags.digitalSignature);
  assert.equal(ku.critical, true);
  assert.deepEqual([...leaf.getExtension(x509.ExtendedKeyUsageExtension)!.usages], [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]);
  assert.ok(leaf.getExtension(x509.SubjectKeyIdentifierExtension));
  const root = new x509.X509Certificate(ca.bundle()[0]!);
  assert.equal(leaf.getExtension(x509.AuthorityKeyIdentifierExtension)!.keyId, root.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId);
});

test("leaves are backdated for clock skew and live the default hour", async () => {
  const ca = await createCertificateAuthority({ trustDomain: TD, now: () => T0 });
  const r = await ca.sign((await createKeyAndCsr(WEB)).csrPem, { spiffeId: WEB });
  assert.ok(r.ok);
  if (!r.ok) return;
  const leaf = new x509.X509Certificate(r.chainPem[0]!);
  assert.equal(leaf.notBefore.getTime(), T0 - CLOCK_SKEW_MS);
  assert.equal(leaf.notAfter.getTime(), T0 + 3_600_000);
  assert.equal(r.notAfter.getTime(), T0 + 3_600_000);
});

test("a leaf never outlives its issuer", async () => {
  const ca = await createCertificateAuthority({ trustDomain: TD, now: () => T0, rootTtlMs: 60_000, intermediate: true });
  const r = await ca.sign((await createKeyAndCsr(WEB)).csrPem, { spiffeId: WEB, ttlMs: 3_600_000 });
  assert.ok(r.ok);
  if (!r.ok) return;
  assert.equal(r.notAfter.getTime(), new x509.X509Certificate(ca.bundle()[0]!).notAfter.getTime());
});

test("serial numbers are positive, 128-bit-sized and distinct", async () => {
  const ca = await createCertificateAuthority({ trustDomain: TD });
  const { csrPem } = await createKeyAndCsr(WEB);
  const serials = new Set<string>();
  for (let i = 0; i < 20; i++) {
    const r = await ca.sign(csrPem, { spiffeId: WEB });
    assert.ok(r.ok);
    if (!r.ok) return;
    assert.equal(r.serialNumber.length, 32, r.serialNumber);
    assert.ok(Number.parseInt(r.serialNumber.slice(0, 2), 16) < 0x80);
    serials.add(r.serialNumber);
  }
  assert.equal(serials.size, 20);
});

test("the root is a critical CA with certificate and CRL signing, and a trust-domain name constraint on request", async () => {
  assert.equal(new x509.X509Certificate((await createCertificateAuthority({ trustDomain: TD })).bundle()[0]!).getExtension("2.5.29.30"), null);
  const ca = await createCertificateAuthority({ trustDomain: TD, nameConstraints: true });
  const root = new x509.X509Certificate(ca.bundle()[0]!);
  assert.ok(await root.isSelfSigned());
  const bc = root.getExtension(x509.BasicConstraintsExtension)!;
  assert.equal(bc.ca, true);
  assert.equal(bc.critical, true);
  assert.equal(root.getExtension(x509.KeyUsagesExtension)!.usages, x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign);
  const nc = root.getExtension("2.5.29.30");
  assert.ok(nc?.critical);
});

test("a CSR whose signed content was altered is refused (no proof of possession)", async () => {
  const ca = await createCertificateAuthority({ trustDomain: TD });
  const raw = new Uint8Array(new x509.Pkcs10CertificateRequest((await createKeyAndCsr(WEB)).csrPem).rawData);
  // Change the subject "O=weft" to "O=weFt": same key, same signature, different signed bytes.
  const at = indexOf(raw, new TextEncoder().encode("weft"));
  assert.ok(at > 0);
  const tampered = raw.slice();
  tampered[at + 2] = "F".charCodeAt(0);
  const pem = x509.PemConverter.encode(tampered.buffer, "CERTIFICATE REQUEST");
  assert.deepEqual(await ca.sign(pem, { spiffeId: WEB }), { ok: false, reason: "bad_csr_signature" });
  assert.deepEqual(await ca.sign("garbage", { spiffeId: WEB }), { ok: false, reason: "bad_csr" });
});

test("sign refuses IDs outside its trust domain, invalid IDs, bad TTLs and non-P-256 keys", async () => {
  const ca = await createCertificateAuthority({ trustDomain: TD });
  const { csrPem } = await createKeyAndCsr(WEB);
  assert.deepEqual(await ca.sign(csrPem, { spiffeId: "spiffe://other.org/ns/default/sa/web" }), { ok: false, reason: "wrong_trust_domain" });
  assert.deepEqual(await ca.sign(csrPem, { spiffeId: "spiffe://example.org" }), { ok: false, reason: "invalid_spiffe_id" });
  assert.deepEqual(await ca.sign(csrPem, { spiffeId: WEB, ttlMs: 0 }), { ok: false, reason: "bad_ttl" });
  const p384 = (await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-384" }, false, ["sign", "verify"])) as CryptoKeyPair;
  const csr384 = await x509.Pkcs10CertificateRequestGenerator.create({ name: "O=weft", keys: p384, signingAlgorithm: { name: "ECDSA", hash: "SHA-384" } });
  assert.deepEqual(await ca.sign(csr384.toString("pem"), { spiffeId: WEB }), { ok: false, reason: "unsupported_key" });
});

test("root rotation: trust both, then issue from the new root, then retire the old one", async () => {
  const ca = await createCertificateAuthority({ trustDomain: TD });
  const oldRoot = ca.bundle()[0]!;
  assert.equal(ca.phase(), "steady");
  assert.deepEqual(ca.switchIssuance(), { ok: false, reason: "no_pending_root" });
  assert.deepEqual(ca.retireOldRoot(), { ok: false, reason: "not_switched" });

  const rotated = await ca.rotateRoot();
  assert.ok(rotated.ok);
  assert.equal(ca.phase(), "prepared");
  assert.deepEqual(ca.bundle()[0], oldRoot);
  assert.equal(ca.bundle().length, 2);
  assert.deepEqual(await ca.rotateRoot(), { ok: false, reason: "rotation_in_progress" });
  const { csrPem } = await createKeyAndCsr(WEB);
  const beforeSwitch = await ca.sign(csrPem, { spiffeId: WEB });
  assert.ok(beforeSwitch.ok && new x509.X509Certificate(beforeSwitch.chainPem[0]!).issuer === new x509.X509Certificate(oldRoot).subject);

  assert.deepEqual(ca.switchIssuance(), { ok: true });
  assert.equal(ca.phase(), "switched");
  const afterSwitch = await ca.sign(csrPem, { spiffeId: WEB });
  assert.ok(afterSwitch.ok);
  if (!afterSwitch.ok || !rotated.ok || !beforeSwitch.ok) return;
  const now = Date.now();
  assert.equal((await validateSvid(afterSwitch.chainPem, ca.bundle(), { now, trustDomain: TD })).ok, true);
  assert.equal((await validateSvid(beforeSwitch.chainPem, ca.bundle(), { now, trustDomain: TD })).ok, true);

  assert.deepEqual(ca.retireOldRoot(), { ok: true });
  assert.deepEqual(ca.bundle(), [rotated.rootPem]);
  assert.equal(ca.phase(), "steady");
  assert.deepEqual(await validateSvid(beforeSwitch.chainPem, ca.bundle(), { now, trustDomain: TD }), { ok: false, reason: "untrusted" });
});

test("exported state brings the same CA back, mid-rotation and with an intermediate", async () => {
  const ca = await createCertificateAuthority({ trustDomain: TD, intermediate: true });
  await ca.rotateRoot();
  const state = await ca.exportState();
  assert.match(state.generations[0]!.rootKeyPem, /^-----BEGIN PRIVATE KEY-----/);
  const again = await createCertificateAuthority({ trustDomain: TD, state });
  assert.deepEqual(again.bundle(), ca.bundle());
  assert.equal(again.phase(), "prepared");
  const r = await again.sign((await createKeyAndCsr(WEB)).csrPem, { spiffeId: WEB });
  assert.ok(r.ok);
  if (!r.ok) return;
  assert.equal(r.chainPem.length, 2);
  assert.deepEqual(await validateSvid(r.chainPem, ca.bundle(), { now: Date.now(), trustDomain: TD }), { ok: true, spiffeId: WEB });
});

test("a CA loaded from an exported root PEM and PKCS#8 key issues leaves that root trusts", async () => {
  const first = await createCertificateAuthority({ trustDomain: TD });
  const exported = await first.exportRoot();
  const ca = await createCertificateAuthority({ trustDomain: TD, root: { certPem: exported.certPem, key: await importCaKey(exported.keyPem) } });
  assert.deepEqual(ca.bundle(), first.bundle());
  const r = await ca.sign((await createKeyAndCsr(WEB)).csrPem, { spiffeId: WEB });
  assert.ok(r.ok);
  if (r.ok) assert.deepEqual(await validateSvid(r.chainPem, first.bundle(), { now: Date.now(), trustDomain: TD }), { ok: true, spiffeId: WEB });
});

function indexOf(hay: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}
