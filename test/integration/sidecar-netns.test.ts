// Transparent capture for real: two network namespaces joined by a veth pair (10.77.0.1 and
// 10.77.0.2), each with `weft iptables` applied and a sidecar running as uid 1337 beside a plain
// node:http app that knows nothing of weft. NATS and the control plane run in namespace a.
// Needs root (ip netns add); skipped with the reason when that is not permitted.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createNetnsPair, netnsAvailable, type NetnsPair, type NetnsProcess, type Namespace } from "../harness/netns.ts";

const can = netnsAvailable();
const skip = can.ok ? false : can.reason;
const PROXY_UID = 1337;

// The client application: plain node:http, one GET, prints what came back.
const CLIENT = `
const http = require("node:http");
http.get(process.argv[1], { agent: false }, (res) => {
  let body = "";
  res.on("data", (c) => (body += c));
  res.on("end", () => console.log(JSON.stringify({ status: res.statusCode, reason: res.headers["x-weft-reason"] ?? null, body })));
}).on("error", (e) => console.log(JSON.stringify({ status: 0, reason: e.code, body: "" })));`;

interface ClientResult {
  status: number;
  reason: string | null;
  body: string;
}

function clientCall(ns: Namespace, url: string, uid?: number): ClientResult {
  const asUser = uid === undefined ? [] : ["setpriv", `--reuid=${uid}`, `--regid=${uid}`, "--clear-groups"];
  const r = ns.run([...asUser, process.execPath, "-e", CLIENT, url], 15_000);
  const line = r.stdout.trim().split("\n").pop() ?? "";
  try {
    return JSON.parse(line) as ClientResult;
  } catch {
    return { status: -1, reason: `client failed: ${r.stderr}`, body: "" };
  }
}

