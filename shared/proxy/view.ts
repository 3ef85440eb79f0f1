import type { PolicySetConfig, Snapshot } from "../config/index.ts";
import { createCluster, type Cluster } from "./cluster.ts";
import type { PolicyGate, RouteView } from "./engine.ts";
import { createRouter } from "./router.ts";

export interface ViewDeps {
  /** Builds the policy step for a policy set; undefined when the set asks for nothing. */
  readonly createPolicy?: (policy: PolicySetConfig) => PolicyGate | undefined;
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
  return {
    revision: snapshot.revision,
    route: (head) => router.match(head),
    cluster: clusterLookup(snapshot),
    policy: deps.createPolicy?.(gateway.policy),
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
