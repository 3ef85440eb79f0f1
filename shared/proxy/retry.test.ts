import { test } from "node:test";
import assert from "node:assert/strict";
import { backoffMs, isIdempotent, shouldRetryFailure, shouldRetryStatus } from "./retry.ts";
import type { RetryPolicyConfig } from "../config/index.ts";

const policy = (retryOn: RetryPolicyConfig["retryOn"], codes = [503]): RetryPolicyConfig => ({
  attempts: 2,
  retryOn,
  retriableStatusCodes: codes,
  backoff: { baseMs: 10, maxMs: 40 },
  retryNonIdempotent: false,
  maxReplayBytes: 1024,
});

test("5xx retries every server error status, gateway-error only 502/503/504", () => {
  assert.equal(shouldRetryStatus(policy(["5xx"]), 500), true);
  assert.equal(shouldRetryStatus(policy(["gateway-error"]), 500), false);
  assert.equal(shouldRetryStatus(policy(["gateway-error"]), 504), true);
  assert.equal(shouldRetryStatus(policy(["connect-failure"]), 503), false);
});

test("retriable-status-codes retries exactly the listed statuses", () => {
  assert.equal(shouldRetryStatus(policy(["retriable-status-codes"], [409]), 409), true);
  assert.equal(shouldRetryStatus(policy(["retriable-status-codes"], [409]), 503), false);
});

test("connect-failure covers only failed connects; reset covers resets and per-try timeouts", () => {
  assert.equal(shouldRetryFailure(policy(["connect-failure"]), "upstream_connect_failure"), true);
  assert.equal(shouldRetryFailure(policy(["connect-failure"]), "upstream_reset"), false);
  assert.equal(shouldRetryFailure(policy(["reset"]), "timeout"), true);
  assert.equal(shouldRetryFailure(policy(["5xx"]), "upstream_connect_failure"), true);
  assert.equal(shouldRetryFailure(policy(["5xx"]), "body_too_large"), false);
});

test("refused-stream covers only HTTP/2 streams the upstream refused; reset covers them too", () => {
  assert.equal(shouldRetryFailure(policy(["refused-stream"]), "upstream_reset", "refused_stream"), true);
  assert.equal(shouldRetryFailure(policy(["refused-stream"]), "upstream_reset", "ECONNRESET"), false);
  assert.equal(shouldRetryFailure(policy(["refused-stream"]), "upstream_connect_failure"), false);
  assert.equal(shouldRetryFailure(policy(["connect-failure"]), "upstream_reset", "refused_stream"), false);
  assert.equal(shouldRetryFailure(policy(["reset"]), "upstream_reset", "refused_stream"), true);
});

test("non-idempotent methods are not retried by default", () => {
  assert.equal(isIdempotent("GET"), true);
  assert.equal(isIdempotent("PUT"), true);
  assert.equal(isIdempotent("POST"), false);
  assert.equal(isIdempotent("PATCH"), false);
});

test("backoff grows exponentially, is capped, and is jittered below the ceiling", () => {
  const p = policy(["5xx"]);
  assert.equal(backoffMs(p, 0, () => 0.999), 9);
  assert.equal(backoffMs(p, 1, () => 0.999), 19);
  assert.equal(backoffMs(p, 5, () => 0.999), 39);
  assert.equal(backoffMs(p, 3, () => 0), 0);
});
