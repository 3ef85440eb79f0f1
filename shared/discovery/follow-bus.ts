import type { Bus } from "../bus/index.ts";
import type { Snapshot } from "../config/index.ts";
import { createConfigWatcher, restoreLastGood, type ConfigWatcher, type LastGoodStore, type LogSink, type ProxyRole } from "./watcher.ts";

export interface FollowBusOptions {
  /** Connects to the bus; may take long (a NATS client retrying until the server is reachable). */
  connect(): Promise<Bus>;
  readonly proxyId: string;
  readonly role: ProxyRole;
  /** Where the last good config is kept (fileStore in WEFT_STATE_DIR). */
  readonly store: LastGoodStore;
  apply(snapshot: Snapshot): void | Promise<void>;
  readonly log: LogSink;
}

export interface FollowBus {
  /** The watcher, once the bus answered. */
  readonly watcher: Promise<ConfigWatcher>;
  stop(): Promise<void>;
}

/**
 * followBus serves the last good config from the store at once, then connects (retrying until the
 * bus is reachable) and follows the control plane from there. It returns without waiting for the bus.
 * @example
 * const follow = await followBus({ connect, proxyId, role: { kind: "gateway", name }, store, apply: (s) => ingress.apply(s), log });
 */
export async function followBus(options: FollowBusOptions): Promise<FollowBus> {
  const { log, proxyId, role, store } = options;
  const restored = await restoreLastGood(store, options.apply);
  if (restored !== undefined) log.info("serving the last good config until the bus answers", { revision: restored });
  let bus: Bus | undefined;
  let stopped = false;
  const watcher = (async () => {
    bus = await options.connect();
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
