import type { Endpoint, PolicySetConfig, Snapshot } from "../config/index.ts";
import { createCluster, type Cluster } from "./cluster.ts";
import type { PolicyGate, RouteView } from "./engine.ts";
import { createExternalView, type ExternalView } from "./external.ts";
import { createRouter, splitAuthority } from "./router.ts";

/** Where a policy set is applied: the gateway or service name, and the x-forwarded-for hops it trusts. */
export interface PolicyScope {
  readonly name: string;
  readonly xffTrustedHops: number;
}

export interface ViewDeps {
  /** Builds the policy step for a policy set; undefined when the set asks for nothing. */
  readonly createPolicy?: (policy: PolicySetConfig, scope: PolicyScope) => PolicyGate | undefined;
}

/**
 * createGatewayView compiles what a gateway needs from a snapshot: its routes, the clusters
 * they reach and its policy. Built once per config swap; requests only read it.
 * @example
 * let view = createGatewayView(snapshot, "ingress");
 * const exchange = await engine.handle(head, body, view);
 */
export function createGatewayView(snapshot: Snapshot, gatewayName: string, deps: ViewDeps = {}): RouteView {
  const gateway = snapshot.gateways.get(gatewayName);
  if (!gateway) throw new TypeError(`gateway "${gatewayName}" is not in the config`);
  const router = createRouter(gateway.routes);
  const policy = deps.createPolicy?.(gateway.policy, { name: gatewayName, xffTrustedHops: gateway.xffTrustedHops });
  const lookup = clusterLookup(snapshot);
  if (gateway.kind === "egress") {
    // An egress gateway routes by Host to the external services sent through it, then its own routes.
    const external = createExternalView(snapshot, { gateway: gatewayName, policy, xffTrustedHops: gateway.xffTrustedHops });
    return {
      revision: snapshot.revision,
      route: (head) => external.route(head) ?? router.match(head),
      cluster: (name) => external.cluster(name) ?? lookup(name),
      policy,
      xffTrustedHops: gateway.xffTrustedHops,
    };
  }
  return {
    revision: snapshot.revision,
    route: (head) => router.match(head),
    cluster: lookup,
    policy,
    xffTrustedHops: gateway.xffTrustedHops,
  };
}

/** clusterLookup builds each service's cluster on first use and keeps it for this snapshot. */
export function clusterLookup(snapshot: Snapshot): (service: string) => Cluster | undefined {
  const clusters = new Map<string, Cluster>();
  return (name) => {
    let cluster = clusters.get(name);
    if (cluster === undefined) {
      const service = snapshot.services.get(name);
      if (!service) return undefined;
      cluster = createCluster(service);
      clusters.set(name, cluster);
    }
    return cluster;
  };
}

/** The route name and cluster key of a sidecar's inbound side (the local app). */
export const INBOUND_CLUSTER = "inbound|app";

export interface SidecarViewOptions extends ViewDeps {
  /** Where the inbound side reaches the local app: 127.0.0.1:<port> or a Unix socket. */
  readonly app: Endpoint;
}

/** What a sidecar runs for one snapshot: its inbound side, its outbound side, and Host lookup. */
export interface SidecarViews {
  readonly snapshot: Snapshot;
  /** Every request to the app: the service's inbound policy, then the app. */
  readonly inbound: RouteView;
  /** The app's calls, routed by Host with the called service's routes and destination policy. */
  readonly outbound: RouteView;
  /** The app's calls to declared external services: through their egress gateway or directly. */
  readonly external: ExternalView;
  /** The service a Host names (`name`, `name.ns`, `name.ns.svc`, `name.ns.svc.cluster.local`, any port), if known. */
  serviceOf(authority: string): string | undefined;
}

/**
 * createSidecarViews compiles a sidecar's two sides from a snapshot: inbound (policy of `service`,
 * then the app) and outbound (Host → service → that service's routes). Built once per config swap.
 * @example
 * const views = createSidecarViews(snapshot, "orders", { app: parseEndpoint("127.0.0.1:8080") });
 * await engine.handle(head, body, views.outbound);
 */
export function createSidecarViews(snapshot: Snapshot, service: string, options: SidecarViewOptions): SidecarViews {
  const own = snapshot.services.get(service);
  if (!own) throw new TypeError(`service "${service}" is not in the config`);
  const hosts = new Map<string, string>();
  const routers = new Map<string, ReturnType<typeof createRouter>>();
  for (const svc of snapshot.services.values()) {
    for (const name of svc.hostnames) hosts.set(name.toLowerCase(), svc.name);
    routers.set(svc.name, createRouter(svc.routes));
  }
  const serviceOf = (authority: string) => hosts.get(splitAuthority(authority).host.replace(/\.$/, ""));

  const app = createCluster({ ...own, name: INBOUND_CLUSTER, endpoints: [options.app], subsets: {}, routes: [] });
  const inboundRouter = createRouter([{ name: "inbound", forward: { to: [{ service: INBOUND_CLUSTER, weight: 1 }] } }]);
  const inbound: RouteView = {
    revision: snapshot.revision,
    route: (head) => inboundRouter.match(head),
    cluster: (name) => (name === INBOUND_CLUSTER ? app : undefined),
    policy: options.createPolicy?.(own.inbound, { name: service, xffTrustedHops: 0 }),
    xffTrustedHops: 0,
  };
  const outbound: RouteView = {
    revision: snapshot.revision,
    route(head) {
      const name = serviceOf(head.authority);
      return name === undefined ? undefined : routers.get(name)!.match(head);
    },
    cluster: clusterLookup(snapshot),
    policy: undefined,
    xffTrustedHops: 0,
    outbound: true,
  };
  return { snapshot, inbound, outbound, external: createExternalView(snapshot), serviceOf };
}
