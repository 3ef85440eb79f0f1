import type { TelemetryRecord } from "./record.ts";

/** The mesh's `accessLog` setting: off, one JSON object per line, or a `%FIELD%` text template. */
export type AccessLogFormat = "off" | "json" | { readonly text: string };

/**
 * The access-log fields, in JSON order. A text template names them in upper case:
 * `%START_TIME% %METHOD% %PATH% %STATUS% %REASON%`. Headers are never logged (no authorization,
 * no cookies); the query is kept with the values of secret-looking parameters redacted.
 */
export const ACCESS_LOG_FIELDS = [
  "start_time",
  "method",
  "authority",
  "path",
  "protocol",
  "status",
  "reason",
  "route",
  "upstream_service",
  "upstream_host",
  "bytes_received",
  "bytes_sent",
  "duration_ms",
  "upstream_duration_ms",
  "attempts",
  "request_id",
  "trace_id",
  "span_id",
  "source_principal",
  "request_principal",
  "client_ip",
  "user_agent",
  "grpc_status",
] as const;

export type AccessLogField = (typeof ACCESS_LOG_FIELDS)[number];

type FieldValue = string | number | undefined;

const READERS: Record<AccessLogField, (r: TelemetryRecord) => FieldValue> = {
  start_time: (r) => isoTime(r.startTimeMs),
  method: (r) => r.method,
  authority: (r) => r.authority,
  path: (r) => redactQuery(r.path),
  protocol: (r) => r.protocol,
  status: (r) => r.status,
  reason: (r) => r.reason,
  route: (r) => r.route,
  upstream_service: (r) => r.service,
  upstream_host: (r) => r.upstream,
  bytes_received: (r) => r.bytesIn,
  bytes_sent: (r) => r.bytesOut,
  duration_ms: (r) => r.durationMs,
  upstream_duration_ms: (r) => r.upstreamDurationMs,
  attempts: (r) => r.attempts,
  request_id: (r) => r.requestId,
  trace_id: (r) => r.traceId,
  span_id: (r) => r.spanId,
  source_principal: (r) => r.sourcePrincipal,
  request_principal: (r) => r.requestPrincipal,
  client_ip: (r) => r.clientIp,
  user_agent: (r) => r.userAgent,
  grpc_status: (r) => r.grpcStatus,
};

let cachedSecond = Number.NaN;
let cachedPrefix = "";

// Formatting a Date per line is the costliest part of a line; the second changes rarely.
function isoTime(ms: number): string {
  const second = Math.floor(ms / 1000);
  if (second !== cachedSecond) {
    cachedSecond = second;
    cachedPrefix = new Date(second * 1000).toISOString().slice(0, 20);
  }
  const millis = ms - second * 1000;
  return `${cachedPrefix}${millis < 10 ? "00" : millis < 100 ? "0" : ""}${Math.floor(millis)}Z`;
}

// Quotes, backslashes, control characters and lone surrogates need JSON.stringify; nothing else does.
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;

function jsonString(value: string): string {
  return NEEDS_ESCAPE.test(value) ? JSON.stringify(value) : `"${value}"`;
}

function jsonValue(value: FieldValue): string {
  if (value === undefined) return "null";
  if (typeof value === "number") return Number.isFinite(value) ? String(value) : "null";
  return jsonString(value);
}

/** The JSON form of the last value a field held: most fields repeat from line to line (method, host, route, peer). */
class LastJson {
  private last: string | undefined;
  private json = "null";

  of(value: string | undefined): string {
    if (value !== this.last) {
      this.last = value;
      this.json = value === undefined ? "null" : jsonString(value);
    }
    return this.json;
  }
}

const METHOD = new LastJson();
const AUTHORITY = new LastJson();
const PROTOCOL = new LastJson();
const REASON = new LastJson();
const ROUTE = new LastJson();
const SERVICE = new LastJson();
const UPSTREAM = new LastJson();
const SOURCE = new LastJson();
const USER = new LastJson();
const CLIENT_IP = new LastJson();
const USER_AGENT = new LastJson();

/**
 * formatJsonLine serialises one finished request as a JSON object (no trailing newline); absent fields are null.
 * @example
 * formatJsonLine(record) // '{"start_time":"2025-01-01T00:00:00.000Z","method":"GET",...}'
 */