async function until(what: string, check: () => ClientResult, accept: (r: ClientResult) => boolean, timeoutMs = 30_000): Promise<ClientResult> {
  const deadline = Date.now() + timeoutMs;
  let last: ClientResult | undefined;
  for (;;) {
    last = check();
    if (accept(last)) return last;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}; last: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const MESH = {
  services: {
    "server-svc": {
      ports: [{ port: 8080 }],
      // Only the client workload (by its mTLS identity) may GET /hello.
      inbound: {
        authz: [{ name: "hello-only", rules: [{ from: [{ principals: ["cluster.local/ns/default/sa/client-svc"] }], to: [{ paths: ["/hello*"], methods: ["GET"] }] }] }],
      },
    },
    "client-svc": {},
  },
};

describe("sidecars with iptables capture in network namespaces", { skip }, () => {
  let pair: NetnsPair;
  let dir: string;
  const natBefore = new Map<string, string>();
  const procs: Record<string, NetnsProcess> = {};

  const natRules = (ns: Namespace) => ns.run(["iptables", "-t", "nat", "-S"]).stdout;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "weft-netns-"));
    // The sidecars run as uid 1337 and keep their last good config here.
    await chmod(dir, 0o777);
    pair = await createNetnsPair({ subnet: "10.77.0", hosts: { "server-svc": "10.77.0.2", "server-svc.default.svc.cluster.local": "10.77.0.2" } });
    const { a, b } = pair;
    for (const ns of [a, b]) natBefore.set(ns.name, natRules(ns));

    procs.nats = a.start(["nats-server", "-a", "0.0.0.0", "-p", "4222", "-js", "-sd", join(dir, "nats")]);
    const deadline = Date.now() + 15_000;
    while (!procs.nats.output().includes("Server is ready")) {
      if (Date.now() > deadline) throw new Error(`nats-server did not start:\n${procs.nats.output()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    procs.control = a.start([process.execPath, "scripts/weft.mjs", "control", "--nats", "nats://127.0.0.1:4222", "--id", "control-1", "--state-dir", join(dir, "control")]);
    await procs.control.waitForLog((l) => l.msg === "control plane ready");
    const file = join(dir, "weft.config.ts");
    await writeFile(file, `export default ${JSON.stringify(MESH)};\n`);
    const applied = a.run([process.execPath, "scripts/weft.mjs", "apply", file, "--nats", "nats://127.0.0.1:4222"]);
    assert.equal(applied.code, 0, applied.stderr);

    // NATS in namespace a is infrastructure: its port is not captured inbound.
    for (const [ns, extra] of [[a, ["--exclude-inbound-ports", "4222"]], [b, []]] as const) {
      const r = ns.run([process.execPath, "scripts/weft.mjs", "iptables", ...extra]);
      assert.equal(r.code, 0, r.stderr);
    }

    const joinToken = (sa: string) => {
      const r = a.run([process.execPath, "scripts/weft.mjs", "token", "--ns", "default", "--sa", sa, "--state-dir", join(dir, "control")]);
      assert.equal(r.code, 0, r.stderr);
      return r.stdout.trim();
    };
    procs.server = b.start([process.execPath, "--import", "tsx", "examples/apps/sample-app.ts", "--name", "server", "--port", "8080", "--host", "0.0.0.0"]);
    const env = { WEFT_STATE_DIR: join(dir, "state") };
    procs.serverSidecar = b.start(
      [process.execPath, "scripts/weft.mjs", "sidecar", "--service", "server-svc", "--app-port", "8080", "--nats", "nats://10.77.0.1:4222", "--address", "10.77.0.2:8080", "--version", "v1", "--proxy-id", "sc-server", "--join-token", joinToken("server-svc")],
      { uid: PROXY_UID, env },
    );
    procs.clientSidecar = a.start(
      [process.execPath, "scripts/weft.mjs", "sidecar", "--service", "client-svc", "--app-port", "8081", "--nats", "nats://127.0.0.1:4222", "--proxy-id", "sc-client", "--join-token", joinToken("client-svc")],
      { uid: PROXY_UID, env },
    );
    await procs.serverSidecar.waitForLog((l) => l.msg === "sidecar ready");
    await procs.clientSidecar.waitForLog((l) => l.msg === "sidecar ready");
  });

  after(async () => {
    await pair?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test("the client's call to the server by service name is captured, crosses both sidecars and returns", async () => {
    const r = await until("a routed answer", () => clientCall(pair.a, "http://server-svc:8080/hello?from=a"), (r) => r.status === 200);
    const body = JSON.parse(r.body) as { service: string; path: string; host: string; headers: Record<string, string> };
    assert.equal(body.service, "server");
    assert.equal(body.path, "/hello?from=a");
    assert.equal(body.host, "server-svc:8080");
    // Neither app set these: the client sidecar (captured by iptables) and the server sidecar did.
    assert.ok(body.headers["x-request-id"]);
    assert.match(body.headers["x-forwarded-for"] ?? "", /10\.77\.0\.1/);
    // The hop across the veth was mTLS: the server's sidecar verified the client sidecar's SVID.
    assert.equal(body.headers["x-forwarded-client-cert"], "URI=spiffe://cluster.local/ns/default/sa/client-svc");
    const fqdn = clientCall(pair.a, "http://server-svc.default.svc.cluster.local:8080/hello");
    assert.equal(fqdn.status, 200);
  });

  test("a request the server's inbound policy does not allow gets 403 denied", async () => {
    const r = clientCall(pair.a, "http://server-svc:8080/admin");
    assert.equal(r.status, 403);
    assert.equal(r.reason, "denied");
  });

  test("a caller bypassing its own sidecar is still captured at the server, where STRICT mTLS refuses its plaintext", async () => {
    // uid 1337 is not captured in namespace a, so this goes straight to 10.77.0.2:8080, where
    // PREROUTING sends it to the server's sidecar anyway: no certificate, no request.
    const bypass = clientCall(pair.a, "http://10.77.0.2:8080/hello", PROXY_UID);
    assert.equal(bypass.status, 0);
    assert.equal(bypass.reason, "ECONNRESET");
    await procs.serverSidecar!.waitForLog((l) => l.msg === "inbound peer refused" && l.reason === "plaintext_in_strict");
  });

  test("a host the mesh does not know is refused by the client's sidecar with 502 no_route (REGISTRY_ONLY)", async () => {
    const r = clientCall(pair.a, "http://10.77.0.2:9999/");
    assert.equal(r.status, 502);
    assert.equal(r.reason, "no_route");
  });

  test("weft iptables --cleanup leaves each namespace's nat table as it found it", async () => {
    for (const ns of [pair.a, pair.b]) {
      assert.notEqual(natRules(ns), natBefore.get(ns.name));
      const r = ns.run([process.execPath, "scripts/weft.mjs", "iptables", "--cleanup"]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(natRules(ns), natBefore.get(ns.name));
    }
  });
});
