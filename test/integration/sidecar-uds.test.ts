// Two sidecars in Unix-socket mode (no iptables): the client app sends to its sidecar's outbound
// socket (or uses it as HTTP_PROXY), the server app listens on its own socket. Real nats-server,
// control plane and sidecars as processes; the apps are plain node:http that know nothing of weft.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startSampleApp } from "../../examples/apps/sample-app.ts";
import { startNatsServer, type NatsServer } from "../harness/nats-server.ts";
import { replyAs, request, startUpstream, type TestUpstream } from "../harness/upstream.ts";
import { until, WHILE_STARTING } from "../harness/wait.ts";
import { generateJoinTokenKey, mintJoinToken } from "../../shared/identity/index.ts";
import { runWeft, spawnWeft, weftToken, type WeftProcess } from "../harness/weft-process.ts";

const ROOT = new URL("../..", import.meta.url).pathname;

function mesh(outboundTrafficPolicy: "REGISTRY_ONLY" | "ALLOW_ANY") {
  return {
    outboundTrafficPolicy,
    services: {
      "server-svc": {
        // Only the client workload, identified by its mTLS certificate, and only /hello.
        inbound: { authz: [{ name: "only-hello", rules: [{ from: [{ principals: ["cluster.local/ns/default/sa/client-svc"] }], to: [{ paths: ["/hello*"] }] }] }] },
      },
      "client-svc": {},
      "slow-svc": { mtls: { mode: "PERMISSIVE" } },
    },
  };
}

