// Two sidecars on each runtime (Node, Bun, Deno) talk mesh mTLS to each other: the client app's
// call by service name goes client sidecar → (mTLS) → server sidecar → app, the server verifies the
// caller's SPIFFE ID, and a plaintext caller is refused (STRICT). NATS and the control plane with its
// CA are real; the sidecars run as `sidecar/main.ts` processes on the runtime under test.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import http from "node:http";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { connectNatsBus, type Bus } from "../../shared/bus/index.ts";
import { startControlPlane, type ControlPlane } from "../../control/plane.ts";
import { runtimeCommand, type RuntimeName } from "../harness/gateway.ts";
import { startNatsServer, type NatsServer } from "../harness/nats-server.ts";
import { startUpstream, type TestUpstream } from "../harness/upstream.ts";
import { watchProcess, type WeftProcess } from "../harness/weft-process.ts";

const ROOT = resolve(import.meta.dirname, "../..");

function startSidecarProcess(runtime: RuntimeName, args: string[], env: Record<string, string>): WeftProcess {
  const [cmd, pre] = runtimeCommand(runtime, join(ROOT, "sidecar/main.ts"));
  const child = spawn(cmd, [...pre, ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ["ignore", "ignore", "pipe"] });
  return watchProcess(child, `sidecar on ${runtime}`, { logTimeoutMs: 30_000 });
}

function get(port: number, host: string): Promise<{ status: number; body: string; error?: string }> {
  return new Promise((resolve) => {
    const req = http.get({ host: "127.0.0.1", port, path: "/hello", headers: { host }, agent: false }, (res) => {
      let body = "";
      res.on("data", (c) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", (e: NodeJS.ErrnoException) => resolve({ status: 0, body: "", error: e.code ?? e.message }));
  });
}

describe("sidecar mTLS on every runtime", () => {
  let dir: string;
  let nats: NatsServer;
  let bus: Bus;
  let control: ControlPlane;
  let app: TestUpstream;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "weft-sidecar-rt-"));
    nats = await startNatsServer();
    bus = await connectNatsBus({ servers: [nats.url], name: "sidecar-runtime-test" });
    control = await startControlPlane({ bus, id: "control-1", ca: { trustDomain: "cluster.local", stateDir: join(dir, "control") } });
    const services: Record<string, unknown> = {};
    for (const rt of ["node", "bun", "deno"]) {
      services[`server-${rt}`] = {};
      services[`client-${rt}`] = {};
    }
    const applied = await control.apply({ services });
    assert.equal(applied.ok, true, JSON.stringify(applied));
    app = await startUpstream((req, res) => res.end(JSON.stringify({ xfcc: req.headers["x-forwarded-client-cert"] ?? null })));
  });

  after(async () => {
    await control?.stop();
    await bus?.close();
    await nats?.stop();
    await app?.close();
    await rm(dir, { recursive: true, force: true });
  });

  for (const runtime of ["node", "bun", "deno"] as const) {
    test(`on ${runtime}: client sidecar → mTLS → server sidecar → app, with the caller's SPIFFE ID verified; plaintext refused`, async () => {
      const common = ["--nats", nats.url, "--inbound-port", "0", "--inbound-address", "127.0.0.1", "--outbound-port", "0", "--admin", "127.0.0.1:0"];
      const env = { WEFT_STATE_DIR: join(dir, `state-${runtime}`) };
      const server = startSidecarProcess(
        runtime,
        ["--service", `server-${runtime}`, "--app-port", String(app.port), "--proxy-id", `sc-server-${runtime}`, "--join-token", await control.ca!.mintToken("default", `server-${runtime}`, 600_000), ...common],
        env,
      );
      const client = startSidecarProcess(
        runtime,
        ["--service", `client-${runtime}`, "--app-port", "1", "--proxy-id", `sc-client-${runtime}`, "--join-token", await control.ca!.mintToken("default", `client-${runtime}`, 600_000), ...common],
        env,
      );
      try {
        const serverPorts = await server.waitForLog((l) => l.msg === "sidecar listening");
        assert.equal(serverPorts.runtime, runtime);
        const outbound = (await client.waitForLog((l) => l.msg === "sidecar listening")).outbound as number;
        await server.waitForLog((l) => l.msg === "sidecar ready");
        await client.waitForLog((l) => l.msg === "sidecar ready");
        let r = await get(outbound, `server-${runtime}`);
        const deadline = Date.now() + 20_000;
        while (r.status !== 200 && Date.now() < deadline) {
          await new Promise((res) => setTimeout(res, 200));
          r = await get(outbound, `server-${runtime}`);
        }
        assert.equal(r.status, 200, JSON.stringify(r));
        assert.deepEqual(JSON.parse(r.body), { xfcc: `URI=spiffe://cluster.local/ns/default/sa/client-${runtime}` });
        const plain = await get(serverPorts.inbound as number, `server-${runtime}`);
        assert.equal(plain.status, 0, "plaintext to a STRICT inbound port gets no answer");
        await server.waitForLog((l) => l.msg === "inbound peer refused" && l.reason === "plaintext_in_strict");
      } finally {
        await client.stop();
        await server.stop();
      }
    });
  }
});
