import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { InMemorySpanExporter, type SpanExporter } from "@opentelemetry/sdk-trace-base";
import { createLogSpanExporter, createOtlpHttpExporter, fanOutExporter } from "./otlp-exporter.ts";
import { createTracer } from "./tracing.ts";
import type { TelemetryRecord } from "./record.ts";

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT = "00f067aa0ba902b7";

function record(spanId: string): TelemetryRecord {
  return {
    startTimeMs: Date.now(), durationMs: 1, method: "GET", authority: "a", path: "/x", protocol: "HTTP/1.1", status: 502,
    reason: "upstream_reset", route: "web", bytesIn: 0, bytesOut: 3, requestId: "r", clientIp: "127.0.0.1", attempts: 1, spanId,
  };
}

test("sampled spans reach a collector as OTLP/HTTP JSON with ids, parent, kind, times and attributes", async () => {
  const bodies: { url: string; type: string; body: any }[] = [];
  const server = http.createServer((req, res) => {
    let text = "";
    req.on("data", (c: Buffer) => (text += c));
    req.on("end", () => {
      bodies.push({ url: req.url!, type: String(req.headers["content-type"]), body: JSON.parse(text) });
      res.end("{}");
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/traces`;
  try {
    const tracer = createTracer({ exporter: createOtlpHttpExporter({ url, serviceName: "weft-gateway-edge" }), sampleRatio: 0 });
    const started = tracer.start({ method: "GET", headers: { traceparent: `00-${TRACE}-${PARENT}-01` } });
    tracer.end(record(started.spanId));
    await tracer.flush();
    assert.equal(bodies.length, 1);
    assert.equal(bodies[0]!.url, "/v1/traces");
    assert.equal(bodies[0]!.type, "application/json");
    const rs = bodies[0]!.body.resourceSpans[0];
    assert.deepEqual(rs.resource.attributes, [{ key: "service.name", value: { stringValue: "weft-gateway-edge" } }]);
    const span = rs.scopeSpans[0].spans[0];
    assert.equal(rs.scopeSpans[0].scope.name, "weft");
    assert.equal(span.traceId, TRACE);
    assert.equal(span.spanId, started.spanId);
    assert.equal(span.parentSpanId, PARENT);
    assert.equal(span.kind, 2, "SPAN_KIND_SERVER");
    assert.equal(span.name, "GET web");
    assert.match(span.startTimeUnixNano, /^\d{19}$/);
    assert.ok(BigInt(span.endTimeUnixNano) >= BigInt(span.startTimeUnixNano));
    assert.deepEqual(span.status, { code: 2, message: "upstream_reset" });
    const attrs = Object.fromEntries(span.attributes.map((a: { key: string; value: unknown }) => [a.key, a.value]));
    assert.deepEqual(attrs["http.response.status_code"], { intValue: "502" });
    assert.deepEqual(attrs["http.route"], { stringValue: "web" });
    await tracer.shutdown();
  } finally {
    await new Promise<void>((r) => server.close(() => r()));
  }
});

test("a collector that refuses or is unreachable fails the export without throwing", async () => {
  const results: number[] = [];
  const refusing = createOtlpHttpExporter({ url: "http://collector.invalid/v1/traces", serviceName: "s", fetch: async () => new Response("no", { status: 503 }) });
  const memory = new InMemorySpanExporter();
  const tracer = createTracer({ exporter: memory, processing: "simple", sampleRatio: 1 });
  const s = tracer.start({ method: "GET", headers: {} });
  tracer.end(record(s.spanId));
  await tracer.flush();
  const spans = memory.getFinishedSpans();
  await new Promise<void>((r) => refusing.export(spans, (res) => (results.push(res.code), r())));
  const unreachable = createOtlpHttpExporter({ url: "http://127.0.0.1:1/v1/traces", serviceName: "s", timeoutMs: 2000 });
  await new Promise<void>((r) => unreachable.export(spans, (res) => (results.push(res.code), r())));
  assert.deepEqual(results, [1, 1]);
  await tracer.shutdown();
});

function recordingExporter() {
  const ids: string[] = [];
  let shutdowns = 0;
  const exporter: SpanExporter = {
    export(spans, done) {
      for (const span of spans) ids.push(span.spanContext().spanId);
      done({ code: 0 });
    },
    async shutdown() {
      shutdowns++;
    },
  };
  return { exporter, ids, shutdowns: () => shutdowns };
}

test("setExporter moves later spans to the new exporter and shuts the old one down", async () => {
  const first = recordingExporter();
  const second = recordingExporter();
  const tracer = createTracer({ exporter: first.exporter, processing: "simple", sampleRatio: 1 });
  const a = tracer.start({ method: "GET", headers: {} });
  tracer.end(record(a.spanId));
  await tracer.setExporter(second.exporter);
  assert.equal(first.shutdowns(), 1);
  const b = tracer.start({ method: "GET", headers: {} });
  tracer.end(record(b.spanId));
  await tracer.setExporter(undefined);
  assert.equal(second.shutdowns(), 1);
  const c = tracer.start({ method: "GET", headers: {} });
  tracer.end(record(c.spanId));
  await tracer.flush();
  assert.deepEqual(first.ids, [a.spanId]);
  assert.deepEqual(second.ids, [b.spanId]);
  await tracer.shutdown();
});

test("the console exporter writes one process-log line per sampled span, and a fan-out feeds every exporter", async () => {
  const lines: { msg: string; fields: Record<string, unknown> }[] = [];
  const memory = new InMemorySpanExporter();
  const tracer = createTracer({
    exporter: fanOutExporter([createLogSpanExporter((msg, fields) => void lines.push({ msg, fields }), "weft-gateway-edge"), memory]),
    processing: "simple",
    sampleRatio: 0,
  });
  const started = tracer.start({ method: "GET", headers: { traceparent: `00-${TRACE}-${PARENT}-01` } });
  tracer.end(record(started.spanId));
  const unsampled = tracer.start({ method: "GET", headers: { traceparent: `00-${TRACE}-${PARENT}-00` } });
  tracer.end(record(unsampled.spanId));
  await tracer.flush();
  assert.equal(lines.length, 1);
  assert.equal(lines[0]!.msg, "span");
  assert.equal(lines[0]!.fields.trace_id, TRACE);
  assert.equal(lines[0]!.fields.parent_span_id, PARENT);
  assert.equal(lines[0]!.fields.span_id, started.spanId);
  assert.equal(lines[0]!.fields.kind, "server");
  assert.equal(lines[0]!.fields.service, "weft-gateway-edge");
  assert.equal((lines[0]!.fields.attributes as Record<string, unknown>)["weft.reason"], "upstream_reset");
  assert.equal(memory.getFinishedSpans().length, 1);
});
