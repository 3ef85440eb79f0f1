import assert from "node:assert/strict";

export interface UntilOptions {
  /** How long to keep trying before the test fails (default 10 s). */
  timeoutMs?: number;
  /** The pause between attempts (default 10 ms). */
  intervalMs?: number;
  /** Count an attempt that throws as "not yet" and name the last error on timeout (default: the error fails the test at once). */
  retryErrors?: boolean;
  /** More to say when it times out, such as the events seen so far. */
  detail?: () => string;
}

/** Options for polling processes that are still starting (HTTP through them): 20 s, every 100 ms, a refused connection means "not yet". */
export const WHILE_STARTING: UntilOptions = { timeoutMs: 20_000, intervalMs: 100, retryErrors: true };

/**
 * until polls `attempt` until it returns something other than undefined or false, and returns that; the test fails with `what` on timeout.
 * @example
 * await until("first ACK", () => acks.length === 1);
 * const line = await until("the access-log line", () => gw.accessLog().find((l) => l.status === 200), { timeoutMs: 20_000 });
 */
export async function until<T>(what: string, attempt: () => T | undefined | false | Promise<T | undefined | false>, options: UntilOptions = {}): Promise<T> {
  const { timeoutMs = 10_000, intervalMs = 10, retryErrors = false, detail } = options;
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const r = await attempt();
      if (r !== undefined && r !== false) return r;
    } catch (err) {
      if (!retryErrors) throw err;
      last = err;
    }
    if (Date.now() > deadline) {
      const lastError = retryErrors ? ` (last: ${String(last)})` : "";
      assert.fail(`timed out waiting for ${what}${lastError}${detail ? `: ${detail()}` : ""}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/**
 * settled waits until `count()` stops changing for `stableMs` (copies and logs arrive fire and forget), at most `maxMs`, and returns it.
 * @example
 * const mirrored = await settled(() => shadow.requests.length);
 */
export async function settled(count: () => number, options: { maxMs?: number; stableMs?: number } = {}): Promise<number> {
  const { maxMs = 5000, stableMs = 300 } = options;
  const stopAt = Date.now() + maxMs;
  let last = -1;
  while (Date.now() < stopAt) {
    const now = count();
    if (now === last) return now;
    last = now;
    await new Promise((r) => setTimeout(r, stableMs));
  }
  return count();
}
