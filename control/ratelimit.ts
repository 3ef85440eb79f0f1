import { decodeJson, encodeJson, type Bus, type Kv, type KvEntry } from "../shared/bus/index.ts";
import { createRateLimitService, type RateLimitServiceOptions } from "../shared/policy/index.ts";

/**
 * The `weft-config` key holding the global rate limiter's lease: which control-plane replica answers
 * `weft.rls.check` (compare-and-set, renewed by its holder, taken over once it stops changing).
 */
export const RLS_LEASE_KEY = "lease.rls";

/** What the lease key holds; `holder: null` is a released lease. `renewedAt` is informational only. */
export interface RlsLeaseValue {
  readonly holder: string | null;
  /** Random per process: tells this process's writes from another process with the same holder id. */
  readonly token?: string;
  readonly renewedAt: number;
  readonly ttlMs: number;
}

export interface LeasedRateLimitServiceOptions {
  readonly bus: Bus;
  /** The `weft-config` bucket. */
  readonly kv: Kv;
  /** This replica's id, written into the lease for operators. */
  readonly holder: string;
  /** A lease whose revision has not changed for this long is taken over (default 6000 ms). */
  readonly leaseTtlMs?: number;
  /** How often the holder renews and the others look at the lease (default 1500 ms). */
  readonly renewMs?: number;
  /** Buckets kept by the service while this replica answers. */
  readonly service?: RateLimitServiceOptions;
  readonly now?: () => number;
  /** Run the renew loop and the expiry guard on timers (default true; tests drive `step` with their own clock). */
  readonly timers?: boolean;
  readonly log?: { info(msg: string, fields?: Record<string, unknown>): void; warn(msg: string, fields?: Record<string, unknown>): void };
}

export interface LeasedRateLimitService {
  /** True while this replica holds the lease and answers `weft.rls.check`. */
  readonly leading: boolean;
  /** One lease round: renew (holder), or watch and take over an expired or released lease (others). */
  step(): Promise<void>;
  /** Stops answering, then releases the lease so another replica takes over at its next round. */
  stop(): Promise<void>;
}

// Why a lease and not a NATS queue group: a queue group spreads the requests over the replicas, each
// with its own in-memory buckets, so a limit of N would let up to N per replica through; exact counts
// would need the buckets in a shared store (a KV write per request). With the lease exactly one
// replica answers and counts, and the others stand by. The price, as with Envoy's ratelimit service
// on an in-memory backend: on failover the new holder starts with full buckets, and between the old
// holder's last answer and the new one's first the proxies apply each limit's failureMode.
//
// Exclusion does not depend on the replicas' clocks agreeing: the holder stops answering at
// `renew start + ttl - renewMs` by its own clock unless a renewal succeeded, and a stand-by takes
// over only after seeing the same lease revision for a full ttl by its own clock, measured from
// after it read that revision (so after the holder's write, so after the holder's renew start).
// What it does assume is that a process is not stalled for longer than renewMs between its clock
// reading and its unsubscribe (a long GC pause could let two replicas answer for that pause).

/**
 * startLeasedRateLimitService runs the global rate limiter (`weft.rls.check`) in this control-plane
 * replica while it holds the `lease.rls` key of `weft-config`, so that with several replicas exactly
 * one answers and the count is one count for the whole mesh.
 * @example
 * const rls = await startLeasedRateLimitService({ bus, kv, holder: "control-1" });
 * // later: await rls.stop();
 */
