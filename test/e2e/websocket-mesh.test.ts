// WebSocket through the mesh with real processes: nats-server, the control plane (its CA signs every
// proxy's SVID), a gateway and two sidecars, each its own process. Two chains:
//   ws client → gateway → (mTLS) → api's sidecar → ws app
//   ws client as web's app → web's sidecar outbound → (mTLS) → api's sidecar → ws app
// api asks its callers for HTTP/2 (h2UpgradePolicy UPGRADE): plain requests go h2, the upgrade stays HTTP/1.1.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectNatsBus, type Bus } from "../../shared/bus/index.ts";
import { startControlPlane, type ControlPlane } from "../../control/plane.ts";
import { startNatsServer, type NatsServer } from "../harness/nats-server.ts";
import { freePort } from "../harness/ports.ts";
import { request } from "../harness/upstream.ts";
import { closed, openWs, roundTrip, startWsApp, type WsApp } from "../harness/websocket.ts";
import { spawnWeft, type WeftProcess } from "../harness/weft-process.ts";

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

describe("WebSocket between weft processes (gateway → sidecar → app, app → sidecar → sidecar → app)", () => {
  let dir: string;
  let nats: NatsServer;
  let bus: Bus;
  let control: ControlPlane;
  let app: WsApp;
  const procs: WeftProcess[] = [];
  let apiSidecar: WeftProcess;
  let gatewayPort: number;
  let outboundPort: number;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "weft-ws-mesh-"));
    app = await startWsApp();
    nats = await startNatsServer();
    bus = await connectNatsBus({ servers: [nats.url], name: "ws-mesh-test" });
    control = await startControlPlane({ bus, id: "control-1", ca: { trustDomain: "cluster.local", stateDir: join(dir, "control") } });
    gatewayPort = await freePort();
    const applied = await control.apply({
      services: {
        api: {
          ports: [{ port: 8080, protocol: "http" }],
          traffic: { h2UpgradePolicy: "UPGRADE" },
          inbound: {
            authz: [
              {
                name: "known-callers",
                rules: [{ from: [{ principals: ["cluster.local/ns/default/sa/web", "cluster.local/ns/default/sa/ingress"] }], to: [{ paths: ["/chat*", "/push*", "/refuse*", "/plain*"] }] }],
              },
            ],
          },
        },
        web: { ports: [{ port: 8080, protocol: "http" }] },
      },
      gateways: {
        ingress: {
          listeners: [{ port: gatewayPort, address: "127.0.0.1" }],
          routes: [{ name: "api", forward: { to: [{ service: "api" }] } }],
        },
      },
    });
    assert.equal(applied.ok, true, JSON.stringify(applied));
    const common = ["--nats", nats.url, "--inbound-port", "0", "--inbound-address", "127.0.0.1", "--outbound-port", "0", "--admin", "127.0.0.1:0"];
    const env = { WEFT_STATE_DIR: join(dir, "state") };
    const sidecar = async (service: string, appPort: number, extra: string[] = []) =>
      spawnWeft(["sidecar", "--service", service, "--app-port", String(appPort), "--proxy-id", `sc-${service}`, "--join-token", await control.ca!.mintToken("default", service, 600_000), ...common, ...extra], { env });
    apiSidecar = await sidecar("api", app.port, ["--grace-ms", "400"]);
    // web's app is the test itself; its sidecar needs an app port only for its own inbound side.
    const webSidecar = await sidecar("web", 9);
    const gateway = spawnWeft(["gateway", "--nats", nats.url, "--name", "ingress", "--admin", "127.0.0.1:0", "--proxy-id", "gw", "--join-token", await control.ca!.mintToken("default", "ingress", 600_000)], { env });
    procs.push(apiSidecar, webSidecar, gateway);
    outboundPort = (await webSidecar.waitForLog((l) => l.msg === "sidecar listening")).outbound as number;
    for (const p of [apiSidecar, webSidecar]) await p.waitForLog((l) => l.msg === "sidecar ready");
    await gateway.waitForLog((l) => l.msg === "certificate held");
    // Registration reaches the callers' views asynchronously: wait until a plain request gets through both ways.
    const deadline = Date.now() + 20_000;
    for (;;) {
      const [a, b] = await Promise.all([
        request(gatewayPort, { path: "/plain/warm" }).catch(() => ({ status: 0 })),
        request(outboundPort, { path: "/plain/warm", headers: { host: "api" } }).catch(() => ({ status: 0 })),
      ]);
      if (a.status === 200 && b.status === 200) break;
      if (Date.now() > deadline) throw new Error(`mesh not ready: ${a.status} / ${b.status}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  });

  after(async () => {
    for (const p of procs) await p.stop();
    await control?.stop();
    await bus?.close();
    await nats?.stop();
    await app?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test("plain requests to api travel as HTTP/2 between the proxies", async () => {
    await request(gatewayPort, { path: "/plain/h2", headers: { "user-agent": "ws-mesh-plain" } });
    let entry: Record<string, unknown> | undefined;
    for (let i = 0; i < 100 && !entry; i++) {
      entry = apiSidecar.accessLog().find((l) => l.user_agent === "ws-mesh-plain");
      if (!entry) await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(entry?.protocol, "HTTP/2");
  });

  test("client → gateway → sidecar → app: echo, with the gateway's identity at the app", async () => {
    const r = await openWs(`ws://127.0.0.1:${gatewayPort}/chat/g`, { protocols: ["chat"] });
    assert.ok(r.ok);
    assert.equal(r.protocol, "chat");
    assert.equal((await roundTrip(r.ws, "via gateway")).toString(), "via gateway");
    assert.equal(app.upgrades.at(-1)!.headers["x-forwarded-client-cert"], "URI=spiffe://cluster.local/ns/default/sa/ingress");
    r.ws.close(1000);
    assert.equal(await closed(r.ws), 1000);
  });

  test("app → sidecar → sidecar → app: MB messages both ways, web's identity at the app, a 101 line in api's sidecar log", async () => {
    const r = await openWs(`ws://127.0.0.1:${outboundPort}/push/1048576`, { headers: { host: "api", "user-agent": "ws-mesh-outbound" } });
    assert.ok(r.ok);
    const pushed = await new Promise<Buffer>((resolve) => r.ws.once("message", (m) => resolve(m as Buffer)));
    assert.equal(pushed.length, 1048576);
    const big = Buffer.alloc(3 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i);
    assert.equal(sha(await roundTrip(r.ws, big, 20_000)), sha(big));
    assert.equal(app.upgrades.at(-1)!.headers["x-forwarded-client-cert"], "URI=spiffe://cluster.local/ns/default/sa/web");
    r.ws.close(1000);
    await closed(r.ws);
    let entry: Record<string, unknown> | undefined;
    for (let i = 0; i < 100 && !entry; i++) {
      entry = apiSidecar.accessLog().find((l) => l.user_agent === "ws-mesh-outbound");
      if (!entry) await new Promise((res) => setTimeout(res, 50));
    }
    assert.ok(entry, "api's sidecar logged the upgrade");
    assert.equal(entry.status, 101);
    assert.equal(entry.protocol, "HTTP/1.1");
    assert.equal(entry.source_principal, "spiffe://cluster.local/ns/default/sa/web");
    assert.ok((entry.bytes_received as number) >= big.length, String(entry.bytes_received));
  });

  test("an upgrade api's inbound policy denies gets 403 through both proxies and never reaches the app", async () => {
    const before = app.upgrades.length;
    const viaGateway = await openWs(`ws://127.0.0.1:${gatewayPort}/admin`);
    assert.deepEqual(viaGateway.ok ? "open" : [viaGateway.status, viaGateway.reason], [403, "denied"]);
    const viaOutbound = await openWs(`ws://127.0.0.1:${outboundPort}/admin`, { headers: { host: "api" } });
    assert.deepEqual(viaOutbound.ok ? "open" : [viaOutbound.status, viaOutbound.reason], [403, "denied"]);
    assert.equal(app.upgrades.length, before);
  });

  test("an app refusing the upgrade has its status relayed through both proxies", async () => {
    const r = await openWs(`ws://127.0.0.1:${gatewayPort}/refuse/426`);
    assert.deepEqual(r.ok ? "open" : [r.status, r.body], [426, "refused\n"]);
  });

  // Last: it stops api's sidecar.
  test("a draining sidecar closes an upgraded connection through it once its grace period is over", async () => {
    const r = await openWs(`ws://127.0.0.1:${gatewayPort}/chat/drain`);
    assert.ok(r.ok);
    assert.equal((await roundTrip(r.ws, "before")).toString(), "before");
    const code = closed(r.ws, 5000);
    process.kill(apiSidecar.pid, "SIGTERM");
    await new Promise((res) => setTimeout(res, 100));
    assert.equal(r.ws.readyState, r.ws.OPEN, "open during the grace period");
    // The sidecar's end of the tunnel closes; the gateway passes the close on to the client.
    assert.equal(await code, 1006);
    await apiSidecar.waitForLog((l) => l.msg === "stopped", 5000);
    // Closed by the drain itself, not by the process going away.
    const line = apiSidecar.accessLog().find((l) => l.path === "/chat/drain");
    assert.deepEqual([line?.status, line?.reason], [101, "drained"]);
  });
});
