// A bus gateway with an identity attestation reports /ready only once it holds its certificate:
// before that it could not call any mesh workload, so a load balancer must not send it traffic.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectNatsBus, type Bus } from "../../shared/bus/index.ts";
import { startControlPlane, type ControlPlane } from "../../control/plane.ts";
import { startNatsServer, type NatsServer } from "../harness/nats-server.ts";
import { freePort } from "../harness/ports.ts";
import { spawnWeft, type WeftProcess } from "../harness/weft-process.ts";

describe("gateway readiness with an identity", () => {
  let dir: string;
  let nats: NatsServer;
  let bus: Bus;
  let control: ControlPlane;
  const procs: WeftProcess[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "weft-gw-ready-"));
    nats = await startNatsServer();
    bus = await connectNatsBus({ servers: [nats.url], name: "gateway-ready-test" });
    control = await startControlPlane({ bus, id: "control-1", ca: { trustDomain: "cluster.local", stateDir: join(dir, "control") } });
    const applied = await control.apply({
      services: { app: {} },
      gateways: {
        good: { listeners: [{ port: await freePort(), address: "127.0.0.1" }], routes: [{ name: "app", forward: { to: [{ service: "app" }] } }] },
        bad: { listeners: [{ port: await freePort(), address: "127.0.0.1" }], routes: [{ name: "app", forward: { to: [{ service: "app" }] } }] },
      },
    });
    assert.ok(applied.ok);
  });

  after(async () => {
    for (const p of procs) await p.stop();
    await control?.stop();
    await bus?.close();
    await nats?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function ready(adminPort: number): Promise<{ status: number; text: string }> {
    const r = await fetch(`http://127.0.0.1:${adminPort}/ready`);
    return { status: r.status, text: await r.text() };
  }

  test("/ready waits for the certificate: 503 'certificate' while the CA refuses the token, 200 once a good token's SVID is held", async () => {
    const env = { WEFT_LOG_LEVEL: "info" };
    // A token for another service account does not prove the gateway's SPIFFE ID: the CA refuses it.
    const bad = spawnWeft(["gateway", "--nats", nats.url, "--name", "bad", "--admin", "127.0.0.1:0", "--proxy-id", "gw-bad", "--join-token", await control.ca!.mintToken("default", "someone-else", 600_000)], { env });
    const good = spawnWeft(["gateway", "--nats", nats.url, "--name", "good", "--admin", "127.0.0.1:0", "--proxy-id", "gw-good", "--join-token", await control.ca!.mintToken("default", "good", 600_000)], { env });
    procs.push(bad, good);

    await good.waitForLog((l) => l.msg === "certificate held");
    const goodAdmin = (await good.waitForLog((l) => l.msg === "admin listening")).port as number;
    assert.deepEqual(await ready(goodAdmin), { status: 200, text: "ready\n" });

    await bad.waitForLog((l) => l.msg === "certificate refused");
    const badAdmin = (await bad.waitForLog((l) => l.msg === "admin listening")).port as number;
    const r = await ready(badAdmin);
    assert.equal(r.status, 503);
    assert.match(r.text, /certificate/);
    assert.doesNotMatch(r.text, /config/, "the config itself was applied");
  });
});
