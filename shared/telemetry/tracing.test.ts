import { test } from "node:test";
import assert from "node:assert/strict";
import { SpanKind, SpanStatusCode } from "@opentelemetry/api";
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base";
import { parseTraceparent } from "./trace-context.ts";
import { createTracer } from "./tracing.ts";
import type { TelemetryRecord } from "./record.ts";

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT = "00f067aa0ba902b7";

function record(over: Partial<TelemetryRecord>): TelemetryRecord {
  return {
    startTimeMs: Date.now(),
    durationMs: 3,
    method: "GET",
    authority: "shop.example",
    path: "/cart?token=abc",
    protocol: "HTTP/1.1",
    status: 200,
    bytesIn: 0,
    bytesOut: 12,
    requestId: "req-1",
    clientIp: "127.0.0.1",
    attempts: 1,
    ...over,
  };
}

test("a sampled incoming traceparent is continued: same trace id, new span id, upstream parent = the proxy's span", async () => {
  const exporter = new InMemorySpanExporter();
  const tracer = createTracer({ exporter, processing: "simple", sampleRatio: 0 });
  const started = tracer.start({ method: "GET", headers: { traceparent: `00-${TRACE}-${PARENT}-01`, tracestate: "vendor=abc" } });
  assert.equal(started.traceId, TRACE);
  assert.notEqual(started.spanId, PARENT);
  const out = parseTraceparent(started.upstreamHeaders.traceparent);
  assert.ok(out.ok);
  assert.deepEqual([out.value.traceId, out.value.parentId, out.value.sampled], [TRACE, started.spanId, true]);
  assert.equal(started.upstreamHeaders.tracestate, "vendor=abc");

  tracer.end(record({ traceId: started.traceId, spanId: started.spanId, route: "cart", service: "cart", status: 503, reason: "no_healthy_upstream" }));
  await tracer.flush();
  const [span] = exporter.getFinishedSpans();
  assert.ok(span);
  assert.equal(span.spanContext().traceId, TRACE);
  assert.equal(span.spanContext().spanId, started.spanId);
  assert.equal(span.parentSpanContext?.spanId, PARENT);
  assert.equal(span.kind, SpanKind.SERVER);
  assert.equal(span.name, "GET cart");
  assert.equal(span.attributes["http.response.status_code"], 503);
  assert.equal(span.attributes["weft.reason"], "no_healthy_upstream");
  assert.equal(span.attributes["url.path"], "/cart", "the query stays out of spans");
  assert.equal(span.status.code, SpanStatusCode.ERROR);
  assert.equal(span.spanContext().traceState?.get("vendor"), "abc");
  await tracer.shutdown();
});

test("a B3 caller's trace is continued in W3C form upstream, its B3 headers removed; traceparent wins when both arrive", async () => {
  const exporter = new InMemorySpanExporter();
  const tracer = createTracer({ exporter, processing: "simple", sampleRatio: 0 });
  const started = tracer.start({ method: "GET", headers: { b3: `${TRACE}-${PARENT}-1`, "x-b3-sampled": "1" } });
  assert.equal(started.traceId, TRACE);
  const out = parseTraceparent(started.upstreamHeaders.traceparent);
  assert.ok(out.ok);
  assert.deepEqual([out.value.traceId, out.value.parentId, out.value.sampled], [TRACE, started.spanId, true]);
  for (const name of ["b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags"]) {
    assert.ok(name in started.upstreamHeaders && started.upstreamHeaders[name] === undefined, `${name} removed upstream`);
  }
  tracer.end(record({ traceId: started.traceId, spanId: started.spanId }));
  await tracer.flush();
  const [span] = exporter.getFinishedSpans();
  assert.equal(span?.parentSpanContext?.spanId, PARENT);

  const multi = tracer.start({ method: "GET", headers: { "x-b3-traceid": TRACE, "x-b3-spanid": PARENT, "x-b3-sampled": "0" } });
  assert.equal(multi.traceId, TRACE);
  assert.equal(parseTraceparent(multi.upstreamHeaders.traceparent).ok && multi.upstreamHeaders.traceparent!.endsWith("-00"), true);

  const both = tracer.start({ method: "GET", headers: { traceparent: `00-${TRACE}-${PARENT}-01`, b3: `${"1".repeat(32)}-${"2".repeat(16)}-1` } });
  assert.equal(both.traceId, TRACE);
  assert.equal("b3" in both.upstreamHeaders, false);
  await tracer.shutdown();
});

test("an incoming unsampled traceparent is honoured even at ratio 1: propagated with flag 00, nothing exported", async () => {
  const exporter = new InMemorySpanExporter();
  const tracer = createTracer({ exporter, processing: "simple", sampleRatio: 1 });
  const started = tracer.start({ method: "GET", headers: { traceparent: `00-${TRACE}-${PARENT}-00` } });
  const out = parseTraceparent(started.upstreamHeaders.traceparent);
  assert.ok(out.ok);
  assert.equal(out.value.traceId, TRACE);
  assert.equal(out.value.sampled, false);
  assert.notEqual(out.value.parentId, PARENT);
  tracer.end(record({ traceId: started.traceId, spanId: started.spanId }));
  await tracer.flush();
  assert.equal(exporter.getFinishedSpans().length, 0);
  await tracer.shutdown();
});

