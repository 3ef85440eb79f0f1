// weft control + weft gateway + weft apply as real processes on a real nats-server: apply, refusal,
// NATS outage and return, restart from the persisted config, and concurrent replicas.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import http from "node:http";
import { CONFIG_BUCKET, connectNatsBus, decodeJson, APPLIED_KEY } from "../../shared/bus/index.ts";
import { startControlPlane } from "../../control/plane.ts";
import { startNatsServer, type NatsServer } from "../harness/nats-server.ts";
import { freePort } from "../harness/ports.ts";
import { replyAs, request, startUpstream, type TestUpstream } from "../harness/upstream.ts";
import { until, type UntilOptions } from "../harness/wait.ts";
import { runWeft, spawnWeft, type WeftProcess } from "../harness/weft-process.ts";

/** Polls of a gateway or the CLI while processes start and restart: a refused connection means "not yet". */
const POLL: UntilOptions = { timeoutMs: 15_000, intervalMs: 50, retryErrors: true };

function meshConfig(port: number, a: TestUpstream, b: TestUpstream, target: "alpha" | "beta") {
  return {
    services: {
      alpha: { endpoints: [{ address: a.address }] },
      beta: { endpoints: [{ address: b.address }] },
    },
    gateways: {
      edge: {
        listeners: [{ port, address: "127.0.0.1" }],
        routes: [
          { name: "ping", match: { path: { exact: "/ping" } }, directResponse: { status: 200, body: "pong" } },
          { name: "main", forward: { to: [{ service: target }] } },
        ],
      },
    },
  };
}

