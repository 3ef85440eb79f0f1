// WebSocket upgrades across the mesh on Node, with SVIDs from the weft CA and real sockets:
// client → gateway → api's sidecar inbound (mTLS) → app, and app → web's sidecar outbound →
// api's sidecar inbound (mTLS) → app. The mesh hop checks the server's SPIFFE ID as for any request,
// and api's inbound policy (authz by caller principal and path) decides on the upgrade.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compileMesh, parseEndpoint, TLS_MODE_LABEL, validateMesh, type Snapshot } from "../../shared/config/index.ts";
import { createCertificateAuthority } from "../../shared/identity/index.ts";
import { activeGate, createPolicyGate } from "../../shared/policy/index.ts";
import { createEngine, createGatewayView, createSidecarViews, type RequestRecord, type SidecarViews } from "../../shared/proxy/index.ts";
import { nodeRuntime } from "../../shared/runtime/node/index.ts";
import { createOutbound } from "../../sidecar/outbound.ts";
import { cleanupsAfterAll } from "../harness/cleanup.ts";
import { closed, openWs, roundTrip, startWsApp } from "../harness/websocket.ts";
import { meshIdentity } from "../harness/mesh-identity.ts";

const TD = "example.org";
const WEB = `spiffe://${TD}/ns/default/sa/web`;
const API = `spiffe://${TD}/ns/default/sa/api`;
const EDGE = `spiffe://${TD}/ns/default/sa/edge`;

const cleanups = cleanupsAfterAll();

const ca = await createCertificateAuthority({ trustDomain: TD, intermediate: true });
const app = await startWsApp();
cleanups.push(app.close);

const valid = validateMesh({
  trustDomain: TD,
  services: {
    api: {
      inbound: {
        authz: [{ name: "known-callers", rules: [{ from: [{ principals: [`${TD}/ns/default/sa/web`, `${TD}/ns/default/sa/edge`] }], to: [{ paths: ["/chat*", "/push*", "/refuse*"] }] }] }],
      },
    },
    web: {},
  },
  gateways: { edge: { listeners: [{ port: 0, address: "127.0.0.1" }], routes: [{ forward: { to: [{ service: "api" }] } }] } },
});
assert.ok(valid.ok, JSON.stringify(!valid.ok && valid.issues));
const compiled = compileMesh(valid.value, 1);
let snapshot: Snapshot = compiled;

// api's sidecar: STRICT mTLS inbound, its inbound policy, then the app.
const inboundRecords: RequestRecord[] = [];
const apiClient = nodeRuntime.createUpstreamClient();
let apiViews: SidecarViews | undefined;
const inbound = await nodeRuntime.listen(
  { port: 0, address: "127.0.0.1", maxHeaderCount: 100, maxHeaderBytes: 16384, mesh: { identity: await meshIdentity(ca, API), mode: () => "STRICT" } },
  { engine: createEngine({ client: apiClient, edge: false, onRequestDone: (r) => inboundRecords.push({ ...r }) }), current: () => apiViews!.inbound },
);
cleanups.push(async () => {
  await inbound.close();
  await apiClient.close();
});
// Discovery's part: api's registered endpoint is its sidecar's inbound port, speaking mesh mTLS.
const apiEndpoints = [parseEndpoint(`127.0.0.1:${inbound.port}`, { [TLS_MODE_LABEL]: "mesh" })];
snapshot = { ...compiled, services: new Map([...compiled.services, ["api", { ...compiled.services.get("api")!, endpoints: apiEndpoints }]]) };
apiViews = createSidecarViews(snapshot, "api", { app: parseEndpoint(app.address), createPolicy: (p) => activeGate(createPolicyGate(p)) });

// The gateway, with its own mesh identity.
const edgeClient = nodeRuntime.createUpstreamClient();
const edgeView = createGatewayView(snapshot, "edge");
const gateway = await nodeRuntime.listen(
  { port: 0, address: "127.0.0.1", maxHeaderCount: 100, maxHeaderBytes: 16384 },
  { engine: createEngine({ client: edgeClient, edge: true, meshIdentity: await meshIdentity(ca, EDGE) }), current: () => edgeView },
);
cleanups.push(async () => {
  await gateway.close();
  await edgeClient.close();
});

// web's sidecar: the outbound side its app calls with Host: api.
const webClient = nodeRuntime.createUpstreamClient();
const webViews = createSidecarViews(snapshot, "web", { app: parseEndpoint("127.0.0.1:1") });
const outbound = await nodeRuntime.listen(
  { port: 0, address: "127.0.0.1", maxHeaderCount: 100, maxHeaderBytes: 16384 },
  createOutbound({ engine: createEngine({ client: webClient, edge: false, meshIdentity: await meshIdentity(ca, WEB) }), current: () => webViews, want: () => {}, proxyId: "web-test" }),
);
cleanups.push(async () => {
  await outbound.close();
  await webClient.close();
});

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

