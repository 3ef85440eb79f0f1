import process from "node:process";
import { encodeJson, telemetrySubject, type Bus } from "../bus/index.ts";
import type { Snapshot } from "../config/index.ts";
import type { ClusterHealthReport, EngineOptions, TcpRecord } from "../proxy/index.ts";
import {
  createAccessLog,
  createBufferedSink,
  createMetricsRegistry,
  createLogSpanExporter,
  createOtlpHttpExporter,
  fanOutExporter,
  createProxyMetrics,
  createRequestTelemetry,
  createMeshSummary,
  createTracer,
  type ClusterReading,
  type Logger,
  type MeshSummaryOptions,
} from "../telemetry/index.ts";

/** Where a proxy's upstream health is read from: its snapshot's endpoints and its engine's report. */
export interface ClusterSource {
  snapshot(): Snapshot | undefined;
  health(): readonly ClusterHealthReport[];
}

/** A proxy's telemetry: access log on stdout, Prometheus metrics for the admin API, OTel spans. */
export interface ProxyTelemetry {
  /** The engine's hooks: every request feeds the access log, the metrics and the tracer. */
  readonly hooks: Pick<EngineOptions, "onRequestStart" | "onRequestDone" | "onMirrorDone">;
  /** The L4 hook: one access-log line per proxied TCP/TLS connection (HTTP fields empty) and the connection metrics. */
  onConnectionDone(record: TcpRecord): void;
  /** For the listeners' ServeTarget: counts client connections (weft_downstream_connections_active). */
  readonly connections: { opened(): void; closed(): void };
  /** For the admin API's /stats/prometheus and /stats. */
  readonly admin: { metrics(): Promise<string>; stats(): Promise<unknown>; health(): readonly ClusterHealthReport[] };
  /** Reads upstream health from here at each scrape (weft_upstream_endpoint_healthy, outlier and pool series). */
  observeClusters(source: ClusterSource): void;
  /** A config was applied: access-log format, sampling and exporter follow it. */
  applied(snapshot: Snapshot): void;
  /** A config update was refused (counted in weft_config_rejected_total). */
  rejected(): void;
  /** The proxy's certificate now expires then (weft_certificate_expiry_timestamp_seconds). */
  certificate(notAfter: Date): void;
  /** Wraps a log so that "config refused" lines (from the config watcher) are counted as rejections. */
  countingRefusals(log: Logger): Logger;
  /** Publishes the mesh-view summary on `weft.telemetry.<proxy-id>` every interval until stop. */
  publishTo(bus: Bus, intervalMs?: number): void;
  stop(): Promise<void>;
}

/**
 * createProxyTelemetry assembles a gateway's or sidecar's telemetry: one JSON access-log line per
 * request on stdout (buffered per tick, dropped and counted when stdout cannot keep up), the proxy
 * metrics, and spans for the W3C trace the request carries, exported over OTLP when configured.
 * @example
 * const telemetry = createProxyTelemetry(log, "weft-gateway-ingress", { proxyId, role: "gateway", workload: "ingress" });
 * createEngine({ client, edge: true, ...telemetry.hooks });
 */
