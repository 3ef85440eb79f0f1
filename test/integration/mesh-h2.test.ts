// HTTP/2 between proxies over mesh mTLS (Node runtime), with SVIDs from the weft CA and real sockets:
// the inbound port's ALPN h2, the caller's SPIFFE ID on h2 requests, the expected-peer check on the
// h2 client, STRICT/PERMISSIVE with h2c, certificate rotation of pooled sessions, and the fallback
// to HTTP/1.1 for a peer that does not offer h2.
import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compileMesh, parseEndpoint, validateMesh } from "../../shared/config/index.ts";
import { createCertificateAuthority } from "../../shared/identity/index.ts";
import { createEngine, createSidecarViews, type MeshIdentity, type RequestRecord, type UpstreamRequest } from "../../shared/proxy/index.ts";
import { activeGate, createPolicyGate } from "../../shared/policy/index.ts";
import { nodeRuntime } from "../../shared/runtime/node/index.ts";
import { createMeshFront, meshTlsOptions } from "../../shared/runtime/node/mesh-tls.ts";
import { readWhole, type NodeUpstreamResponse } from "../../shared/runtime/node/upstream.ts";
import { cleanupsAfterAll } from "../harness/cleanup.ts";
import { heldIdentity, issueSvid } from "../harness/mesh-identity.ts";
import { meshRequest } from "../harness/mesh-request.ts";

const TD = "example.org";
const WEB = `spiffe://${TD}/ns/default/sa/web`;
const API = `spiffe://${TD}/ns/default/sa/api`;

/** An app answering with the protocol it was spoken to in and the caller identity it was told. */
function describeRequest(req: http.IncomingMessage | http2.Http2ServerRequest) {
  return JSON.stringify({ version: req.httpVersion, xfcc: req.headers["x-forwarded-client-cert"] ?? null, path: req.url });
}

async function startApps() {
  const h1 = http.createServer((req, res) => res.end(describeRequest(req)));
  // An h2c app sending trailers, as a gRPC server does.
  const h2 = http2.createServer((req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.addTrailers({ "grpc-status": "0", "x-app-trailer": "kept" });
    res.end(describeRequest(req));
  });
  await new Promise<void>((r) => h1.listen(0, "127.0.0.1", r));
  await new Promise<void>((r) => h2.listen(0, "127.0.0.1", r));
  return {
    h1: (h1.address() as AddressInfo).port,
    h2: (h2.address() as AddressInfo).port,
    close: async () => {
      await new Promise<void>((r) => h1.close(() => r()));
      await new Promise<void>((r) => h2.close(() => r()));
    },
  };
}

/** The "api" workload's inbound port; its app (a port on loopback or a Unix socket path) speaks HTTP/1.1 or (appProtocol http2) h2c. */
async function startInbound(identity: MeshIdentity, app: number | string, appProtocol: "http" | "http2", mode: () => "STRICT" | "PERMISSIVE", onlyWeb = false) {
  // With onlyWeb, api's inbound policy allows the web workload alone (by the mTLS peer's SPIFFE ID).
  const inbound = onlyWeb ? { authz: [{ name: "web-only", rules: [{ from: [{ principals: [`${TD}/ns/default/sa/web`] }] }] }] } : {};
  const valid = validateMesh({ trustDomain: TD, services: { api: { ports: [{ port: 8080, protocol: appProtocol }], inbound }, web: {} } });
  assert.ok(valid.ok);
  const views = createSidecarViews(compileMesh(valid.value), "api", {
    app: parseEndpoint(typeof app === "string" ? `unix:${app}` : `127.0.0.1:${app}`),
    createPolicy: (p) => activeGate(createPolicyGate(p)),
  });
  const client = nodeRuntime.createUpstreamClient();
  const refused: string[] = [];
  const records: RequestRecord[] = [];
  const listener = await nodeRuntime.listen(
    { port: 0, address: "127.0.0.1", maxHeaderCount: 100, maxHeaderBytes: 16384, mesh: { identity, mode, onRefused: (reason) => refused.push(reason) } },
    { engine: createEngine({ client, edge: false, onRequestDone: (r) => records.push({ ...r }) }), current: () => views.inbound },
  );
  return {
    port: listener.port,
    refused,
    records,
    close: async () => {
      await listener.close();
      await client.close();
    },
  };
}

type Client = ReturnType<typeof nodeRuntime.createUpstreamClient>;

/** One request as a caller's proxy sends it to a destination whose port speaks HTTP/2. */
async function callMesh(client: Client, request: UpstreamRequest) {
  const result = await client.forward(request);
  if (!result.ok) return { ok: false as const, reason: result.reason, detail: result.detail };
  const whole = await readWhole(result.response as NodeUpstreamResponse);
  const trailers = { ...whole.trailers };
  return { ok: true as const, status: result.response.status, body: JSON.parse(whole.body.toString()) as { version: string; xfcc: string | null }, trailers };
}

const cleanups = cleanupsAfterAll();

