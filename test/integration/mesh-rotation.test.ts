// Certificate rotation under load, for real: NATS, the control plane with its CA (10 s leaves), a
// gateway and a sidecar as processes, mTLS between them. For 60 s a bounded load goes client →
// gateway → (mTLS) → sidecar → app while every proxy renews its leaf about every 5 s, and the root
// is rotated in the middle (both roots trusted, issuance switched, old root retired). Not one
// request may fail.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectNatsBus, type Bus } from "../../shared/bus/index.ts";
import { startControlPlane, type ControlPlane } from "../../control/plane.ts";
import { startNatsServer, type NatsServer } from "../harness/nats-server.ts";
import { freePort } from "../harness/ports.ts";
import { startUpstream, type TestUpstream } from "../harness/upstream.ts";
import { spawnWeft, type WeftProcess } from "../harness/weft-process.ts";

const LOAD_MS = 60_000;
const MAX_REQUESTS = 200_000;
const LEAF_TTL_MS = 10_000;

function get(agent: http.Agent, port: number): Promise<{ status: number; reason?: string }> {
  return new Promise((resolve) => {
    const req = http.get({ host: "127.0.0.1", port, path: "/work", agent, headers: { host: "mesh.test" } }, (res) => {
      res.resume();
      res.on("end", () => resolve({ status: res.statusCode ?? 0, reason: res.headers["x-weft-reason"] as string | undefined }));
    });
    req.setTimeout(10_000, () => req.destroy(new Error("client timeout")));
    req.on("error", (e: NodeJS.ErrnoException) => resolve({ status: 0, reason: e.code ?? e.message }));
  });
}

describe("certificate rotation under load (gateway → sidecar over mTLS)", () => {
  let dir: string;
  let nats: NatsServer;
  let bus: Bus;
  let control: ControlPlane;
  let app: TestUpstream;
  let sidecar: WeftProcess;
  let gateway: WeftProcess;
  let gatewayPort: number;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "weft-rotation-"));
    nats = await startNatsServer();
    bus = await connectNatsBus({ servers: [nats.url], name: "rotation-test" });
    control = await startControlPlane({ bus, id: "control-1", ca: { trustDomain: "cluster.local", stateDir: join(dir, "control"), leafTtlMs: LEAF_TTL_MS } });
    gatewayPort = await freePort();
    const applied = await control.apply({
      services: { api: {} },
      gateways: { ingress: { listeners: [{ port: gatewayPort, address: "127.0.0.1" }], routes: [{ name: "all", forward: { to: [{ service: "api" }] } }] } },
    });
    assert.equal(applied.ok, true, JSON.stringify(applied));
    app = await startUpstream((_req, res) => res.end("ok"));
    const env = { WEFT_STATE_DIR: join(dir, "state") };
    sidecar = spawnWeft(
      ["sidecar", "--service", "api", "--app-port", String(app.port), "--nats", nats.url, "--inbound-port", "0", "--inbound-address", "127.0.0.1", "--outbound-port", "0", "--admin", "127.0.0.1:0", "--proxy-id", "sc-api", "--join-token", await control.ca!.mintToken("default", "api", 600_000)],
      { env },
    );
    gateway = spawnWeft(
      ["gateway", "--nats", nats.url, "--name", "ingress", "--admin", "127.0.0.1:0", "--proxy-id", "gw-ingress", "--join-token", await control.ca!.mintToken("default", "ingress", 600_000)],
      { env },
    );
    await sidecar.waitForLog((l) => l.msg === "sidecar ready");
    await gateway.waitForLog((l) => l.msg === "certificate held");
    // Wait until the gateway routes to the registered sidecar.
    const agent = new http.Agent({ keepAlive: false });
    const deadline = Date.now() + 20_000;
    for (;;) {
      const r = await get(agent, gatewayPort);
      if (r.status === 200) break;
      if (Date.now() > deadline) assert.fail(`gateway never reached the sidecar: ${JSON.stringify(r)}`);
      await new Promise((res) => setTimeout(res, 200));
    }
  });

  after(async () => {
    await gateway?.stop();
    await sidecar?.stop();
    await control?.stop();
    await bus?.close();
    await nats?.stop();
    await app?.close();
    await rm(dir, { recursive: true, force: true });
  });

  test("60 s of requests see zero failures while leaves rotate at least 5 times and the root is rotated", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
    const started = Date.now();
    const failures: { at: number; status: number; reason?: string }[] = [];
    let sent = 0;
    const steps: string[] = [];
    const rootRotation = (async () => {
      // Root rotation at 15 s, 27 s and 45 s: every proxy has the two-root bundle well before
      // issuance switches, and has renewed from the new root (every ~5 s) before the old one goes.
      const at = (ms: number) => new Promise((r) => setTimeout(r, ms - (Date.now() - started)));
      await at(15_000);
      steps.push(`rotate:${(await control.ca!.rotateRoot()).ok}`);
      await at(27_000);
      steps.push(`switch:${(await control.ca!.switchIssuance()).ok}`);
      await at(45_000);
      steps.push(`retire:${(await control.ca!.retireOldRoot()).ok}`);
    })();
    const worker = async () => {
      while (Date.now() - started < LOAD_MS && sent < MAX_REQUESTS) {
        sent++;
        const r = await get(agent, gatewayPort);
        if (r.status !== 200) failures.push({ at: Date.now() - started, ...r });
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
    await rootRotation;
    agent.destroy();

    const renewals = (p: WeftProcess) => p.logs().filter((l) => l.msg === "certificate renewed").length;
    const bundles = (p: WeftProcess) => p.logs().filter((l) => l.msg === "trust bundle updated").length;
    const summary = { sent, failures: failures.slice(0, 5), steps, sidecarRenewals: renewals(sidecar), gatewayRenewals: renewals(gateway), sidecarBundles: bundles(sidecar) };
    console.log(`# rotation under load: ${JSON.stringify(summary)}`);
    assert.deepEqual(steps, ["rotate:true", "switch:true", "retire:true"]);
    assert.deepEqual(failures, []);
    assert.ok(sent > 1000, `only ${sent} requests were sent`);
    assert.ok(renewals(sidecar) >= 5 && renewals(gateway) >= 5, JSON.stringify(summary));
    // Both bundle changes (two roots, then the new one alone) reached the proxies.
    assert.ok(bundles(sidecar) >= 2 && bundles(gateway) >= 2, JSON.stringify(summary));
  });
});
