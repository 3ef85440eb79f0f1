import { watch, type FSWatcher } from "node:fs";
import { basename, dirname, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { startSampleApp } from "../examples/apps/sample-app.ts";
import { startControlPlane } from "../control/plane.ts";
import { createAdminApp } from "../gateway/admin.ts";
import { createIngress } from "../gateway/ingress.ts";
import { createMemoryBus, createMemoryNetwork } from "../shared/bus/index.ts";
import { readEnv } from "../shared/config/index.ts";
import { createConfigWatcher } from "../shared/discovery/index.ts";
import { detectRuntime, loadMeshModule } from "../shared/runtime/index.ts";
import { createLogger } from "../shared/telemetry/index.ts";

const USAGE = `usage: weft dev [--config examples/weft.config.ts]

Runs a demo mesh in one process on an embedded (in-memory) config bus: the control plane, the
ingress gateway following it, and the two sample services of examples/weft.config.ts (web on
127.0.0.1:9001, api on 127.0.0.1:9002). Editing the config file applies it again; an invalid
edit is refused with every problem listed and the mesh keeps its last good config.`;

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

  const web = await startSampleApp({ name: "web", port: 9001, host: "127.0.0.1" });
  const api = await startSampleApp({ name: "api", port: 9002, host: "127.0.0.1" });

  const network = createMemoryNetwork();
  const control = await startControlPlane({ bus: createMemoryBus({ network }), id: "control-dev", log: log("control") });
  const applyFile = async () => {
    const loaded = await loadMeshModule(pathToFileURL(file));
    if (!loaded.ok) {
      for (const i of loaded.issues) log("control").error("invalid config", { file, path: i.path, reason: i.message });
      return false;
    }
    const r = await control.apply(loaded.value);
    if (!r.ok) log("control").error("apply failed", { file, ...r });
    return r.ok;
  };

  let admin: { close(): Promise<void> } | undefined;
  let fileWatch: FSWatcher | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const runtime = await detectRuntime();
  const gatewayLog = log("gateway");
  const ingress = createIngress({ runtime, name: "ingress", log: gatewayLog });
  let applied!: () => void;
  const firstApply = new Promise<void>((r) => (applied = r));
  const watcher = createConfigWatcher({
    bus: createMemoryBus({ network }),
    proxyId: "gateway-ingress-dev",
    role: { kind: "gateway", name: "ingress" },
    apply: async (s) => {
      await ingress.apply(s);
      applied();
    },
    log: gatewayLog,
  });
  await watcher.start();
  if (!(await applyFile())) {
    await shutdown();
    process.exit(1);
  }
  await firstApply;
  admin = await runtime.serveFetch(
    createAdminApp({ role: "gateway", log: gatewayLog, ready: () => ingress.current !== undefined, snapshot: () => ingress.snapshot }).fetch,
    { port: 15000, address: "127.0.0.1" },
  );

  fileWatch = watch(dirname(file), (_e, changed) => {
    if (changed !== null && changed !== basename(file)) return;
    clearTimeout(timer);
    timer = setTimeout(() => void applyFile(), 100);
  });

  const gatewayPort = [...ingress.ports.values()][0];
  console.log(`
weft dev is running (config: ${file})
  curl http://127.0.0.1:${gatewayPort}/          → web
  curl http://127.0.0.1:${gatewayPort}/api/items → api (prefix rewritten to /items)
  curl http://127.0.0.1:${gatewayPort}/ping      → answered by the gateway
  curl http://127.0.0.1:15000/config_dump
Edit the config file to apply it again. Ctrl-C stops everything.`);

  async function shutdown() {
    clearTimeout(timer);
    fileWatch?.close();
    watcher.stop();
    await ingress.stop(1000);
    await admin?.close();
    await control.stop();
    await web.close();
    await api.close();
  }
  return shutdown;
}
