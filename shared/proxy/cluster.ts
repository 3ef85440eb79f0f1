import type { Endpoint, RetryPolicyConfig, ServiceSnapshot } from "../config/index.ts";
import { createBalancer, selectSubset, type Balancer } from "./balancer.ts";
import { createCircuitBreaker, type CircuitBreaker } from "./circuit.ts";
import { createOutlierDetector, type OutlierDetector } from "./outlier.ts";

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

/** The live state a caller proxy keeps per service: ejected endpoints and requests in flight. */
export interface ClusterHealth {
  /** Present when the service's traffic policy sets outlierDetection. */
  readonly outlier: OutlierDetector | undefined;
  /** Present when the service's traffic policy sets connectionPool. */
  readonly circuit: CircuitBreaker | undefined;
}

/** Finds the health state of a cluster; see createClusterHealth. */
export interface ClusterHealthTable {
  of(cluster: Cluster): ClusterHealth;
  /** The state of every service that has some (outlier detection or a connection pool), for /clusters and metrics. */
  report(): readonly ClusterHealthReport[];
}

/** One service's live health as this proxy sees it. */
export interface ClusterHealthReport {
  readonly service: string;
  /** Endpoints ejected now, with the time each returns (ms since the epoch). */
  readonly ejected: readonly { readonly address: string; readonly untilMs: number }[];
  /** Ejections since the service's outlier detection began; 0 without one. */
  readonly ejectionsTotal: number;
  /** Requests holding a slot of the connection pool, waiting for one, and retries in flight; 0 without a pool. */
  readonly active: number;
  readonly pending: number;
  readonly retries: number;
  /** Retries refused by the pool's maxRetries or retry budget since its breaker began; 0 without a pool. */
  readonly retryOverflows: number;
  /** Endpoints failing their active health checks now; undefined when the service sets no healthCheck. */
  readonly unhealthy?: readonly string[];
}

const NO_HEALTH: ClusterHealth = { outlier: undefined, circuit: undefined };

/**
 * createClusterHealth keeps each service's outlier detector and circuit breaker across config
 * swaps (clusters are rebuilt with every snapshot, an ejection or a request in flight must not be
 * forgotten then); a service gets fresh state only when its outlierDetection or connectionPool changes.
 * @example
 * const health = createClusterHealth(Date.now);
 * const { outlier, circuit } = health.of(view.cluster("web")!);
 */
export function createClusterHealth(now: () => number): ClusterHealthTable {
  const byService = new Map<string, { outlierKey: string; circuitKey: string; health: ClusterHealth }>();
  const byCluster = new WeakMap<Cluster, ClusterHealth>();
  return {
    of(cluster) {
      let health = byCluster.get(cluster);
      if (health) return health;
      const { outlierDetection, connectionPool } = cluster.service.traffic;
      const outlierKey = JSON.stringify(outlierDetection ?? null);
      const circuitKey = JSON.stringify(connectionPool ?? null);
      const held = byService.get(cluster.service.name);
      health = {
        outlier:
          held && held.outlierKey === outlierKey ? held.health.outlier : outlierDetection ? createOutlierDetector(outlierDetection, now) : undefined,
        circuit:
          held && held.circuitKey === circuitKey ? held.health.circuit : connectionPool ? createCircuitBreaker(connectionPool) : undefined,
      };
      if (!health.outlier && !health.circuit) {
        byService.delete(cluster.service.name);
        health = NO_HEALTH;
      } else byService.set(cluster.service.name, { outlierKey, circuitKey, health });
      byCluster.set(cluster, health);
      return health;
    },
    report() {
      return [...byService].map(([service, { health: { outlier, circuit } }]) => ({
        service,
        ejected: outlier?.ejections() ?? [],
        ejectionsTotal: outlier?.ejectionsTotal ?? 0,
        active: circuit?.active ?? 0,
        pending: circuit?.pending ?? 0,
        retries: circuit?.retries ?? 0,
        retryOverflows: circuit?.retryOverflows ?? 0,
      }));
    },
  };
}
