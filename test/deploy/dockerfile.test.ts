// deploy/Dockerfile without a container builder: every path it copies exists, every program it links
// or runs from the repository is copied, every `weft` subcommand's module is in the image, the runtime
// code imports no dev dependency, and the healthcheck probe really tells a healthy admin port apart.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { join, relative } from "node:path";
import { freePort } from "../harness/ports.ts";

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

// Files the build stage makes with `node scripts/build.mjs OUT`: the bundle of scripts/cli.ts.
const built = [...dockerfile.matchAll(/node scripts\/build\.mjs (\S+)/g)].map((m) => m[1]!);

test("the programs the image links and runs (weft, weft-probe) come from copied or built files", () => {
  const links = [...dockerfile.matchAll(/ln -s \/app\/(\S+) \/usr\/local\/bin\/(\S+)/g)].map((m) => ({ file: m[1]!, name: m[2]! }));
  assert.deepEqual(links.map((l) => l.name).sort(), ["weft", "weft-probe"]);
  assert.ok(isCopied("scripts/build.mjs"), "the build script is copied");
  for (const { file } of links) {
    // A built file gets its shebang from build.mjs's banner (the bundle test below checks the output).
    const source = built.includes(file) ? "scripts/build.mjs" : file;
    assert.ok(isCopied(source), `${file} is linked but neither copied nor built`);
    assert.ok(readFileSync(join(ROOT, source), "utf8").includes("#!/usr/bin/env node"), `${file} has no node shebang`);
  }
  assert.match(dockerfile, /ENTRYPOINT \["weft"\]/);
  assert.match(dockerfile, /HEALTHCHECK .*CMD \["weft-probe"\]/);
  assert.match(dockerfile, /USER 1337:1337/);
  assert.match(dockerfile, /npm ci --omit=dev/);
});

test("every module a weft subcommand loads is copied into the image", () => {
  const cli = readFileSync(join(ROOT, "scripts/cli.ts"), "utf8");
  const modules = [...cli.matchAll(/import\("(\.\.?\/[^"]+)"\)/g)].map((m) => relative(ROOT, join(ROOT, "scripts", m[1]!)));
  assert.ok(modules.length >= 6);
  assert.ok(isCopied("scripts/cli.ts"));
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

test("the production bundle (scripts/build.mjs) runs a gateway from a TypeScript config: one main, no tsx, the config bundled in memory", async () => {
  // Inside node_modules so the bundle resolves its external dependencies as it does in the image.
  const out = join(ROOT, "node_modules/.cache/weft-test", `weft-${process.pid}.mjs`);
  const dir = mkdtempSync(join(tmpdir(), "weft-bundle-"));
  try {
    const built = spawnSync(process.execPath, ["scripts/build.mjs", out], { cwd: ROOT, encoding: "utf8" });
    assert.equal(built.status, 0, built.stderr);
    const bundle = readFileSync(out, "utf8");
    assert.doesNotMatch(bundle, /__name\(/, "no keepNames wrappers in the bundle");
    assert.doesNotMatch(bundle, /from "tsx\/esm\/api"/, "the bundle does not register tsx");
    assert.ok(bundle.startsWith("#!/usr/bin/env node\n"), "the bundle runs as a program");
    const port = await freePort();
    const config = join(dir, "weft.config.ts");
    writeFileSync(
      config,
      `const port: number = ${port};\nexport default { gateways: { edge: { listeners: [{ port, address: "127.0.0.1" }], routes: [{ name: "hi", directResponse: { status: 200, body: "from the bundle" } }] } } };\n`,
    );
    const child = spawn(process.execPath, [out, "gateway", "--config", config, "--admin", "127.0.0.1:0"], { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
    try {
      let log = "";
      child.stderr!.on("data", (c: Buffer) => (log += c));
      const deadline = Date.now() + 20_000;
      while (!log.includes('"msg":"listening"') && Date.now() < deadline && child.exitCode === null) await new Promise((r) => setTimeout(r, 50));
      assert.match(log, /"msg":"listening"/, log);
      const r = await fetch(`http://127.0.0.1:${port}/`);
      assert.equal(r.status, 200);
      assert.equal(await r.text(), "from the bundle");
      assert.equal(log.match(/"msg":"listening"/g)!.length, 1, "the gateway's main ran once");
    } finally {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(out, { force: true });
    rmSync(`${out}.map`, { force: true });
  }
});
