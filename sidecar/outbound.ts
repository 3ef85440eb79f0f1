import * as v from "valibot";
import { DestinationPolicySchema, parseEndpoint, type PolicySetConfig, type ServiceSnapshot } from "../shared/config/index.ts";
import {
  createCluster,
  createRouter,
  toOriginForm,
  type Engine,
  type Exchange,
  type RequestBody,
  type RequestHead,
  type RouteView,
  type ServeTarget,
  type SidecarViews,
} from "../shared/proxy/index.ts";

/** The cluster name of a pass-through destination (an unknown host under ALLOW_ANY). */
export const PASSTHROUGH_CLUSTER = "passthrough";
/** Set on pass-through requests so that one the sidecar sends to itself is refused instead of looping. */
export const OUTBOUND_MARK_HEADER = "x-weft-outbound";

export interface OutboundOptions {
  readonly engine: Engine;
  /** The views of the config applied now; undefined before the first one. */
  current(): SidecarViews | undefined;
  /** Asks discovery to watch a service first seen as a Host (ConfigWatcher.want). */
  want(service: string): void;
  /** How long a request for an unknown Host waits for discovery to bring it (default 1500 ms). */
  readonly discoveryWaitMs?: number;
  /** How long a Host that discovery did not find is answered without waiting again (default 10000 ms). */
  readonly negativeCacheMs?: number;
  /** This proxy's id, written into the loop-guard header on pass-through requests. */
  readonly proxyId: string;
  readonly now?: () => number;
  onInternalError?(err: unknown): void;
}

export interface Outbound extends ServeTarget {
  /** Call after every config swap: wakes requests waiting for a service discovered on demand. */
  applied(): void;
}

interface Waiter {
  readonly host: string;
  readonly resolve: () => void;
}

const MAX_WANTED = 1024;
const MESH_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/**
 * createOutbound serves the app's outgoing HTTP (captured by iptables, sent to the outbound port,
 * to its Unix socket, or through it as HTTP_PROXY): it routes by Host with the called service's
 * routes and destination policy. A Host the sidecar does not know yet is asked for (discovery on
 * first request) and waited for briefly. A Host that names a declared external service goes there
 * (through its egress gateway, or directly with TLS originated on `https` ports). Any other Host gets
 * 502 `no_route` (REGISTRY_ONLY, written to the access log) or is passed through to the host:port it
 * names (ALLOW_ANY).
 * @example
 * const outbound = createOutbound({ engine, current: () => views, want: (s) => watcher.want(s), proxyId });
 * await runtime.listen({ port: 15001, address: "127.0.0.1", maxHeaderCount: 100, maxHeaderBytes: 16384 }, outbound);
 */