describe("sidecars in Unix-socket mode", () => {
  let dir: string;
  let nats: NatsServer;
  let control: WeftProcess;
  let server: Awaited<ReturnType<typeof startSampleApp>>;
  let serverSidecar: WeftProcess;
  let clientSidecar: WeftProcess;
  let external: TestUpstream;
  let outSocket: string;
  let outPort: number;

  /** A join token from the control plane's key for the workload's service account. */
  const joinToken = (sa: string) => weftToken(join(dir, "control"), sa);

  const apply = async (config: unknown) => {
    const file = join(dir, "weft.config.ts");
    await writeFile(file, `export default ${JSON.stringify(config)};\n`);
    const r = await runWeft(["apply", file, "--nats", nats.url]);
    assert.equal(r.code, 0, r.stderr);
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "weft-sidecar-uds-"));
    nats = await startNatsServer();
    external = await startUpstream(replyAs("external"));
    control = spawnWeft(["control", "--nats", nats.url, "--id", "control-1", "--state-dir", join(dir, "control")]);
    await control.waitForLog((l) => l.msg === "control plane ready");
    await apply(mesh("REGISTRY_ONLY"));
    server = await startSampleApp({ name: "server", port: 0, socketPath: join(dir, "server-app.sock") });
    const common = ["--nats", nats.url, "--inbound-port", "0", "--inbound-address", "127.0.0.1", "--outbound-port", "0", "--admin", "127.0.0.1:0"];
    const env = { WEFT_STATE_DIR: join(dir, "state") };
    serverSidecar = spawnWeft(
      ["sidecar", "--service", "server-svc", "--app-socket", join(dir, "server-app.sock"), "--proxy-id", "sc-server", "--version", "v1", "--join-token", await joinToken("server-svc"), ...common],
      { env },
    );
    outSocket = join(dir, "client-out.sock");
    clientSidecar = spawnWeft(
      ["sidecar", "--service", "client-svc", "--app-port", "1", "--outbound-socket", outSocket, "--proxy-id", "sc-client", "--join-token", await joinToken("client-svc"), ...common],
      { env },
    );
    await serverSidecar.waitForLog((l) => l.msg === "sidecar ready");
    const listening = await clientSidecar.waitForLog((l) => l.msg === "sidecar listening");
    outPort = listening.outbound as number;
    await clientSidecar.waitForLog((l) => l.msg === "sidecar ready");
  });

  after(async () => {
    await clientSidecar?.stop();
    await serverSidecar?.stop();
    await control?.stop();
    await nats?.stop();
    await server?.close();
    await external?.close();
    await rm(dir, { recursive: true, force: true });
  });

  test("the client app reaches the server app by service name through both sidecars' sockets", async () => {
    // The client sidecar learns of server-svc on this first request (discovery by Host), then
    // waits for the server sidecar's registered endpoint.
    const r = await until("a routed answer", async () => {
      const reply = await request({ socketPath: outSocket }, { path: "/hello?x=1", headers: { host: "server-svc" } });
      return reply.status === 200 ? reply : undefined;
    }, WHILE_STARTING);
    const body = JSON.parse(r.body) as { service: string; path: string; host: string; headers: Record<string, string> };
    assert.equal(body.service, "server");
    assert.equal(body.path, "/hello?x=1");
    assert.equal(body.host, "server-svc");
    assert.ok(body.headers["x-request-id"], "the sidecars add a request id");
    // The hop between the sidecars was mTLS: the server side verified the client's certificate.
    assert.equal(body.headers["x-forwarded-client-cert"], "URI=spiffe://cluster.local/ns/default/sa/client-svc");
  });

  test("the server sidecar's inbound port refuses plaintext in STRICT mode", async () => {
    const inboundPort = (serverSidecar.logs().find((l) => l.msg === "sidecar listening")!.inbound) as number;
    await assert.rejects(request(inboundPort, { path: "/hello", headers: { host: "server-svc" } }), /ECONNRESET|socket hang up/);
    await serverSidecar.waitForLog((l) => l.msg === "inbound peer refused" && l.reason === "plaintext_in_strict");
  });

  test("every mesh name of a service routes, with or without a port", async () => {
    for (const host of ["server-svc.default", "server-svc.default.svc", "server-svc.default.svc.cluster.local", "server-svc:8080"]) {
      const r = await request({ socketPath: outSocket }, { path: "/hello", headers: { host } });
      assert.equal(r.status, 200, `${host}: ${r.body}`);
    }
  });

  test("the outbound port works as HTTP_PROXY: an absolute-form target is routed by its host", async () => {
    const r = await request(outPort, { path: "http://server-svc.default/hello/proxied", headers: { host: "server-svc.default" } });
    assert.equal(r.status, 200, r.body);
    assert.equal((JSON.parse(r.body) as { path: string }).path, "/hello/proxied");
  });

  test("the server's inbound policy denies what it does not allow with 403 denied", async () => {
    const r = await request({ socketPath: outSocket }, { path: "/admin", headers: { host: "server-svc" } });
    assert.equal(r.status, 403);
    assert.equal(r.headers["x-weft-reason"], "denied");
  });

  test("an unknown host is refused with 502 no_route under REGISTRY_ONLY", async () => {
    const r = await request({ socketPath: outSocket }, { path: "/", headers: { host: `127.0.0.1:${external.port}` } });
    assert.equal(r.status, 502);
    assert.equal(r.headers["x-weft-reason"], "no_route");
    const named = await request({ socketPath: outSocket }, { path: "/", headers: { host: "not-in-mesh" } });
    assert.equal(named.status, 502);
    assert.equal(named.headers["x-weft-reason"], "no_route");
    assert.equal(external.requests.length, 0);
  });

  test("an unknown host passes through to the host:port it names under ALLOW_ANY", async () => {
    await apply(mesh("ALLOW_ANY"));
    const r = await until("pass-through", async () => {
      const reply = await request({ socketPath: outSocket }, { path: "/out?q=1", headers: { host: `127.0.0.1:${external.port}` } });
      return reply.status === 200 ? reply : undefined;
    }, WHILE_STARTING);
    assert.equal((JSON.parse(r.body) as { upstream: string }).upstream, "external");
    assert.equal(external.requests.at(-1)!.url, "/out?q=1");
    await apply(mesh("REGISTRY_ONLY"));
  });

  test("SIGTERM drains: the request in flight finishes, then the sidecar stops accepting and exits", async () => {
    const slow = await startUpstream((req, res) => {
      req.resume();
      setTimeout(() => res.end("slow done"), 600);
    });
    const sidecar = spawnWeft(
      ["sidecar", "--service", "slow-svc", "--app-port", String(slow.port), "--nats", nats.url, "--inbound-port", "0", "--inbound-address", "127.0.0.1", "--outbound-port", "0", "--admin", "127.0.0.1:0", "--proxy-id", "sc-slow", "--grace-ms", "5000", "--join-token", await joinToken("slow-svc")],
      { env: { WEFT_STATE_DIR: join(dir, "state") } },
    );
    try {
      const inboundPort = (await sidecar.waitForLog((l) => l.msg === "sidecar listening")).inbound as number;
      await sidecar.waitForLog((l) => l.msg === "sidecar ready");
      // slow-svc is PERMISSIVE, so the test can call its inbound port without a certificate.
      const inFlight = request(inboundPort, { path: "/hello/slow", headers: { host: "slow-svc" } });
      await new Promise((r) => setTimeout(r, 200));
      const stopped = sidecar.stop();
      const r = await inFlight;
      assert.equal(r.status, 200);
      assert.equal(r.body, "slow done");
      await stopped;
      const msgs = sidecar.logs().map((l) => l.msg);
      assert.ok(msgs.indexOf("draining") >= 0 && msgs.indexOf("draining") < msgs.indexOf("stopped"), msgs.join(","));
      await assert.rejects(request(inboundPort, { path: "/hello", headers: { host: "slow-svc" } }), /ECONNREFUSED/);
    } finally {
      await sidecar.stop();
      await slow.close();
    }
  });

  test("/ready is true once a config and a certificate are held, and POST /quitquitquit exits cleanly", async () => {
    const extra = spawnWeft(
      ["sidecar", "--service", "client-svc", "--app-port", "1", "--nats", nats.url, "--inbound-port", "0", "--inbound-address", "127.0.0.1", "--outbound-port", "0", "--admin", "127.0.0.1:0", "--proxy-id", "sc-quit", "--join-token", await joinToken("client-svc")],
      { env: { WEFT_STATE_DIR: join(dir, "state") } },
    );
    try {
      const admin = (await extra.waitForLog((l) => l.msg === "admin listening")).port as number;
      await extra.waitForLog((l) => l.msg === "sidecar ready");
      const ready = await request(admin, { path: "/ready" });
      assert.equal(ready.status, 200);
      const quit = await request(admin, { path: "/quitquitquit", method: "POST" });
      assert.equal(quit.status, 200);
      await extra.waitForLog((l) => l.msg === "stopped");
    } finally {
      await extra.stop();
    }
  });
});

describe("sidecar supervising a batch job", () => {
  test("the sidecar exits with the app's exit code", async () => {
    const nats = await startNatsServer();
    const dir = await mkdtemp(join(tmpdir(), "weft-sidecar-job-"));
    const token = await mintJoinToken({ namespace: "default", serviceAccount: "job", ttlMs: 60_000 }, generateJoinTokenKey());
    try {
      const child = spawn(
        process.execPath,
        // No control plane here: the job ends before the sidecar could ask for a certificate.
        ["scripts/weft.mjs", "sidecar", "--service", "job", "--app-port", "1", "--nats", nats.url, "--admin", "127.0.0.1:0", "--proxy-id", "sc-job", "--join-token", token, "--run", "--", process.execPath, "-e", "process.exit(3)"],
        { cwd: ROOT, stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, WEFT_STATE_DIR: join(dir, "state") } },
      );
      let log = "";
      child.stderr!.on("data", (c: Buffer) => (log += c.toString()));
      const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
      const code = await new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c)));
      clearTimeout(timer);
      assert.equal(code, 3, log);
      assert.match(log, /"msg":"app exited, stopping","code":3/);
    } finally {
      await nats.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
