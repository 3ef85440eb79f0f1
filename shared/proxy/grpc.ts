import type { RetryPolicyConfig } from "../config/index.ts";
import type { OutgoingHeaders } from "./headers.ts";
import type { Reason } from "./reasons.ts";
import type { HeaderMap } from "./types.ts";

/** gRPC status codes weft answers with or reads (grpc/grpc doc/statuscodes.md). */
export const GRPC_STATUS = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  DEADLINE_EXCEEDED: 4,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

// What a gRPC client should see for each locally generated failure. Anything not listed follows
// the HTTP status mapping below (the reason's status, or a fault's httpStatus).
const BY_REASON: Readonly<Partial<Record<Reason, number>>> = {
  no_route: GRPC_STATUS.UNIMPLEMENTED,
  denied: GRPC_STATUS.PERMISSION_DENIED,
  jwt_invalid: GRPC_STATUS.UNAUTHENTICATED,
  rate_limited: GRPC_STATUS.RESOURCE_EXHAUSTED,
  overflow: GRPC_STATUS.RESOURCE_EXHAUSTED,
  body_too_large: GRPC_STATUS.RESOURCE_EXHAUSTED,
  headers_too_large: GRPC_STATUS.RESOURCE_EXHAUSTED,
  timeout: GRPC_STATUS.DEADLINE_EXCEEDED,
  no_cluster: GRPC_STATUS.UNAVAILABLE,
  no_healthy_upstream: GRPC_STATUS.UNAVAILABLE,
  upstream_connect_failure: GRPC_STATUS.UNAVAILABLE,
  upstream_reset: GRPC_STATUS.UNAVAILABLE,
  upstream_tls_failure: GRPC_STATUS.UNAVAILABLE,
  retries_exhausted: GRPC_STATUS.UNAVAILABLE,
  circuit_open: GRPC_STATUS.UNAVAILABLE,
  mtls_unavailable: GRPC_STATUS.UNAVAILABLE,
  upstream_protocol_error: GRPC_STATUS.INTERNAL,
  internal: GRPC_STATUS.INTERNAL,
  bad_request: GRPC_STATUS.INTERNAL,
  missing_host: GRPC_STATUS.INTERNAL,
};

/**
 * isGrpcRequest tells whether a request is gRPC (content-type application/grpc, +proto, +json, ...);
 * gRPC-Web is a different wire format and is not.
 * @example
 * isGrpcRequest({ "content-type": "application/grpc+proto" }) // true
 */
export function isGrpcRequest(headers: HeaderMap): boolean {
  const value = headers["content-type"];
  const type = typeof value === "string" ? value : value?.[0];
  if (type === undefined || type.length < 16) return false;
  const lower = type.toLowerCase();
  if (!lower.startsWith("application/grpc")) return false;
  const next = lower.charCodeAt(16);
  // End of value, "+" (subtype) or ";" (parameters); "application/grpc-web" is not gRPC.
  return Number.isNaN(next) || next === 0x2b || next === 0x3b;
}

/**
 * grpcStatusFromHttp maps an HTTP status to a gRPC status as gRPC clients do for a response that
 * carries no grpc-status (grpc/grpc doc/http-grpc-status-mapping.md).
 * @example
 * grpcStatusFromHttp(503) // 14 (UNAVAILABLE)
 */
export function grpcStatusFromHttp(status: number): number {
  switch (status) {
    case 200:
      return GRPC_STATUS.UNKNOWN;
    case 400:
      return GRPC_STATUS.INTERNAL;
    case 401:
      return GRPC_STATUS.UNAUTHENTICATED;
    case 403:
      return GRPC_STATUS.PERMISSION_DENIED;
    case 404:
      return GRPC_STATUS.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return GRPC_STATUS.UNAVAILABLE;
    default:
      return GRPC_STATUS.UNKNOWN;
  }
}

/**
 * grpcStatusOf gives the gRPC status of a locally generated failure; `httpStatus` (the status an
 * HTTP client would get, e.g. a fault's httpStatus) decides for reasons without their own code.
 * @example
 * grpcStatusOf("no_route", 404) // 12 (UNIMPLEMENTED)
 */
