import type { AccessLog } from "./access-log.ts";
import type { ProxyMetrics } from "./proxy-metrics.ts";
import type { TelemetryHead, TelemetryRecord } from "./record.ts";
import type { ProxyTracer, TraceStart } from "./tracing.ts";

/** The two engine hooks (EngineOptions.onRequestStart / onRequestDone) that feed every signal. */
export interface RequestTelemetry {
  /** `outbound`: a sidecar's outbound side, where the span is the client's. */
  onRequestStart(head: TelemetryHead, outbound?: boolean): TraceStart | undefined;
  onRequestDone(record: TelemetryRecord): void;
}

/**
 * createRequestTelemetry joins an access log, the proxy metrics and a tracer into the engine's
 * start/done hooks; any of the three may be left out.
 * @example
 * const telemetry = createRequestTelemetry({ accessLog, metrics, tracer });
 * createEngine({ client, edge: true, ...telemetry });
 */
export function createRequestTelemetry(parts: {
  readonly accessLog?: AccessLog;
  readonly metrics?: ProxyMetrics;
  readonly tracer?: ProxyTracer;
}): RequestTelemetry {
  const { accessLog, metrics, tracer } = parts;
  return {
    onRequestStart(head, outbound) {
      metrics?.requestStarted();
      return tracer?.start(head, outbound);
    },
    onRequestDone(record) {
      metrics?.requestDone(record);
      tracer?.end(record);
      accessLog?.log(record);
    },
  };
}
