import { TLS_MODE_LABEL, type Endpoint, type HealthCheckConfig, type ServiceSnapshot } from "../config/index.ts";
import { speaksHttp2 } from "./grpc.ts";
import type { OutlierDetector } from "./outlier.ts";
import type { MeshIdentity, UpstreamClient, UpstreamFailure } from "./types.ts";

/** Why one check failed: the status it got, or the local failure (timeout, connect failure, mtls_unavailable…). */
export type CheckFailure = { readonly status: number } | { readonly failure: UpstreamFailure | "mtls_unavailable" };

/** An endpoint's active health changed (logged once per change by the role). */
export interface HealthChange {
  readonly service: string;
  readonly address: string;
  readonly healthy: boolean;
  /** What the last check came to (only when the endpoint went unhealthy). */
  readonly last: CheckFailure | undefined;
}

/** One service's active health as the checker sees it now. */
export interface ActiveHealth {
  /** Bumped whenever an endpoint of the service goes unhealthy or recovers. */
  readonly generation: number;
  /** Endpoints failing their checks now. */
  readonly unhealthyCount: number;
  isUnhealthy(address: string): boolean;
}

/** Timers the checker schedules rounds with; injected in tests. */
export interface CheckTimers {
  set(run: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

export interface HealthCheckerOptions {
  readonly client: UpstreamClient;
  readonly meshIdentity?: MeshIdentity;
  readonly random?: () => number;
  readonly timers?: CheckTimers;
  readonly onChange?: (change: HealthChange) => void;
}

/** Runs the active health checks of every service that sets traffic.healthCheck. */
export interface HealthChecker {
  /** Follows a new config: starts, restarts (when healthCheck changed) and stops per-service checks; keeps the state of endpoints still there. */
  update(services: Iterable<ServiceSnapshot>): void;
  /** The active health of a service, undefined when it is not checked. */
  of(service: string): ActiveHealth | undefined;
  /** Runs one round for every checked service now and resolves when its checks are over. */
  checkNow(): Promise<void>;
  /** Checked services with the addresses failing now. */
  report(): readonly { readonly service: string; readonly unhealthy: readonly string[] }[];
  /** Clears every timer; checks in flight end on their own timeout. */
  stop(): void;
}

interface EndpointCheck {
  endpoint: Endpoint;
  healthy: boolean;
  successes: number;
  failures: number;
  inFlight: boolean;
}

interface ServiceChecks extends ActiveHealth {
  key: string;
  service: ServiceSnapshot;
  config: HealthCheckConfig;
  endpoints: Map<string, EndpointCheck>;
  generation: number;
  unhealthyCount: number;
  timer: unknown;
  stopped: boolean;
}

const DEFAULT_TIMERS: CheckTimers = {
  set: (run, ms) => setTimeout(run, ms),
  clear: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/** Whether a status is in one of the expected [from, to] ranges. */
function expected(status: number, ranges: HealthCheckConfig["expectedStatuses"]): boolean {
  for (const [from, to] of ranges) if (status >= from && status <= to) return true;
  return false;
}

/**
 * createHealthChecker sends `GET path` to every endpoint of each service with a healthCheck, through
 * the proxy's own upstream client (mesh endpoints over mTLS, as requests). An endpoint goes unhealthy
 * after unhealthyThreshold failed checks in a row (a status outside expectedStatuses, a connect
 * failure, a timeout) and healthy after healthyThreshold passed ones. Endpoints start healthy: a new
 * endpoint comes from discovery, which only lists instances that registered and heartbeat, so
 * holding it out until a first check would only delay it (and a cold start would take every endpoint out).
 * @example
 * const checker = createHealthChecker({ client, onChange: (c) => log.warn("endpoint unhealthy", c) });
 * checker.update(snapshot.services.values());
 * const pool = pickable(endpoints, outlier, checker.of("web"), 50);
 */
export function createHealthChecker(options: HealthCheckerOptions): HealthChecker {
  const { client, meshIdentity, onChange } = options;
  const random = options.random ?? Math.random;
  const timers = options.timers ?? DEFAULT_TIMERS;
  const services = new Map<string, ServiceChecks>();

  function schedule(checks: ServiceChecks): void {
    // Up to 10% jitter, so proxies that started together do not check in step.
    const delay = Math.max(1, Math.round(checks.config.intervalMs * (1 + random() * 0.1)));
    checks.timer = timers.set(() => {
      checks.timer = undefined;
      if (checks.stopped) return;
      void round(checks).finally(() => {
        if (!checks.stopped) schedule(checks);
      });
    }, delay);
  }

  function round(checks: ServiceChecks): Promise<void> {
    const tries: Promise<void>[] = [];
    for (const state of checks.endpoints.values()) {
      if (state.inFlight) continue;
      tries.push(checkOne(checks, state));
    }
    return Promise.all(tries).then(() => undefined);
  }

  async function checkOne(checks: ServiceChecks, state: EndpointCheck): Promise<void> {
    const { config, service } = checks;
    const endpoint = state.endpoint;
    state.inFlight = true;
    let outcome: CheckFailure | undefined;
    try {
      let mesh: { identity: MeshIdentity; expectedId: string } | undefined;
      if (endpoint.labels[TLS_MODE_LABEL] === "mesh") {
        if (meshIdentity?.current() === undefined) outcome = { failure: "mtls_unavailable" };
        else mesh = { identity: meshIdentity, expectedId: service.spiffeId };
      }
      if (outcome === undefined) {
        const traffic = service.traffic;
        const result = await client.forward({
          endpoint,
          method: "GET",
          path: config.path,
          headers: { host: config.host ?? service.name, "user-agent": "weft-health-check" },
          body: { length: 0, replayable: true },
          connectTimeoutMs: Math.min(traffic.connectTimeoutMs, config.timeoutMs),
          timeoutMs: config.timeoutMs,
          idleTimeoutMs: traffic.idleTimeoutMs,
          maxBodyBytes: undefined,
          maxReplayBytes: 0,
          maxConnections: traffic.maxConnectionsPerEndpoint,
          mesh,
          http2: speaksHttp2(service.ports, undefined) || (mesh !== undefined && traffic.h2UpgradePolicy === "UPGRADE"),
        });
        if (result.ok) {
          result.response.discard();
          if (!expected(result.response.status, config.expectedStatuses)) outcome = { status: result.response.status };
        } else outcome = { failure: result.reason };
      }
    } catch {
      outcome = { failure: "upstream_reset" };
    } finally {
      state.inFlight = false;
    }
    // The service was restarted or dropped, or the endpoint left, while the check was out: it counts no more.
    if (checks.stopped || checks.endpoints.get(endpoint.address) !== state) return;
    record(checks, state, outcome);
  }

  function record(checks: ServiceChecks, state: EndpointCheck, outcome: CheckFailure | undefined): void {
    if (outcome === undefined) {
      state.failures = 0;
      state.successes++;
      if (!state.healthy && state.successes >= checks.config.healthyThreshold) {
        state.healthy = true;
        checks.unhealthyCount--;
        checks.generation++;
        onChange?.({ service: checks.service.name, address: state.endpoint.address, healthy: true, last: undefined });
      }
      return;
    }
    state.successes = 0;
    state.failures++;
    if (state.healthy && state.failures >= checks.config.unhealthyThreshold) {
      state.healthy = false;
      checks.unhealthyCount++;
      checks.generation++;
      onChange?.({ service: checks.service.name, address: state.endpoint.address, healthy: false, last: outcome });
    }
  }

  function stopChecks(checks: ServiceChecks): void {
    checks.stopped = true;
    if (checks.timer !== undefined) timers.clear(checks.timer);
    checks.timer = undefined;
  }

  function syncEndpoints(checks: ServiceChecks, endpoints: readonly Endpoint[]): void {
    const seen = new Set<string>();
    for (const endpoint of endpoints) {
      seen.add(endpoint.address);
      const state = checks.endpoints.get(endpoint.address);
      if (state) state.endpoint = endpoint;
      else checks.endpoints.set(endpoint.address, { endpoint, healthy: true, successes: 0, failures: 0, inFlight: false });
    }
    for (const [address, state] of checks.endpoints) {
      if (seen.has(address)) continue;
      checks.endpoints.delete(address);
      if (!state.healthy) {
        checks.unhealthyCount--;
        checks.generation++;
      }
    }
  }

  return {
    update(next) {
      const present = new Set<string>();
      for (const service of next) {
        const config = service.traffic.healthCheck;
        if (!config) continue;
        present.add(service.name);
        const key = JSON.stringify(config);
        let checks = services.get(service.name);
        if (checks && checks.key !== key) {
          stopChecks(checks);
          checks = undefined;
        }
        if (!checks) {
          checks = {
            key,
            service,
            config,
            endpoints: new Map(),
            generation: 0,
            unhealthyCount: 0,
            timer: undefined,
            stopped: false,
            isUnhealthy(address) {
              return this.unhealthyCount > 0 && this.endpoints.get(address)?.healthy === false;
            },
          };
          services.set(service.name, checks);
          schedule(checks);
        }
        checks.service = service;
        syncEndpoints(checks, service.endpoints);
      }
      for (const [name, checks] of services) {
        if (present.has(name)) continue;
        stopChecks(checks);
        services.delete(name);
      }
    },
    of: (service) => services.get(service),
    async checkNow() {
      await Promise.all([...services.values()].map(round));
    },
    report() {
      const out: { service: string; unhealthy: string[] }[] = [];
      for (const [service, checks] of services) {
        const unhealthy: string[] = [];
        for (const [address, state] of checks.endpoints) if (!state.healthy) unhealthy.push(address);
        out.push({ service, unhealthy });
      }
      return out;
    },
    stop() {
      for (const checks of services.values()) stopChecks(checks);
      services.clear();
    },
  };
}

/**
 * logHealthChange logs an endpoint's active health change once: warn when it goes unhealthy (with
 * what its last check got), info when it recovers.
 * @example
 * createEngine({ client, edge: true, onHealthChange: (c) => logHealthChange(log, c) });
 */
export function logHealthChange(
  log: { info(msg: string, fields: Record<string, unknown>): void; warn(msg: string, fields: Record<string, unknown>): void },
  change: HealthChange,
): void {
  const fields = { service: change.service, endpoint: change.address };
  if (change.healthy) log.info("endpoint passes its health checks again", fields);
  else log.warn("endpoint fails its health checks", { ...fields, ...change.last });
}

const pools = new WeakMap<readonly Endpoint[], { active: ActiveHealth; activeGeneration: number; outlierGeneration: number; minHealthPercent: number; pool: readonly Endpoint[] }>();

/**
 * pickable is the part of a pool a balancer may pick from: without endpoints failing active checks
 * and without outlier-ejected ones, or the whole pool when fewer than minHealthPercent of it remain
 * (the panic threshold, applied to both together). Cached per pool until either set changes.
 * @example
 * const ep = balancer.pick(pickable(endpoints, outlier, checker.of("web"), 50), ctx);
 */
export function pickable(
  pool: readonly Endpoint[],
  outlier: OutlierDetector | undefined,
  active: ActiveHealth | undefined,
  minHealthPercent: number,
): readonly Endpoint[] {
  if (active === undefined || active.unhealthyCount === 0) return outlier ? outlier.available(pool) : pool;
  const outlierGeneration = outlier ? outlier.generation() : 0;
  const cached = pools.get(pool);
  if (cached && cached.active === active && cached.activeGeneration === active.generation && cached.outlierGeneration === outlierGeneration && cached.minHealthPercent === minHealthPercent) {
    return cached.pool;
  }
  const healthy = pool.filter((ep) => !active.isUnhealthy(ep.address) && !(outlier?.isEjected(ep.address) ?? false));
  const panic = pool.length === 0 || (healthy.length / pool.length) * 100 < minHealthPercent;
  const result = panic || healthy.length === pool.length ? pool : healthy;
  pools.set(pool, { active, activeGeneration: active.generation, outlierGeneration, minHealthPercent, pool: result });
  return result;
}
