import { after } from "node:test";

/** What a test file must undo when it ends: close a server, stop a process, remove a folder. */
export type Cleanup = () => Promise<void> | void;

/**
 * cleanupsAfterAll returns a list that the file's `after` hook runs in reverse order (the last thing started is stopped first).
 * @example
 * const cleanups = cleanupsAfterAll();
 * const app = await startApp();
 * cleanups.push(app.close);
 */
export function cleanupsAfterAll(): Cleanup[] {
  const cleanups: Cleanup[] = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c();
  });
  return cleanups;
}
