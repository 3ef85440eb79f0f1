import { readFile, rm, writeFile } from "node:fs/promises";
import { basename, dirname, extname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { validateMesh, type ConfigIssue, type MeshConfig } from "../config/index.ts";

export type Loaded = { ok: true; value: MeshConfig } | { ok: false; issues: readonly ConfigIssue[] };

/**
 * loadMeshModule imports a config module (`weft.config.ts`, `.js` or `.json`) and validates its default export.
 * Each call reads the file again, so a changed file takes effect (files it imports are not re-read).
 * @example
 * const r = await loadMeshModule(pathToFileURL("weft.config.ts"));
 */
export async function loadMeshModule(url: URL): Promise<Loaded> {
  const file = fileURLToPath(url);
  let config: unknown;
  try {
    if (file.endsWith(".json")) {
      config = JSON.parse(await readFile(file, "utf8"));
    } else {
      // Loaders (tsx among them) cache modules by path and ignore query strings, so each load
      // imports a copy under a fresh name beside the original (relative imports still resolve).
      // The copy's extension forces ESM (.mts/.mjs): outside a "type": "module" package a .ts would load as CommonJS.
      const ext = { ".ts": ".mts", ".js": ".mjs" }[extname(file)] ?? extname(file);
      const copy = join(dirname(file), `.${basename(file)}.${Date.now()}-${Math.random().toString(36).slice(2)}${ext}`);
      await writeFile(copy, await readFile(file));
      try {
        config = ((await import(pathToFileURL(copy).href)) as { default?: unknown }).default;
      } finally {
        await rm(copy, { force: true });
      }
      if (config === undefined) {
        return { ok: false, issues: [{ path: "(file)", message: "the module has no default export (export default defineMesh({...}))" }] };
      }
    }
  } catch (err) {
    return { ok: false, issues: [{ path: "(file)", message: `cannot load ${file}: ${(err as Error).message}` }] };
  }
  return validateMesh(config);
}
