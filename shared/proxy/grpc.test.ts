import { test } from "node:test";
import assert from "node:assert/strict";
import {
  GRPC_STATUS,
  grpcLocalHeaders,
  grpcStatusFromHttp,
  grpcStatusOf,
  grpcStatusOfResponse,
  isGrpcRequest,
  parseGrpcTimeout,
  shouldRetryGrpcStatus,
  speaksHttp2,
} from "./grpc.ts";

test("gRPC is recognised by content-type application/grpc with or without a subtype or parameters", () => {
  assert.equal(isGrpcRequest({ "content-type": "application/grpc" }), true);
  assert.equal(isGrpcRequest({ "content-type": "application/grpc+proto" }), true);
  assert.equal(isGrpcRequest({ "content-type": "Application/GRPC+json" }), true);
  assert.equal(isGrpcRequest({ "content-type": "application/grpc;charset=utf-8" }), true);
  assert.equal(isGrpcRequest({ "content-type": ["application/grpc"] }), true);
});

test("gRPC-Web, JSON and requests without a content-type are not gRPC", () => {
  assert.equal(isGrpcRequest({ "content-type": "application/grpc-web+proto" }), false);
  assert.equal(isGrpcRequest({ "content-type": "application/grpcx" }), false);
  assert.equal(isGrpcRequest({ "content-type": "application/json" }), false);
  assert.equal(isGrpcRequest({}), false);
});

test("local failures map to the gRPC codes a client can act on", () => {
  assert.equal(grpcStatusOf("no_route", 404), GRPC_STATUS.UNIMPLEMENTED);
  assert.equal(grpcStatusOf("denied", 403), GRPC_STATUS.PERMISSION_DENIED);
  assert.equal(grpcStatusOf("jwt_invalid", 401), GRPC_STATUS.UNAUTHENTICATED);
  assert.equal(grpcStatusOf("rate_limited", 429), GRPC_STATUS.RESOURCE_EXHAUSTED);
  assert.equal(grpcStatusOf("overflow", 503), GRPC_STATUS.RESOURCE_EXHAUSTED);
  assert.equal(grpcStatusOf("timeout", 504), GRPC_STATUS.DEADLINE_EXCEEDED);
  assert.equal(grpcStatusOf("no_healthy_upstream", 503), GRPC_STATUS.UNAVAILABLE);
  assert.equal(grpcStatusOf("upstream_connect_failure", 503), GRPC_STATUS.UNAVAILABLE);
  assert.equal(grpcStatusOf("retries_exhausted", 503), GRPC_STATUS.UNAVAILABLE);
  assert.equal(grpcStatusOf("circuit_open", 503), GRPC_STATUS.UNAVAILABLE);
  assert.equal(grpcStatusOf("internal", 500), GRPC_STATUS.INTERNAL);
  assert.equal(grpcStatusOf("upstream_protocol_error", 502), GRPC_STATUS.INTERNAL);
});

test("an injected fault answers with the gRPC code of its HTTP status", () => {
  assert.equal(grpcStatusOf("fault_abort", 503), GRPC_STATUS.UNAVAILABLE);
  assert.equal(grpcStatusOf("fault_abort", 403), GRPC_STATUS.PERMISSION_DENIED);
  assert.equal(grpcStatusOf("fault_abort", 500), GRPC_STATUS.UNKNOWN);
});

test("HTTP statuses map to gRPC codes as gRPC clients read a response without grpc-status", () => {
  assert.deepEqual(
    [400, 401, 403, 404, 429, 502, 503, 504, 500, 418].map(grpcStatusFromHttp),
    [13, 16, 7, 12, 14, 14, 14, 14, 2, 2],
  );
});

test("a local gRPC answer is trailers-only: grpc-status, grpc-message and the reason, no body headers", () => {
  assert.deepEqual(grpcLocalHeaders("timeout", 504), {
    "content-type": "application/grpc",
    "grpc-status": "4",
    "grpc-message": "timeout",
    "x-weft-reason": "timeout",
  });
});

test("grpc-timeout is read in every unit as whole milliseconds, rounded up", () => {
  assert.equal(parseGrpcTimeout("100m"), 100);
  assert.equal(parseGrpcTimeout("2S"), 2000);
  assert.equal(parseGrpcTimeout("3M"), 180_000);
  assert.equal(parseGrpcTimeout("1H"), 3_600_000);
  assert.equal(parseGrpcTimeout("1500u"), 2);
  assert.equal(parseGrpcTimeout("99999999n"), 100);
  assert.equal(parseGrpcTimeout("1n"), 1);
});

test("a malformed, zero or over-long grpc-timeout is ignored", () => {
  for (const bad of [undefined, "", "100", "m", "1.5S", "-1S", "10s", "123456789S", " 1S", "1S ", "0m"]) {
    assert.equal(parseGrpcTimeout(bad), undefined, String(bad));
  }
});

test("grpc-status is read from response headers only when it is a small number", () => {
  assert.equal(grpcStatusOfResponse({ "grpc-status": "14" }), 14);
  assert.equal(grpcStatusOfResponse({ "grpc-status": "0" }), 0);
  assert.equal(grpcStatusOfResponse({ "grpc-status": "x" }), undefined);
  assert.equal(grpcStatusOfResponse({}), undefined);
});

test("gRPC retry conditions match the grpc-status they name and nothing else", () => {
  assert.equal(shouldRetryGrpcStatus({ retryOn: ["unavailable"] }, GRPC_STATUS.UNAVAILABLE), true);
  assert.equal(shouldRetryGrpcStatus({ retryOn: ["unavailable"] }, GRPC_STATUS.RESOURCE_EXHAUSTED), false);
  assert.equal(shouldRetryGrpcStatus({ retryOn: ["resource-exhausted", "cancelled"] }, GRPC_STATUS.RESOURCE_EXHAUSTED), true);
  assert.equal(shouldRetryGrpcStatus({ retryOn: ["deadline-exceeded"] }, GRPC_STATUS.DEADLINE_EXCEEDED), true);
  assert.equal(shouldRetryGrpcStatus({ retryOn: ["internal"] }, GRPC_STATUS.INTERNAL), true);
  // HTTP conditions never retry on a grpc-status, and OK is never retried.
  assert.equal(shouldRetryGrpcStatus({ retryOn: ["5xx", "gateway-error", "reset"] }, GRPC_STATUS.UNAVAILABLE), false);
  assert.equal(shouldRetryGrpcStatus({ retryOn: ["unavailable"] }, GRPC_STATUS.OK), false);
});

test("a service is reached over HTTP/2 when the destination port (default the first) speaks http2 or grpc", () => {
  const ports = [
    { port: 8080, protocol: "http" },
    { port: 50051, protocol: "grpc" },
    { port: 8443, protocol: "http2" },
  ];
  assert.equal(speaksHttp2(ports, undefined), false);
  assert.equal(speaksHttp2(ports, 50051), true);
  assert.equal(speaksHttp2(ports, 8443), true);
  assert.equal(speaksHttp2([{ port: 9000, protocol: "grpc" }], undefined), true);
  assert.equal(speaksHttp2([], undefined), false);
});
