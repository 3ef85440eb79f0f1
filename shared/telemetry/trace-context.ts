/** A parsed W3C `traceparent` (https://www.w3.org/TR/trace-context/#traceparent-header). */
export interface TraceParent {
  readonly version: string;
  /** 32 lowercase hex digits, not all zero. */
  readonly traceId: string;
  /** The caller's span: 16 lowercase hex digits, not all zero. */
  readonly parentId: string;
  /** trace-flags as a number; bit 0 is `sampled`. */
  readonly flags: number;
  readonly sampled: boolean;
}

export type TraceParentFailure = "missing" | "repeated" | "malformed" | "bad_version" | "zero_trace_id" | "zero_parent_id";

export type TraceParentResult = { readonly ok: true; readonly value: TraceParent } | { readonly ok: false; readonly reason: TraceParentFailure };

const HEX2 = /^[0-9a-f]{2}$/;
const V00 = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
// A later version may append fields after a dash; only the first four are read (§ "Versioning of traceparent").
const VNEXT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const ZERO_TRACE = "00000000000000000000000000000000";
const ZERO_SPAN = "0000000000000000";

/**
 * parseTraceparent reads a `traceparent` header value, refusing what the W3C spec says to ignore:
 * a repeated header, uppercase or short fields, version ff, and all-zero ids.
 * @example
 * parseTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") // { ok: true, value: { sampled: true, ... } }
 */
export function parseTraceparent(header: string | readonly string[] | undefined): TraceParentResult {
  if (header === undefined) return { ok: false, reason: "missing" };
  if (typeof header !== "string") {
    if (header.length !== 1) return { ok: false, reason: header.length === 0 ? "missing" : "repeated" };
    header = header[0]!;
  }
  // HTTP allows optional whitespace around a field value (RFC 9110 §5.5); runtimes usually strip it.
  const value = header.trim();
  if (value === "") return { ok: false, reason: "missing" };
  // Two traceparent lines arrive joined with ",": the spec says to treat that as no parent.
  if (value.includes(",")) return { ok: false, reason: "repeated" };
  const version = value.slice(0, 2);
  if (!HEX2.test(version)) return { ok: false, reason: "malformed" };
  if (version === "ff") return { ok: false, reason: "bad_version" };
  const m = version === "00" ? V00.exec(value) : VNEXT.exec(value);
  if (!m) return { ok: false, reason: "malformed" };
  const [traceId, parentId, flagsHex] = version === "00" ? [m[1]!, m[2]!, m[3]!] : [m[2]!, m[3]!, m[4]!];
  if (traceId === ZERO_TRACE) return { ok: false, reason: "zero_trace_id" };
  if (parentId === ZERO_SPAN) return { ok: false, reason: "zero_parent_id" };
  const flags = parseInt(flagsHex, 16);
  return { ok: true, value: { version, traceId, parentId, flags, sampled: (flags & 1) === 1 } };
}

const B3_ID = /^(?:[0-9a-f]{16}|[0-9a-f]{32})$/;
const B3_SPAN = /^[0-9a-f]{16}$/;

/** A B3 context (https://github.com/openzipkin/b3-propagation) as the parent of a W3C trace. */
export interface B3Parent {
  /** 32 hex digits: a 64-bit B3 trace id is left-padded with zeros, as the W3C interop rule says. */
  readonly traceId: string;
  readonly parentId: string;
  /** undefined: the caller deferred the decision (no sampling state sent). */
  readonly sampled: boolean | undefined;
}

/** Request headers the B3 formats use; a proxy that turns B3 into traceparent removes them upstream. */
export const B3_HEADERS = ["b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags"] as const;

/**
 * parseB3 reads Zipkin's B3 trace context, the single `b3` header or the `x-b3-*` multi headers,
 * for callers that do not send `traceparent`; anything malformed or all-zero is no parent.
 * @example
 * parseB3({ b3: "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1" }) // { traceId: "80f1…", parentId: "e457…", sampled: true }
 */
export function parseB3(headers: Readonly<Record<string, string | readonly string[] | undefined>>): B3Parent | undefined {
  const single = one(headers.b3);
  if (single !== undefined) {
    // b3: {TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]]; a lone sampling state carries no parent.
    const [traceId, spanId, state] = single.toLowerCase().split("-");
    if (spanId === undefined) return undefined;
    return b3Parent(traceId!, spanId, state === undefined ? undefined : state === "1" || state === "d" ? true : state === "0" ? false : null);
  }
  const traceId = one(headers["x-b3-traceid"]);
  const spanId = one(headers["x-b3-spanid"]);
  if (traceId === undefined || spanId === undefined) return undefined;
  const flags = one(headers["x-b3-flags"]);
  const sampledHeader = one(headers["x-b3-sampled"])?.toLowerCase();
  const sampled =
    flags === "1" ? true : sampledHeader === undefined ? undefined : sampledHeader === "1" || sampledHeader === "true" ? true : sampledHeader === "0" || sampledHeader === "false" ? false : null;
  return b3Parent(traceId.toLowerCase(), spanId.toLowerCase(), sampled);
}

function one(value: string | readonly string[] | undefined): string | undefined {
  if (value === undefined) return undefined;
  const v = typeof value === "string" ? value : value.length === 1 ? value[0]! : undefined;
  return v === undefined || v.trim() === "" ? undefined : v.trim();
}

function b3Parent(traceId: string, spanId: string, sampled: boolean | undefined | null): B3Parent | undefined {
  if (sampled === null || !B3_ID.test(traceId) || !B3_SPAN.test(spanId)) return undefined;
  const full = traceId.padStart(32, "0");
  if (full === ZERO_TRACE || spanId === ZERO_SPAN) return undefined;
  return { traceId: full, parentId: spanId, sampled };
}

/**
 * formatTraceparent writes a version-00 `traceparent` for a span.
 * @example
 * formatTraceparent("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", true) // "00-4bf9…-00f0…-01"
 */
export function formatTraceparent(traceId: string, spanId: string, sampled: boolean): string {
  return `00-${traceId}-${spanId}-${sampled ? "01" : "00"}`;
}

const SIMPLE_KEY = /^[a-z][_0-9a-z\-*/]{0,255}$/;
const TENANT_KEY = /^[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13}$/;
const VALUE = /^[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]$/;
const MAX_MEMBERS = 32;

/**
 * parseTracestate validates a `tracestate` header and returns it normalised (members joined by ","),
 * or undefined when it is invalid or empty: an invalid tracestate is dropped, never passed on.
 * @example
 * parseTracestate("congo=t61rcWkgMzE, rojo=00f067aa0ba902b7") // "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
 */
export function parseTracestate(header: string | readonly string[] | undefined): string | undefined {
  if (header === undefined) return undefined;
  // Several tracestate lines are one list (W3C §3.3.1.1): join them.
  const joined = typeof header === "string" ? header : header.join(",");
  const members: string[] = [];
  const keys = new Set<string>();
  for (const raw of joined.split(",")) {
    const member = raw.trim();
    if (member === "") continue;
    const eq = member.indexOf("=");
    if (eq <= 0) return undefined;
    const key = member.slice(0, eq);
    const value = member.slice(eq + 1);
    if (!(SIMPLE_KEY.test(key) || TENANT_KEY.test(key)) || !VALUE.test(value)) return undefined;
    if (keys.has(key)) return undefined;
    keys.add(key);
    members.push(member);
    if (members.length > MAX_MEMBERS) return undefined;
  }
  return members.length === 0 ? undefined : members.join(",");
}
