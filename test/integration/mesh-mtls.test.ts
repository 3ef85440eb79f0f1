// Mesh mTLS on the proxy's own listeners and upstream pools (Node runtime), with SVIDs from the weft
// CA and real sockets: a STRICT inbound port, a PERMISSIVE one, the caller's SPIFFE ID reaching the
// app, a server that is not the expected workload, rotation, and openssl as an independent client.
import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import tls from "node:tls";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compileMesh, parseEndpoint, validateMesh } from "../../shared/config/index.ts";
import { createCertificateAuthority } from "../../shared/identity/index.ts";
import { createEngine, createSidecarViews, type MeshIdentity } from "../../shared/proxy/index.ts";
import { nodeRuntime } from "../../shared/runtime/node/index.ts";
import { cleanupsAfterAll } from "../harness/cleanup.ts";
import { heldIdentity, issueSvid } from "../harness/mesh-identity.ts";
import { readWhole, type NodeUpstreamResponse } from "../../shared/runtime/node/upstream.ts";
import { meshRequest } from "../harness/mesh-request.ts";

const TD = "example.org";
const WEB = `spiffe://${TD}/ns/default/sa/web`;
const API = `spiffe://${TD}/ns/default/sa/api`;

/** A plain app that answers with the x-forwarded-client-cert it received. */
async function startApp() {
  const server = http.createServer((req, res) => {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ xfcc: req.headers["x-forwarded-client-cert"] ?? null, path: req.url }));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as import("node:net").AddressInfo).port;
  return { port, close: () => new Promise<void>((r) => server.close(() => r())) };
}

/** The "api" workload's inbound port: mesh mTLS in front of the engine, then the app. */
async function startInbound(identity: MeshIdentity, appPort: number, mode: () => "STRICT" | "PERMISSIVE") {
  const valid = validateMesh({ trustDomain: TD, services: { api: {}, web: {} } });
  assert.ok(valid.ok);
  const views = createSidecarViews(compileMesh(valid.value), "api", { app: parseEndpoint(`127.0.0.1:${appPort}`) });
  const client = nodeRuntime.createUpstreamClient();
  const refused: string[] = [];
  const listener = await nodeRuntime.listen(
    { port: 0, address: "127.0.0.1", maxHeaderCount: 100, maxHeaderBytes: 16384, mesh: { identity, mode, onRefused: (reason) => refused.push(reason) } },
    { engine: createEngine({ client, edge: false }), current: () => views.inbound },
  );
  return {
    port: listener.port,
    refused,
    close: async () => {
      await listener.close();
      await client.close();
    },
  };
}

/** One request through the node upstream pool with mesh mTLS, as a caller's proxy sends it. */
async function callMesh(client: ReturnType<typeof nodeRuntime.createUpstreamClient>, port: number, identity: MeshIdentity, expectedId: string) {
  const result = await client.forward(meshRequest(port, identity, expectedId));
  if (!result.ok) return { ok: false as const, reason: result.reason, detail: result.detail };
  const whole = await readWhole(result.response as NodeUpstreamResponse);
  return { ok: true as const, status: result.response.status, body: JSON.parse(whole.body.toString()) as { xfcc: string | null } };
}

const cleanups = cleanupsAfterAll();

const ca = await createCertificateAuthority({ trustDomain: TD, intermediate: true });
const app = await startApp();
cleanups.push(app.close);

test("a mesh call over mTLS reaches the app, which sees the caller's verified SPIFFE ID and never a forged one", async () => {
  const inbound = await startInbound(heldIdentity(API, await issueSvid(ca, API)), app.port, () => "STRICT");
  const client = nodeRuntime.createUpstreamClient();
  try {
    const r = await callMesh(client, inbound.port, heldIdentity(WEB, await issueSvid(ca, WEB)), API);
    assert.equal(r.ok, true);
    if (r.ok) assert.deepEqual([r.status, r.body.xfcc], [200, `URI=${WEB}`]);
    assert.deepEqual(inbound.refused, []);
  } finally {
    await client.close();
    await inbound.close();
  }
});

