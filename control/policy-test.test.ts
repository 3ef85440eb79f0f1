// `weft test` as a user runs it: the real CLI in a child process, on the repo's example policy tests
// and on throw-away test files in a temp folder.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findTestFiles } from "./policy-test.ts";

const ROOT = new URL("..", import.meta.url).pathname;

function weftTest(args: string[], cwd = ROOT): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    // Run as from a shell: under `node --test` this variable would make the inner runner report to us, not print.
    const { NODE_TEST_CONTEXT: _inner, ...env } = process.env;
    const child = spawn(process.execPath, [join(ROOT, "scripts/weft.mjs"), "test", ...args], { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const summary = (stdout: string, field: string) => Number(new RegExp(`^# ${field} (\\d+)$`, "m").exec(stdout)?.[1]);

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "weft-test-cli-"));
  await mkdir(join(dir, "policies", "nested"), { recursive: true });
  await mkdir(join(dir, "node_modules", "dep"), { recursive: true });
  const passing = `import { test } from "node:test";\nimport assert from "node:assert/strict";\nconst n: number = 2;\ntest("adds", () => assert.equal(n + n, 4));\n`;
  await writeFile(join(dir, "policies", "a.test.ts"), passing);
  await writeFile(join(dir, "policies", "nested", "b.test.mts"), passing);
  await writeFile(join(dir, "policies", "helper.ts"), "export const notATest = 1;\n");
  await writeFile(join(dir, "node_modules", "dep", "dep.test.ts"), `throw new Error("must not run");\n`);
  await writeFile(
    join(dir, "failing.test.ts"),
    `import { test } from "node:test";\nimport assert from "node:assert/strict";\ntest("admins are denied", () => assert.equal("allowed", "denied"));\ntest("reads pass", () => assert.ok(true));\n`,
  );
  await mkdir(join(dir, "empty"));
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test("weft test runs the example policy tests through weft/testing and exits 0 with node's summary", async () => {
  const r = await weftTest(["examples/policies/policy.test.ts"]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.ok(summary(r.stdout, "pass") > 0);
  assert.equal(summary(r.stdout, "fail"), 0);
  assert.equal(summary(r.stdout, "tests"), summary(r.stdout, "pass"));
});

test("a failing test makes weft test exit 1, and the passing ones still run", async () => {
  const r = await weftTest([join(dir, "failing.test.ts")]);
  assert.equal(r.code, 1);
  assert.equal(summary(r.stdout, "fail"), 1);
  assert.equal(summary(r.stdout, "pass"), 1);
  assert.match(r.stdout, /^not ok \d+ - admins are denied$/m);
});

test("a folder runs every test file under it, skipping node_modules and files that are not tests", async () => {
  const r = await weftTest([join(dir, "policies")]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.equal(summary(r.stdout, "tests"), 2);
  assert.deepEqual(
    (await findTestFiles(dir))!.map((f) => f.slice(dir.length + 1)),
    ["failing.test.ts", "policies/a.test.ts", "policies/nested/b.test.mts"],
  );
});

test("with no path weft test runs the current folder's tests", async () => {
  const r = await weftTest([], join(dir, "policies"));
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.equal(summary(r.stdout, "tests"), 2);
});

test("--name runs only the tests whose name matches", async () => {
  const r = await weftTest([join(dir, "failing.test.ts"), "--name", "^reads"]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.equal(summary(r.stdout, "pass"), 1);
  assert.equal(summary(r.stdout, "fail"), 0);
});

test("a folder without test files exits 1 instead of passing vacuously; a missing path exits 2", async () => {
  const empty = await weftTest([join(dir, "empty")]);
  assert.equal(empty.code, 1);
  assert.equal(empty.stdout, "");
  const missing = await weftTest([join(dir, "nope.test.ts")]);
  assert.equal(missing.code, 2);
  assert.equal(await findTestFiles(join(dir, "nope.test.ts")), undefined);
});
