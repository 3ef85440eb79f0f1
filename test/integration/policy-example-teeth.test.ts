// The example policy suite has teeth: each weakening of examples/policies/policy.ts below makes
// examples/policies/policy.test.ts fail, while the untouched copy passes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";

const ROOT = resolve(new URL("../..", import.meta.url).pathname);
const EXAMPLE = join(ROOT, "examples/policies");
const source = readFileSync(join(EXAMPLE, "policy.ts"), "utf8");

const WEAKENINGS: Record<string, (s: string) => string> = {
  "admin DENY removed": (s) => s.replace('action: "DENY", rules: [{ to: [{ paths: ["/admin*"] }]', 'action: "AUDIT", rules: [{ to: [{ paths: ["/admin*"] }]'),
  "audience check dropped": (s) => s.replace('audiences: ["shop"],', ""),
  "support role no longer needed": (s) => s.replace('when: [{ key: "request.auth.claims[roles]", values: ["support"] }]', ""),
  "webhook open to any namespace": (s) => s.replace('"cluster.local/ns/billing/sa/*"', '"*"'),
  "checkout burst raised": (s) => s.replace("maxTokens: 3", "maxTokens: 30"),
};

// A test runner inside a test would report to its parent's protocol, not TAP: start it afresh.
const childEnv = { ...process.env };
delete childEnv.NODE_TEST_CONTEXT;

function runSuite(policySource: string): { status: number; passed: number; failed: number } {
  // Inside the package, so `weft/testing` resolves by self-reference; removed afterwards.
  const dir = mkdtempSync(join(EXAMPLE, "teeth-tmp-"));
  try {
    writeFileSync(join(dir, "policy.ts"), policySource);
    copyFileSync(join(EXAMPLE, "policy.test.ts"), join(dir, "policy.test.ts"));
    const r = spawnSync(process.execPath, ["--import", "tsx", "--test", "--test-reporter=tap", join(dir, "policy.test.ts")], { cwd: ROOT, encoding: "utf8", timeout: 60_000, env: childEnv });
    const count = (what: string) => Number(new RegExp(`^# ${what} (\\d+)$`, "m").exec(r.stdout)?.[1] ?? -1);
    return { status: r.status ?? -1, passed: count("pass"), failed: count("fail") };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("the untouched example policy passes its suite", () => {
  const r = runSuite(source.replaceAll("../../shared/", "../../../shared/"));
  assert.equal(r.status, 0);
  assert.equal(r.failed, 0);
  assert.ok(r.passed >= 9, `only ${r.passed} tests ran`);
});

for (const [name, weaken] of Object.entries(WEAKENINGS)) {
  test(`the example suite fails when the policy is weakened: ${name}`, () => {
    const weakened = weaken(source);
    assert.notEqual(weakened, source, "the weakening no longer applies to policy.ts");
    const r = runSuite(weakened.replaceAll("../../shared/", "../../../shared/"));
    assert.ok(r.failed >= 1, `no test failed (status ${r.status}, passed ${r.passed})`);
  });
}
