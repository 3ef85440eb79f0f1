// A sidecar sends calls for an external service to its egress gateway only once the server proves
// the gateway's SPIFFE ID: a mesh listener holding another workload's valid SVID is refused, and the
// call never goes out directly instead. Real sockets, SVIDs from the weft CA.
import { test } from "node:test";
import assert from "node:assert/strict";
import { compileMesh, parseEndpoint, TLS_MODE_LABEL, validateMesh, type Snapshot } from "../../shared/config/index.ts";
import { createCertificateAuthority } from "../../shared/identity/index.ts";
import { createEngine, createSidecarViews, type MeshIdentity, type RouteView } from "../../shared/proxy/index.ts";
import { nodeRuntime } from "../../shared/runtime/node/index.ts";
import { createOutbound } from "../../sidecar/outbound.ts";
import { cleanupsAfterAll } from "../harness/cleanup.ts";
import { meshIdentity } from "../harness/mesh-identity.ts";
import { request } from "../harness/upstream.ts";

const TD = "example.org";
const ca = await createCertificateAuthority({ trustDomain: TD });

/** A mesh mTLS listener that answers every request itself, standing in for whoever holds `id`. */
async function meshServer(id: MeshIdentity) {
  const view: RouteView = {
    revision: 1,
    route: () => ({ route: { name: "any", directResponse: { status: 200, body: "gateway reached", contentType: "text/plain" } }, index: 0, path: "/" }),
    cluster: () => undefined,
    policy: undefined,
    xffTrustedHops: 0,
  };
  const client = nodeRuntime.createUpstreamClient();
  const listener = await nodeRuntime.listen(
    { port: 0, address: "127.0.0.1", maxHeaderCount: 100, maxHeaderBytes: 16384, mesh: { identity: id, mode: () => "STRICT" } },
    { engine: createEngine({ client, edge: true }), current: () => view },
  );
  return { port: listener.port, close: async () => (await listener.close(), await client.close()) };
}

function snapshotWithGateway(port: number): Snapshot {
  const r = validateMesh({
    trustDomain: TD,
    services: { web: {} },
    gateways: { egress: { kind: "egress", listeners: [{ port: 15443 }], routes: [] } },
    // No retry, so the refusal shows as the connect failure it is.
    externalServices: { api: { hosts: ["api.external.test"], ports: [{ port: 443, protocol: "https" }], egress: { gateway: "egress" }, traffic: { retries: { attempts: 0 } } } },
  });
  assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
  const snap = compileMesh(r.value, 1);
  const gw = snap.egressGateways!.get("egress")!;
  const endpoint = parseEndpoint(`127.0.0.1:${port}`, { [TLS_MODE_LABEL]: "mesh" });
  return { ...snap, egressGateways: new Map([["egress", { ...gw, endpoints: [endpoint] }]]) };
}

const cleanups = cleanupsAfterAll();

test("the sidecar reaches a server holding the egress gateway's SPIFFE ID, and refuses one holding another workload's", async () => {
  const web = await meshIdentity(ca, `spiffe://${TD}/ns/default/sa/web`);
  const real = await meshServer(await meshIdentity(ca, `spiffe://${TD}/ns/default/sa/egress`));
  const rogue = await meshServer(await meshIdentity(ca, `spiffe://${TD}/ns/default/sa/rogue`));
  cleanups.push(real.close, rogue.close);
  const client = nodeRuntime.createUpstreamClient();
  cleanups.push(() => client.close());
  const engine = createEngine({ client, edge: false, meshIdentity: web });

  for (const [server, expected] of [
    [real, [200, undefined]],
    [rogue, [503, "upstream_connect_failure"]],
  ] as const) {
    const views = createSidecarViews(snapshotWithGateway(server.port), "web", { app: parseEndpoint("127.0.0.1:1") });
    const outbound = createOutbound({ engine, current: () => views, proxyId: "sc-web", discoveryWaitMs: 10, want: () => {} });
    const listener = await nodeRuntime.listen({ port: 0, address: "127.0.0.1", maxHeaderCount: 100, maxHeaderBytes: 16384 }, outbound);
    try {
      const r = await request(listener.port, { headers: { host: "api.external.test:443" } });
      assert.deepEqual([r.status, r.headers["x-weft-reason"]], expected, r.body);
    } finally {
      await listener.close();
    }
  }
});