export function formatJsonLine(r: TelemetryRecord): string {
  return (
    `{"start_time":"${isoTime(r.startTimeMs)}"` +
    `,"method":${METHOD.of(r.method)}` +
    `,"authority":${AUTHORITY.of(r.authority)}` +
    `,"path":${jsonString(redactQuery(r.path))}` +
    `,"protocol":${PROTOCOL.of(r.protocol)}` +
    `,"status":${r.status}` +
    `,"reason":${REASON.of(r.reason)}` +
    `,"route":${ROUTE.of(r.route)}` +
    `,"upstream_service":${SERVICE.of(r.service)}` +
    `,"upstream_host":${UPSTREAM.of(r.upstream)}` +
    `,"bytes_received":${r.bytesIn}` +
    `,"bytes_sent":${r.bytesOut}` +
    `,"duration_ms":${jsonValue(r.durationMs)}` +
    `,"upstream_duration_ms":${jsonValue(r.upstreamDurationMs)}` +
    `,"attempts":${r.attempts}` +
    `,"request_id":${jsonString(r.requestId)}` +
    `,"trace_id":${jsonValue(r.traceId)}` +
    `,"span_id":${jsonValue(r.spanId)}` +
    `,"source_principal":${SOURCE.of(r.sourcePrincipal)}` +
    `,"request_principal":${USER.of(r.requestPrincipal)}` +
    `,"client_ip":${CLIENT_IP.of(r.clientIp)}` +
    `,"user_agent":${USER_AGENT.of(r.userAgent)}` +
    `,"grpc_status":${jsonValue(r.grpcStatus)}}`
  );
}

// Parameter names whose values are credentials often enough that logs must not keep them.
const SECRET_PARAM = /token|secret|passw|pwd|api[-_]?key|access[-_]?key|private|signature|^sig$|credential|^auth|session|^code$|^key$/;

// A cheap first look over the whole query: most requests carry none of these letters in sequence.
const SECRET_HINT = /token|secret|passw|pwd|key|private|sig|credential|auth|session|code|%/i;

/**
 * redactQuery keeps a request target's path and query but replaces the values of secret-looking
 * parameters (token, secret, password, api_key, signature, auth*, session, code, key) with "[redacted]".
 * @example
 * redactQuery("/cb?code=abc&state=x") // "/cb?code=[redacted]&state=x"
 */
export function redactQuery(target: string): string {
  const q = target.indexOf("?");
  if (q === -1 || !SECRET_HINT.test(target.slice(q + 1))) return target;
  const params = target.slice(q + 1).split("&");
  let changed = false;
  for (let i = 0; i < params.length; i++) {
    const param = params[i]!;
    const eq = param.indexOf("=");
    if (eq === -1) continue;
    let name = param.slice(0, eq).toLowerCase();
    if (name.includes("%")) {
      try {
        name = decodeURIComponent(name);
      } catch {
        // A name that does not decode is kept as written.
      }
    }
    if (SECRET_PARAM.test(name)) {
      params[i] = `${param.slice(0, eq)}=[redacted]`;
      changed = true;
    }
  }
  return changed ? `${target.slice(0, q)}?${params.join("&")}` : target;
}

export type TextFormatResult =
  | { readonly ok: true; readonly format: (record: TelemetryRecord) => string }
  | { readonly ok: false; readonly reason: "unknown_field"; readonly field: string };

const PLACEHOLDER = /%([A-Z_]*)%/g;
// A text line stays one line: control characters in a value are written as \xNN.
const CONTROL = /[\u0000-\u001f\u007f]/;
const CONTROL_ALL = /[\u0000-\u001f\u007f]/g;

