import { watch, type FSWatcher } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { startSampleApp } from "../examples/apps/sample-app.ts";
import { serveMeshView } from "../control/mesh-view.ts";
import { startControlPlane } from "../control/plane.ts";
import { startBusGateway } from "../gateway/main.ts";
import { startSidecar, type Sidecar } from "../sidecar/main.ts";
import { createMemoryBus, createMemoryNetwork } from "../shared/bus/index.ts";
import { parseEndpoint, readEnv, type MeshConfig } from "../shared/config/index.ts";
import type { LastGoodStore } from "../shared/discovery/index.ts";
import { detectRuntime, loadMeshModule } from "../shared/runtime/index.ts";
import { createLogger } from "../shared/telemetry/index.ts";

const USAGE = `usage: weft dev [--config examples/weft.config.ts]

Runs a demo mesh in one process on an embedded (in-memory) config bus: the control plane with its
certificate authority, the ingress gateway, and the two sample services of examples/weft.config.ts
(web on 127.0.0.1:9001, api on 127.0.0.1:9002), each behind its own sidecar. Every hop inside the
mesh is mTLS with certificates from the CA. Editing the config file applies it again; an invalid
edit is refused with every problem listed and the mesh keeps its last good config.`;

/** The sample workloads: name, app port. Each gets a sidecar. */
const WORKLOADS = [
  { service: "web", port: 9001 },
  { service: "api", port: 9002 },
] as const;

/**
 * main runs `weft dev`; it resolves once the mesh serves and returns a stop function.
 * @example
 * const stop = await main([]);
 */
