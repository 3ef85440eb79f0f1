import { test } from "node:test";
import assert from "node:assert/strict";
import { createMetricsRegistry } from "./metrics.ts";
import { createProxyMetrics } from "./proxy-metrics.ts";
import type { TelemetryRecord } from "./record.ts";

const base: TelemetryRecord = {
  startTimeMs: 0,
  durationMs: 20,
  method: "GET",
  authority: "a",
  path: "/",
  protocol: "HTTP/1.1",
  status: 200,
  route: "web",
  service: "web",
  bytesIn: 10,
  bytesOut: 100,
  requestId: "r",
  clientIp: "127.0.0.1",
  attempts: 1,
};

test("finished requests count by route, service, code and reason, with duration, bytes and retries", async () => {
  const registry = createMetricsRegistry();
  const metrics = createProxyMetrics(registry);
  for (let i = 0; i < 3; i++) {
    metrics.requestStarted();
    metrics.requestDone(base);
  }
  metrics.requestStarted();
  metrics.requestDone({ ...base, status: 503, reason: "retries_exhausted", attempts: 3, durationMs: 1500 });
  metrics.requestStarted();
  metrics.requestDone({ ...base, route: undefined, service: undefined, status: 404, reason: "no_route", durationMs: 0 });
  metrics.requestStarted();
  metrics.requestDone({ ...base, sourcePrincipal: "spiffe://cluster.local/ns/shop/sa/web" });
  for (const grpcStatus of [0, 0, 14]) {
    metrics.requestStarted();
    metrics.requestDone({ ...base, route: "rpc", service: "rpc", protocol: "HTTP/2", grpcStatus });
  }
  metrics.requestStarted();
  metrics.configApplied(7);
  metrics.certificateExpires(new Date(1_900_000_000_000));
  metrics.configRejected();

  const json = await registry.toJson();
  const values = (name: string) => json[name]!.series.map((s) => [s.labels, s.value ?? s.count]);
  assert.deepEqual(values("weft_requests_total"), [
    [{ source: "", route: "web", service: "web", code: "200", reason: "" }, 3],
    [{ source: "", route: "web", service: "web", code: "503", reason: "retries_exhausted" }, 1],
    [{ source: "", route: "", service: "", code: "404", reason: "no_route" }, 1],
    [{ source: "ns/shop/sa/web", route: "web", service: "web", code: "200", reason: "" }, 1],
    [{ source: "", route: "rpc", service: "rpc", code: "200", reason: "" }, 3],
  ]);
  assert.deepEqual(values("weft_upstream_rq_retry_total"), [[{ route: "web", service: "web" }, 2], [{ route: "", service: "" }, 0], [{ route: "rpc", service: "rpc" }, 0]]);
  // Only gRPC calls have a grpc-status.
  assert.deepEqual(values("weft_grpc_requests_total"), [
    [{ route: "rpc", service: "rpc", grpc_status: "0" }, 2],
    [{ route: "rpc", service: "rpc", grpc_status: "14" }, 1],
  ]);
  assert.deepEqual(values("weft_request_bytes_total")[0], [{ route: "web", service: "web" }, 50]);
  assert.deepEqual(values("weft_response_bytes_total")[0], [{ route: "web", service: "web" }, 500]);
  assert.deepEqual(values("weft_requests_in_flight"), [[{}, 1]]);
  assert.deepEqual(values("weft_config_revision"), [[{}, 7]]);
  assert.deepEqual(values("weft_config_rejected_total"), [[{}, 1]]);
  assert.deepEqual(values("weft_certificate_expiry_timestamp_seconds"), [[{}, 1_900_000_000]]);
  const slow = json.weft_request_duration_seconds!.series.find((s) => s.labels.code === "503")!;
  assert.equal(slow.count, 1);
  assert.equal(slow.sum, 1.5);
  assert.equal(slow.buckets!["1"], 0);
  assert.equal(slow.buckets!["2.5"], 1);
});

