// The layering of STYLE.md, enforced: every import in the source tree is read and checked.
//   roles (gateway, sidecar, control) → edge (shared/runtime) → engine (shared/proxy) →
//   decisions (shared/policy → shared/identity) → base (shared/config, shared/bus, shared/telemetry)
// shared/discovery sits between the base and the roles (it joins config and bus).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const ROOT = resolve(new URL("..", import.meta.url).pathname);
const SOURCE = ["shared", "gateway", "sidecar", "control"];

/** What each folder may import from the other source folders (itself always allowed). */
const ALLOWED: Record<string, readonly string[]> = {
  "shared/config": [],
  "shared/bus": [],
  "shared/telemetry": [],
  "shared/identity": ["shared/config"],
  "shared/policy": ["shared/config", "shared/identity", "shared/bus", "shared/telemetry", "shared/proxy/router.ts"],
  "shared/discovery": ["shared/config", "shared/bus", "shared/identity"],
  "shared/proxy": ["shared/config", "shared/policy", "shared/identity", "shared/telemetry"],
  "shared/runtime": ["shared/config", "shared/bus", "shared/proxy", "shared/discovery", "shared/telemetry", "shared/identity"],
  // The roles may read the package manifest (the version they report).
  gateway: ["shared", "package.json"],
  sidecar: ["shared", "package.json"],
  control: ["shared", "package.json"],
};

/** Folders that must stay runtime-neutral: no node:*, Bun or Deno imports (the engine runs in-process anywhere). */
const NEUTRAL = ["shared/config", "shared/bus", "shared/telemetry", "shared/identity", "shared/policy", "shared/discovery", "shared/proxy"];
/** The one file allowed to speak NATS (through its Node transport). */
const NATS_FILE = "shared/bus/nats.ts";

function walk(dir: string, out: string[]): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return out;
  }
  for (const name of names) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path, out);
    else if (name.endsWith(".ts") && !name.endsWith(".test.ts") && !name.endsWith(".conformance.ts")) out.push(path);
  }
  return out;
}

function folderOf(file: string): string {
  const rel = relative(ROOT, file);
  const parts = rel.split("/");
  return parts[0] === "shared" ? `shared/${parts[1]}` : parts[0]!;
}

function importsOf(file: string): string[] {
  const text = readFileSync(file, "utf8");
  const specs: string[] = [];
  for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)\s[^'";]*?from\s+["']([^"']+)["']/g)) specs.push(m[1]!);
  for (const m of text.matchAll(/(?:^|\n)\s*import\s+["']([^"']+)["']/g)) specs.push(m[1]!);
  for (const m of text.matchAll(/import\(\s*["']([^"']+)["']\s*\)/g)) specs.push(m[1]!);
  return specs;
}

const files = SOURCE.flatMap((dir) => walk(join(ROOT, dir), []));

test("imports between folders follow the layering: no role imports another, no layer imports upward", () => {
  const problems: string[] = [];
  for (const file of files) {
    const from = folderOf(file);
    for (const spec of importsOf(file)) {
      if (!spec.startsWith(".")) continue;
      const target = resolve(dirname(file), spec);
      const to = folderOf(target);
      if (to === from) continue;
      const targetRel = relative(ROOT, target);
      const allowed = (ALLOWED[from] ?? []).some((a) => to === a || to.startsWith(`${a}/`) || targetRel === a || a === "shared" && targetRel.startsWith("shared/"));
      if (!allowed) problems.push(`${relative(ROOT, file)} imports ${targetRel}`);
    }
  }
  assert.deepEqual(problems, []);
});

test("another shared folder is imported through its index.ts", () => {
  const problems: string[] = [];
  for (const file of files) {
    const from = folderOf(file);
    for (const spec of importsOf(file)) {
      if (!spec.startsWith(".")) continue;
      const target = resolve(dirname(file), spec);
      const to = folderOf(target);
      if (to === from || !to.startsWith("shared/")) continue;
      const rel = relative(ROOT, target);
      if (rel === `${to}/index.ts` || rel === "shared/proxy/router.ts") continue;
      problems.push(`${relative(ROOT, file)} imports ${rel} (use ${to}/index.ts)`);
    }
  }
  assert.deepEqual(problems, []);
});

test("the engine and everything below it stay runtime-neutral: no node:*, Bun, Deno or NATS imports", () => {
  const problems: string[] = [];
  for (const file of files) {
    const rel = relative(ROOT, file);
    if (!NEUTRAL.includes(folderOf(file))) continue;
    for (const spec of importsOf(file)) {
      const nodeBuiltin = spec.startsWith("node:");
      const nats = spec.startsWith("@nats-io/");
      if ((nodeBuiltin || spec === "bun" || spec.startsWith("jsr:") || spec.startsWith("npm:")) || (nats && rel !== NATS_FILE)) {
        problems.push(`${rel} imports ${spec}`);
      }
    }
    const text = readFileSync(file, "utf8");
    if (/\b(Bun|Deno)\.\w+/.test(text.replace(/\/\/.*|\/\*[\s\S]*?\*\//g, ""))) problems.push(`${rel} uses a Bun/Deno global`);
  }
  assert.deepEqual(problems, []);
});
