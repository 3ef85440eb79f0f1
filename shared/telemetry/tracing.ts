import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, TraceFlags, type Attributes, type Context, type Link, type Span } from "@opentelemetry/api";
import { ExportResultCode, TraceState } from "@opentelemetry/core";
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  ParentBasedSampler,
  RandomIdGenerator,
  SamplingDecision,
  SimpleSpanProcessor,
  TraceIdRatioBasedSampler,
  type Sampler,
  type SamplingResult,
  type SpanExporter,
  type SpanProcessor,
} from "@opentelemetry/sdk-trace-base";
import { B3_HEADERS, formatTraceparent, parseB3, parseTraceparent, parseTracestate } from "./trace-context.ts";

// Upstream, a B3 caller's trace goes on as traceparent; its B3 headers would name a stale parent.
const B3_REMOVED: Readonly<Record<string, undefined>> = Object.fromEntries(B3_HEADERS.map((name) => [name, undefined]));
import type { TelemetryHead, TelemetryRecord } from "./record.ts";

/** What a request's trace contributes to the engine: ids for the record, headers for the upstream request. */
export interface TraceStart {
  readonly traceId: string;
  readonly spanId: string;
  /** Headers to set on the upstream request; undefined removes the header. */
  readonly upstreamHeaders: Readonly<Record<string, string | undefined>>;
}

export interface TracerOptions {
  /** Where finished sampled spans go (InMemorySpanExporter in tests, OTLP in production); none = spans are only propagated. */
  readonly exporter?: SpanExporter;
  /** "batch" (default) queues spans and exports them in the background; "simple" exports each span as it ends. */
  readonly processing?: "batch" | "simple";
  /** Share of new traces recorded, 0..1 (default 0.01); an incoming parent's sampled flag wins over it. */
  readonly sampleRatio?: number;
  /** Instrumentation scope name (default "weft"). */
  readonly scope?: string;
  /** Recording spans waiting for their request to finish; beyond this the oldest is dropped (default 10000). */
  readonly maxOpenSpans?: number;
}

export interface ProxyTracer {
  /**
   * Starts the span of a request, continuing a valid incoming traceparent: a server span, or a
   * client span on a sidecar's outbound side (`outbound`), as Istio's sidecars record them.
   */
  start(head: TelemetryHead, outbound?: boolean): TraceStart;
  /** Ends the request's span (a no-op for an unsampled one) with what the record says. */
  end(record: TelemetryRecord): void;
  /** Changes the ratio for new traces (a config reload). */
  setSampleRatio(ratio: number): void;
  /** Sends spans to another exporter from now on (undefined: drop them); the previous one is shut down. */
  setExporter(exporter: SpanExporter | undefined): Promise<void>;
  readonly sampleRatio: number;
  /** Exports what is queued. */
  flush(): Promise<void>;
  shutdown(): Promise<void>;
}

/** A sampler whose ratio can change at run time: parent-based, ratio for roots. */
function createSwappableSampler(ratio: number): Sampler & { set(ratio: number): void; decide(traceId: string): boolean; readonly ratio: number } {
  let current = ratio;
  let root = new TraceIdRatioBasedSampler(ratio);
  let inner: Sampler = new ParentBasedSampler({ root });
  return {
    shouldSample(context: Context, traceId: string, spanName: string, spanKind: SpanKind, attributes: Attributes, links: Link[]): SamplingResult {
      return inner.shouldSample(context, traceId, spanName, spanKind, attributes, links);
    },
    /** The ratio's decision for a trace whose caller deferred it (B3 without a sampling state). */
    decide(traceId: string) {
      return root.shouldSample(ROOT_CONTEXT, traceId).decision === SamplingDecision.RECORD_AND_SAMPLED;
    },
    set(next: number) {
      current = next;
      root = new TraceIdRatioBasedSampler(next);
      inner = new ParentBasedSampler({ root });
    },
    get ratio() {
      return current;
    },
    toString: () => `ParentBased{root=TraceIdRatioBased{${current}}}`,
  };
}

function checkRatio(ratio: number): number {
  if (!(ratio >= 0 && ratio <= 1)) throw new TypeError(`sampleRatio must be between 0 and 1, got ${ratio}`);
  return ratio;
}

/**
 * createTracer gives each proxied request an OpenTelemetry server span (W3C trace context in and
 * out, parent-based sampling) and the `traceparent` the upstream request carries.
 * @example
 * const tracer = createTracer({ exporter: new InMemorySpanExporter(), processing: "simple", sampleRatio: 1 });
 * const started = tracer.start(head); // started.upstreamHeaders.traceparent = "00-<trace>-<span>-01"
 * tracer.end(record);
 */
