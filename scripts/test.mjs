#!/usr/bin/env node
// Runs every *.test.ts under the source folders with node's test runner (TAP, so CI reads the summary).
// Node 20's --test neither discovers .ts files nor expands globs, so the list is built here.
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { spawnSync } from "node:child_process";

const root = new URL("..", import.meta.url).pathname;
const roots = ["shared", "gateway", "sidecar", "control", "test", "examples"];
const filter = process.argv.slice(2);

function walk(dir, out) {
  for (const name of readdirSync(dir)) {
    if (name === "node_modules" || name.startsWith(".")) continue;
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path, out);
    else if (name.endsWith(".test.ts")) out.push(relative(root, path));
  }
  return out;
}

// The registry carries Deno's binary for linux only, so it cannot sit in the lock file (npm ci would
// refuse the missing platforms); the pinned version is installed beside the locked tree on first use.
function ensureDeno() {
  if (existsSync(join(root, "node_modules/.bin/deno"))) return;
  const version = JSON.parse(readFileSync(join(root, "package.json"), "utf8")).config.deno;
  console.error(`installing deno@${version} for the Deno runtime tests`);
  const r = spawnSync("npm", ["install", "--no-save", "--no-audit", "--no-fund", `deno@${version}`], { cwd: root, stdio: "inherit" });
  if (r.status !== 0) console.error("deno could not be installed; the Deno runtime tests will fail");
}

let files = roots.flatMap((r) => { try { return walk(join(root, r), []); } catch { return []; } });
if (filter.length) files = files.filter((f) => filter.some((p) => f.includes(p)));
files.sort();
if (files.length === 0) {
  console.error("no test files found");
  process.exit(1);
}
ensureDeno();
const r = spawnSync(process.execPath, ["--import", "tsx", "--test", "--test-reporter=tap", "--test-concurrency=1", ...files], {
  cwd: root,
  stdio: "inherit",
});
process.exit(r.status ?? 1);