export function grpcStatusOf(reason: Reason, httpStatus: number): number {
  return BY_REASON[reason] ?? grpcStatusFromHttp(httpStatus);
}

/**
 * grpcLocalHeaders builds a trailers-only gRPC answer (HTTP 200, no body) for a local failure:
 * grpc-status and grpc-message ride in the only HEADERS frame, and x-weft-reason stays for logs.
 * @example
 * grpcLocalHeaders("timeout", 504) // { "content-type": "application/grpc", "grpc-status": "4", "grpc-message": "timeout", ... }
 */
export function grpcLocalHeaders(reason: Reason, httpStatus: number): OutgoingHeaders {
  return {
    "content-type": "application/grpc",
    "grpc-status": String(grpcStatusOf(reason, httpStatus)),
    // Reasons are plain snake_case, so no percent-encoding is needed (gRPC's grpc-message rules).
    "grpc-message": reason,
    "x-weft-reason": reason,
  };
}

const TIMEOUT_UNIT_MS: Readonly<Record<string, number>> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };
const TIMEOUT_FORMAT = /^([0-9]{1,8})([HMSmun])$/;

/**
 * parseGrpcTimeout reads a grpc-timeout header (1 to 8 digits and a unit H, M, S, m, u or n) as
 * whole milliseconds, rounded up; a missing, zero or malformed value gives undefined.
 * @example
 * parseGrpcTimeout("2S") // 2000
 */
export function parseGrpcTimeout(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const parsed = TIMEOUT_FORMAT.exec(value);
  if (parsed === null) return undefined;
  const amount = Number(parsed[1]);
  if (amount === 0) return undefined;
  return Math.ceil(amount * TIMEOUT_UNIT_MS[parsed[2]!]!);
}

/**
 * grpcStatusOfResponse reads the grpc-status a response carries in its headers (a trailers-only
 * response); undefined when it has none or a malformed one.
 * @example
 * grpcStatusOfResponse({ "grpc-status": "14" }) // 14
 */
export function grpcStatusOfResponse(headers: HeaderMap): number | undefined {
  const value = headers["grpc-status"];
  const text = typeof value === "string" ? value : value?.[0];
  if (text === undefined || !/^[0-9]{1,2}$/.test(text)) return undefined;
  return Number(text);
}

const RETRY_ON_GRPC: Readonly<Record<string, number>> = {
  cancelled: GRPC_STATUS.CANCELLED,
  "deadline-exceeded": GRPC_STATUS.DEADLINE_EXCEEDED,
  internal: GRPC_STATUS.INTERNAL,
  "resource-exhausted": GRPC_STATUS.RESOURCE_EXHAUSTED,
  unavailable: GRPC_STATUS.UNAVAILABLE,
};

/**
 * shouldRetryGrpcStatus tells whether a gRPC answer's grpc-status triggers a retry under a policy
 * (Envoy's retry_grpc_on: `unavailable`, `resource-exhausted`, `deadline-exceeded`, `cancelled`, `internal`).
 * @example
 * shouldRetryGrpcStatus({ ...policy, retryOn: ["unavailable"] }, 14) // true
 */
export function shouldRetryGrpcStatus(policy: Pick<RetryPolicyConfig, "retryOn">, status: number): boolean {
  for (const on of policy.retryOn) if (RETRY_ON_GRPC[on] === status) return true;
  return false;
}

/**
 * speaksHttp2 tells whether a service is reached over HTTP/2: the destination port (default: the
 * service's first) has protocol http2 or grpc.
 * @example
 * speaksHttp2([{ port: 50051, protocol: "grpc" }], undefined) // true
 */
export function speaksHttp2(ports: readonly { readonly port: number; readonly protocol: string }[], port: number | undefined): boolean {
  const chosen = port === undefined ? ports[0] : (ports.find((p) => p.port === port) ?? ports[0]);
  return chosen !== undefined && (chosen.protocol === "http2" || chosen.protocol === "grpc");
}