export async function startLeasedRateLimitService(options: LeasedRateLimitServiceOptions): Promise<LeasedRateLimitService> {
  const { bus, kv, holder, log } = options;
  const ttlMs = options.leaseTtlMs ?? 6000;
  const renewMs = options.renewMs ?? 1500;
  if (!(renewMs > 0) || !(ttlMs > 2 * renewMs)) throw new TypeError("leaseTtlMs must be more than twice renewMs");
  const now = options.now ?? Date.now;
  const useTimers = options.timers ?? true;

  let service: { close(): void } | undefined;
  /** The revision of our last lease write while we hold it. */
  let ownRevision: number | undefined;
  /** When we stop answering unless a renewal succeeds first. */
  let deadline = 0;
  /** A stand-by's view of someone else's lease: the revision and when we first read it. */
  let observed: { revision: number; since: number } | undefined;
  let stopped = false;
  let loopTimer: ReturnType<typeof setTimeout> | undefined;
  let guardTimer: ReturnType<typeof setTimeout> | undefined;
  let running: Promise<void> = Promise.resolve();

  const token = crypto.randomUUID();
  const leaseValue = (t: number) => encodeJson({ holder, token, renewedAt: t, ttlMs } satisfies RlsLeaseValue);
  // A write whose confirmation timed out may still have landed: a revision carrying our token is ours.
  const writtenByUs = (entry: KvEntry) => {
    const decoded = decodeJson(entry.value);
    const value = decoded.ok ? (decoded.value as Partial<RlsLeaseValue> | null) : null;
    return value?.holder === holder && value.token === token;
  };

  function armGuard(): void {
    if (!useTimers) return;
    clearTimeout(guardTimer);
    guardTimer = setTimeout(() => {
      if (service && now() >= deadline) void resign("lease_expired");
    }, Math.max(0, deadline - now()));
    unref(guardTimer);
  }

  async function resign(reason: "lease_lost" | "lease_expired" | "stopping"): Promise<void> {
    if (!service) return;
    service.close();
    service = undefined;
    clearTimeout(guardTimer);
    // The server must have dropped our subscription before anyone else may take the lease.
    await bus.flush().catch(() => {});
    if (reason !== "stopping") {
      ownRevision = undefined;
      log?.warn("global rate limiter handed off", { holder, reason });
    }
  }

  async function lead(revision: number, t: number): Promise<void> {
    ownRevision = revision;
    deadline = t + ttlMs - renewMs;
    observed = undefined;
    service = createRateLimitService(bus, options.service);
    await bus.flush().catch(() => {});
    armGuard();
    log?.info("global rate limiter answering", { holder, revision });
  }

  async function round(): Promise<void> {
    if (stopped) return;
    const t = now();
    if (service && t >= deadline) await resign("lease_expired");
    let entry: KvEntry | undefined;
    try {
      entry = await kv.get(RLS_LEASE_KEY);
    } catch {
      return; // bus trouble: the holder keeps answering until its deadline (the guard enforces it)
    }
    if (stopped) return;
    if (service) {
      if (entry?.revision !== ownRevision) {
        if (!entry || !writtenByUs(entry)) return resign("lease_lost");
        ownRevision = entry.revision;
      }
      const r = await kv.update(RLS_LEASE_KEY, leaseValue(now()), ownRevision!);
      if (r.ok) {
        ownRevision = r.revision;
        deadline = t + ttlMs - renewMs;
        armGuard();
      } else if (r.reason === "conflict") await resign("lease_lost");
      return;
    }
    const decoded = entry ? decodeJson(entry.value) : undefined;
    const released = decoded?.ok === true && (decoded.value as Partial<RlsLeaseValue> | null)?.holder === null;
    // Our own earlier take whose confirmation timed out needs no wait: it is taken again below.
    if (entry && !released && !writtenByUs(entry)) {
      const seenAt = now();
      if (observed?.revision !== entry.revision) {
        observed = { revision: entry.revision, since: seenAt };
        return;
      }
      if (seenAt - observed.since < ttlMs) return;
    }
    const taken = entry ? await kv.update(RLS_LEASE_KEY, leaseValue(now()), entry.revision) : await kv.create(RLS_LEASE_KEY, leaseValue(now()));
    if (!taken.ok || stopped) return;
    await lead(taken.revision, t);
  }

  const step = (): Promise<void> => (running = running.then(round, round));

  const loop = () => {
    loopTimer = setTimeout(() => {
      void step().finally(() => {
        if (!stopped) loop();
      });
    }, renewMs);
    unref(loopTimer);
  };

  await step();
  if (useTimers) loop();

  return {
    get leading() {
      return service !== undefined;
    },
    step,
    async stop() {
      stopped = true;
      clearTimeout(loopTimer);
      clearTimeout(guardTimer);
      await running.catch(() => {});
      if (!service) return;
      const revision = ownRevision!;
      await resign("stopping");
      const released: RlsLeaseValue = { holder: null, renewedAt: now(), ttlMs };
      await kv.update(RLS_LEASE_KEY, encodeJson(released), revision).catch(() => undefined);
      log?.info("global rate limiter released", { holder });
    },
  };
}

// The lease alone must not keep a process alive (the bus connection does, while there is one).
function unref(timer: ReturnType<typeof setTimeout>): void {
  (timer as { unref?: () => void }).unref?.();
}