test("without a valid traceparent a new trace starts, sampled by the ratio, and the client's tracestate is dropped", async () => {
  const exporter = new InMemorySpanExporter();
  const always = createTracer({ exporter, processing: "simple", sampleRatio: 1 });
  const a = always.start({ method: "POST", headers: { traceparent: `ff-${TRACE}-${PARENT}-01`, tracestate: "vendor=abc" } });
  assert.notEqual(a.traceId, TRACE);
  assert.match(a.upstreamHeaders.traceparent!, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
  assert.ok("tracestate" in a.upstreamHeaders && a.upstreamHeaders.tracestate === undefined);
  always.end(record({ method: "POST", traceId: a.traceId, spanId: a.spanId }));
  await always.flush();
  assert.equal(exporter.getFinishedSpans().length, 1);
  assert.equal(exporter.getFinishedSpans()[0]!.parentSpanContext, undefined);

  const never = createTracer({ exporter, processing: "simple", sampleRatio: 0 });
  const n = never.start({ method: "GET", headers: {} });
  assert.match(n.upstreamHeaders.traceparent!, /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
  never.end(record({ traceId: n.traceId, spanId: n.spanId }));
  await never.flush();
  assert.equal(exporter.getFinishedSpans().length, 1);
  await always.shutdown();
  await never.shutdown();
});

test("the sample ratio applies to new traces and can be changed at run time", async () => {
  const tracer = createTracer({ sampleRatio: 0.25 });
  assert.equal(tracer.sampleRatio, 0.25);
  let sampled = 0;
  for (let i = 0; i < 2000; i++) if (tracer.start({ method: "GET", headers: {} }).upstreamHeaders.traceparent!.endsWith("-01")) sampled++;
  // Trace ids are random: 2000 draws at 25% land within ±5 points with overwhelming probability.
  assert.ok(sampled > 400 && sampled < 600, `sampled ${sampled} of 2000`);
  tracer.setSampleRatio(0);
  for (let i = 0; i < 200; i++) assert.ok(tracer.start({ method: "GET", headers: {} }).upstreamHeaders.traceparent!.endsWith("-00"));
  assert.throws(() => tracer.setSampleRatio(1.5), TypeError);
  assert.throws(() => createTracer({ sampleRatio: -1 }), TypeError);
  await tracer.shutdown();
});

test("at a partial ratio each sampled new trace exports one span with the ids it propagated; unsampled ones export none", async () => {
  const exporter = new InMemorySpanExporter();
  const tracer = createTracer({ exporter, processing: "simple", sampleRatio: 0.5 });
  const sampled = new Map<string, string>();
  const spanIds = new Set<string>();
  for (let i = 0; i < 200; i++) {
    const s = tracer.start({ method: "GET", headers: {} });
    const parsed = parseTraceparent(s.upstreamHeaders.traceparent);
    assert.ok(parsed.ok);
    assert.equal(parsed.value.traceId, s.traceId);
    assert.equal(parsed.value.parentId, s.spanId);
    spanIds.add(s.spanId);
    if (parsed.value.sampled) sampled.set(s.spanId, s.traceId);
    tracer.end(record({ traceId: s.traceId, spanId: s.spanId }));
  }
  await tracer.flush();
  assert.equal(spanIds.size, 200);
  assert.ok(sampled.size > 0 && sampled.size < 200, `sampled ${sampled.size} of 200`);
  const exported = exporter.getFinishedSpans();
  assert.equal(exported.length, sampled.size);
  for (const span of exported) assert.equal(sampled.get(span.spanContext().spanId), span.spanContext().traceId);
  await tracer.shutdown();
});

test("spans whose request never finishes are bounded by maxOpenSpans", async () => {
  const exporter = new InMemorySpanExporter();
  const tracer = createTracer({ exporter, processing: "simple", sampleRatio: 1, maxOpenSpans: 2 });
  const first = tracer.start({ method: "GET", headers: {} });
  tracer.start({ method: "GET", headers: {} });
  const third = tracer.start({ method: "GET", headers: {} });
  tracer.end(record({ traceId: first.traceId, spanId: first.spanId }));
  tracer.end(record({ traceId: third.traceId, spanId: third.spanId }));
  await tracer.flush();
  assert.deepEqual(exporter.getFinishedSpans().map((s) => s.spanContext().spanId), [third.spanId]);
  await tracer.shutdown();
});

test("without an exporter a sampled request builds no span, yet its ids and sampled flag still travel upstream", async () => {
  const tracer = createTracer({ processing: "simple", sampleRatio: 1 });
  const a = tracer.start({ method: "GET", headers: {} });
  const out = parseTraceparent(a.upstreamHeaders.traceparent);
  assert.ok(out.ok);
  assert.deepEqual([out.value.traceId, out.value.parentId, out.value.sampled], [a.traceId, a.spanId, true]);
  const continued = tracer.start({ method: "GET", headers: { traceparent: `00-${TRACE}-${PARENT}-01` } });
  assert.equal(continued.traceId, TRACE);
  assert.match(continued.upstreamHeaders.traceparent!, new RegExp(`^00-${TRACE}-[0-9a-f]{16}-01$`));

  // An exporter configured while those requests were in flight gets only spans started after it.
  const exporter = new InMemorySpanExporter();
  await tracer.setExporter(exporter);
  tracer.end(record({ traceId: a.traceId, spanId: a.spanId }));
  tracer.end(record({ traceId: continued.traceId, spanId: continued.spanId }));
  const b = tracer.start({ method: "GET", headers: {} });
  tracer.end(record({ traceId: b.traceId, spanId: b.spanId }));
  await tracer.flush();
  assert.deepEqual(
    exporter.getFinishedSpans().map((s) => s.spanContext().spanId),
    [b.spanId],
  );
  await tracer.shutdown();
});