export async function main(argv: string[]): Promise<() => Promise<void>> {
  const { values } = parseArgs({ args: argv, options: { config: { type: "string" }, help: { type: "boolean" } } });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const env = readEnv(process.env);
  const log = (component: string) => createLogger({ component, level: env.logLevel, write: (line) => process.stderr.write(`${line}\n`) });
  const file = resolve(values.config ?? new URL("../examples/weft.config.ts", import.meta.url).pathname);
  const stateDir = join(env.stateDir, "dev");

  const load = async (): Promise<MeshConfig | undefined> => {
    const loaded = await loadMeshModule(pathToFileURL(file));
    if (loaded.ok) return loaded.value;
    for (const i of loaded.issues) log("control").error("invalid config", { file, path: i.path, reason: i.message });
    return undefined;
  };
  const first = await load();
  if (!first) process.exit(1);

  const network = createMemoryNetwork();
  const connect = async () => createMemoryBus({ network });
  let ui: Awaited<ReturnType<typeof serveMeshView>> | undefined;
  const controlBus = await connect();
  const control = await startControlPlane({
    bus: controlBus,
    id: "control-dev",
    log: log("control"),
    ca: { trustDomain: first.trustDomain, stateDir: join(stateDir, "control") },
  });
  const applyConfig = async (config: MeshConfig | undefined) => {
    if (!config) return false;
    const r = await control.apply(config);
    if (!r.ok) log("control").error("apply failed", { file, ...r });
    return r.ok;
  };
  if (!(await applyConfig(first))) {
    await control.stop();
    process.exit(1);
  }
  // Join tokens come straight from the in-process CA: one fresh token per certificate request.
  const attestation = (namespace: string, serviceAccount: string) => async () => ({
    kind: "join_token" as const,
    token: await control.ca!.mintToken(namespace, serviceAccount, 600_000),
  });

  const runtime = await detectRuntime();
  const apps = await Promise.all(WORKLOADS.map((w) => startSampleApp({ name: w.service, port: w.port, host: "127.0.0.1" })));
  const sidecars: (Sidecar & { service: string })[] = [];
  for (const w of WORKLOADS) {
    const svc = first.services[w.service];
    if (!svc) continue;
    const proxyId = `sidecar-${w.service}-dev`;
    sidecars.push({
      service: w.service,
      ...(await startSidecar({
        service: w.service,
        app: parseEndpoint(`127.0.0.1:${w.port}`),
        connect,
        attestation: attestation(svc.namespace, svc.serviceAccount ?? w.service),
        proxyId,
        store: memoryStore(),
        log: log(`sidecar-${w.service}`),
        runtime,
        inbound: { port: 0, address: "127.0.0.1" },
        outbound: { port: 0 },
        admin: "127.0.0.1:0",
        graceMs: 1000,
        drainMs: 0,
        discoveryWaitMs: 1500,
        onExit: (code) => void shutdown().then(() => process.exit(code)),
      })),
    });
  }
  const gatewayName = Object.keys(first.gateways)[0] ?? "ingress";
  const gw = first.gateways[gatewayName];
  const gateway = await startBusGateway({
    name: gatewayName,
    proxyId: `gateway-${gatewayName}-dev`,
    connect,
    store: memoryStore(),
    attestation: gw ? attestation(gw.namespace, gw.serviceAccount ?? gatewayName) : undefined,
    log: log("gateway"),
    runtime,
    admin: env.adminAddress,
    graceMs: 1000,
  });

  // Ready when every sidecar holds a certificate and a config, the gateway holds its own, and the
  // gateway has seen every sidecar's registered endpoint.
  const deadline = Date.now() + 30_000;
  const inbound = await Promise.all(sidecars.map(async (s) => ({ service: s.service, port: (await s.listening).inbound })));
  const registered = () => inbound.every((s) => gateway.ingress.snapshot?.services.get(s.service)?.endpoints.some((e) => e.port === s.port));
  while (!(sidecars.every((s) => s.readiness.ready()) && gateway.ready() && registered())) {
    if (Date.now() > deadline) {
      log("dev").error("the demo mesh did not become ready", { waiting: sidecars.flatMap((s) => s.readiness.waiting()), gateway: gateway.ready() });
      await shutdown();
      process.exit(1);
    }
    await new Promise((r) => setTimeout(r, 50));
  }

  ui = await serveMeshView(controlBus, control, "127.0.0.1:15080", log("control"));
  let timer: ReturnType<typeof setTimeout> | undefined;
  const fileWatch: FSWatcher = watch(dirname(file), (_e, changed) => {
    if (changed !== null && changed !== basename(file)) return;
    clearTimeout(timer);
    timer = setTimeout(() => void load().then(applyConfig), 100);
  });

  const gatewayPort = [...gateway.ingress.ports.values()][0];
  log("dev").info("demo mesh ready", { gateway: gatewayPort, admin: gateway.adminPort });
  console.log(`
weft dev is running (config: ${file})
  curl http://127.0.0.1:${gatewayPort}/          → web (gateway → mTLS → web's sidecar → web)
  curl http://127.0.0.1:${gatewayPort}/api/items → api (prefix rewritten to /items)
  curl http://127.0.0.1:${gatewayPort}/ping      → answered by the gateway
  curl http://127.0.0.1:${gateway.adminPort}/config_dump
  curl http://127.0.0.1:${gateway.adminPort}/stats/prometheus
  open http://127.0.0.1:${ui.port}/                        → the mesh view (live service graph)
Edit the config file to apply it again. Ctrl-C stops everything.`);

  let stopping: Promise<void> | undefined;
  function shutdown() {
    return (stopping ??= (async () => {
      clearTimeout(timer);
      fileWatch?.close();
      await ui?.close();
      await gateway?.stop();
      for (const s of sidecars) await s.stop();
      await control.stop();
      for (const a of apps) await a.close();
    })());
  }
  return shutdown;
}

/** The demo keeps each proxy's last good config in memory: every `weft dev` starts from the file. */
function memoryStore(): LastGoodStore {
  let text: string | undefined;
  return {
    load: async () => text,
    save: async (next) => {
      text = next;
    },
  };
}
