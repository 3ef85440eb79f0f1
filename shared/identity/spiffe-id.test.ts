import { test } from "node:test";
import assert from "node:assert/strict";
import { parseSpiffeId, parseWorkloadId, workloadId } from "./spiffe-id.ts";

test("parseSpiffeId splits a valid ID into trust domain and path", () => {
  assert.deepEqual(parseSpiffeId("spiffe://example.org/ns/default/sa/web"), { ok: true, trustDomain: "example.org", path: "/ns/default/sa/web" });
  assert.deepEqual(parseSpiffeId("spiffe://example.org"), { ok: true, trustDomain: "example.org", path: "" });
});

test("parseSpiffeId refuses IDs the SPIFFE standard forbids, with a reason", () => {
  const cases: [string, string][] = [
    ["", "empty"],
    ["https://example.org/x", "wrong_scheme"],
    ["SPIFFE://example.org/x", "wrong_scheme"],
    ["spiffe://", "bad_trust_domain"],
    ["spiffe://Example.org/x", "bad_trust_domain"],
    ["spiffe://example.org:8443/x", "bad_trust_domain"],
    ["spiffe://user@example.org/x", "bad_trust_domain"],
    ["spiffe://example.org/", "bad_path"],
    ["spiffe://example.org/a//b", "bad_path"],
    ["spiffe://example.org/a/./b", "bad_path"],
    ["spiffe://example.org/a/../b", "bad_path"],
    ["spiffe://example.org/a?x=1", "bad_path"],
    ["spiffe://example.org/a#f", "bad_path"],
    ["spiffe://example.org/a%20b", "bad_path"],
    [`spiffe://example.org/${"a".repeat(2100)}`, "too_long"],
  ];
  for (const [uri, reason] of cases) assert.deepEqual(parseSpiffeId(uri), { ok: false, reason }, uri);
});

test("workloadId and parseWorkloadId round-trip namespace and service account", () => {
  const id = workloadId("example.org", "default", "web");
  assert.equal(id, "spiffe://example.org/ns/default/sa/web");
  assert.deepEqual(parseWorkloadId(id), { ok: true, trustDomain: "example.org", namespace: "default", serviceAccount: "web" });
  assert.deepEqual(parseWorkloadId("spiffe://example.org/ns/default"), { ok: false, reason: "not_a_workload_id" });
});