test("the caller refuses a server that is not the destination's workload (wrong SPIFFE ID)", async () => {
  // The port presents web's certificate while the caller expects api.
  const inbound = await startInbound(heldIdentity(WEB, await issueSvid(ca, WEB)), app.port, () => "STRICT");
  const client = nodeRuntime.createUpstreamClient();
  try {
    const r = await callMesh(client, inbound.port, heldIdentity(WEB, await issueSvid(ca, WEB)), API);
    assert.deepEqual(r, { ok: false, reason: "upstream_connect_failure", detail: "svid_id_mismatch" });
  } finally {
    await client.close();
    await inbound.close();
  }
});

test("STRICT refuses plaintext and TLS without a client certificate; PERMISSIVE serves plaintext without a peer identity", async () => {
  let mode: "STRICT" | "PERMISSIVE" = "STRICT";
  const inbound = await startInbound(heldIdentity(API, await issueSvid(ca, API)), app.port, () => mode);
  try {
    const plain = await fetch(`http://127.0.0.1:${inbound.port}/`, { headers: { "x-forwarded-client-cert": "URI=spiffe://example.org/ns/x/sa/forged" } }).then(
      (r) => r.status,
      () => "refused",
    );
    assert.equal(plain, "refused");
    const noCert = await new Promise<string>((resolve) => {
      const s = tls.connect({ host: "127.0.0.1", port: inbound.port, ca: ca.bundle(), checkServerIdentity: () => undefined });
      s.on("secureConnect", () => s.write("GET / HTTP/1.1\r\nhost: api\r\n\r\n"));
      s.on("data", () => resolve("answered"));
      s.on("error", () => resolve("refused"));
      s.on("close", () => resolve("refused"));
    });
    assert.equal(noCert, "refused");
    assert.deepEqual(inbound.refused.sort(), ["no_certificate", "plaintext_in_strict"]);

    mode = "PERMISSIVE";
    const res = await fetch(`http://127.0.0.1:${inbound.port}/p`, { headers: { "x-forwarded-client-cert": "URI=spiffe://example.org/ns/x/sa/forged" } });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { xfcc: null, path: "/p" });
  } finally {
    await inbound.close();
  }
});

test("a client certificate from another trust domain is refused even when the TLS layer trusts its root", async () => {
  const foreign = await createCertificateAuthority({ trustDomain: "other.org" });
  const apiMaterial = await issueSvid(ca, API);
  // The server's TLS layer trusts both roots; the SPIFFE trust-domain rule must still refuse the peer.
  const inbound = await startInbound(heldIdentity(API, { ...apiMaterial, bundlePem: [...ca.bundle(), ...foreign.bundle()] }), app.port, () => "STRICT");
  const client = nodeRuntime.createUpstreamClient();
  try {
    const foreignWeb = await issueSvid(foreign, "spiffe://other.org/ns/default/sa/web");
    const caller = heldIdentity("spiffe://other.org/ns/default/sa/web", { ...foreignWeb, bundlePem: ca.bundle() }, TD);
    const r = await callMesh(client, inbound.port, caller, API);
    assert.equal(r.ok, false);
    assert.deepEqual(inbound.refused, ["wrong_trust_domain"]);
  } finally {
    await client.close();
    await inbound.close();
  }
});

test("after a renewal new connections get the new certificate on both sides, and calls keep working", async () => {
  const serverId = heldIdentity(API, await issueSvid(ca, API));
  const callerId = heldIdentity(WEB, await issueSvid(ca, WEB));
  const inbound = await startInbound(serverId, app.port, () => "STRICT");
  const client = nodeRuntime.createUpstreamClient();
  const serialOf = () =>
    new Promise<string>((resolve, reject) => {
      const m = callerId.current()!;
      const s = tls.connect(
        { host: "127.0.0.1", port: inbound.port, ca: m.bundlePem as string[], cert: m.chainPem.join(""), key: m.keyPem, checkServerIdentity: () => undefined },
        () => {
          resolve(s.getPeerCertificate().serialNumber);
          s.destroy();
        },
      );
      s.on("error", reject);
    });
  try {
    const before = await serialOf();
    assert.equal((await callMesh(client, inbound.port, callerId, API)).ok, true);
    serverId.set(await issueSvid(ca, API));
    callerId.set(await issueSvid(ca, WEB));
    const afterRenewal = await serialOf();
    assert.notEqual(afterRenewal, before);
    for (let i = 0; i < 5; i++) assert.equal((await callMesh(client, inbound.port, callerId, API)).ok, true);
  } finally {
    await client.close();
    await inbound.close();
  }
});