function textValue(value: FieldValue): string {
  if (value === undefined || value === "") return "-";
  if (typeof value === "number") return String(value);
  return CONTROL.test(value) ? value.replace(CONTROL_ALL, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`) : value;
}

/**
 * compileTextFormat turns a `%FIELD%` template into a line formatter once, so each request only
 * fills slots; `%%` is a literal percent sign, an absent value is "-".
 * @example
 * const r = compileTextFormat("%START_TIME% %METHOD% %PATH% %STATUS% %REASON%");
 * if (r.ok) r.format(record) // "2025-01-01T00:00:00.000Z GET /a 200 -"
 */
export function compileTextFormat(template: string): TextFormatResult {
  const literals: string[] = [];
  const readers: ((r: TelemetryRecord) => FieldValue)[] = [];
  let last = 0;
  let pendingLiteral = "";
  for (const m of template.matchAll(PLACEHOLDER)) {
    pendingLiteral += template.slice(last, m.index);
    last = m.index + m[0].length;
    if (m[1] === "") {
      pendingLiteral += "%";
      continue;
    }
    const field = m[1]!.toLowerCase() as AccessLogField;
    if (!(ACCESS_LOG_FIELDS as readonly string[]).includes(field)) return { ok: false, reason: "unknown_field", field: m[1]! };
    literals.push(pendingLiteral);
    pendingLiteral = "";
    readers.push(READERS[field]);
  }
  const tail = pendingLiteral + template.slice(last);
  return {
    ok: true,
    format(record) {
      let out = "";
      for (let i = 0; i < readers.length; i++) {
        out += literals[i]! + textValue(readers[i]!(record));
      }
      return out + tail;
    },
  };
}

export interface AccessLog {
  /** Writes one line for a finished request (nothing when the format is "off"). */
  log(record: TelemetryRecord): void;
  /** Switches format (a config reload); a text template with an unknown field is refused and the old format kept. */
  setFormat(format: AccessLogFormat): TextFormatResult | { readonly ok: true };
  readonly format: AccessLogFormat;
}

/**
 * createAccessLog formats each finished request as one line and hands it to `write` (a buffered
 * sink; see createBufferedSink).
 * @example
 * const sink = createBufferedSink({ write: (chunk) => process.stdout.write(chunk), schedule: setImmediate });
 * const accessLog = createAccessLog({ write: sink.write, format: snapshot.accessLog });
 * accessLog.log(record);
 */
export function createAccessLog(options: { readonly write: (line: string) => void; readonly format?: AccessLogFormat }): AccessLog {
  const write = options.write;
  let format: AccessLogFormat = "json";
  let line: ((record: TelemetryRecord) => string) | undefined = formatJsonLine;
  const setFormat: AccessLog["setFormat"] = (next) => {
    if (next === "off") line = undefined;
    else if (next === "json") line = formatJsonLine;
    else {
      const compiled = compileTextFormat(next.text);
      if (!compiled.ok) return compiled;
      line = compiled.format;
    }
    format = next;
    return { ok: true };
  };
  if (options.format !== undefined) {
    const r = setFormat(options.format);
    if (!r.ok) throw new TypeError(`access log format: unknown field %${r.field}%`);
  }
  return {
    log(record) {
      if (line !== undefined) write(line(record));
    },
    setFormat,
    get format() {
      return format;
    },
  };
}

export interface BufferedSinkOptions {
  /** Writes a chunk of whole lines (process.stdout.write). */
  readonly write: (chunk: string) => unknown;
  /** Runs the flush after the current batch of I/O events (gateway: setImmediate; default setTimeout 0). */
  readonly schedule?: (flush: () => void) => unknown;
  /** Flush at once when this many characters wait (default 65536). */
  readonly maxBufferChars?: number;
  /** Bytes the output still holds unwritten (process.stdout.writableLength); lines are dropped above maxPendingBytes. */
  readonly pendingBytes?: () => number;
  /** Default 8 MiB. */
  readonly maxPendingBytes?: number;
  /** Told how many lines were dropped because the output is backed up. */
  readonly onDrop?: (lines: number) => void;
}

export interface BufferedSink {
  /** Queues one line (a newline is added). */
  readonly write: (line: string) => void;
  /** Writes what is queued now (at shutdown). */
  flush(): void;
}

/**
 * createBufferedSink batches lines and writes them once per event-loop turn, so a busy proxy makes
 * one write call for many requests; when the output backs up it drops lines and counts them rather
 * than grow without bound.
 * @example
 * const sink = createBufferedSink({ write: (c) => process.stdout.write(c), schedule: setImmediate, pendingBytes: () => process.stdout.writableLength });
 * sink.write('{"status":200}');
 */
export function createBufferedSink(options: BufferedSinkOptions): BufferedSink {
  const out = options.write;
  const schedule = options.schedule ?? ((fn: () => void) => setTimeout(fn, 0));
  const maxChars = options.maxBufferChars ?? 65_536;
  const pending = options.pendingBytes;
  const maxPending = options.maxPendingBytes ?? 8 * 1024 * 1024;
  let buffer = "";
  let lines = 0;
  let scheduled = false;

  function flush() {
    scheduled = false;
    if (lines === 0) return;
    const chunk = buffer;
    const count = lines;
    buffer = "";
    lines = 0;
    if (pending !== undefined && pending() > maxPending) {
      options.onDrop?.(count);
      return;
    }
    out(chunk);
  }
  const scheduledFlush = () => {
    if (scheduled) flush();
  };

  return {
    write(line) {
      buffer += `${line}\n`;
      lines++;
      if (buffer.length >= maxChars) flush();
      else if (!scheduled) {
        scheduled = true;
        schedule(scheduledFlush);
      }
    },
    flush,
  };
}