describe("control plane over NATS", () => {
  let nats: NatsServer;
  let a: TestUpstream;
  let b: TestUpstream;
  let control: WeftProcess;
  let gateway: WeftProcess;
  let dir: string;
  let gwPort: number;
  const upstreamOf = async () => {
    const r = await request(gwPort, { path: "/" });
    return r.status === 200 ? (JSON.parse(r.body) as { upstream: string }).upstream : `status ${r.status}`;
  };
  const writeConfig = async (name: string, config: unknown) => {
    const file = join(dir, name);
    await writeFile(file, `export default ${JSON.stringify(config, null, 2)};\n`);
    return file;
  };
  const startGatewayProcess = () =>
    spawnWeft(["gateway", "--nats", nats.url, "--name", "edge", "--admin", "127.0.0.1:0", "--proxy-id", "gw-edge-1"], {
      env: { WEFT_STATE_DIR: join(dir, "state") },
    });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "weft-cp-"));
    nats = await startNatsServer();
    a = await startUpstream(replyAs("alpha"));
    b = await startUpstream(replyAs("beta"));
    gwPort = await freePort();
    control = spawnWeft(["control", "--nats", nats.url, "--id", "control-1", "--state-dir", join(dir, "control")]);
    await control.waitForLog((l) => l.msg === "control plane ready");
    gateway = startGatewayProcess();
    await gateway.waitForLog((l) => l.msg === "following the control plane");
  });
  after(async () => {
    await gateway?.stop();
    await control?.stop();
    await nats?.stop();
    await a?.close();
    await b?.close();
    await rm(dir, { recursive: true, force: true });
  });

  test("weft apply reaches the gateway, and weft status shows it in sync", async () => {
    const file = await writeConfig("weft.config.ts", meshConfig(gwPort, a, b, "alpha"));
    const r = await runWeft(["apply", file, "--nats", nats.url]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /gw\.edge created/);
    assert.match(r.stdout, /applied revision 1/);
    await until("gateway routes to alpha", async () => (await upstreamOf()) === "alpha", POLL);
    await until("status SYNCED", async () => {
      const s = await runWeft(["status", "--nats", nats.url, "-o", "json"]);
      const rows = JSON.parse(s.stdout) as { proxyId: string; sync: string; revision: number }[];
      return rows.some((row) => row.proxyId === "gw-edge-1" && row.sync === "SYNCED" && row.revision === 1);
    });
    const routes = await runWeft(["get", "routes", "--nats", nats.url]);
    assert.equal(routes.code, 0);
    assert.match(routes.stdout, /gw\.edge\s+main\s+\*\s+forward alpha/);
  });

  test("an invalid apply is refused with every problem listed, and the old routes keep serving", async () => {
    const bad = meshConfig(gwPort, a, b, "alpha") as { gateways: { edge: { routes: unknown[] } } };
    bad.gateways.edge.routes.push({ forward: { to: [{ service: "nope" }] } }, { match: { path: { regex: "(a+)+$" } }, directResponse: { status: 200 } });
    const file = await writeConfig("bad.config.ts", bad);
    const r = await runWeft(["apply", file, "--nats", nats.url]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /gateways\.edge\.routes\.2\.forward\.to\.0\.service: service "nope" is not declared/);
    assert.match(r.stderr, /gateways\.edge\.routes\.3\.match\.path\.regex:/);
    assert.equal(await upstreamOf(), "alpha");
  });

  test("with NATS down the gateway serves for 30 s without a failed request, and a later apply still arrives", async () => {
    await nats.kill();
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
    const started = Date.now();
    let sent = 0;
    const failures: string[] = [];
    while (Date.now() - started < 30_000 && sent < 1500) {
      const batch = await Promise.all(
        Array.from({ length: 4 }, () => request(gwPort, { path: "/", agent }).then((res) => res.status, (err: Error) => err.message)),
      );
      sent += batch.length;
      for (const status of batch) if (status !== 200) failures.push(String(status));
      await new Promise((r) => setTimeout(r, 50));
    }
    agent.destroy();
    assert.ok(sent >= 400, `sent ${sent}`);
    assert.deepEqual(failures, []);

    await nats.restart();
    const file = await writeConfig("beta.config.ts", meshConfig(gwPort, a, b, "beta"));
    await until("apply accepted after NATS returned", async () => (await runWeft(["apply", file, "--nats", nats.url])).code === 0, { ...POLL, timeoutMs: 20_000 });
    await until("gateway routes to beta", async () => (await upstreamOf()) === "beta", { ...POLL, timeoutMs: 20_000 });
  });

  test("a gateway restarted while NATS is down serves its persisted config", async () => {
    await nats.kill();
    await gateway.stop();
    gateway = startGatewayProcess();
    await gateway.waitForLog((l) => l.msg === "serving the last good config until the bus answers");
    await until("restarted gateway serves beta", async () => (await upstreamOf()) === "beta", POLL);
    await nats.restart();
    await gateway.waitForLog((l) => l.msg === "following the control plane");
    assert.equal(await upstreamOf(), "beta");
  });

  test("two control-plane replicas applying at once leave a consistent bucket", async () => {
    const busA = await connectNatsBus({ servers: nats.url });
    const busB = await connectNatsBus({ servers: nats.url });
    const cpA = await startControlPlane({ bus: busA, id: "replica-a" });
    const cpB = await startControlPlane({ bus: busB, id: "replica-b" });
    try {
      const configs = Array.from({ length: 6 }, (_, i) => {
        const services: Record<string, object> = {};
        for (let s = 0; s < 4; s++) services[`r${i}-${s}`] = { endpoints: [{ address: a.address }] };
        return { services, gateways: { edge: { listeners: [{ port: gwPort, address: "127.0.0.1" }], routes: [{ forward: { to: [{ service: `r${i}-0` }] } }] } } };
      });
      const results = await Promise.all(configs.map((c, i) => (i % 2 ? cpA : cpB).apply(c)));
      for (const r of results) assert.ok(r.ok, JSON.stringify(r));
      const kv = await busA.kv(CONFIG_BUCKET);
      const mesh = decodeJson((await kv.get(APPLIED_KEY))!.value);
      assert.ok(mesh.ok);
      const value = mesh.value as { services: string[]; generation: number };
      const gens = results.map((r) => (r.ok ? r.generation : 0));
      assert.equal(new Set(gens).size, gens.length, `distinct generations: ${gens}`);
      assert.equal(value.generation, Math.max(...gens));
      assert.deepEqual((await kv.keys("svc.*")).map((k) => k.slice(4)), [...value.services].sort());
      await until("gateway follows the last apply", async () => (await request(gwPort, { path: "/" })).status === 200, POLL);
    } finally {
      await cpA.stop();
      await cpB.stop();
      await busA.close();
      await busB.close();
    }
  });
});
