// Raw TCP between workloads with real processes: nats-server, the control plane (CA, registry) and
// sidecars. The client app connects to its sidecar's --tcp-outbound listener; the sidecar sends the
// bytes over mesh mTLS (ALPN weft-tcp) to the server's sidecar, which checks the caller's SPIFFE ID
// against the service's authorization policy and pipes to the app's tcp port.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startNatsServer, type NatsServer } from "../harness/nats-server.ts";
import { echoThrough, startTcpEcho } from "../harness/tcp-echo.ts";
import { runWeft, spawnWeft, weftToken, type WeftProcess } from "../harness/weft-process.ts";

describe("TCP between sidecars", () => {
  let dir: string;
  let nats: NatsServer;
  let control: WeftProcess;
  let echo: Awaited<ReturnType<typeof startTcpEcho>>;
  const sidecars: WeftProcess[] = [];
  let clientPort: number;
  let otherPort: number;
  let server: WeftProcess;
  let gateway: WeftProcess;
  let gatewayPort: number;

  const joinToken = (sa: string) => weftToken(join(dir, "control"), sa);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "weft-tcp-mesh-"));
    nats = await startNatsServer();
    echo = await startTcpEcho();
    control = spawnWeft(["control", "--nats", nats.url, "--id", "control-1", "--state-dir", join(dir, "control")]);
    await control.waitForLog((l) => l.msg === "control plane ready");
    const file = join(dir, "weft.config.ts");
    const config = {
      services: {
        "db-svc": {
          ports: [{ port: 8080 }, { port: echo.port, protocol: "tcp" }],
          inbound: {
            authz: [{ name: "client-and-edge", rules: [{ from: [{ principals: ["cluster.local/ns/default/sa/client-svc", "cluster.local/ns/default/sa/edge"] }] }] }],
          },
        },
        "client-svc": {},
        "other-svc": {},
      },
      gateways: {
        edge: { listeners: [{ port: 0, address: "127.0.0.1", protocol: "tcp" }], routes: [], tcpRoutes: [{ name: "db", to: [{ service: "db-svc", port: echo.port }] }] },
      },
    };
    await writeFile(file, `export default ${JSON.stringify(config)};\n`);
    const applied = await runWeft(["apply", file, "--nats", nats.url]);
    assert.equal(applied.code, 0, applied.stderr);
    const common = ["--nats", nats.url, "--inbound-port", "0", "--inbound-address", "127.0.0.1", "--outbound-port", "0", "--admin", "127.0.0.1:0", "--app-port", "1"];
    const env = { WEFT_STATE_DIR: join(dir, "state") };
    const start = async (service: string, extra: string[] = []) => {
      const p = spawnWeft(["sidecar", "--service", service, "--proxy-id", `sc-${service}`, "--join-token", await joinToken(service), ...common, ...extra], { env });
      sidecars.push(p);
      return p;
    };
    server = await start("db-svc");
    const client = await start("client-svc", ["--tcp-outbound", `db-svc:${echo.port}=0`]);
    const other = await start("other-svc", ["--tcp-outbound", `db-svc:${echo.port}=0`]);
    const portOf = async (p: WeftProcess) => {
      const line = await p.waitForLog((l) => l.msg === "sidecar listening");
      return (line.tcpOutbound as { local: number }[])[0]!.local;
    };
    clientPort = await portOf(client);
    otherPort = await portOf(other);
    for (const p of sidecars) await p.waitForLog((l) => l.msg === "sidecar ready");
    gateway = spawnWeft(["gateway", "--nats", nats.url, "--name", "edge", "--proxy-id", "gw-edge", "--admin", "127.0.0.1:0", "--join-token", await joinToken("edge")], { env });
    gatewayPort = (await gateway.waitForLog((l) => l.msg === "listening" && l.protocol === "tcp")).port as number;
    await gateway.waitForLog((l) => l.msg === "certificate held");
  });

  after(async () => {
    await gateway?.stop();
    for (const p of sidecars.reverse()) await p.stop();
    await control?.stop();
    await nats?.stop();
    await echo?.close();
    await rm(dir, { recursive: true, force: true });
  });

  test("the client app's TCP reaches the server app through both sidecars over mTLS, a few MB intact", async () => {
    const payload = Buffer.alloc(3 * 1024 * 1024);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 7 + (i >> 11)) & 0xff;
    // The client sidecar watches db-svc from the start; its endpoint arrives once the server sidecar registered.
    let back: Buffer | "closed" = "closed";
    for (let i = 0; i < 100 && back === "closed"; i++) {
      back = await echoThrough(clientPort, payload);
      if (back === "closed") await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(back !== "closed" && back.equals(payload), "the echo came back whole");
    const entry = await server.waitForAccess((l) => l.protocol === "TCP" && l.reason === null && l.bytes_received === payload.length);
    assert.deepEqual(
      [entry.source_principal, entry.upstream_host, entry.bytes_sent],
      ["spiffe://cluster.local/ns/default/sa/client-svc", `127.0.0.1:${echo.port}`, payload.length],
    );
  });

  test("a gateway following the control plane proxies its tcp listener to the service's sidecar over mTLS", async () => {
    const payload = Buffer.alloc(2 * 1024 * 1024, 0x5a);
    let back: Buffer | "closed" = "closed";
    for (let i = 0; i < 100 && back === "closed"; i++) {
      back = await echoThrough(gatewayPort, payload);
      if (back === "closed") await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(back !== "closed" && back.equals(payload));
    const g = await gateway.waitForAccess((l) => l.protocol === "TCP" && l.bytes_received === payload.length);
    assert.deepEqual([g.route, g.upstream_service, g.bytes_sent, g.reason], ["db", "db-svc", payload.length, null]);
    await server.waitForAccess((l) => l.protocol === "TCP" && l.source_principal === "spiffe://cluster.local/ns/default/sa/edge" && l.bytes_sent === payload.length);
  });

  test("another workload's TCP is refused by the server's sidecar before anything reaches the app", async () => {
    const before = echo.accepted();
    assert.equal(await echoThrough(otherPort, Buffer.from("let me in")), "closed");
    await server.waitForAccess((l) => l.reason === "denied" && l.source_principal === "spiffe://cluster.local/ns/default/sa/other-svc");
    assert.equal(echo.accepted(), before);
  });
});
