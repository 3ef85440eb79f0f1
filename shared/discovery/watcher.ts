import {
  CONFIG_BUCKET,
  BUCKET_HISTORY,
  decodeJson,
  encodeJson,
  endpointsKey,
  gatewayKey,
  MESH_KEY,
  serviceKey,
  statusSubject,
  type Bus,
  type Kv,
  type Watch,
} from "../bus/index.ts";
import type { ConfigIssue, ServiceConfig, Snapshot } from "../config/index.ts";
import {
  assembleSnapshot,
  serviceDependencies,
  type EndpointsResource,
  type GatewayResource,
  type MeshResource,
  type ProxyResources,
  type ServiceResource,
} from "./resources.ts";

/** Which part of the mesh a proxy serves: it decides the keys the proxy watches. */
export type ProxyRole = { readonly kind: "gateway"; readonly name: string } | { readonly kind: "sidecar"; readonly service: string };

/** What a proxy reports on `weft.status.<proxy-id>`: on every apply or refusal, and periodically. */
export interface StatusReport {
  readonly proxyId: string;
  readonly role: "gateway" | "sidecar";
  /** Gateway name or sidecar's service. */
  readonly name: string;
  /** Revision running now (0: none yet). */
  readonly revision: number;
  readonly state: "ACK" | "NACK" | "WAITING";
  /** The last refused update, kept until a later one applies. */
  readonly nack?: { readonly revision: number; readonly issues: readonly ConfigIssue[] };
  /** The config keys this proxy watches, so the control plane can tell whether it is in sync. */
  readonly watching: readonly string[];
  readonly at: number;
}

