import v8 from "node:v8";
import vm from "node:vm";
import type { RequestLoad } from "../../proxy/index.ts";

/**
 * Young-generation garbage collection between requests instead of in the middle of them.
 *
 * A proxy allocates ~20 KiB per request and keeps almost none of it, so V8 scavenges its young
 * generation every few hundred requests, for about a millisecond. V8 starts a scavenge when that
 * space is 80% full, whatever the process is doing: usually in the middle of a burst of requests,
 * which then all wait for it. Here, when the last request in flight finishes, the young generation
 * is looked at once the current I/O is handled, and collected if it is more than `threshold` full.
 * A busy proxy is never idle, so it keeps V8's own schedule; a lightly loaded one collects in its
 * idle moments, and its requests rarely meet a pause.
 *
 * Only a young generation of at least `minCapacityBytes` is collected so. A scavenge costs a good
 * part of a millisecond however small the space, and V8 grows the space only while scavenges find
 * live objects, which an idle one does not: after an idle spell V8 shrinks it to 1 MiB, and
 * collecting that at every other burst cost a sidecar at 500 req/s ~30 µs of CPU per request.
 * Below the minimum, V8's own scavenges (with requests in flight) grow it first.
 */
export interface IdleGcOptions {
  /** The young generation's fill (0..1) from which an idle moment collects it; V8 itself waits for 0.8. */
  readonly threshold?: number;
  /** The least capacity of the young generation that an idle moment collects (default 8 MiB). */
  readonly minCapacityBytes?: number;
  /** The least time between two looks at the heap, so that many short idle moments cost little. */
  readonly minIntervalMs?: number;
  readonly now?: () => number;
  /** The young generation's bytes in use and its capacity. */
  readonly young?: () => YoungGeneration;
  /** Collects the young generation now; undefined when the runtime cannot (then nothing is done). */
  readonly collect?: (() => void) | undefined;
  /** Runs a function after the I/O being handled (setImmediate). */
  readonly defer?: (fn: () => void) => void;
}

/**
 * createIdleGc returns the RequestLoad that the Node runtime gives every engine in the process.
 * @example
 * const engine = createEngine({ client, edge: true, load: createIdleGc() });
 */
export function createIdleGc(options: IdleGcOptions = {}): RequestLoad {
  const threshold = options.threshold ?? 0.6;
  const minIntervalMs = options.minIntervalMs ?? 10;
  const now = options.now ?? performance.now.bind(performance);
  const minCapacityBytes = options.minCapacityBytes ?? 8 * 1024 * 1024;
  const young = options.young ?? youngGeneration;
  const defer = options.defer ?? setImmediate;
  // Found on first use, not at import: it changes a V8 flag for a moment (see minorCollector).
  let collect: (() => void) | undefined | null = "collect" in options ? options.collect : null;
  let inFlight = 0;
  let pending = false;
  let lastLook = -Infinity;

  function look() {
    pending = false;
    if (inFlight !== 0) return;
    const at = now();
    if (at - lastLook < minIntervalMs) return;
    lastLook = at;
    if (collect === null) collect = minorCollector();
    if (collect === undefined) return;
    const { used, capacity } = young();
    if (capacity >= minCapacityBytes && used >= threshold * capacity) collect();
  }

  return {
    started() {
      inFlight++;
    },
    done() {
      // Never below zero: a request finished twice must not make another one look finished for good.
      if (inFlight > 0) inFlight--;
      if (inFlight === 0 && !pending) {
        pending = true;
        defer(look);
      }
    },
  };
}

export interface YoungGeneration {
  readonly used: number;
  readonly capacity: number;
}

/** The young generation's use, from V8's heap space statistics. */
function youngGeneration(): YoungGeneration {
  for (const space of v8.getHeapSpaceStatistics()) {
    if (space.space_name === "new_space") return { used: space.space_used_size, capacity: space.space_used_size + space.space_available_size };
  }
  return { used: 0, capacity: 0 };
}

type GcFunction = (options: { type: "minor" | "major" }) => void;

/**
 * minorCollector gives a function that runs a scavenge now. V8 hands out its `gc` function only to
 * contexts made while --expose-gc is set, so the flag is set for the one context made here and
 * cleared again; a process started with --expose-gc already has it.
 */
export function minorCollector(): (() => void) | undefined {
  const own = (globalThis as { gc?: GcFunction }).gc;
  if (typeof own === "function") return () => own({ type: "minor" });
  try {
    v8.setFlagsFromString("--expose-gc");
    const gc = vm.runInNewContext("gc") as GcFunction | undefined;
    return typeof gc === "function" ? () => gc({ type: "minor" }) : undefined;
  } catch {
    return undefined;
  } finally {
    v8.setFlagsFromString("--no-expose-gc");
  }
}