test("client → gateway → sidecar (mTLS) → app: the upgrade passes, the app sees the gateway's verified identity", async () => {
  const r = await openWs(`ws://127.0.0.1:${gateway.port}/chat/a`, { headers: { host: "shop.test" } });
  assert.ok(r.ok);
  assert.equal((await roundTrip(r.ws, "via gateway")).toString(), "via gateway");
  assert.equal(app.upgrades.at(-1)!.headers["x-forwarded-client-cert"], `URI=${EDGE}`);
  r.ws.close();
  await closed(r.ws);
});

test("app → sidecar → sidecar (mTLS) → app: the upgrade passes with the caller's identity, and MB messages arrive intact both ways", async () => {
  const r = await openWs(`ws://127.0.0.1:${outbound.port}/push/2097152`, { headers: { host: "api", "user-agent": "mesh-ws" } });
  assert.ok(r.ok);
  const pushed = await new Promise<Buffer>((resolve) => r.ws.once("message", (m) => resolve(m as Buffer)));
  assert.equal(pushed.length, 2097152);
  const big = Buffer.alloc(4 * 1024 * 1024);
  for (let i = 0; i < big.length; i += 4) big.writeUInt32LE((i * 2246822519) >>> 0, i);
  const back = await roundTrip(r.ws, big, 20_000);
  assert.equal(sha(back), sha(big));
  assert.equal(app.upgrades.at(-1)!.headers["x-forwarded-client-cert"], `URI=${WEB}`);
  r.ws.close(1000);
  assert.equal(await closed(r.ws), 1000);
  // The receiving sidecar logs the upgrade once it ended: 101, the caller's SPIFFE ID, the bytes.
  let record: RequestRecord | undefined;
  for (let i = 0; i < 100 && !record; i++) {
    record = inboundRecords.find((x) => x.userAgent === "mesh-ws");
    if (!record) await new Promise((res) => setTimeout(res, 20));
  }
  assert.ok(record);
  assert.equal(record.status, 101);
  assert.equal(record.sourcePrincipal, WEB);
  assert.ok(record.bytesIn >= big.length && record.bytesOut >= big.length + 2097152, `${record.bytesIn} ${record.bytesOut}`);
});

test("an upgrade the receiving sidecar's policy denies gets 403 through both proxies and never reaches the app", async () => {
  const before = app.upgrades.length;
  const viaGateway = await openWs(`ws://127.0.0.1:${gateway.port}/admin`);
  assert.deepEqual(viaGateway.ok ? "open" : [viaGateway.status, viaGateway.reason], [403, "denied"]);
  const viaSidecar = await openWs(`ws://127.0.0.1:${outbound.port}/admin`, { headers: { host: "api" } });
  assert.deepEqual(viaSidecar.ok ? "open" : [viaSidecar.status, viaSidecar.reason], [403, "denied"]);
  assert.equal(app.upgrades.length, before);
});

test("an app refusing the upgrade has its status relayed across the mesh", async () => {
  const r = await openWs(`ws://127.0.0.1:${outbound.port}/refuse/404`, { headers: { host: "api" } });
  assert.deepEqual(r.ok ? "open" : [r.status, r.body], [404, "refused\n"]);
});

test("an app on a Unix socket (sidecar --app-socket) gets the upgrade from the inbound side", async () => {
  const dir = mkdtempSync(join(tmpdir(), "weft-ws-uds-"));
  const socketApp = await startWsApp({ path: join(dir, "app.sock") });
  const client = nodeRuntime.createUpstreamClient();
  const views = createSidecarViews(snapshot, "api", { app: parseEndpoint(`unix:${join(dir, "app.sock")}`) });
  const listener = await nodeRuntime.listen(
    { port: 0, address: "127.0.0.1", maxHeaderCount: 100, maxHeaderBytes: 16384 },
    { engine: createEngine({ client, edge: false }), current: () => views.inbound },
  );
  try {
    const r = await openWs(`ws://127.0.0.1:${listener.port}/chat/uds`, { headers: { host: "api" } });
    assert.ok(r.ok);
    assert.equal((await roundTrip(r.ws, "over uds")).toString(), "over uds");
    assert.equal(socketApp.upgrades.at(-1)!.url, "/chat/uds");
    r.ws.close();
    await closed(r.ws);
  } finally {
    await listener.close();
    await client.close();
    await socketApp.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
