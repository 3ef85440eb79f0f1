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
  /** The watcher, once the bus answered; rejects only if stopped before that. */
  readonly watcher: Promise<ConfigWatcher>;
  stop(): Promise<void>;
}

/**
 * followBus serves the last good config from the store at once, then connects (retrying with backoff
 * until the bus is reachable and its config bucket opens) and follows the control plane from there.
 * It returns without waiting for the bus.
 * @example
 * const follow = await followBus({ connect, proxyId, role: { kind: "gateway", name }, store, apply: (s) => ingress.apply(s), log });
 */
export async function followBus(options: FollowBusOptions): Promise<FollowBus> {
  const { log, proxyId, role, store } = options;
  const restored = await restoreLastGood(store, options.apply);
  if (restored !== undefined) log.info("serving the last good config until the bus answers", { revision: restored });
  let bus: Bus | undefined;
  let stopped = false;
  let wake: (() => void) | undefined;
  let retryTimer: ReturnType<typeof setTimeout> | undefined;
  const watcher = (async () => {
    // connect() may reject (refused, bad credentials) and the bucket may not open yet (JetStream still
    // starting): either way try again, or the proxy would serve its persisted config forever.
    for (let failures = 0; ; failures++) {
      let w: ConfigWatcher | undefined;
      try {
        bus = await options.connect();
        if (stopped) throw new Error("stopped before the bus answered");
        bus.onStatus((status) => log.info("bus", { status }));
        w = createConfigWatcher({ bus, proxyId, role, apply: options.apply, store, log });
        if (!stopped) await w.start();
        log.info("following the control plane", { proxyId });
        return w;
      } catch (err) {
        w?.stop();
        await bus?.close().catch(() => undefined);
        bus = undefined;
        if (stopped) throw err;
        const retryInMs = Math.min(5000, 100 * 2 ** failures);
        log.warn("cannot follow the bus yet, retrying", { error: String(err), retryInMs });
        await new Promise<void>((resolve) => {
          wake = resolve;
          retryTimer = setTimeout(resolve, retryInMs);
        });
        if (stopped) throw new Error("stopped before the bus answered");
      }
    }
  })();
  // It rejects only when stopped before the bus answered: nothing to report then.
  watcher.catch(() => undefined);
  return {
    watcher,
    async stop() {
      stopped = true;
      clearTimeout(retryTimer);
      wake?.();
      const w = await Promise.race([watcher, new Promise<undefined>((r) => setTimeout(r, 0, undefined))]).catch(() => undefined);
      w?.stop();
      await bus?.close();
    },
  };
}
