import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { connectNatsBus, type Bus } from "../shared/bus/index.ts";
import type { Snapshot } from "../shared/config/index.ts";
import { createConfigWatcher, restoreLastGood, type ConfigWatcher, type LastGoodStore, type ProxyRole } from "../shared/discovery/index.ts";
import type { Logger } from "../shared/telemetry/logger.ts";

export interface FollowBusOptions {
  readonly servers: string;
  readonly proxyId: string;
  readonly role: ProxyRole;
  /** Folder for the last good config (WEFT_STATE_DIR). */
  readonly stateDir: string;
  apply(snapshot: Snapshot): Promise<void>;
  readonly log: Logger;
}

export interface FollowBus {
  readonly watcher: Promise<ConfigWatcher>;
  stop(): Promise<void>;
}

/**
 * fileStore keeps a proxy's last good config in one file, replaced atomically, readable only by its owner.
 * @example
 * const store = fileStore(".weft", "gateway-edge-1");
 */
export function fileStore(stateDir: string, proxyId: string): LastGoodStore {
  const file = join(stateDir, `${proxyId}.json`);
  return {
    load: () => readFile(file, "utf8").catch(() => undefined),
    async save(text) {
      await mkdir(stateDir, { recursive: true, mode: 0o700 });
      const tmp = `${file}.${process.pid}.tmp`;
      await writeFile(tmp, text, { mode: 0o600 });
      await rename(tmp, file);
    },
  };
}

/**
 * followBus serves the last good config from disk at once, then connects to NATS (retrying until it
 * is reachable) and follows the control plane from there. It returns without waiting for NATS.
 * @example
 * const follow = await followBus({ servers, proxyId, role: { kind: "gateway", name }, stateDir, apply: (s) => ingress.apply(s), log });
 */
export async function followBus(options: FollowBusOptions): Promise<FollowBus> {
  const { log, proxyId, role } = options;
  const store = fileStore(options.stateDir, proxyId);
  const restored = await restoreLastGood(store, options.apply);
  if (restored !== undefined) log.info("serving the last good config until the bus answers", { revision: restored });
  let bus: Bus | undefined;
  let stopped = false;
  const watcher = (async () => {
    bus = await connectNatsBus({ servers: options.servers.split(","), name: proxyId, waitOnFirstConnect: true });
    bus.onStatus((status) => log.info("bus", { status }));
    const w = createConfigWatcher({ bus, proxyId, role, apply: options.apply, store, log });
    if (!stopped) await w.start();
    log.info("following the control plane", { proxyId });
    return w;
  })();
  watcher.catch((err) => log.error("cannot follow the bus", { error: String(err) }));
  return {
    watcher,
    async stop() {
      stopped = true;
      const w = await Promise.race([watcher, new Promise<undefined>((r) => setTimeout(r, 0, undefined))]).catch(() => undefined);
      w?.stop();
      await bus?.close();
    },
  };
}