test("upstream health read at a scrape: endpoint health, active ejections, ejection and retry-overflow counts across a restart, and gone endpoints vanish", async () => {
  const registry = createMetricsRegistry();
  const metrics = createProxyMetrics(registry);
  const endpoints = [
    { address: "10.0.0.1:80", draining: false },
    { address: "10.0.0.2:80", draining: false },
    { address: "10.0.0.3:80", draining: true },
  ];
  metrics.clustersObserved([{ service: "web", endpoints, ejected: ["10.0.0.2:80"], ejectionsTotal: 2, active: 3, pending: 1, retryOverflows: 4 }]);
  let text = await registry.expose();
  assert.match(text, /^weft_upstream_endpoint_healthy\{service="web",endpoint="10.0.0.1:80"\} 1$/m);
  assert.match(text, /^weft_upstream_endpoint_healthy\{service="web",endpoint="10.0.0.2:80"\} 0$/m);
  assert.match(text, /^weft_upstream_endpoint_healthy\{service="web",endpoint="10.0.0.3:80"\} 0$/m);
  assert.match(text, /^weft_outlier_ejections_active\{service="web"\} 1$/m);
  assert.match(text, /^weft_outlier_ejections_total\{service="web"\} 2$/m);
  assert.match(text, /^weft_upstream_rq_active\{service="web"\} 3$/m);
  assert.match(text, /^weft_upstream_rq_pending\{service="web"\} 1$/m);
  assert.match(text, /^weft_upstream_rq_retry_overflow_total\{service="web"\} 4$/m);

  // The same totals again add nothing; a detector rebuilt by a policy change counts from its own 0.
  metrics.clustersObserved([{ service: "web", endpoints: endpoints.slice(0, 1), ejected: [], ejectionsTotal: 2, active: 0, pending: 0, retryOverflows: 4 }]);
  metrics.clustersObserved([{ service: "web", endpoints: endpoints.slice(0, 1), ejected: [], ejectionsTotal: 1, active: 0, pending: 0, retryOverflows: 1 }]);
  text = await registry.expose();
  assert.match(text, /^weft_outlier_ejections_total\{service="web"\} 3$/m);
  assert.match(text, /^weft_upstream_rq_retry_overflow_total\{service="web"\} 5$/m);
  assert.match(text, /^weft_outlier_ejections_active\{service="web"\} 0$/m);
  assert.doesNotMatch(text, /10\.0\.0\.2:80/, "an endpoint gone from the config leaves the health gauge");
});

test("mirrored copies are counted by shadow service and outcome", async () => {
  const registry = createMetricsRegistry();
  const metrics = createProxyMetrics(registry);
  metrics.mirrorDone("web-shadow", "sent");
  metrics.mirrorDone("web-shadow", "sent");
  metrics.mirrorDone("web-shadow", "overflow");
  const text = await registry.expose();
  assert.match(text, /^weft_mirror_requests_total\{service="web-shadow",outcome="sent"\} 2$/m);
  assert.match(text, /^weft_mirror_requests_total\{service="web-shadow",outcome="overflow"\} 1$/m);
});

test("proxied TCP connections count by source, route, service and reason, with bytes each way", async () => {
  const registry = createMetricsRegistry();
  const metrics = createProxyMetrics(registry);
  metrics.connectionDone({ route: "db", service: "db", sourcePrincipal: "spiffe://cluster.local/ns/shop/sa/web", bytesIn: 5, bytesOut: 7 });
  metrics.connectionDone({ route: "db", service: "db", bytesIn: 1, bytesOut: 2 });
  metrics.connectionDone({ reason: "no_route", bytesIn: 0, bytesOut: 0 });
  const text = await registry.expose();
  assert.match(text, /^weft_tcp_connections_closed_total\{source="ns\/shop\/sa\/web",route="db",service="db",reason=""\} 1$/m);
  assert.match(text, /^weft_tcp_connections_closed_total\{source="",route="",service="",reason="no_route"\} 1$/m);
  assert.match(text, /^weft_tcp_received_bytes_total\{route="db",service="db"\} 6$/m);
  assert.match(text, /^weft_tcp_sent_bytes_total\{route="db",service="db"\} 9$/m);
});
