import assert from "node:assert/strict";

/**
 * loadLoop runs `total` calls of `one` with at most `concurrency` in flight, stopping early at `deadlineMs`; returns how many completed so a test can insist on all of them.
 * @example
 * const done = await loadLoop(10_000, 32, 90_000, async () => void (await request(gw.port)));
 * assert.equal(done, 10_000);
 */
export async function loadLoop(total: number, concurrency: number, deadlineMs: number, one: () => Promise<void>): Promise<number> {
  const stopAt = Date.now() + deadlineMs;
  let started = 0;
  let done = 0;
  const worker = async () => {
    while (started < total && Date.now() < stopAt) {
      started++;
      await one();
      done++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return done;
}

/**
 * assertShare checks that `hits` out of `total` independent draws, each a hit with probability
 * `expected`, lands within six binomial standard deviations of `expected`: a wrong split fails, and a
 * right one fails by chance about once in 500 million runs (three deviations would be once in 370).
 * @example
 * assertShare(alpha, 2000, 0.9, "alpha share"); // 90% ± 4.0 points
 */
export function assertShare(hits: number, total: number, expected: number, what: string): void {
  const share = hits / total;
  const band = 6 * Math.sqrt((expected * (1 - expected)) / total);
  const pct = (x: number) => (x * 100).toFixed(1);
  assert.ok(Math.abs(share - expected) <= band, `${what} ${pct(share)}% (${hits}/${total}), expected ${pct(expected)}% ± ${pct(band)} points`);
}
