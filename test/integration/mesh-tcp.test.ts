// Raw TCP into the mesh (Node runtime), real sockets and SVIDs from the weft CA: a gateway tcp
// listener originates mesh mTLS (ALPN weft-tcp, transport header) to the destination's sidecar
// inbound port, which checks the caller against the service's authorization policy before it opens
// anything to the app, then pipes to the app's port on loopback.
import { test } from "node:test";
import assert from "node:assert/strict";
import { compileMesh, parseEndpoint, TLS_MODE_LABEL, validateMesh, type MeshInput, type Snapshot } from "../../shared/config/index.ts";
import { createCertificateAuthority } from "../../shared/identity/index.ts";
import { createEngine, createTcpProxy, type MeshIdentity, type TcpRecord } from "../../shared/proxy/index.ts";
import { nodeRuntime } from "../../shared/runtime/node/index.ts";
import { createLogger } from "../../shared/telemetry/index.ts";
import { createIngress } from "../../gateway/ingress.ts";
import { createInboundTcpView } from "../../sidecar/inbound.ts";
import { cleanupsAfterAll } from "../harness/cleanup.ts";
import { meshIdentity } from "../harness/mesh-identity.ts";
import { echoThrough, startTcpEcho } from "../harness/tcp-echo.ts";

const TD = "example.org";
const EDGE = `spiffe://${TD}/ns/default/sa/edge`;
const INTRUDER = `spiffe://${TD}/ns/default/sa/intruder`;
const DB = `spiffe://${TD}/ns/default/sa/db`;

const cleanups = cleanupsAfterAll();

function collector() {
  const records: TcpRecord[] = [];
  const waiters: (() => void)[] = [];
  return {
    records,
    push(r: TcpRecord) {
      records.push({ ...r });
      for (const w of waiters.splice(0)) w();
    },
    async until(n: number) {
      while (records.length < n) await new Promise<void>((r) => waiters.push(r));
    },
  };
}

/** The db workload's inbound port (what `weft sidecar` runs): mesh mTLS, then HTTP or raw TCP to the app. */
async function startInbound(snapshot: Snapshot, identity: MeshIdentity, appPort: number) {
  const inbound = collector();
  const view = createInboundTcpView(snapshot, "db", parseEndpoint(`127.0.0.1:${appPort}`));
  const proxy = createTcpProxy({ meshIdentity: identity, onConnectionDone: inbound.push });
  const client = nodeRuntime.createUpstreamClient();
  const listener = await nodeRuntime.listen(
    {
      port: 0,
      address: "127.0.0.1",
      maxHeaderCount: 100,
      maxHeaderBytes: 16384,
      mesh: { identity, mode: () => "STRICT", tcp: { proxy, current: () => view } },
    },
    { engine: createEngine({ client, edge: false }), current: () => undefined as never },
  );
  cleanups.push(async () => {
    listener.destroy?.();
    await listener.close();
    await client.close();
  });
  return { port: listener.port, ...inbound };
}

/** The mesh config with db's endpoint marked as a sidecar (mTLS), as the registry announces it. */
function meshSnapshot(input: MeshInput, inboundPort: number): Snapshot {
  const valid = validateMesh(input);
  if (!valid.ok) throw new Error(JSON.stringify(valid.issues));
  const compiled = compileMesh(valid.value);
  const db = compiled.services.get("db")!;
  const services = new Map(compiled.services);
  services.set("db", { ...db, endpoints: [parseEndpoint(`127.0.0.1:${inboundPort}`, { [TLS_MODE_LABEL]: "mesh" })] });
  return { ...compiled, services };
}

async function startGateway(name: string, snapshot: Snapshot, identity: MeshIdentity) {
  const gateway = collector();
  const log = createLogger({ component: "test", level: "error", write: () => {} });
  const ingress = createIngress({ runtime: nodeRuntime, name, log, meshIdentity: identity, onConnectionDone: gateway.push });
  await ingress.apply(snapshot);
  cleanups.push(() => ingress.stop(1000));
  return { port: [...ingress.ports.values()][0]!, ...gateway };
}

const ca = await createCertificateAuthority({ trustDomain: TD, intermediate: true });
const app = await startTcpEcho();
cleanups.push(app.close);

