// The weft command as the container image runs it: scripts/build.mjs's bundle, built once per bench
// process. Benches run proxies from it, not from the sources through tsx, to measure what ships.
import { spawnSync } from "node:child_process";
import { join, resolve } from "node:path";

const ROOT = resolve(import.meta.dirname, "..");
let built: string | undefined;

/**
 * weftBundle builds the production bundle (inside node_modules, so that its external dependencies
 * resolve as in the image) and returns its path; later calls reuse it.
 * @example
 * spawn(process.execPath, [await weftBundle(), "gateway", "--config", file]);
 */
export function weftBundle(): string {
  if (built) return built;
  const out = join(ROOT, "node_modules/.cache/weft/bench-weft.mjs");
  const r = spawnSync(process.execPath, [join(ROOT, "scripts/build.mjs"), out], { cwd: ROOT, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`scripts/build.mjs failed: ${r.stderr}`);
  built = out;
  return out;
}
