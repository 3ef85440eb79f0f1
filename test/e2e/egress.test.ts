// Calls to services outside the mesh through an egress gateway: real nats-server, control plane,
// two sidecars and the egress gateway as processes; the "external" API is a local HTTPS server with
// a CA of its own, declared with a static endpoint on 127.0.0.1 under the name api.external.test.
// The app speaks plain HTTP to its sidecar; the sidecar reaches the gateway over mesh mTLS; the
// gateway authorizes the caller's SPIFFE ID and originates TLS to the external host.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { createExternalCa, startExternalHttps, type ExternalCa, type ExternalHttps } from "../harness/external-tls.ts";
import { startNatsServer, type NatsServer } from "../harness/nats-server.ts";
import { request } from "../harness/upstream.ts";
import { until as poll, WHILE_STARTING } from "../harness/wait.ts";
import { runWeft, spawnWeft, weftToken, type WeftProcess } from "../harness/weft-process.ts";

const run = promisify(execFile);

/** One plain-HTTP request from "the app" to its sidecar's outbound port. */
const call = (port: number, host: string, path = "/") => request(port, { path, headers: { host } });

/** Polls processes that are still starting: a refused connection means "not yet". */
const until = <T>(what: string, attempt: () => Promise<T | undefined>) => poll(what, attempt, WHILE_STARTING);

/** The PID owning the local end of the TCP connection that comes from 127.0.0.1:<port> (ss -tnp). */
async function ownerOfSourcePort(port: number): Promise<number | undefined> {
  const { stdout } = await run("ss", ["-tnpH", "state", "established", `( sport = :${port} )`]);
  const m = /pid=(\d+)/.exec(stdout);
  return m ? Number(m[1]) : undefined;
}

