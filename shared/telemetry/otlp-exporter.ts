import type { AttributeValue, HrTime } from "@opentelemetry/api";
import { ExportResultCode, type ExportResult } from "@opentelemetry/core";
import type { ReadableSpan, SpanExporter } from "@opentelemetry/sdk-trace-base";

export interface OtlpHttpExporterOptions {
  /** The collector's traces URL, e.g. http://collector:4318/v1/traces. */
  readonly url: string;
  /** Resource `service.name` (e.g. "weft-gateway-ingress"). */
  readonly serviceName: string;
  /** Give up on one export after this long (default 10000 ms). */
  readonly timeoutMs?: number;
  /** The fetch to use (default globalThis.fetch); tests pass their own. */
  readonly fetch?: typeof fetch;
}

type OtlpValue =
  | { stringValue: string }
  | { boolValue: boolean }
  | { intValue: string }
  | { doubleValue: number }
  | { arrayValue: { values: OtlpValue[] } };

function otlpValue(value: AttributeValue): OtlpValue {
  if (Array.isArray(value)) return { arrayValue: { values: value.filter((v) => v !== null && v !== undefined).map((v) => otlpValue(v as AttributeValue)) } };
  if (typeof value === "boolean") return { boolValue: value };
  if (typeof value === "number") return Number.isInteger(value) ? { intValue: String(value) } : { doubleValue: value };
  return { stringValue: String(value) };
}

// OTLP/JSON writes 64-bit integers as decimal strings.
function nanos(time: HrTime): string {
  return (BigInt(time[0]) * 1_000_000_000n + BigInt(time[1])).toString();
}

/**
 * encodeOtlpJson builds an OTLP/HTTP JSON ExportTraceServiceRequest for spans of one resource.
 * @example
 * const body = JSON.stringify(encodeOtlpJson(exporter.getFinishedSpans(), "weft-gateway"));
 */
export function encodeOtlpJson(spans: readonly ReadableSpan[], serviceName: string): unknown {
  const byScope = new Map<string, ReadableSpan[]>();
  for (const span of spans) {
    const scope = span.instrumentationScope.name;
    const list = byScope.get(scope);
    if (list) list.push(span);
    else byScope.set(scope, [span]);
  }
  return {
    resourceSpans: [
      {
        resource: { attributes: [{ key: "service.name", value: { stringValue: serviceName } }] },
        scopeSpans: [...byScope].map(([name, list]) => ({
          scope: { name },
          spans: list.map((span) => {
            const ctx = span.spanContext();
            return {
              traceId: ctx.traceId,
              spanId: ctx.spanId,
              ...(span.parentSpanContext ? { parentSpanId: span.parentSpanContext.spanId } : {}),
              ...(ctx.traceState ? { traceState: ctx.traceState.serialize() } : {}),
              name: span.name,
              // OTLP's SpanKind counts from UNSPECIFIED = 0; the API's from INTERNAL = 0.
              kind: span.kind + 1,
              startTimeUnixNano: nanos(span.startTime),
              endTimeUnixNano: nanos(span.endTime),
              attributes: Object.entries(span.attributes)
                .filter(([, v]) => v !== undefined)
                .map(([key, v]) => ({ key, value: otlpValue(v as AttributeValue) })),
              status: span.status.message ? { code: span.status.code, message: span.status.message } : { code: span.status.code },
            };
          }),
        })),
      },
    ],
  };
}

/**
 * createOtlpHttpExporter sends finished spans to an OpenTelemetry collector as OTLP/HTTP JSON with fetch.
 * @example
 * const tracer = createTracer({ exporter: createOtlpHttpExporter({ url: "http://127.0.0.1:4318/v1/traces", serviceName: "weft-gateway" }) });
 */
export function createOtlpHttpExporter(options: OtlpHttpExporterOptions): SpanExporter {
  const send = options.fetch ?? globalThis.fetch;
  const timeoutMs = options.timeoutMs ?? 10_000;
  const inFlight = new Set<Promise<void>>();
  let stopped = false;
  return {
    export(spans, done: (result: ExportResult) => void) {
      if (stopped) return done({ code: ExportResultCode.FAILED, error: new Error("exporter shut down") });
      const sent = send(options.url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(encodeOtlpJson(spans, options.serviceName)),
        signal: AbortSignal.timeout(timeoutMs),
      })
        .then(async (res) => {
          await res.body?.cancel();
          done(res.ok ? { code: ExportResultCode.SUCCESS } : { code: ExportResultCode.FAILED, error: new Error(`collector answered ${res.status}`) });
        })
        .catch((err: unknown) => done({ code: ExportResultCode.FAILED, error: err instanceof Error ? err : new Error(String(err)) }))
        .finally(() => inFlight.delete(sent));
      inFlight.add(sent);
    },
    async forceFlush() {
      await Promise.all(inFlight);
    },
    async shutdown() {
      stopped = true;
      await Promise.all(inFlight);
    },
  };
}

/**
 * createLogSpanExporter writes each finished span as one process-log line (stderr, JSON: trace and
 * span ids, parent, name, kind, start, duration, status, attributes) — the console exporter. stdout
 * stays the access log's.
 * @example
 * tracer.setExporter(createLogSpanExporter((msg, fields) => log.info(msg, fields), "weft-gateway-ingress"));
 */
export function createLogSpanExporter(write: (msg: string, fields: Record<string, unknown>) => void, serviceName: string): SpanExporter {
  return {
    export(spans, done) {
      for (const span of spans) {
        const ctx = span.spanContext();
        write("span", {
          service: serviceName,
          trace_id: ctx.traceId,
          span_id: ctx.spanId,
          parent_span_id: span.parentSpanContext?.spanId,
          name: span.name,
          kind: SPAN_KINDS[span.kind] ?? String(span.kind),
          start_time: new Date(span.startTime[0] * 1000 + span.startTime[1] / 1e6).toISOString(),
          duration_ms: Math.round((span.duration[0] * 1e3 + span.duration[1] / 1e6) * 1000) / 1000,
          status: span.status.code,
          attributes: span.attributes,
        });
      }
      done({ code: ExportResultCode.SUCCESS });
    },
    shutdown: async () => {},
  };
}

// The API's SpanKind numbering (INTERNAL = 0).
const SPAN_KINDS = ["internal", "server", "client", "producer", "consumer"];

/**
 * fanOutExporter sends every batch to each exporter and reports success only if all succeed.
 * @example
 * const exporter = fanOutExporter([otlp, console]);
 */
export function fanOutExporter(exporters: readonly SpanExporter[]): SpanExporter {
  return {
    export(spans, done) {
      let left = exporters.length;
      let failed: ExportResult | undefined;
      if (left === 0) return done({ code: ExportResultCode.SUCCESS });
      for (const exporter of exporters) {
        exporter.export(spans, (result) => {
          if (result.code !== ExportResultCode.SUCCESS) failed ??= result;
          if (--left === 0) done(failed ?? { code: ExportResultCode.SUCCESS });
        });
      }
    },
    forceFlush: async () => {
      await Promise.all(exporters.map((e) => e.forceFlush?.()));
    },
    shutdown: async () => {
      await Promise.all(exporters.map((e) => e.shutdown()));
    },
  };
}
