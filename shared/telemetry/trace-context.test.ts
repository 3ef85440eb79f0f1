import { test } from "node:test";
import assert from "node:assert/strict";
import { formatTraceparent, parseB3, parseTraceparent, parseTracestate, type TraceParentFailure } from "./trace-context.ts";

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN = "00f067aa0ba902b7";

test("traceparent: valid values parse, including a future version with extra fields", () => {
  const cases: [string | string[], { sampled: boolean; flags: number; version: string }][] = [
    [`00-${TRACE}-${SPAN}-01`, { sampled: true, flags: 1, version: "00" }],
    [`00-${TRACE}-${SPAN}-00`, { sampled: false, flags: 0, version: "00" }],
    [`00-${TRACE}-${SPAN}-09`, { sampled: true, flags: 9, version: "00" }],
    [` 00-${TRACE}-${SPAN}-01\t`, { sampled: true, flags: 1, version: "00" }],
    [[`00-${TRACE}-${SPAN}-01`], { sampled: true, flags: 1, version: "00" }],
    [`01-${TRACE}-${SPAN}-01`, { sampled: true, flags: 1, version: "01" }],
    [`cc-${TRACE}-${SPAN}-00-what-the-future-holds`, { sampled: false, flags: 0, version: "cc" }],
  ];
  for (const [header, want] of cases) {
    const r = parseTraceparent(header);
    assert.ok(r.ok, `${JSON.stringify(header)} parses`);
    assert.deepEqual(r.value, { version: want.version, traceId: TRACE, parentId: SPAN, flags: want.flags, sampled: want.sampled });
  }
});

test("traceparent: malformed, version ff, all-zero ids and repeated headers are refused with a reason", () => {
  const cases: [string | string[] | undefined, TraceParentFailure][] = [
    [undefined, "missing"],
    ["", "missing"],
    [[], "missing"],
    [[`00-${TRACE}-${SPAN}-01`, `00-${TRACE}-${SPAN}-01`], "repeated"],
    [`00-${TRACE}-${SPAN}-01,00-${TRACE}-${SPAN}-01`, "repeated"],
    [`ff-${TRACE}-${SPAN}-01`, "bad_version"],
    [`00-${"0".repeat(32)}-${SPAN}-01`, "zero_trace_id"],
    [`00-${TRACE}-${"0".repeat(16)}-01`, "zero_parent_id"],
    [`00-${TRACE.toUpperCase()}-${SPAN}-01`, "malformed"],
    [`00-${TRACE}-${SPAN.toUpperCase()}-01`, "malformed"],
    [`00-${TRACE}-${SPAN}-0A`, "malformed"],
    [`00-${TRACE.slice(1)}-${SPAN}-01`, "malformed"],
    [`00-${TRACE}-${SPAN.slice(1)}-01`, "malformed"],
    [`00-${TRACE}-${SPAN}-1`, "malformed"],
    [`00-${TRACE}-${SPAN}-01-extra`, "malformed"],
    [`00_${TRACE}_${SPAN}_01`, "malformed"],
    [`0-${TRACE}-${SPAN}-01`, "malformed"],
    [`zz-${TRACE}-${SPAN}-01`, "malformed"],
    [`01-${TRACE}-${SPAN}-01extra`, "malformed"],
    [`00-${TRACE.slice(0, 31)}x-${SPAN}-01`, "malformed"],
  ];
  for (const [header, reason] of cases) {
    const r = parseTraceparent(header);
    assert.deepEqual(r, { ok: false, reason }, `${JSON.stringify(header)}`);
  }
});

test("formatTraceparent writes version 00 that parses back", () => {
  assert.equal(formatTraceparent(TRACE, SPAN, true), `00-${TRACE}-${SPAN}-01`);
  assert.equal(formatTraceparent(TRACE, SPAN, false), `00-${TRACE}-${SPAN}-00`);
  const r = parseTraceparent(formatTraceparent(TRACE, SPAN, true));
  assert.ok(r.ok && r.value.traceId === TRACE && r.value.parentId === SPAN && r.value.sampled);
});

test("tracestate: valid lists are kept (joined across lines), invalid ones dropped whole", () => {
  assert.equal(parseTracestate("congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"), "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
  assert.equal(parseTracestate(["a=1", "b=2"]), "a=1,b=2");
  assert.equal(parseTracestate("tenant@vendor=x,,  "), "tenant@vendor=x");
  assert.equal(parseTracestate(undefined), undefined);
  assert.equal(parseTracestate(""), undefined);
  assert.equal(parseTracestate("Upper=1"), undefined);
  assert.equal(parseTracestate("a=1,a=2"), undefined);
  assert.equal(parseTracestate("a"), undefined);
  assert.equal(parseTracestate("a=b=c"), undefined);
  assert.equal(parseTracestate("a= "), undefined);
  assert.equal(parseTracestate(Array.from({ length: 33 }, (_, i) => `k${i}=v`).join(",")), undefined);
  assert.equal(parseTracestate(Array.from({ length: 32 }, (_, i) => `k${i}=v`).join(","))?.split(",").length, 32);
});

test("B3: the single header and the multi headers parse; 64-bit trace ids are left-padded; debug means sampled", () => {
  assert.deepEqual(parseB3({ b3: `${TRACE}-${SPAN}-1` }), { traceId: TRACE, parentId: SPAN, sampled: true });
  assert.deepEqual(parseB3({ b3: `${TRACE}-${SPAN}-0-e457b5a2e4d86bd1` }), { traceId: TRACE, parentId: SPAN, sampled: false });
  assert.deepEqual(parseB3({ b3: `${TRACE}-${SPAN}-d` }), { traceId: TRACE, parentId: SPAN, sampled: true });
  assert.deepEqual(parseB3({ b3: `a3ce929d0e0e4736-${SPAN}` }), { traceId: "0000000000000000a3ce929d0e0e4736", parentId: SPAN, sampled: undefined });
  assert.deepEqual(parseB3({ "x-b3-traceid": TRACE.toUpperCase(), "x-b3-spanid": SPAN, "x-b3-sampled": "1" }), { traceId: TRACE, parentId: SPAN, sampled: true });
  assert.deepEqual(parseB3({ "x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-flags": "1", "x-b3-sampled": "0" }), { traceId: TRACE, parentId: SPAN, sampled: true });
  assert.deepEqual(parseB3({ "x-b3-traceid": TRACE, "x-b3-spanid": SPAN }), { traceId: TRACE, parentId: SPAN, sampled: undefined });
});

test("B3: a lone sampling state, malformed ids, all-zero ids, bad sampling states and repeated headers are no parent", () => {
  for (const headers of [
    { b3: "0" },
    { b3: "1" },
    { b3: `${TRACE}-short` },
    { b3: `${TRACE.slice(0, 20)}-${SPAN}-1` },
    { b3: `${"0".repeat(32)}-${SPAN}-1` },
    { b3: `${TRACE}-${"0".repeat(16)}-1` },
    { b3: `${TRACE}-${SPAN}-yes` },
    { "x-b3-traceid": TRACE },
    { "x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-sampled": "maybe" },
    { "x-b3-traceid": [TRACE, TRACE], "x-b3-spanid": SPAN },
  ]) {
    assert.equal(parseB3(headers), undefined, JSON.stringify(headers));
  }
});
