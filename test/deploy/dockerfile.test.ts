// deploy/Dockerfile without a container builder: every path it copies exists, every program it links
// or runs from the repository is copied, every `weft` subcommand's module is in the image, the runtime
// code imports no dev dependency, and the healthcheck probe really tells a healthy admin port apart.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { join, relative } from "node:path";

const ROOT = new URL("../..", import.meta.url).pathname;
const dockerfile = readFileSync(join(ROOT, "deploy/Dockerfile"), "utf8").replace(/\\\n/g, " ");
const instructions = dockerfile.split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
const copies = instructions.filter((l) => l.startsWith("COPY ") && !l.includes("--from=")).map((l) => l.split(/\s+/).slice(1));
const copiedSources = copies.flatMap((words) => words.slice(0, -1));
const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { dependencies: Record<string, string>; devDependencies: Record<string, string> };

const isCopied = (path: string) => copiedSources.some((src) => path === src || path.startsWith(`${src.replace(/\/$/, "")}/`));

test("every path the Dockerfile copies from the build context exists in the repository", () => {
  assert.ok(copiedSources.length >= 5);
  for (const src of copiedSources) assert.ok(existsSync(join(ROOT, src)), `COPY ${src}: missing`);
});

test("the programs the image links and runs (weft, weft-probe) come from copied files", () => {
  const links = [...dockerfile.matchAll(/ln -s \/app\/(\S+) \/usr\/local\/bin\/(\S+)/g)].map((m) => ({ file: m[1]!, name: m[2]! }));
  assert.deepEqual(links.map((l) => l.name).sort(), ["weft", "weft-probe"]);
  for (const { file } of links) {
    assert.ok(isCopied(file), `${file} is linked but not copied`);
    assert.ok(readFileSync(join(ROOT, file), "utf8").startsWith("#!/usr/bin/env node"), `${file} has no node shebang`);
  }
  assert.match(dockerfile, /ENTRYPOINT \["weft"\]/);
  assert.match(dockerfile, /HEALTHCHECK .*CMD \["weft-probe"\]/);
  assert.match(dockerfile, /USER 1337:1337/);
  assert.match(dockerfile, /npm ci --omit=dev/);
});

test("every module a weft subcommand loads is copied into the image", () => {
  const weft = readFileSync(join(ROOT, "scripts/weft.mjs"), "utf8");
  const modules = [...weft.matchAll(/\["\.\.\/([^"]+)", "/g)].map((m) => m[1]!);
  assert.ok(modules.length >= 4);
  for (const mod of modules) assert.ok(isCopied(mod), `weft loads ${mod}, which the Dockerfile does not copy`);
  assert.ok(isCopied("examples/apps/sample-app.ts"));
});

test("code copied into the image imports only node builtins, production dependencies and copied files", () => {
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (/\.(ts|mjs)$/.test(name) && !name.endsWith(".test.ts")) files.push(path);
    }
  };
  for (const src of copiedSources) if (statSync(join(ROOT, src)).isDirectory()) walk(join(ROOT, src));
  else if (/\.(ts|mjs)$/.test(src)) files.push(join(ROOT, src));
  assert.ok(files.length > 20);
  for (const file of files) {
    const text = readFileSync(file, "utf8");
    for (const m of text.matchAll(/^\s*(?:import|export)\s+(type\s+)?(?:[^'"]*?\sfrom\s+)?["']([^"']+)["']/gm)) {
      const [, typeOnly, spec] = m;
      if (typeOnly || spec!.startsWith("node:")) continue;
      if (spec!.startsWith(".")) {
        const target = relative(ROOT, join(file, "..", spec!));
        assert.ok(isCopied(target), `${relative(ROOT, file)} imports ${target}, which is not in the image`);
        continue;
      }
      const name = spec!.startsWith("@") ? spec!.split("/").slice(0, 2).join("/") : spec!.split("/")[0]!;
      assert.ok(pkg.dependencies[name], `${relative(ROOT, file)} imports ${name}, not a production dependency`);
    }
  }
});

test("weft-probe exits 0 for a 2xx admin answer and 1 for a 503 or a closed port", async () => {
  let status = 200;
  const server = http.createServer((req, res) => {
    res.writeHead(req.url === "/healthz" ? status : 404).end();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  const probe = (env: Record<string, string>, args: string[] = []) =>
    new Promise<number | null>((resolve) => {
      const child = spawn(process.execPath, [join(ROOT, "deploy/probe.mjs"), ...args], { env, stdio: "ignore", timeout: 10_000 });
      child.once("exit", (code) => resolve(code));
    });
  try {
    assert.equal(await probe({ WEFT_ADMIN_ADDRESS: `0.0.0.0:${port}` }), 0);
    assert.equal(await probe({}, [`http://127.0.0.1:${port}/nothing`]), 1);
    status = 503;
    assert.equal(await probe({ WEFT_ADMIN_ADDRESS: `0.0.0.0:${port}` }), 1);
  } finally {
    await new Promise<void>((r) => server.close(() => r()));
  }
  assert.equal(await probe({ WEFT_ADMIN_ADDRESS: `127.0.0.1:${port}` }), 1);
});