const ca = await createCertificateAuthority({ trustDomain: TD, intermediate: true });
const apps = await startApps();
cleanups.push(apps.close);

test("an h2 mesh call reaches an h2c app with its trailers, and the inbound side records the caller's SPIFFE ID and HTTP/2", async () => {
  const inbound = await startInbound(heldIdentity(API, await issueSvid(ca, API)), apps.h2, "http2", () => "STRICT");
  const client = nodeRuntime.createUpstreamClient();
  try {
    const r = await callMesh(client, meshRequest(inbound.port, heldIdentity(WEB, await issueSvid(ca, WEB)), API, { http2: true }));
    assert.ok(r.ok, JSON.stringify(r));
    assert.deepEqual([r.status, r.body.version, r.body.xfcc], [200, "2.0", `URI=${WEB}`]);
    assert.equal(r.trailers["x-app-trailer"], "kept");
    assert.equal(r.trailers["grpc-status"], "0");
    assert.deepEqual(
      inbound.records.map((rec) => [rec.protocol, rec.sourcePrincipal]),
      [["HTTP/2", WEB]],
    );
    assert.deepEqual(inbound.refused, []);
  } finally {
    await client.close();
    await inbound.close();
  }
});

test("the inbound side speaks h2c to an app on a Unix socket", async () => {
  const dir = mkdtempSync(join(tmpdir(), "weft-h2-uds-"));
  const path = join(dir, "app.sock");
  const app = http2.createServer((req, res) => {
    res.addTrailers({ "x-app-trailer": "over-uds" });
    res.end(describeRequest(req));
  });
  await new Promise<void>((r) => app.listen(path, r));
  const inbound = await startInbound(heldIdentity(API, await issueSvid(ca, API)), path, "http2", () => "STRICT");
  const client = nodeRuntime.createUpstreamClient();
  try {
    const r = await callMesh(client, meshRequest(inbound.port, heldIdentity(WEB, await issueSvid(ca, WEB)), API, { http2: true }));
    assert.ok(r.ok, JSON.stringify(r));
    assert.deepEqual([r.status, r.body.version, r.body.xfcc], [200, "2.0", `URI=${WEB}`]);
    assert.equal(r.trailers["x-app-trailer"], "over-uds");
  } finally {
    await client.close();
    await inbound.close();
    await new Promise<void>((r) => app.close(() => r()));
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a request that arrives over HTTP/2 leaves for an HTTP/1.1 app over HTTP/1.1", async () => {
  const inbound = await startInbound(heldIdentity(API, await issueSvid(ca, API)), apps.h1, "http", () => "STRICT");
  const client = nodeRuntime.createUpstreamClient();
  try {
    const r = await callMesh(client, meshRequest(inbound.port, heldIdentity(WEB, await issueSvid(ca, WEB)), API, { http2: true }));
    assert.ok(r.ok, JSON.stringify(r));
    assert.deepEqual([r.status, r.body.version, r.body.xfcc], [200, "1.1", `URI=${WEB}`]);
  } finally {
    await client.close();
    await inbound.close();
  }
});

test("authorization sees the caller's SPIFFE ID on an h2 connection: web is allowed, another workload denied", async () => {
  const inbound = await startInbound(heldIdentity(API, await issueSvid(ca, API)), apps.h2, "http2", () => "STRICT", true);
  const client = nodeRuntime.createUpstreamClient();
  try {
    const allowed = await callMesh(client, meshRequest(inbound.port, heldIdentity(WEB, await issueSvid(ca, WEB)), API, { http2: true }));
    assert.ok(allowed.ok);
    assert.equal(allowed.status, 200);
    // Another proxy (a client holds one identity: its pools are per endpoint and expected peer).
    const other = `spiffe://${TD}/ns/default/sa/intruder`;
    const otherClient = nodeRuntime.createUpstreamClient();
    const denied = await otherClient.forward(meshRequest(inbound.port, heldIdentity(other, await issueSvid(ca, other)), API, { http2: true }));
    assert.ok(denied.ok);
    assert.deepEqual([denied.response.status, denied.response.headers["x-weft-reason"]], [403, "denied"]);
    denied.response.discard();
    await otherClient.close();
    assert.deepEqual(
      inbound.records.map((rec) => [rec.protocol, rec.sourcePrincipal, rec.status]),
      [["HTTP/2", WEB, 200], ["HTTP/2", other, 403]],
    );
  } finally {
    await client.close();
    await inbound.close();
  }
});

test("the h2 caller refuses a server that is not the destination's workload (wrong SPIFFE ID)", async () => {
  const inbound = await startInbound(heldIdentity(WEB, await issueSvid(ca, WEB)), apps.h2, "http2", () => "STRICT");
  const client = nodeRuntime.createUpstreamClient();
  try {
    const r = await callMesh(client, meshRequest(inbound.port, heldIdentity(WEB, await issueSvid(ca, WEB)), API, { http2: true }));
    assert.deepEqual(r, { ok: false, reason: "upstream_connect_failure", detail: "svid_id_mismatch" });
  } finally {
    await client.close();
    await inbound.close();
  }
});

test("STRICT refuses h2c prior knowledge; PERMISSIVE serves it without a peer identity", async () => {
  let mode: "STRICT" | "PERMISSIVE" = "STRICT";
  const inbound = await startInbound(heldIdentity(API, await issueSvid(ca, API)), apps.h2, "http2", () => mode);
  const h2c = () =>
    new Promise<{ status: number; body: string } | "refused">((resolve) => {
      const session = http2.connect(`http://127.0.0.1:${inbound.port}`);
      session.on("error", () => resolve("refused"));
      const stream = session.request({ ":path": "/plain", ":authority": "api", "x-forwarded-client-cert": "URI=spiffe://example.org/ns/x/sa/forged" });
      let body = "";
      let status = 0;
      stream.on("response", (h) => (status = Number(h[":status"])));
      stream.on("data", (c: Buffer) => (body += c));
      stream.on("error", () => resolve("refused"));
      stream.on("close", () => {
        session.close();
        resolve(status === 0 ? "refused" : { status, body });
      });
    });
  try {
    assert.equal(await h2c(), "refused");
    assert.deepEqual(inbound.refused, ["plaintext_in_strict"]);
    mode = "PERMISSIVE";
    const r = await h2c();
    assert.notEqual(r, "refused");
    if (r !== "refused") {
      assert.equal(r.status, 200);
      assert.deepEqual(JSON.parse(r.body), { version: "2.0", xfcc: null, path: "/plain" });
    }
    assert.deepEqual(
      inbound.records.map((rec) => [rec.protocol, rec.sourcePrincipal ?? null]),
      [["HTTP/2", null]],
    );
  } finally {
    await inbound.close();
  }
});

test("after a renewal new requests open a session with the new certificate while a request on the old one finishes", async () => {
  // A bare h2 mTLS server in the peer's place, to see which client certificate each connection shows.
  const apiMaterial = await issueSvid(ca, API);
  const serials: string[] = [];
  const held: http2.ServerHttp2Stream[] = [];
  const server = http2.createSecureServer({ ...meshTlsOptions(apiMaterial), requestCert: true, rejectUnauthorized: true });
  server.on("secureConnection", (socket) => serials.push(new X509Certificate(socket.getPeerCertificate().raw).serialNumber));
  server.on("stream", (stream, headers) => {
    if (headers[":path"] === "/hold") held.push(stream);
    else {
      stream.respond({ ":status": 200 });
      stream.end(JSON.stringify({ version: "2.0", xfcc: null }));
    }
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  const caller = heldIdentity(WEB, await issueSvid(ca, WEB));
  const client = nodeRuntime.createUpstreamClient();
  try {
    assert.equal((await callMesh(client, meshRequest(port, caller, API, { http2: true }))).ok, true);
    const slow = client.forward(meshRequest(port, caller, API, { path: "/hold", http2: true }));
    while (held.length === 0) await new Promise((r) => setTimeout(r, 10));
    assert.equal(serials.length, 1, "one multiplexed session so far");
    caller.set(await issueSvid(ca, WEB));
    for (let i = 0; i < 3; i++) assert.equal((await callMesh(client, meshRequest(port, caller, API, { http2: true }))).ok, true);
    assert.equal(serials.length, 2, "one new session after the renewal");
    assert.notEqual(serials[1], serials[0]);
    // The old session (GOAWAY sent) still completes its stream.
    held[0]!.respond({ ":status": 200 });
    held[0]!.end(JSON.stringify({ version: "2.0", xfcc: null }));
    const r = await slow;
    assert.ok(r.ok);
    assert.equal(r.response.status, 200);
    r.response.discard();
  } finally {
    await client.close();
    await new Promise<void>((r) => server.close(() => r()));
  }
});

test("a mesh peer that offers only HTTP/1.1 is called over HTTP/1.1 instead", async () => {
  // An older or Web-runtime (Bun, Deno) inbound port: mesh mTLS in front of node:http alone.
  const app = http.createServer((req, res) => res.end(describeRequest(req)));
  const front = createMeshFront({ identity: heldIdentity(API, await issueSvid(ca, API)), mode: () => "STRICT" }, app);
  await new Promise<void>((r) => front.server.listen(0, "127.0.0.1", r));
  const port = (front.server.address() as AddressInfo).port;
  const client = nodeRuntime.createUpstreamClient();
  try {
    const caller = heldIdentity(WEB, await issueSvid(ca, WEB));
    for (let i = 0; i < 2; i++) {
      const r = await callMesh(client, meshRequest(port, caller, API, { http2: true }));
      assert.ok(r.ok, JSON.stringify(r));
      assert.deepEqual([r.status, r.body.version], [200, "1.1"]);
    }
  } finally {
    await client.close();
    await new Promise<void>((r) => front.server.close(() => r()));
    front.dispose();
  }
});
