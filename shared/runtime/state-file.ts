import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { LastGoodStore } from "../discovery/index.ts";

// node:fs/promises works the same on Node, Bun and Deno, so one implementation serves all three.

/**
 * fileStore keeps a proxy's last good config in one file, replaced atomically, readable only by its owner.
 * @example
 * const store = fileStore(".weft", "gateway-edge-1");
 */
export function fileStore(stateDir: string, proxyId: string): LastGoodStore {
  const file = join(stateDir, `${proxyId}.json`);
  return {
    load: () => readFile(file, "utf8").catch(() => undefined),
    async save(text) {
      await mkdir(stateDir, { recursive: true, mode: 0o700 });
      const tmp = `${file}.${Date.now()}-${Math.random().toString(36).slice(2)}.tmp`;
      await writeFile(tmp, text, { mode: 0o600 });
      await rename(tmp, file);
    },
  };
}
