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
