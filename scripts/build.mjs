#!/usr/bin/env node
// Bundles the `weft` command (scripts/weft.mjs and everything it loads) into one ES module for
// production: the container image runs it, and `npm run bench` measures it. Running the sources
// through tsx instead costs more CPU per request (tsx keeps function names by redefining `name` on
// every closure it creates) and a transform of every file at start.
// usage: node scripts/build.mjs [OUTFILE]   (default build/weft.mjs)
// Dependencies stay external (resolved from node_modules beside or above OUTFILE). The bundle runs
// scripts/cli.ts without tsx: a user's weft.config.ts is bundled by esbuild when loaded
// (shared/runtime/load-config.ts), and `weft test` starts its own node with tsx.
import { build } from "esbuild";
import { resolve } from "node:path";

const root = resolve(import.meta.dirname, "..");
const outfile = resolve(process.argv[2] ?? resolve(root, "build/weft.mjs"));
await build({
  // scripts/weft.mjs without its tsx registration.
  stdin: {
    contents: 'import { run } from "./scripts/cli.ts";\nawait run(process.argv.slice(2));\n',
    resolveDir: root,
    sourcefile: "weft-entry.mjs",
    loader: "js",
  },
  outfile,
  // The image links it as /usr/local/bin/weft.
  banner: { js: "#!/usr/bin/env node" },
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  packages: "external",
  sourcemap: "linked",
  // Every bundled module shares the bundle's URL, so "am I the entry file" must come out false.
  define: { "import.meta.main": "false" },
  logLevel: "warning",
});
console.error(`built ${outfile}`);
