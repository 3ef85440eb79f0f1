// Real node:tls handshakes between SVIDs from the weft CA: node:tls validates the chain against the
// bundle, our SPIFFE check runs on top (server: after the handshake; client: checkServerIdentity).
import { test } from "node:test";
import assert from "node:assert/strict";
import tls from "node:tls";
import type { AddressInfo } from "node:net";
import {
  checkSvidLeaf,
  createCertificateAuthority,
  createKeyAndCsr,
  svidTlsOptions,
  validateSvid,
  type CertificateAuthority,
  type SvidRules,
} from "../../shared/identity/index.ts";

const TD = "example.org";
const WEB = "spiffe://example.org/ns/default/sa/web";
const API = "spiffe://example.org/ns/default/sa/api";
const HOUR = 3_600_000;

type Held = { chainPem: string[]; keyPem: string };

async function svidFrom(ca: CertificateAuthority, spiffeId: string, ttlMs = HOUR): Promise<Held> {
  const { keyPem, csrPem } = await createKeyAndCsr(spiffeId);
  const r = await ca.sign(csrPem, { spiffeId, ttlMs });
  if (!r.ok) throw new Error(r.reason);
  return { chainPem: r.chainPem, keyPem };
}

/** An mTLS server that answers `ok <peer id>` once the peer passes the SPIFFE rules, else records why and drops it. */
async function startServer(svid: Held, bundle: string[], rules: SvidRules) {
  const refused: string[] = [];
  const tlsErrors: string[] = [];
  const server = tls.createServer({ ...svidTlsOptions(svid, bundle), minVersion: "TLSv1.3" }, (socket) => {
    const peer = socket.getPeerCertificate();
    const check = checkSvidLeaf(new Uint8Array(peer.raw), { ...rules, now: Date.now() });
    if (!check.ok) {
      refused.push(check.reason);
      socket.destroy();
      return;
    }
    // getPeerCertificate's subjectaltname carries the same URI node:tls saw.
    socket.end(`ok ${check.spiffeId} ${peer.subjectaltname}`);
  });
  server.on("tlsClientError", (e: NodeJS.ErrnoException) => tlsErrors.push(e.code ?? e.message));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return { port, refused, tlsErrors, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

/** Connects with a client SVID (or none); resolves with what the server said, or why it failed. */
function call(port: number, svid: Held | null, bundle: string[], rules: SvidRules): Promise<{ ok: true; body: string } | { ok: false; error: string }> {
  return new Promise((resolve) => {
    let body = "";
    let done = false;
    const finish = (r: { ok: true; body: string } | { ok: false; error: string }) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(r);
    };
    const socket = tls.connect({
      host: "127.0.0.1",
      port,
      ca: bundle,
      ...(svid ? { key: svid.keyPem, cert: svid.chainPem.join("") } : {}),
      minVersion: "TLSv1.3",
      checkServerIdentity: (_host, cert) => {
        const r = checkSvidLeaf(new Uint8Array(cert.raw), rules);
        return r.ok ? undefined : Object.assign(new Error(r.reason), { code: r.reason });
      },
    });
    const timer = setTimeout(() => finish({ ok: false, error: "timeout" }), 5000);
    socket.on("data", (d) => (body += d.toString()));
    socket.on("end", () => finish(body ? { ok: true, body } : { ok: false, error: "closed" }));
    socket.on("error", (e: NodeJS.ErrnoException) => finish({ ok: false, error: e.code ?? e.message }));
    socket.on("close", () => finish(body ? { ok: true, body } : { ok: false, error: "closed" }));
  });
}

test("two SVIDs from the CA complete a mutual TLS handshake and each side reads the other's SPIFFE ID", async () => {
  const ca = await createCertificateAuthority({ trustDomain: TD, intermediate: true });
  const server = await startServer(await svidFrom(ca, API), ca.bundle(), { trustDomain: TD, expectedId: WEB });
  try {
    const r = await call(server.port, await svidFrom(ca, WEB), ca.bundle(), { trustDomain: TD, expectedId: API });
    assert.deepEqual(r, { ok: true, body: `ok ${WEB} URI:${WEB}` });
    assert.deepEqual(server.refused, []);
  } finally {
    await server.close();
  }
});

test("a client without a certificate is refused", async () => {
  const ca = await createCertificateAuthority({ trustDomain: TD });
  const server = await startServer(await svidFrom(ca, API), ca.bundle(), { trustDomain: TD });
  try {
    const r = await call(server.port, null, ca.bundle(), { trustDomain: TD, expectedId: API });
    // The error code differs per runtime (Node: ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED); it must not be a hang.
    assert.equal(r.ok, false);
    if (!r.ok) assert.notEqual(r.error, "timeout");
  } finally {
    await server.close();
  }
});

test("a client SVID from a different root of the same trust domain is refused by node:tls", async () => {
  const ca = await createCertificateAuthority({ trustDomain: TD });
  const other = await createCertificateAuthority({ trustDomain: TD });
  const server = await startServer(await svidFrom(ca, API), ca.bundle(), { trustDomain: TD });
  try {
    const r = await call(server.port, await svidFrom(other, WEB), ca.bundle(), { trustDomain: TD, expectedId: API });
    // node:tls refused the handshake itself: our handler never ran.
    assert.deepEqual(r, { ok: false, error: "closed" });
    assert.deepEqual(server.refused, []);
    assert.equal(server.tlsErrors.length, 1);
  } finally {
    await server.close();
  }
});

test("a client SVID from another trust domain is refused even when its root is in node:tls's CA list", async () => {
  const ca = await createCertificateAuthority({ trustDomain: TD });
  const foreign = await createCertificateAuthority({ trustDomain: "other.org" });
  // Both roots trusted at the TLS layer; the SPIFFE rule (validate only against the peer's own
  // trust domain) is what refuses the foreign client.
  const server = await startServer(await svidFrom(ca, API), [...ca.bundle(), ...foreign.bundle()], { trustDomain: TD });
  try {
    const r = await call(server.port, await svidFrom(foreign, "spiffe://other.org/ns/default/sa/web"), ca.bundle(), { trustDomain: TD, expectedId: API });
    assert.deepEqual(r, { ok: false, error: "closed" });
    assert.deepEqual(server.refused, ["wrong_trust_domain"]);
  } finally {
    await server.close();
  }
});

test("an expired client SVID is refused", async () => {
  const ca = await createCertificateAuthority({ trustDomain: TD });
  const past = await createCertificateAuthority({ trustDomain: TD, now: () => Date.now() - 3 * HOUR, root: await rootOf(ca) });
  const expired = await svidFrom(past, WEB, HOUR);
  const server = await startServer(await svidFrom(ca, API), ca.bundle(), { trustDomain: TD });
  try {
    const r = await call(server.port, expired, ca.bundle(), { trustDomain: TD, expectedId: API });
    assert.deepEqual(r, { ok: false, error: "closed" });
    assert.deepEqual(server.refused, []);
    assert.equal(server.tlsErrors.length, 1);
    assert.deepEqual(await validateSvid(expired.chainPem, ca.bundle(), { now: Date.now(), trustDomain: TD }), { ok: false, reason: "expired" });
  } finally {
    await server.close();
  }
});

test("the client refuses a server whose SPIFFE ID is not the destination's expected identity", async () => {
  const ca = await createCertificateAuthority({ trustDomain: TD });
  const server = await startServer(await svidFrom(ca, "spiffe://example.org/ns/default/sa/impostor"), ca.bundle(), { trustDomain: TD });
  try {
    const r = await call(server.port, await svidFrom(ca, WEB), ca.bundle(), { trustDomain: TD, expectedId: API });
    assert.deepEqual(r, { ok: false, error: "id_mismatch" });
  } finally {
    await server.close();
  }
});

test("root rotation over TLS: an old-root client is accepted during the overlap and refused after retiring", async () => {
  const ca = await createCertificateAuthority({ trustDomain: TD });
  const oldClient = await svidFrom(ca, WEB);
  await ca.rotateRoot();
  ca.switchIssuance();
  const newClient = await svidFrom(ca, WEB);
  const overlap = await startServer(await svidFrom(ca, API), ca.bundle(), { trustDomain: TD });
  try {
    assert.equal((await call(overlap.port, oldClient, ca.bundle(), { trustDomain: TD, expectedId: API })).ok, true);
    assert.equal((await call(overlap.port, newClient, ca.bundle(), { trustDomain: TD, expectedId: API })).ok, true);
  } finally {
    await overlap.close();
  }
  ca.retireOldRoot();
  const retired = await startServer(await svidFrom(ca, API), ca.bundle(), { trustDomain: TD });
  try {
    assert.deepEqual(await call(retired.port, oldClient, ca.bundle(), { trustDomain: TD, expectedId: API }), { ok: false, error: "closed" });
    assert.equal(retired.tlsErrors.length, 1);
    assert.equal((await call(retired.port, newClient, ca.bundle(), { trustDomain: TD, expectedId: API })).ok, true);
  } finally {
    await retired.close();
  }
});

async function rootOf(ca: CertificateAuthority) {
  const { importCaKey } = await import("../../shared/identity/index.ts");
  const e = await ca.exportRoot();
  return { certPem: e.certPem, key: await importCaKey(e.keyPem) };
}
