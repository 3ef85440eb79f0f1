import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { fileURLToPath, pathToFileURL } from "node:url";
import { validateMesh, type ConfigIssue, type MeshConfig } from "../config/index.ts";

export type Loaded = { ok: true; value: MeshConfig } | { ok: false; issues: readonly ConfigIssue[] };

let building = 0;

/**
 * loadMeshModule imports a config module (`weft.config.ts`, `.js` or `.json`) and validates its default export.
 * Each call reads the file and the files it imports again, so a change takes effect, and nothing is
 * written anywhere (the config may sit on a read-only mount).
 * @example
 * const r = await loadMeshModule(pathToFileURL("weft.config.ts"));
 */
export async function loadMeshModule(url: URL): Promise<Loaded> {
  const file = fileURLToPath(url);
  let config: unknown;
  try {
    if (file.endsWith(".json")) config = JSON.parse(await readFile(file, "utf8"));
    else {
      config = await evaluateBundle(file);
      if (config === undefined) {
        return { ok: false, issues: [{ path: "(file)", message: "the module has no default export (export default defineMesh({...}))" }] };
      }
    }
  } catch (err) {
    return { ok: false, issues: [{ path: "(file)", message: `cannot load ${file}: ${(err as Error).message}` }] };
  }
  return validateMesh(config);
}

/**
 * The config and what it imports are bundled in memory by esbuild and run as a function, on every
 * runtime: every load sees the files as they are now, and nothing stays behind. An import would not:
 * Node's loaders (tsx among them) cache modules by path and ignore query strings, Bun served a module
 * edited since its first import stale even under a new query, and a module once imported is never freed.
 */
async function evaluateBundle(file: string): Promise<unknown> {
  const esbuild = await import("esbuild");
  const href = pathToFileURL(file).href;
  building++;
  let built: Awaited<ReturnType<typeof esbuild.build>>;
  try {
    built = await esbuild.build({
      entryPoints: [file],
      bundle: true,
      write: false,
      format: "cjs",
      platform: "node",
      target: "node20",
      logLevel: "silent",
      define: { "import.meta.url": JSON.stringify(href) },
    });
  } finally {
    // esbuild keeps its service process (~13 MiB) for the next call; configs load rarely, so end it.
    if (--building === 0) await esbuild.stop();
  }
  const code = built.outputFiles![0]!.text;
  const module = { exports: {} as { default?: unknown } };
  const run = new Function("module", "exports", "require", "__filename", "__dirname", code) as (...args: unknown[]) => void;
  run(module, module.exports, createRequire(file), file, fileURLToPath(new URL(".", href)));
  return module.exports.default;
}