export function createOutbound(options: OutboundOptions): Outbound {
  const { engine, current, proxyId } = options;
  const now = options.now ?? Date.now;
  const discoveryWaitMs = options.discoveryWaitMs ?? 1500;
  const negativeCacheMs = options.negativeCacheMs ?? 10_000;
  const asked = new Set<string>();
  const notFound = new Map<string, number>();
  let waiters: Waiter[] = [];
  const passthroughTraffic = v.parse(DestinationPolicySchema, {});
  let passthroughViews = new Map<string, RouteView>();
  let passthroughFor: SidecarViews | undefined;

  function waitFor(host: string): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, discoveryWaitMs);
      const waiter: Waiter = { host, resolve: done };
      waiters.push(waiter);
      function done() {
        clearTimeout(timer);
        waiters = waiters.filter((w) => w !== waiter);
        resolve();
      }
    });
  }

  function passthroughView(views: SidecarViews, authority: string): RouteView | undefined {
    if (passthroughFor !== views) {
      passthroughFor = views;
      passthroughViews = new Map();
    }
    const key = authority.toLowerCase();
    let view = passthroughViews.get(key);
    if (view) return view;
    const target = passthroughEndpoint(key);
    if (!target) return undefined;
    const service: ServiceSnapshot = {
      name: PASSTHROUGH_CLUSTER,
      namespace: "",
      serviceAccount: "",
      spiffeId: "",
      hostnames: [],
      ports: [{ port: target.port, protocol: "http" }],
      subsets: {},
      endpoints: [target],
      traffic: passthroughTraffic,
      routes: [],
      inbound: {} as PolicySetConfig,
      mtlsMode: "PERMISSIVE",
    };
    const cluster = createCluster(service);
    const router = createRouter([
      {
        name: PASSTHROUGH_CLUSTER,
        forward: { to: [{ service: PASSTHROUGH_CLUSTER, weight: 1 }] },
        headers: { request: { set: { [OUTBOUND_MARK_HEADER]: proxyId } } },
      },
    ]);
    view = {
      revision: views.snapshot.revision,
      route: (head) => router.match(head),
      cluster: (name) => (name === PASSTHROUGH_CLUSTER ? cluster : undefined),
      policy: undefined,
      xffTrustedHops: 0,
      outbound: true,
    };
    // Bounded: an app calling many distinct hosts must not grow the sidecar without limit.
    if (passthroughViews.size >= MAX_WANTED) passthroughViews.clear();
    passthroughViews.set(key, view);
    return view;
  }

  async function handle(incoming: RequestHead, body: RequestBody): Promise<Exchange> {
    const head = toOriginForm(incoming);
    if (head === undefined) return engine.refuse(incoming, "bad_request");
    let views = current();
    if (!views) return engine.refuse(head, "no_config");
    if (views.serviceOf(head.authority) !== undefined) return engine.handle(head, body, views.outbound);
    // A declared external service (ServiceEntry) is reachable whatever the outbound traffic policy.
    if (views.external.accepts(head.authority)) return engine.handle(head, body, views.external);

    const name = serviceNameOf(head.authority);
    if (name !== undefined && (notFound.get(name) ?? 0) <= now()) {
      if (!asked.has(name) && asked.size < MAX_WANTED) {
        asked.add(name);
        options.want(name);
      }
      await waitFor(hostOf(head.authority));
      views = current()!;
      if (views.serviceOf(head.authority) !== undefined) return engine.handle(head, body, views.outbound);
      notFound.set(name, now() + negativeCacheMs);
    }
    if (views.snapshot.outboundTrafficPolicy === "ALLOW_ANY") {
      if (firstHeader(head.headers[OUTBOUND_MARK_HEADER]) === proxyId) return engine.refuse(head, "loop_detected");
      const view = passthroughView(views, head.authority);
      if (view) return engine.handle(head, body, view);
    }
    // Neither a mesh service nor a declared external one: refused, and recorded in the access log.
    return engine.refuse(head, "no_route", 502);
  }

  return {
    engine: {
      handle: (head, body) => handle(head, body),
      refuse: (head, reason, status) => engine.refuse(head, reason, status),
      health: () => engine.health(),
      checkHealth: (services) => engine.checkHealth(services),
      stop: () => engine.stop(),
    },
    current: () => current()?.outbound as RouteView,
    onInternalError: options.onInternalError,
    applied() {
      const views = current();
      if (!views) return;
      for (const w of [...waiters]) if (views.serviceOf(w.host) !== undefined) w.resolve();
      for (const name of [...notFound.keys()]) if (views.serviceOf(name) !== undefined) notFound.delete(name);
    },
  };
}

/**
 * serviceNameOf gives the service a mesh-style Host could name (`orders`, `orders.shop`,
 * `orders.shop.svc`, `orders.shop.svc.cluster.local`), so discovery can be asked for it; other
 * hosts (external names, IP addresses) give undefined.
 * @example
 * serviceNameOf("orders.shop.svc.cluster.local:8080") // "orders"
 */
export function serviceNameOf(authority: string): string | undefined {
  const host = hostOf(authority);
  const labels = host.split(".");
  const meshShaped =
    labels.length <= 2 || (labels.length === 3 && labels[2] === "svc") || (labels.length === 5 && host.endsWith(".svc.cluster.local"));
  if (!meshShaped || !labels.every((l) => MESH_NAME.test(l))) return undefined;
  if (/^\d+$/.test(labels[0]!)) return undefined;
  return labels[0];
}

function hostOf(authority: string): string {
  const lower = authority.toLowerCase();
  if (lower.startsWith("[")) return lower.slice(0, lower.indexOf("]") + 1);
  const colon = lower.lastIndexOf(":");
  return (colon < 0 ? lower : lower.slice(0, colon)).replace(/\.$/, "");
}

function passthroughEndpoint(authority: string) {
  const bracket = authority.startsWith("[");
  const colon = authority.lastIndexOf(":");
  const hasPort = colon > 0 && (!bracket || colon > authority.indexOf("]"));
  const address = hasPort ? authority : `${authority}:80`;
  const endpoint = parseEndpoint(address);
  if (!Number.isInteger(endpoint.port) || endpoint.port < 1 || endpoint.port > 65535 || endpoint.host === "") return undefined;
  return endpoint;
}

function firstHeader(value: string | readonly string[] | undefined): string | undefined {
  return typeof value === "string" ? value : value?.[0];
}

