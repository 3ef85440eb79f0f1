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
