import type { Endpoint, RetryPolicyConfig, ServiceSnapshot } from "../config/index.ts";
import { createBalancer, selectSubset, type Balancer } from "./balancer.ts";

/** A service as a caller reaches it: its endpoints by subset and a balancer over them. */
export interface Cluster {
  readonly service: ServiceSnapshot;
  readonly balancer: Balancer;
  readonly retries: RetryPolicyConfig | undefined;
  /** Endpoints of a subset (or all), ready to pick from: draining ones stay out. */
  endpoints(subset: string | undefined): readonly Endpoint[];
}

/**
 * createCluster prepares a service for picking endpoints; subsets are computed once per config.
 * @example
 * const c = createCluster(snapshot.services.get("web")!);
 * c.balancer.pick(c.endpoints("v1"), ctx);
 */
export function createCluster(service: ServiceSnapshot): Cluster {
  const all = service.endpoints;
  const bySubset = new Map<string, readonly Endpoint[]>();
  for (const [name, labels] of Object.entries(service.subsets)) {
    bySubset.set(name, selectSubset(all, labels));
  }
  return {
    service,
    balancer: createBalancer(service.traffic.loadBalancer),
    retries: service.traffic.retries,
    endpoints: (subset) => (subset === undefined ? all : (bySubset.get(subset) ?? [])),
  };
}
