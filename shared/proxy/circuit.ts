import type { ConnectionPoolConfig } from "../config/index.ts";

/** A place in the queue for a request slot: `granted` settles once the slot is held. */
export interface PendingSlot {
  readonly granted: Promise<void>;
  /** Gives up waiting; if the slot was granted meanwhile, gives it back. */
  cancel(): void;
}

/**
 * A service's circuit breaker as one caller proxy holds it: requests and retries in flight, with
 * the limits of the destination's connectionPool. Counts outlive a config swap while the limits hold.
 */
export interface CircuitBreaker {
  /** Takes a request slot (`entered`), queues for one, or refuses (`overflow`). */
  enter(): "entered" | "overflow" | PendingSlot;
  /** Gives back a request slot. */
  leave(): void;
  /** Takes a retry slot when maxRetries or the retry budget allows one; false means no retry. */
  tryRetry(): boolean;
  /** Gives back a retry slot once the retried try is over. */
  retryDone(): void;
  readonly active: number;
  readonly pending: number;
  readonly retries: number;
  /** Retries refused by maxRetries or the retry budget since this breaker began (Envoy's upstream_rq_retry_overflow). */
  readonly retryOverflows: number;
}

/**
 * createCircuitBreaker applies Envoy's circuit-breaker semantics per service: at most `maxRequests`
 * requests in flight (then up to `maxPendingRequests` wait, then `overflow`), and at most
 * `maxRetries` retries in flight, or with a `retryBudget` max(minRetryConcurrency, budgetPercent
 * of the requests in flight and waiting). Unset limits never refuse.
 * @example
 * const circuit = createCircuitBreaker({ maxRequests: 100, maxPendingRequests: 0 });
 * if (circuit.enter() === "overflow") return reject("overflow");
 */
export function createCircuitBreaker(config: ConnectionPoolConfig): CircuitBreaker {
  const maxRequests = config.maxRequests ?? Infinity;
  const maxPending = config.maxPendingRequests;
  const budget = config.retryBudget;
  const maxRetries = config.maxRetries ?? Infinity;
  let active = 0;
  let retries = 0;
  let retryOverflows = 0;
  const queue: { grant: () => void; granted: boolean }[] = [];

  function retryLimit(): number {
    if (!budget) return maxRetries;
    return Math.max(budget.minRetryConcurrency, Math.floor(((active + queue.length) * budget.budgetPercent) / 100));
  }

  function leave(): void {
    const next = queue.shift();
    if (next) {
      // The slot passes straight to the oldest waiter: active stays the same.
      next.granted = true;
      next.grant();
    } else if (active > 0) active--;
  }

  return {
    enter() {
      if (active < maxRequests) {
        active++;
        return "entered";
      }
      if (queue.length >= maxPending) return "overflow";
      let grant!: () => void;
      const granted = new Promise<void>((resolve) => (grant = resolve));
      const entry = { grant, granted: false };
      queue.push(entry);
      return {
        granted,
        cancel() {
          if (entry.granted) leave();
          else {
            const at = queue.indexOf(entry);
            if (at >= 0) queue.splice(at, 1);
          }
        },
      };
    },
    leave,
    tryRetry() {
      if (retries >= retryLimit()) {
        retryOverflows++;
        return false;
      }
      retries++;
      return true;
    },
    retryDone() {
      if (retries > 0) retries--;
    },
    get active() {
      return active;
    },
    get pending() {
      return queue.length;
    },
    get retries() {
      return retries;
    },
    get retryOverflows() {
      return retryOverflows;
    },
  };
}
