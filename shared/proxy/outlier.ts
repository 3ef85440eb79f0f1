import type { Endpoint, OutlierDetectionConfig } from "../config/index.ts";
import type { UpstreamFailure } from "./types.ts";

/** What one try against an endpoint came to: the upstream's status, or a failure seen locally. */
export type AttemptOutcome = { readonly status: number } | { readonly failure: UpstreamFailure };

/**
 * Tracks consecutive errors per endpoint (by address) and ejects endpoints that keep failing.
 * State outlives a config swap: endpoints are known by address, not by object.
 */
export interface OutlierDetector {
  /**
   * Counts one try's outcome. `population` is every endpoint of the service (the base of
   * maxEjectionPercent). Returns true when this outcome ejected the endpoint.
   */
  report(endpoint: Endpoint, outcome: AttemptOutcome, population: readonly Endpoint[]): boolean;
  /**
   * The endpoints of a pool that may be picked: the pool itself while none of it is ejected (so a
   * balancer's per-list state carries on), else the pool without ejected endpoints, or the whole
   * pool when fewer than minHealthPercent remain (panic).
   */
  available(pool: readonly Endpoint[]): readonly Endpoint[];
  /** Whether an address is ejected now. */
  isEjected(address: string): boolean;
  /** Changes whenever the ejected set does (ejections ending on time included). */
  generation(): number;
  /** Addresses ejected now, with the time each returns. */
  ejections(): readonly { readonly address: string; readonly untilMs: number }[];
  /** Ejections made since this detector began (Envoy's outlier_detection.ejections_enforced_total). */
  readonly ejectionsTotal: number;
}

interface EndpointState {
  consecutive5xx: number;
  consecutiveGateway: number;
  /** Ejection multiplier: times ejected, less one per interval spent in since the last return. */
  timesEjected: number;
  /** When the last ejection ended (or the state began). */
  sinceMs: number;
  ejectedUntilMs: number | undefined;
}

/**
 * createOutlierDetector follows Envoy's consecutive-errors detection: after `consecutive5xxErrors`
 * 5xx answers in a row (connect failures, resets and timeouts count as 5xx and as gateway errors),
 * or `consecutiveGatewayErrors` 502/503/504 in a row, an endpoint is ejected for
 * baseEjectionTimeMs × times ejected (capped at maxEjectionTimeMs), unless maxEjectionPercent of
 * the service is already out. Any other answer resets its counters. Time comes from `now`.
 * @example
 * const outlier = createOutlierDetector(policy.outlierDetection, Date.now);
 * const ep = balancer.pick(outlier.available(endpoints), ctx);
 * outlier.report(ep, { status: 503 }, endpoints);
 */
export function createOutlierDetector(config: OutlierDetectionConfig, now: () => number): OutlierDetector {
  const states = new Map<string, EndpointState>();
  const maxEjectionMs = Math.max(config.maxEjectionTimeMs, config.baseEjectionTimeMs);
  // Changes whenever the ejected set does, so filtered pools are rebuilt only then.
  let generation = 0;
  let ejectedCount = 0;
  let ejectionsTotal = 0;
  let nextReturnMs = Infinity;
  const filtered = new WeakMap<readonly Endpoint[], { generation: number; pool: readonly Endpoint[] }>();

  function decayed(state: EndpointState, at: number): number {
    const intervals = Math.floor((at - state.sinceMs) / config.intervalMs);
    return Math.max(0, state.timesEjected - intervals);
  }

  function returnExpired(at: number): void {
    if (at < nextReturnMs) return;
    nextReturnMs = Infinity;
    for (const state of states.values()) {
      if (state.ejectedUntilMs === undefined) continue;
      if (state.ejectedUntilMs <= at) {
        state.sinceMs = state.ejectedUntilMs;
        state.ejectedUntilMs = undefined;
        ejectedCount--;
        generation++;
      } else nextReturnMs = Math.min(nextReturnMs, state.ejectedUntilMs);
    }
  }

  function mayEject(population: readonly Endpoint[]): boolean {
    if (config.maxEjectionPercent === 0) return false;
    let out = 0;
    for (const ep of population) if (states.get(ep.address)?.ejectedUntilMs !== undefined) out++;
    // Envoy: "defaults to 10% but will eject at least one host regardless of the value".
    const allowed = Math.max(1, Math.floor((population.length * config.maxEjectionPercent) / 100));
    return out < allowed;
  }

  function eject(state: EndpointState, at: number): void {
    state.timesEjected = decayed(state, at) + 1;
    state.ejectedUntilMs = at + Math.min(config.baseEjectionTimeMs * state.timesEjected, maxEjectionMs);
    state.consecutive5xx = 0;
    state.consecutiveGateway = 0;
    ejectedCount++;
    ejectionsTotal++;
    generation++;
    nextReturnMs = Math.min(nextReturnMs, state.ejectedUntilMs);
  }

  return {
    get ejectionsTotal() {
      return ejectionsTotal;
    },
    report(endpoint, outcome, population) {
      const at = now();
      returnExpired(at);
      let fiveXx: boolean;
      let gateway: boolean;
      if ("status" in outcome) {
        fiveXx = outcome.status >= 500;
        gateway = outcome.status === 502 || outcome.status === 503 || outcome.status === 504;
      } else {
        // A body the client sent too large says nothing about the endpoint.
        if (outcome.failure === "body_too_large") return false;
        fiveXx = true;
        gateway = true;
      }
      let state = states.get(endpoint.address);
      if (!fiveXx) {
        // Only endpoints with something to remember keep a state, so churned addresses do not pile up.
        if (state && state.ejectedUntilMs === undefined) {
          state.consecutive5xx = 0;
          state.consecutiveGateway = 0;
          if (decayed(state, at) === 0) states.delete(endpoint.address);
        }
        return false;
      }
      if (state?.ejectedUntilMs !== undefined) return false; // a panic pick; it is out already
      if (!state) {
        state = { consecutive5xx: 0, consecutiveGateway: 0, timesEjected: 0, sinceMs: at, ejectedUntilMs: undefined };
        states.set(endpoint.address, state);
      }
      state.consecutive5xx++;
      if (gateway) state.consecutiveGateway++;
      const tripped =
        (config.consecutive5xxErrors > 0 && state.consecutive5xx >= config.consecutive5xxErrors) ||
        (config.consecutiveGatewayErrors > 0 && state.consecutiveGateway >= config.consecutiveGatewayErrors);
      if (!tripped || !mayEject(population)) return false;
      eject(state, at);
      return true;
    },

    available(pool) {
      returnExpired(now());
      if (ejectedCount === 0) return pool;
      let cached = filtered.get(pool);
      if (!cached || cached.generation !== generation) {
        const healthy = pool.filter((ep) => states.get(ep.address)?.ejectedUntilMs === undefined);
        const panic = (healthy.length / pool.length) * 100 < config.minHealthPercent;
        cached = { generation, pool: panic || healthy.length === pool.length ? pool : healthy };
        filtered.set(pool, cached);
      }
      return cached.pool;
    },

    generation() {
      returnExpired(now());
      return generation;
    },

    isEjected(address) {
      returnExpired(now());
      return states.get(address)?.ejectedUntilMs !== undefined;
    },

    ejections() {
      returnExpired(now());
      const out: { address: string; untilMs: number }[] = [];
      for (const [address, state] of states) if (state.ejectedUntilMs !== undefined) out.push({ address, untilMs: state.ejectedUntilMs });
      return out;
    },
  };
}
