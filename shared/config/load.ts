import { validateMesh, type ConfigIssue } from "./validate.ts";
import type { MeshConfig } from "./schema.ts";

export type Loaded = { ok: true; value: MeshConfig } | { ok: false; issues: readonly ConfigIssue[] };

/**
 * loadMeshModule imports a config module (`weft.config.ts`, `.js` or `.json`) and validates its default export.
 * Each call imports a fresh copy, so a changed file is read again.
 * @example
 * const r = await loadMeshModule(pathToFileURL("weft.config.ts"));
 */
export async function loadMeshModule(url: URL): Promise<Loaded> {
  const fresh = new URL(url);
  fresh.searchParams.set("v", `${Date.now()}-${Math.random().toString(36).slice(2)}`);
  let mod: { default?: unknown };
  try {
    mod = url.pathname.endsWith(".json")
      ? await import(fresh.href, { with: { type: "json" } })
      : await import(fresh.href);
  } catch (err) {
    return { ok: false, issues: [{ path: "(file)", message: `cannot load ${url.pathname}: ${(err as Error).message}` }] };
  }
  if (mod.default === undefined) {
    return { ok: false, issues: [{ path: "(file)", message: "the module has no default export (export default defineMesh({...}))" }] };
  }
  return validateMesh(mod.default);
}
