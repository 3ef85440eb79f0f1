import type { RetryPolicyConfig } from "../config/index.ts";
import type { UpstreamFailure } from "./types.ts";

// RFC 9110 §9.2.2: these methods may be repeated without changing the outcome.
const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"]);

/** isIdempotent tells whether a request with this method may be retried without opting in. */
export function isIdempotent(method: string): boolean {
  return IDEMPOTENT.has(method);
}

/**
 * shouldRetryStatus tells whether an upstream response status triggers a retry under a policy
 * (Envoy semantics: `5xx` any 5xx, `gateway-error` 502/503/504, `retriable-status-codes` the listed ones).
 * @example
 * shouldRetryStatus({ ...policy, retryOn: ["gateway-error"] }, 503) // true
 */
export function shouldRetryStatus(policy: RetryPolicyConfig, status: number): boolean {
  for (const on of policy.retryOn) {
    if (on === "5xx" && status >= 500) return true;
    if (on === "gateway-error" && (status === 502 || status === 503 || status === 504)) return true;
    if (on === "retriable-status-codes" && policy.retriableStatusCodes.includes(status)) return true;
  }
  return false;
}

/**
 * shouldRetryFailure tells whether a local upstream failure triggers a retry: `connect-failure`
 * covers failed connects, `refused-stream` HTTP/2 streams the upstream refused, `reset` covers resets
 * (refused streams too) and per-try timeouts, `5xx` and `gateway-error` cover all of them.
 * @example
 * shouldRetryFailure({ ...policy, retryOn: ["reset"] }, "upstream_reset") // true
 */
export function shouldRetryFailure(policy: RetryPolicyConfig, reason: UpstreamFailure, detail?: string): boolean {
  for (const on of policy.retryOn) {
    if (on === "5xx" || on === "gateway-error") return reason !== "body_too_large";
    if (on === "connect-failure" && reason === "upstream_connect_failure") return true;
    if (on === "refused-stream" && isRefusedStream(reason, detail)) return true;
    if (on === "reset" && (reason === "upstream_reset" || reason === "timeout" || reason === "upstream_protocol_error")) return true;
  }
  return false;
}

/**
 * isRefusedStream tells whether a failure is an HTTP/2 stream the upstream refused (REFUSED_STREAM,
 * also for the streams a GOAWAY left out): the application never saw it, so any method may go again.
 * @example
 * isRefusedStream("upstream_reset", "refused_stream") // true
 */
export function isRefusedStream(reason: UpstreamFailure, detail: string | undefined): boolean {
  return reason === "upstream_reset" && detail === REFUSED_STREAM_DETAIL;
}

/** The detail an UpstreamClient gives a refused HTTP/2 stream (with reason upstream_reset). */
export const REFUSED_STREAM_DETAIL = "refused_stream";

/**
 * backoffMs is the wait before retry number `attempt + 1`: exponential from `baseMs`, capped at
 * `maxMs`, with full jitter so that many clients do not retry in step.
 * @example
 * backoffMs(policy, 0, Math.random) // somewhere in [0, 25)
 */
export function backoffMs(policy: RetryPolicyConfig, attempt: number, random: () => number): number {
  const ceiling = Math.min(policy.backoff.maxMs, policy.backoff.baseMs * 2 ** attempt);
  return Math.floor(random() * ceiling);
}