export function createProxyTelemetry(log: Logger, serviceName: string, summaryOptions: MeshSummaryOptions): ProxyTelemetry {
  const registry = createMetricsRegistry();
  const metrics = createProxyMetrics(registry);
  // stdout is the access log (one JSON line per request); stderr is the process log.
  const sink = createBufferedSink({
    write: (chunk) => process.stdout.write(chunk),
    schedule: (flush) => setImmediate(flush),
    pendingBytes: () => process.stdout.writableLength,
    onDrop: (lines) => metrics.accessLogDropped(lines),
  });
  const accessLog = createAccessLog({ write: sink.write });
  const tracer = createTracer();
  let otlpEndpoint: string | undefined;
  let consoleExport = false;
  const summary = createMeshSummary(summaryOptions);
  const request = createRequestTelemetry({ accessLog, metrics, tracer });
  let publishTimer: ReturnType<typeof setInterval> | undefined;
  let clusters: ClusterSource | undefined;
  const observe = () => {
    if (clusters) metrics.clustersObserved(readClusters(clusters));
  };
  const onExit = () => sink.flush();
  process.once("exit", onExit);
  return {
    hooks: {
      onRequestStart: request.onRequestStart,
      onRequestDone(record) {
        request.onRequestDone(record);
        summary.record(record);
      },
      onMirrorDone(service, outcome) {
        metrics.mirrorDone(service, outcome.sent ? "sent" : outcome.reason);
      },
    },
    onConnectionDone(record) {
      metrics.connectionDone(record);
      // The same line as a request's, so one format and one pipeline serve both; protocol says TCP or TLS.
      accessLog.log({
        startTimeMs: record.startTimeMs,
        durationMs: record.durationMs,
        method: "",
        authority: record.sni ?? "",
        path: "",
        protocol: record.protocol === "tls" ? "TLS" : "TCP",
        status: 0,
        reason: record.reason,
        route: record.route,
        service: record.service,
        upstream: record.upstream,
        bytesIn: record.bytesIn,
        bytesOut: record.bytesOut,
        requestId: "",
        sourcePrincipal: record.sourcePrincipal,
        clientIp: record.clientIp,
        attempts: record.upstream === undefined ? 0 : 1,
      });
    },
    connections: { opened: () => metrics.connectionOpened(), closed: () => metrics.connectionClosed() },
    admin: {
      metrics: () => (observe(), registry.expose()),
      stats: () => (observe(), registry.toJson()),
      health: () => clusters?.health() ?? [],
    },
    observeClusters(source) {
      clusters = source;
    },
    applied(snapshot) {
      const format = accessLog.setFormat(snapshot.accessLog);
      if (!format.ok) log.error("access log format refused, keeping the previous one", { reason: format.reason, field: format.field });
      tracer.setSampleRatio(snapshot.tracing?.sampleRatio ?? 0.01);
      const endpoint = snapshot.tracing?.otlpEndpoint;
      const toConsole = snapshot.tracing?.console === true;
      if (endpoint !== otlpEndpoint || toConsole !== consoleExport) {
        otlpEndpoint = endpoint;
        consoleExport = toConsole;
        const exporters = [
          ...(endpoint ? [createOtlpHttpExporter({ url: endpoint, serviceName })] : []),
          ...(toConsole ? [createLogSpanExporter((msg, fields) => log.info(msg, fields), serviceName)] : []),
        ];
        const exporter = exporters.length === 0 ? undefined : exporters.length === 1 ? exporters[0] : fanOutExporter(exporters);
        tracer.setExporter(exporter).catch((err: unknown) => log.warn("span exporter shutdown failed", { error: String(err) }));
      }
      metrics.configApplied(snapshot.revision);
      summary.setRevision(snapshot.revision);
    },
    rejected: () => metrics.configRejected(),
    certificate: (notAfter) => metrics.certificateExpires(notAfter),
    // The config watcher reports a refused update only through its log, so refusals are counted where they are logged.
    countingRefusals(inner) {
      return {
        setLevel: (level) => inner.setLevel(level),
        get level() {
          return inner.level;
        },
        warn(msg, fields) {
          if (msg.startsWith("config refused")) metrics.configRejected();
          inner.warn(msg, fields);
        },
        debug: (msg, fields) => inner.debug(msg, fields),
        info: (msg, fields) => inner.info(msg, fields),
        error: (msg, fields) => inner.error(msg, fields),
      };
    },
    publishTo(bus, intervalMs = 2000) {
      clearInterval(publishTimer);
      summary.take(Date.now());
      const subject = telemetrySubject(summaryOptions.proxyId);
      publishTimer = setInterval(() => bus.publish(subject, encodeJson(summary.take(Date.now()))), intervalMs);
      publishTimer.unref?.();
    },
    async stop() {
      clearInterval(publishTimer);
      sink.flush();
      process.off("exit", onExit);
      await tracer.shutdown();
    },
  };
}

/** Every service of the snapshot with its endpoints, joined with what the engine knows of its health. */
function readClusters(source: ClusterSource): ClusterReading[] {
  const snapshot = source.snapshot();
  if (!snapshot) return [];
  const health = new Map(source.health().map((h) => [h.service, h]));
  const readings: ClusterReading[] = [];
  for (const service of snapshot.services.values()) {
    const h = health.get(service.name);
    readings.push({
      service: service.name,
      endpoints: service.endpoints.map((e) => ({ address: e.address, draining: e.draining === true })),
      ejected: h ? h.ejected.map((e) => e.address) : [],
      ejectionsTotal: h?.ejectionsTotal ?? 0,
      unhealthy: h?.unhealthy ?? [],
      active: h?.active ?? 0,
      pending: h?.pending ?? 0,
      retryOverflows: h?.retryOverflows ?? 0,
    });
  }
  return readings;
}