function config(appPort: number): MeshInput {
  const tcpGateway = () => ({
    listeners: [{ port: 0, address: "127.0.0.1", protocol: "tcp" as const }],
    routes: [],
    tcpRoutes: [{ name: "db", to: [{ service: "db", port: appPort }] }],
  });
  return {
    trustDomain: TD,
    services: {
      db: {
        ports: [{ port: 8080 }, { port: appPort, protocol: "tcp" }],
        inbound: { authz: [{ name: "edge-only", action: "ALLOW", rules: [{ from: [{ principals: [`${TD}/ns/default/sa/edge`] }], to: [{ ports: [appPort] }] }] }] },
      },
    },
    gateways: { edge: tcpGateway(), intruder: tcpGateway() },
  };
}

test("a gateway tcp listener reaches the app through the destination's sidecar over mTLS, several MB intact both ways", async () => {
  const dbIdentity = await meshIdentity(ca, DB);
  const placeholder = meshSnapshot(config(app.port), 1);
  const inbound = await startInbound(placeholder, dbIdentity, app.port);
  const snapshot = meshSnapshot(config(app.port), inbound.port);
  const gw = await startGateway("edge", snapshot, await meshIdentity(ca, EDGE));
  const payload = Buffer.alloc(4 * 1024 * 1024);
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 131 + (i >> 9)) & 0xff;
  const back = await echoThrough(gw.port, payload);
  assert.ok(back !== "closed" && back.equals(payload), "the echo came back whole");
  await gw.until(1);
  await inbound.until(1);
  const g = gw.records[0]!;
  assert.deepEqual([g.route, g.service, g.upstream, g.bytesIn, g.bytesOut], ["db", "db", `127.0.0.1:${inbound.port}`, payload.length, payload.length]);
  const i = inbound.records[0]!;
  // The inbound saw the gateway's verified identity and piped to the app's port.
  assert.deepEqual([i.sourcePrincipal, i.localPort, i.upstream, i.bytesIn, i.bytesOut, i.reason], [EDGE, app.port, `127.0.0.1:${app.port}`, payload.length, payload.length, undefined]);
});

test("authorization by source principal on a tcp port: another workload is refused before any byte reaches the app", async () => {
  const dbIdentity = await meshIdentity(ca, DB);
  const inbound = await startInbound(meshSnapshot(config(app.port), 1), dbIdentity, app.port);
  const snapshot = meshSnapshot(config(app.port), inbound.port);
  const edge = await startGateway("edge", snapshot, await meshIdentity(ca, EDGE));
  const intruder = await startGateway("intruder", snapshot, await meshIdentity(ca, INTRUDER));

  const before = app.accepted();
  assert.equal(await echoThrough(intruder.port, Buffer.from("let me in")), "closed");
  await inbound.until(1);
  assert.deepEqual([inbound.records[0]!.reason, inbound.records[0]!.sourcePrincipal, inbound.records[0]!.upstream], ["denied", INTRUDER, undefined]);
  assert.equal(app.accepted(), before, "the app never saw the refused connection");

  const ok = await echoThrough(edge.port, Buffer.from("hello"));
  assert.ok(ok !== "closed" && ok.toString() === "hello");
  await inbound.until(2);
  assert.equal(inbound.records[1]!.reason, undefined);
  assert.equal(app.accepted(), before + 1);
});

test("the inbound refuses a port the service does not declare as tcp, so it cannot reach any other loopback port", async () => {
  const dbIdentity = await meshIdentity(ca, DB);
  const inbound = await startInbound(meshSnapshot(config(app.port), 1), dbIdentity, app.port);
  // The gateway's route names db's http port: the inbound must not pipe bytes to it.
  const input = config(app.port);
  const snapshot = meshSnapshot(input, inbound.port);
  const gwSnapshot: Snapshot = {
    ...snapshot,
    gateways: new Map([["edge", { ...snapshot.gateways.get("edge")!, tcpRoutes: [{ name: "db", to: [{ service: "db", weight: 1, port: 8080 }] }] }]]),
  };
  const gw = await startGateway("edge", gwSnapshot, await meshIdentity(ca, EDGE));
  assert.equal(await echoThrough(gw.port, Buffer.from("GET / HTTP/1.1\r\n\r\n")), "closed");
  await inbound.until(1);
  assert.deepEqual([inbound.records[0]!.reason, inbound.records[0]!.localPort], ["unknown_port", 8080]);
});