export function createTracer(options: TracerOptions = {}): ProxyTracer {
  const sampler = createSwappableSampler(checkRatio(options.sampleRatio ?? 0.01));
  let exporter = options.exporter;
  // One processor for the tracer's life; the exporter behind it can change with the config.
  const delegate: SpanExporter = {
    export(spans, done) {
      if (exporter) exporter.export(spans, done);
      else done({ code: ExportResultCode.SUCCESS });
    },
    forceFlush: async () => exporter?.forceFlush?.(),
    shutdown: async () => exporter?.shutdown(),
  };
  const spanProcessors: SpanProcessor[] = [options.processing === "simple" ? new SimpleSpanProcessor(delegate) : new BatchSpanProcessor(delegate)];
  // The ids OpenTelemetry would draw; a new trace's id is drawn here first (to decide its sampling
  // without a span) and handed to the span when it is sampled.
  const random = new RandomIdGenerator();
  let rootTraceId: string | undefined;
  const idGenerator = {
    generateTraceId() {
      const id = rootTraceId ?? random.generateTraceId();
      rootTraceId = undefined;
      return id;
    },
    generateSpanId: () => random.generateSpanId(),
  };
  const provider = new BasicTracerProvider({ sampler, spanProcessors, idGenerator });
  const tracer = provider.getTracer(options.scope ?? "weft");
  const maxOpen = options.maxOpenSpans ?? 10_000;
  // Only recording spans wait here; an unsampled request leaves nothing behind.
  const open = new Map<string, Span>();

  return {
    start(head, outbound = false) {
      const incoming = parseTraceparent(head.headers.traceparent);
      let parent: Context = ROOT_CONTEXT;
      let tracestate: string | undefined;
      let b3 = false;
      // The parent-based decision, made here so that an unsampled request never builds a span.
      let traceId: string | undefined;
      let sampled = false;
      if (incoming.ok) {
        tracestate = parseTracestate(head.headers.tracestate);
        traceId = incoming.value.traceId;
        sampled = incoming.value.sampled;
        if (sampled) {
          parent = trace.setSpanContext(ROOT_CONTEXT, {
            traceId,
            spanId: incoming.value.parentId,
            traceFlags: TraceFlags.SAMPLED,
            isRemote: true,
            traceState: tracestate === undefined ? undefined : new TraceState(tracestate),
          });
        }
      } else if (head.headers.b3 !== undefined || head.headers["x-b3-traceid"] !== undefined) {
        // A Zipkin caller: its trace continues in W3C form. A deferred sampling decision is ours to make.
        const from = parseB3(head.headers);
        b3 = true;
        if (from !== undefined) {
          traceId = from.traceId;
          sampled = from.sampled ?? sampler.decide(from.traceId);
          if (sampled) parent = trace.setSpanContext(ROOT_CONTEXT, { traceId, spanId: from.parentId, traceFlags: TraceFlags.SAMPLED, isRemote: true });
        }
      }
      if (traceId === undefined) {
        // A new trace: the ratio decides on its id, as OpenTelemetry's root sampler would.
        traceId = idGenerator.generateTraceId();
        sampled = sampler.decide(traceId);
      }
      let spanId: string;
      // With nowhere to send it, a sampled span is not built: its ids and the decision still travel on.
      if (sampled && exporter !== undefined) {
        rootTraceId = traceId;
        const span = tracer.startSpan(head.method, { kind: outbound ? SpanKind.CLIENT : SpanKind.SERVER }, parent);
        rootTraceId = undefined;
        spanId = span.spanContext().spanId;
        if (span.isRecording()) {
          if (open.size >= maxOpen) open.delete(open.keys().next().value!);
          open.set(spanId, span);
        }
      } else {
        // Unsampled (OpenTelemetry's non-recording span) or no exporter: only its ids travel on.
        spanId = idGenerator.generateSpanId();
      }
      const traceparent = formatTraceparent(traceId, spanId, sampled);
      return {
        traceId,
        spanId,
        // A tracestate travels only with the traceparent it belongs to (W3C §3.3).
        upstreamHeaders: b3 ? { traceparent, tracestate, ...B3_REMOVED } : { traceparent, tracestate },
      };
    },
    end(record) {
      if (record.spanId === undefined) return;
      const span = open.get(record.spanId);
      if (!span) return;
      open.delete(record.spanId);
      // Names follow OpenTelemetry's HTTP server conventions: "{method} {route}".
      span.updateName(record.route ? `${record.method} ${record.route}` : record.method);
      span.setAttributes({
        "http.request.method": record.method,
        "url.path": pathOnly(record.path),
        "server.address": record.authority,
        "network.protocol.version": record.protocol.replace(/^HTTP\//, ""),
        "client.address": record.clientIp,
        "http.response.status_code": record.status,
        "http.request.body.size": record.bytesIn,
        "http.response.body.size": record.bytesOut,
        "weft.request_id": record.requestId,
        "weft.attempts": record.attempts,
      });
      if (record.userAgent !== undefined) span.setAttribute("user_agent.original", record.userAgent);
      if (record.route !== undefined) span.setAttribute("http.route", record.route);
      if (record.service !== undefined) span.setAttribute("weft.upstream.service", record.service);
      if (record.upstream !== undefined) span.setAttribute("weft.upstream.host", record.upstream);
      if (record.sourcePrincipal !== undefined) span.setAttribute("weft.source.principal", record.sourcePrincipal);
      if (record.requestPrincipal !== undefined) span.setAttribute("weft.request.principal", record.requestPrincipal);
      if (record.reason !== undefined) span.setAttribute("weft.reason", record.reason);
      // A server span is an error for 5xx only (OpenTelemetry HTTP semantic conventions).
      if (record.status >= 500) span.setStatus({ code: SpanStatusCode.ERROR, message: record.reason });
      span.end();
    },
    setSampleRatio(ratio) {
      sampler.set(checkRatio(ratio));
    },
    get sampleRatio() {
      return sampler.ratio;
    },
    async setExporter(next) {
      if (next === exporter) return;
      await provider.forceFlush();
      const previous = exporter;
      exporter = next;
      await previous?.shutdown();
    },
    flush: () => provider.forceFlush(),
    shutdown: () => provider.shutdown(),
  };
}

// The query may carry secrets; spans keep the path only.
function pathOnly(path: string): string {
  const q = path.indexOf("?");
  return q === -1 ? path : path.slice(0, q);
}
