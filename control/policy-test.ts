import { spawn } from "node:child_process";
import { readdir, stat } from "node:fs/promises";
import { join, relative, resolve } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";

const USAGE = `usage: weft test [PATH...] [--name PATTERN] [--reporter tap|spec|dot]

Runs your offline policy tests (files that use \`weft/testing\`, or any node:test file) with
Node's test runner, TypeScript loaded through tsx, and exits with their status (0 all passed,
1 a test failed or no test file was found, 2 a PATH does not exist).
  PATH              a test file, or a folder searched for *.test.ts, *.test.mts, *.test.js and
                    *.test.mjs (node_modules and dot-folders skipped); default: the current folder
  --name PATTERN    run only tests whose name matches this regular expression
  --reporter R      tap (default: ends with "# tests", "# pass", "# fail" for CI), spec or dot
A .ts test file is an ES module when its package.json says "type": "module" (else tsx compiles it
to CommonJS and top-level await fails); .mts files always are.`;

const TEST_FILE = /\.test\.(ts|mts|js|mjs)$/;
const REPORTERS = ["tap", "spec", "dot"];

/**
 * findTestFiles lists the test files a `weft test` PATH names: the file itself, or every test file
 * under a folder (sorted); `undefined` when the path does not exist.
 * @example
 * await findTestFiles("examples/policies"); // ["/…/examples/policies/policy.test.ts"]
 */
export async function findTestFiles(path: string): Promise<string[] | undefined> {
  const full = resolve(path);
  const info = await stat(full).catch(() => undefined);
  if (!info) return undefined;
  if (!info.isDirectory()) return [full];
  const out: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      if (entry.name === "node_modules" || entry.name.startsWith(".")) continue;
      const child = join(dir, entry.name);
      if (entry.isDirectory()) await walk(child);
      else if (TEST_FILE.test(entry.name)) out.push(child);
    }
  };
  await walk(full);
  return out.sort();
}

/**
 * main runs `weft test`: finds the test files, runs them in one `node --test` child with tsx, and
 * resolves with the exit code (the child's status; 1 when no test file was found, 2 on a usage error).
 * @example
 * process.exitCode = await main(["examples/policies/policy.test.ts"]);
 */
export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: { name: { type: "string" }, reporter: { type: "string", default: "tap" }, help: { type: "boolean" } },
    });
  } catch (err) {
    console.error(`${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (!REPORTERS.includes(values.reporter)) {
    console.error(`--reporter must be one of ${REPORTERS.join(", ")}\n\n${USAGE}`);
    return 2;
  }
  const files: string[] = [];
  for (const path of positionals.length > 0 ? positionals : ["."]) {
    const found = await findTestFiles(path);
    if (!found) {
      console.error(`weft test: ${path}: no such file or folder`);
      return 2;
    }
    files.push(...found);
  }
  // Node 20's --test with no files runs nothing and exits 0, which would read as "all passed".
  if (files.length === 0) {
    console.error(`weft test: no test files (*.test.ts, *.test.mts, *.test.js, *.test.mjs) in ${positionals.join(", ") || "."}`);
    return 1;
  }
  // tsx comes from weft's own dependencies, so a project without tsx installed can still run .ts tests.
  const args = ["--import", import.meta.resolve("tsx"), "--test", `--test-reporter=${values.reporter}`];
  if (values.name !== undefined) args.push(`--test-name-pattern=${values.name}`);
  args.push(...files.map((f) => relative(process.cwd(), f) || f));
  const child = spawn(process.execPath, args, { stdio: "inherit" });
  return new Promise((done) => {
    child.once("error", (err) => {
      console.error(`weft test: could not start node: ${err.message}`);
      done(1);
    });
    child.once("exit", (code) => done(code ?? 1));
  });
}
