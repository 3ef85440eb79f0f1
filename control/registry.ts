import { encodeJson, endpointsKey, parseSubject, REGISTRY_SUBJECTS, type Bus, type Kv, type Subscription } from "../shared/bus/index.ts";
import { parseHeartbeat, type EndpointsResource, type RegisteredEndpoint } from "../shared/discovery/index.ts";
import type { ConfigMirror } from "./mirror.ts";

export interface RegistryOptions {
  readonly bus: Bus;
  readonly kv: Kv;
  readonly mirror: ConfigMirror;
  readonly now?: () => number;
  /** How often expired endpoints are swept (default 500 ms). */
  readonly sweepMs?: number;
  readonly log?: { info(msg: string, fields?: Record<string, unknown>): void };
}

export interface Registry {
  /** Endpoints by service, as the registry holds them now. */
  endpoints(): ReadonlyMap<string, readonly RegisteredEndpoint[]>;
  stop(): void;
}

interface Live {
  endpoint: RegisteredEndpoint;
  lastSeen: number;
  intervalMs: number;
}

/**
 * createRegistry keeps `eps.<service>` equal to the endpoints whose heartbeats arrive: a new or
 * changed endpoint is written at once, one that misses 3 heartbeats (or says it is leaving) is
 * removed. Every replica runs one; they compute the same set and skip writes that change nothing.
 * Endpoints already in the bucket at start get one grace period to heartbeat again.
 * @example
 * const registry = createRegistry({ bus, kv, mirror });
 */
export function createRegistry(options: RegistryOptions): Registry {
  const { bus, kv, mirror, log } = options;
  const now = options.now ?? Date.now;
  const services = new Map<string, Map<string, Live>>();
  const dirty = new Set<string>();
  let flushing = Promise.resolve();

  for (const [key, value] of mirror.entries()) {
    if (!key.startsWith("eps.")) continue;
    const res = value as EndpointsResource;
    const live = new Map<string, Live>();
    for (const ep of res.endpoints ?? []) live.set(ep.address, { endpoint: ep, lastSeen: now(), intervalMs: 5000 });
    services.set(key.slice(4), live);
  }

  const flush = () => {
    flushing = flushing.then(async () => {
      const names = [...dirty];
      dirty.clear();
      for (const service of names) {
        const endpoints = [...(services.get(service)?.values() ?? [])]
          .map((l) => l.endpoint)
          .sort((a, b) => (a.address < b.address ? -1 : 1));
        const value: EndpointsResource = { service, endpoints };
        const key = endpointsKey(service);
        const current = mirror.get(key) as EndpointsResource | undefined;
        if (current && JSON.stringify(current) === JSON.stringify(value)) continue;
        if (!current && endpoints.length === 0) continue;
        await kv.put(key, encodeJson(value)).catch(() => undefined);
      }
    });
  };

  const sub: Subscription = bus.subscribe(REGISTRY_SUBJECTS, (msg) => {
    const subject = parseSubject(msg.subject);
    const hb = parseHeartbeat(msg.data);
    if (subject?.kind !== "registry" || !hb) return;
    let live = services.get(subject.service);
    if (!live) services.set(subject.service, (live = new Map()));
    const { intervalMs, leaving, ...endpoint } = hb;
    const before = live.get(endpoint.address);
    if (leaving) {
      if (before) {
        live.delete(endpoint.address);
        log?.info("endpoint left", { service: subject.service, address: endpoint.address });
        dirty.add(subject.service);
        flush();
      }
      return;
    }
    live.set(endpoint.address, { endpoint, lastSeen: now(), intervalMs });
    if (!before || JSON.stringify(before.endpoint) !== JSON.stringify(endpoint)) {
      if (!before) log?.info("endpoint registered", { service: subject.service, address: endpoint.address, proxyId: endpoint.proxyId });
      dirty.add(subject.service);
      flush();
    }
  });

  const sweep = setInterval(() => {
    const t = now();
    for (const [service, live] of services) {
      for (const [address, l] of live) {
        if (t - l.lastSeen > 3 * l.intervalMs) {
          live.delete(address);
          log?.info("endpoint expired", { service, address });
          dirty.add(service);
        }
      }
    }
    if (dirty.size > 0) flush();
  }, options.sweepMs ?? 500);
  (sweep as { unref?: () => void }).unref?.();

  return {
    endpoints: () => new Map([...services].map(([name, live]) => [name, [...live.values()].map((l) => l.endpoint)])),
    stop() {
      clearInterval(sweep);
      sub.unsubscribe();
    },
  };
}