describe("egress gateway", () => {
  let dir: string;
  let nats: NatsServer;
  let control: WeftProcess;
  let egress: WeftProcess;
  let client: WeftProcess;
  let other: WeftProcess;
  let trusted: ExternalCa;
  let stranger: ExternalCa;
  let api: ExternalHttps;
  let impostor: ExternalHttps;
  let clientOut: number;
  let otherOut: number;

  const joinToken = (sa: string) => weftToken(join(dir, "control"), sa);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "weft-egress-"));
    trusted = await createExternalCa("trusted");
    stranger = await createExternalCa("stranger");
    api = await startExternalHttps(await trusted.leaf("api.external.test"));
    // Its certificate names its host, but comes from a CA the mesh config does not trust.
    impostor = await startExternalHttps(await stranger.leaf("impostor.external.test"));
    nats = await startNatsServer();
    control = spawnWeft(["control", "--nats", nats.url, "--id", "control-1", "--state-dir", join(dir, "control")]);
    await control.waitForLog((l) => l.msg === "control plane ready");
    const external = (host: string, port: number) => ({
      hosts: [host],
      ports: [{ port: 443, protocol: "https" }],
      resolution: "STATIC",
      endpoints: [{ address: `127.0.0.1:${port}` }],
      tls: { caFile: trusted.caFile },
      egress: { gateway: "egress" },
    });
    const config = {
      services: { "client-svc": {}, "other-svc": {} },
      gateways: {
        egress: {
          kind: "egress",
          listeners: [{ port: 0, address: "127.0.0.1" }],
          routes: [],
          // Only the client workload, known by its mTLS certificate, may call out.
          policy: { authz: [{ name: "egress-callers", rules: [{ from: [{ principals: ["cluster.local/ns/default/sa/client-svc"] }] }] }] },
        },
      },
      externalServices: { api: external("api.external.test", api.port), impostor: external("impostor.external.test", impostor.port) },
    };
    const file = join(dir, "weft.config.ts");
    await writeFile(file, `export default ${JSON.stringify(config)};\n`);
    const applied = await runWeft(["apply", file, "--nats", nats.url]);
    assert.equal(applied.code, 0, applied.stderr);

    const env = { WEFT_STATE_DIR: join(dir, "state") };
    egress = spawnWeft(["gateway", "--nats", nats.url, "--name", "egress", "--proxy-id", "gw-egress", "--admin", "127.0.0.1:0", "--join-token", await joinToken("egress")], { env });
    const common = ["--nats", nats.url, "--app-port", "1", "--inbound-port", "0", "--inbound-address", "127.0.0.1", "--outbound-port", "0", "--admin", "127.0.0.1:0"];
    client = spawnWeft(["sidecar", "--service", "client-svc", "--proxy-id", "sc-client", "--join-token", await joinToken("client-svc"), ...common], { env });
    other = spawnWeft(["sidecar", "--service", "other-svc", "--proxy-id", "sc-other", "--join-token", await joinToken("other-svc"), ...common], { env });
    await egress.waitForLog((l) => l.msg === "egress gateway registered");
    const adminPort = (await egress.waitForLog((l) => l.msg === "admin listening")).port as number;
    const ready = await fetch(`http://127.0.0.1:${adminPort}/ready`);
    assert.equal(ready.status, 200, await ready.text());
    clientOut = (await client.waitForLog((l) => l.msg === "sidecar listening")).outbound as number;
    otherOut = (await other.waitForLog((l) => l.msg === "sidecar listening")).outbound as number;
  });

  after(async () => {
    await other?.stop();
    await client?.stop();
    await egress?.stop();
    await control?.stop();
    await nats?.stop();
    await api?.close();
    await impostor?.close();
    await trusted?.remove();
    await stranger?.remove();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test("the app's plain HTTP call reaches the external HTTPS API through sidecar → egress gateway (mTLS), which originates TLS with the host as SNI", async () => {
    // The sidecar sees the gateway's registered endpoint once the control plane has written it.
    const r = await until("an answer from the external API", async () => {
      const reply = await call(clientOut, "api.external.test:443", "/v1/things?x=1");
      return reply.status === 200 ? reply : undefined;
    });
    assert.deepEqual(JSON.parse(r.body), { external: true, url: "/v1/things?x=1", servername: "api.external.test", host: "api.external.test:443" });
    const seen = api.requests.at(-1)!;
    assert.equal(seen.connection.servername, "api.external.test");
    assert.equal(seen.headers["x-forwarded-client-cert"], undefined, "the caller's mesh identity is not handed to a third party");
    // The TLS connection the external server accepted was made by the egress gateway, not the sidecar.
    assert.equal(await ownerOfSourcePort(seen.connection.remotePort), egress.pid);
    assert.notEqual(egress.pid, client.pid);

    const line = await until("the gateway's access log line", async () =>
      egress.accessLog().find((l) => l.authority === "api.external.test:443" && l.status === 200),
    );
    assert.equal(line.source_principal, "spiffe://cluster.local/ns/default/sa/client-svc", "the gateway knew the caller from its mTLS certificate");
  });

  test("an external server whose certificate the configured CA does not sign: 502 upstream_tls_failure, in the response and the gateway's access log", async () => {
    const r = await until("the TLS failure", async () => {
      const reply = await call(clientOut, "impostor.external.test:443", "/secret");
      return reply.status === 502 ? reply : undefined;
    });
    assert.equal(r.headers["x-weft-reason"], "upstream_tls_failure");
    assert.equal(impostor.requests.length, 0, "no request went over the unverified connection");
    const line = await until("the gateway's access log line", async () =>
      egress.accessLog().find((l) => l.authority === "impostor.external.test:443" && l.reason === "upstream_tls_failure"),
    );
    assert.equal(line.status, 502);
  });

  test("an undeclared host is refused by the sidecar with 502 no_route, and its access log names the host", async () => {
    const r = await call(clientOut, "undeclared.example.test", "/");
    assert.deepEqual([r.status, r.headers["x-weft-reason"]], [502, "no_route"]);
    const line = await until("the sidecar's access log line", async () => client.accessLog().find((l) => l.authority === "undeclared.example.test"));
    assert.deepEqual([line.status, line.reason], [502, "no_route"]);
  });

  test("a workload the egress policy does not allow is refused with 403 denied at the egress gateway", async () => {
    const r = await until("the gateway's answer", async () => {
      const reply = await call(otherOut, "api.external.test:443", "/v1/things");
      return reply.status === 403 ? reply : undefined;
    });
    assert.equal(r.headers["x-weft-reason"], "denied");
    const line = await until("the gateway's access log line", async () =>
      egress.accessLog().find((l) => l.reason === "denied" && l.source_principal === "spiffe://cluster.local/ns/default/sa/other-svc"),
    );
    assert.equal(line.status, 403);
    assert.ok(api.requests.every((q) => q.url !== "/v1/things"), "the denied call never left the mesh");
  });
});