/** The part of a logger the discovery code writes to. */
export interface LogSink {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

/** Where a proxy keeps its last good resources (a file in WEFT_STATE_DIR; injected by main.ts). */
export interface LastGoodStore {
  load(): Promise<string | undefined>;
  save(text: string): Promise<void>;
}

export interface ConfigWatcherOptions {
  readonly bus: Bus;
  readonly proxyId: string;
  readonly role: ProxyRole;
  /** Swaps the proxy onto a new snapshot; throwing refuses it (NACK). */
  apply(snapshot: Snapshot): void | Promise<void>;
  readonly store?: LastGoodStore;
  readonly log?: LogSink;
  /** How often the status is repeated without a change (default 10000 ms). */
  readonly statusIntervalMs?: number;
  /** Updates arriving within this window are applied together (default 20 ms). */
  readonly settleMs?: number;
}

export interface ConfigWatcher {
  /** Opens the bucket and starts watching; resolves once the watches are set up (not once config arrived). */
  start(): Promise<void>;
  /** Also watch a service first seen on a request (sidecar discovery by Host). */
  want(service: string): void;
  readonly revision: number;
  readonly status: StatusReport;
  stop(): void;
}

interface KeyState {
  watch: Watch;
  caughtUp: boolean;
  value: unknown;
}

/**
 * restoreLastGood applies the resources a proxy persisted, before the bus is reachable, so a proxy
 * restarted during an outage serves its last good config. Returns the revision, or undefined.
 * @example
 * await restoreLastGood(store, (s) => ingress.apply(s));
 */
export async function restoreLastGood(store: LastGoodStore, apply: (s: Snapshot) => void | Promise<void>): Promise<number | undefined> {
  const text = await store.load().catch(() => undefined);
  if (text === undefined) return undefined;
  const parsed = parseResources(text);
  if (!parsed) return undefined;
  const r = assembleSnapshot(parsed);
  if (!r.ok) return undefined;
  await apply(r.snapshot);
  return r.snapshot.revision;
}

/**
 * createConfigWatcher keeps a proxy on the newest valid config for its role: it watches only the
 * keys the role needs (its own section, the services its routes reach, their endpoints, and
 * services wanted on demand), applies each settled change atomically, reports ACK/NACK on the bus,
 * and persists what it applied. A refused update never replaces the running config.
 * @example
 * const w = createConfigWatcher({ bus, proxyId, role: { kind: "gateway", name: "edge" }, apply: (s) => ingress.apply(s) });
 * await w.start();
 */
export function createConfigWatcher(options: ConfigWatcherOptions): ConfigWatcher {
  const { bus, proxyId, role, log } = options;
  const settleMs = options.settleMs ?? 20;
  const keys = new Map<string, KeyState>();
  const wanted = new Set<string>();
  let kv: Kv | undefined;
  let stopped = false;
  let settleTimer: ReturnType<typeof setTimeout> | undefined;
  let statusTimer: ReturnType<typeof setInterval> | undefined;
  let applying = Promise.resolve();
  let lastAppliedText: string | undefined;
  let revision = 0;
  let state: StatusReport["state"] = "WAITING";
  let nack: StatusReport["nack"];
  const ownKey = role.kind === "gateway" ? gatewayKey(role.name) : serviceKey(role.service);

  const report = (): StatusReport => ({
    proxyId,
    role: role.kind,
    name: role.kind === "gateway" ? role.name : role.service,
    revision,
    state,
    ...(nack ? { nack } : {}),
    watching: [...keys.keys()].sort(),
    at: Date.now(),
  });
  const publishStatus = () => {
    if (!stopped) bus.publish(statusSubject(proxyId), encodeJson(report()));
  };

  function track(key: string): void {
    if (keys.has(key) || !kv) return;
    const entry: KeyState = { watch: undefined as unknown as Watch, caughtUp: false, value: undefined };
    keys.set(key, entry);
    entry.watch = kv.watch(
      key,
      (e) => {
        if (e.operation === "DEL") entry.value = undefined;
        else {
          const decoded = decodeJson(e.value);
          entry.value = decoded.ok ? decoded.value : { invalid: decoded.reason };
        }
        if (entry.caughtUp) schedule();
      },
      {
        onCaughtUp: () => {
          entry.caughtUp = true;
          schedule();
        },
      },
    );
  }

  function untrack(key: string): void {
    const entry = keys.get(key);
    if (!entry) return;
    entry.watch.stop();
    keys.delete(key);
  }

  function schedule(): void {
    if (stopped) return;
    clearTimeout(settleTimer);
    settleTimer = setTimeout(() => {
      applying = applying.then(settle).catch((err) => log?.error("config apply failed", { error: String(err) }));
    }, settleMs);
  }

  /** Works out the keys needed now, starts or stops watches, and applies once every needed key has caught up. */
  async function settle(): Promise<void> {
    if (stopped) return;
    const value = (key: string) => keys.get(key)?.value;
    const serviceConfig = (name: string) => (value(serviceKey(name)) as ServiceResource | undefined)?.config as ServiceConfig | undefined;
    const own = value(ownKey) as GatewayResource | ServiceResource | undefined;
    // A sidecar's own service may route to other services (its callers apply those routes): validation
    // needs their sections, so they are dependencies for the sidecar too.
    const config = (own as GatewayResource | ServiceResource | undefined)?.config;
    // A gateway's tcp and tls routes send to services too (their bytes are never routed again).
    const l4 = config && "tcpRoutes" in config ? [...(config.tcpRoutes ?? []), ...(config.tlsRoutes ?? [])].map((r) => ({ forward: { to: r.to } })) : [];
    const routes = [...(config?.routes ?? []), ...l4];
    const deps = serviceDependencies(routes, serviceConfig);
    if (role.kind === "sidecar") deps.add(role.service);
    for (const name of wanted) {
      deps.add(name);
      for (const d of serviceDependencies(serviceConfig(name)?.routes ?? [], serviceConfig)) deps.add(d);
    }
    const needed = new Set([MESH_KEY, ownKey]);
    for (const name of deps) {
      needed.add(serviceKey(name));
      needed.add(endpointsKey(name));
    }
    // A sidecar sends calls to external services through their egress gateways: it needs their endpoints.
    const egress = role.kind === "sidecar" ? Object.keys((value(MESH_KEY) as MeshResource | undefined)?.egressGateways ?? {}) : [];
    for (const name of egress) needed.add(endpointsKey(name));
    for (const key of needed) track(key);
    for (const key of [...keys.keys()]) if (!needed.has(key)) untrack(key);
    if ([...keys.values()].some((k) => !k.caughtUp)) return; // a new watch will call back

    const mesh = value(MESH_KEY) as MeshResource | undefined;
    if (!mesh || !own) {
      if (state === "WAITING") publishStatus();
      return;
    }
    const services = new Map<string, ServiceResource>();
    const endpoints = new Map<string, EndpointsResource>();
    for (const name of deps) {
      const svc = value(serviceKey(name)) as ServiceResource | undefined;
      // A missing service is left out: a route to it is then refused by validation (NACK), and a
      // service wanted on demand that the mesh does not have is simply not routable.
      if (!svc) continue;
      services.set(name, svc);
      const eps = value(endpointsKey(name)) as EndpointsResource | undefined;
      if (eps) endpoints.set(name, eps);
    }
    for (const name of egress) {
      const eps = value(endpointsKey(name)) as EndpointsResource | undefined;
      if (eps) endpoints.set(name, eps);
    }
    const gateways = new Map<string, GatewayResource>();
    if (role.kind === "gateway") gateways.set(role.name, own as GatewayResource);
    const resources: ProxyResources = { mesh, gateways, services, endpoints };
    const text = serializeResources(resources);
    if (text === lastAppliedText) return;

    const assembled = assembleSnapshot(resources);
    if (!assembled.ok) {
      const refused = Math.max(mesh.generation ?? 0, (own as { generation?: number }).generation ?? 0);
      nack = { revision: refused, issues: assembled.issues.slice(0, 20) };
      state = "NACK";
      log?.warn("config refused, still serving the last good one", { revision: refused, issues: nack.issues.length, first: nack.issues[0] });
      publishStatus();
      return;
    }
    try {
      await options.apply(assembled.snapshot);
    } catch (err) {
      nack = { revision: assembled.snapshot.revision, issues: [{ path: "(apply)", message: String((err as Error)?.message ?? err) }] };
      state = "NACK";
      log?.warn("config refused by the proxy", { revision: assembled.snapshot.revision, error: nack.issues[0]!.message });
      publishStatus();
      return;
    }
    const changedRevision = assembled.snapshot.revision !== revision;
    lastAppliedText = text;
    revision = assembled.snapshot.revision;
    state = "ACK";
    nack = undefined;
    if (changedRevision) log?.info("config applied", { revision });
    publishStatus();
    await options.store?.save(text).catch((err) => log?.warn("cannot persist the last good config", { error: String(err) }));
  }

  return {
    async start() {
      kv = await bus.kv(CONFIG_BUCKET, { history: BUCKET_HISTORY });
      if (stopped) return;
      track(MESH_KEY);
      track(ownKey);
      for (const name of wanted) track(serviceKey(name));
      statusTimer = setInterval(publishStatus, options.statusIntervalMs ?? 10_000);
      (statusTimer as { unref?: () => void }).unref?.();
    },
    want(service) {
      if (wanted.has(service)) return;
      wanted.add(service);
      if (kv) schedule();
    },
    get revision() {
      return revision;
    },
    get status() {
      return report();
    },
    stop() {
      stopped = true;
      clearTimeout(settleTimer);
      clearInterval(statusTimer);
      for (const key of [...keys.keys()]) untrack(key);
    },
  };
}

function serializeResources(r: ProxyResources): string {
  const sorted = <T>(m: ReadonlyMap<string, T>) => [...m].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return JSON.stringify({ mesh: r.mesh, gateways: sorted(r.gateways), services: sorted(r.services), endpoints: sorted(r.endpoints) });
}

function parseResources(text: string): ProxyResources | undefined {
  try {
    const raw = JSON.parse(text) as { mesh: MeshResource; gateways: [string, GatewayResource][]; services: [string, ServiceResource][]; endpoints: [string, EndpointsResource][] };
    return { mesh: raw.mesh, gateways: new Map(raw.gateways), services: new Map(raw.services), endpoints: new Map(raw.endpoints) };
  } catch {
    return undefined;
  }
}
