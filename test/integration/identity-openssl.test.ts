// Issued SVIDs checked by OpenSSL itself, not only by our own parser.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createCertificateAuthority, createKeyAndCsr, importCaKey, type CertificateAuthority } from "../../shared/identity/index.ts";
import { x509 } from "../../shared/identity/x509.ts";

const TD = "example.org";
const WEB = "spiffe://example.org/ns/default/sa/web";
let dir: string;
let n = 0;

before(() => {
  dir = mkdtempSync(join(tmpdir(), "weft-identity-openssl-"));
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

function file(content: string): string {
  const path = join(dir, `f${n++}.pem`);
  writeFileSync(path, content);
  return path;
}

function openssl(...args: string[]) {
  const r = spawnSync("openssl", args, { encoding: "utf8" });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

function verify(roots: string[], chainPem: string[]) {
  const args = ["verify", "-CAfile", file(roots.join(""))];
  if (chainPem.length > 1) args.push("-untrusted", file(chainPem.slice(1).join("")));
  return openssl(...args, file(chainPem[0]!));
}

async function issue(ca: CertificateAuthority, id = WEB) {
  const r = await ca.sign((await createKeyAndCsr(id)).csrPem, { spiffeId: id });
  if (!r.ok) throw new Error(r.reason);
  return r.chainPem;
}

test("openssl verify accepts an SVID issued by the root", async () => {
  const ca = await createCertificateAuthority({ trustDomain: TD });
  const r = verify(ca.bundle(), await issue(ca));
  assert.equal(r.status, 0, r.out);
  assert.match(r.out, /: OK/);
});

test("openssl verify accepts an SVID issued through an intermediate", async () => {
  const ca = await createCertificateAuthority({ trustDomain: TD, intermediate: true });
  const chain = await issue(ca);
  assert.equal(chain.length, 2);
  const r = verify(ca.bundle(), chain);
  assert.equal(r.status, 0, r.out);
});

test("openssl shows one URI SAN, CA:FALSE, critical digitalSignature only, server and client auth", async () => {
  const ca = await createCertificateAuthority({ trustDomain: TD, intermediate: true });
  const { out } = openssl("x509", "-text", "-noout", "-in", file((await issue(ca))[0]!));
  assert.equal(out.match(/URI:/g)?.length, 1, out);
  assert.match(out, /URI:spiffe:\/\/example\.org\/ns\/default\/sa\/web/);
  assert.match(out, /X509v3 Basic Constraints: critical\s+CA:FALSE/);
  assert.match(out, /X509v3 Key Usage: critical\s+Digital Signature\s*\n/);
  assert.match(out, /TLS Web Server Authentication, TLS Web Client Authentication/);
  assert.doesNotMatch(out, /Certificate Sign|CRL Sign|Key Encipherment/);
  assert.match(out, /X509v3 Subject Key Identifier/);
  assert.match(out, /X509v3 Authority Key Identifier/);
  assert.match(out, /ecdsa-with-SHA256/);
  assert.match(out, /NIST CURVE: P-256/);
});

test("openssl shows the root as a critical CA with cert and CRL signing and, on request, a URI name constraint", async () => {
  const ca = await createCertificateAuthority({ trustDomain: TD, nameConstraints: true });
  const { out } = openssl("x509", "-text", "-noout", "-in", file(ca.bundle()[0]!));
  assert.match(out, /X509v3 Basic Constraints: critical\s+CA:TRUE/);
  assert.match(out, /X509v3 Key Usage: critical\s+Certificate Sign, CRL Sign/);
  assert.match(out, /X509v3 Name Constraints: critical\s+Permitted:\s+URI:example\.org/);
});

test("openssl verify refuses an SVID against another CA's root", async () => {
  const a = await createCertificateAuthority({ trustDomain: TD });
  const b = await createCertificateAuthority({ trustDomain: TD });
  const r = verify(b.bundle(), await issue(a));
  assert.notEqual(r.status, 0, r.out);
});

test("the root's name constraint makes openssl refuse a leaf for another trust domain even if the root key signed it", async () => {
  const ca = await createCertificateAuthority({ trustDomain: TD, nameConstraints: true });
  const exported = await ca.exportRoot();
  const root = new x509.X509Certificate(exported.certPem);
  const keys = (await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"])) as CryptoKeyPair;
  const rogue = await x509.X509CertificateGenerator.create({
    subject: "O=rogue",
    issuer: root.subjectName,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 3_600_000),
    publicKey: keys.publicKey,
    signingKey: await importCaKey(exported.keyPem),
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.SubjectAlternativeNameExtension([{ type: "url", value: "spiffe://evil.org/ns/default/sa/web" }]),
    ],
  });
  const r = verify(ca.bundle(), [rogue.toString("pem")]);
  assert.notEqual(r.status, 0, r.out);
  assert.match(r.out, /permitted subtree violation/);
});

test("root rotation: old and new leaves verify during the overlap; after retiring, only the new ones do", async () => {
  const ca = await createCertificateAuthority({ trustDomain: TD, intermediate: true });
  const oldLeaf = await issue(ca);
  await ca.rotateRoot();
  assert.equal(verify(ca.bundle(), oldLeaf).status, 0);
  ca.switchIssuance();
  const newLeaf = await issue(ca);
  const overlap = ca.bundle();
  assert.equal(verify(overlap, oldLeaf).status, 0);
  assert.equal(verify(overlap, newLeaf).status, 0);
  ca.retireOldRoot();
  assert.notEqual(verify(ca.bundle(), oldLeaf).status, 0);
  assert.equal(verify(ca.bundle(), newLeaf).status, 0);
});