/** Runs `openssl s_client` against the port; resolves with its exit code and what it printed. */
function sClient(port: number, args: string[], input: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn("openssl", ["s_client", "-connect", `127.0.0.1:${port}`, "-servername", "api", "-ign_eof", ...args], { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    const timer = setTimeout(() => child.kill(), 10_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
    child.stdin.end(input);
  });
}

test("openssl s_client with an SVID completes the handshake and gets the app's answer; without one it is refused in STRICT and served in PERMISSIVE", async () => {
  const dir = mkdtempSync(join(tmpdir(), "weft-mtls-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const web = await issueSvid(ca, WEB);
  // s_client sends only the first certificate of -cert; the intermediate goes in -cert_chain.
  writeFileSync(join(dir, "web.pem"), web.chainPem[0]!);
  writeFileSync(join(dir, "chain.pem"), web.chainPem.slice(1).join(""));
  writeFileSync(join(dir, "web.key"), web.keyPem, { mode: 0o600 });
  writeFileSync(join(dir, "bundle.pem"), ca.bundle().join(""));
  let mode: "STRICT" | "PERMISSIVE" = "STRICT";
  const inbound = await startInbound(heldIdentity(API, await issueSvid(ca, API)), app.port, () => mode);
  const request = "GET /openssl HTTP/1.1\r\nhost: api\r\nconnection: close\r\n\r\n";
  try {
    const ok = await sClient(inbound.port, ["-cert", join(dir, "web.pem"), "-cert_chain", join(dir, "chain.pem"), "-key", join(dir, "web.key"), "-CAfile", join(dir, "bundle.pem"), "-verify_return_error"], request);
    assert.match(ok.out, /Verify return code: 0 \(ok\)/);
    assert.deepEqual(inbound.refused, []);
    assert.match(ok.out, /HTTP\/1\.1 200/);
    assert.ok(ok.out.includes(`"xfcc":"URI=${WEB}"`), "the app saw the caller's SPIFFE ID");

    const refused = await sClient(inbound.port, ["-CAfile", join(dir, "bundle.pem")], request);
    assert.doesNotMatch(refused.out, /HTTP\/1\.1 200/);
    assert.deepEqual(inbound.refused, ["no_certificate"]);

    mode = "PERMISSIVE";
    const permissive = await sClient(inbound.port, ["-CAfile", join(dir, "bundle.pem")], request);
    assert.match(permissive.out, /HTTP\/1\.1 200/);
    assert.ok(permissive.out.includes(`"xfcc":null`), "no caller identity without a client certificate");
  } finally {
    await inbound.close();
  }
});

test("client certificates from another root of the trust domain, or expired, are refused as untrusted", async () => {
  const inbound = await startInbound(heldIdentity(API, await issueSvid(ca, API)), app.port, () => "STRICT");
  const client = nodeRuntime.createUpstreamClient();
  try {
    const otherRoot = await createCertificateAuthority({ trustDomain: TD });
    const impostor = await issueSvid(otherRoot, WEB);
    assert.equal((await callMesh(client, inbound.port, heldIdentity(WEB, { ...impostor, bundlePem: ca.bundle() }), API)).ok, false);
    const expired = await issueSvid(ca, WEB, 1);
    await new Promise((r) => setTimeout(r, 1100));
    assert.equal((await callMesh(client, inbound.port, heldIdentity(WEB, expired), API)).ok, false);
    assert.deepEqual(inbound.refused, ["untrusted", "untrusted"]);
  } finally {
    await client.close();
    await inbound.close();
  }
});
