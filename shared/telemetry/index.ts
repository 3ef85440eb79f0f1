export * from "./logger.ts";
export * from "./record.ts";
export * from "./access-log.ts";
export * from "./metrics.ts";
export * from "./proxy-metrics.ts";
export * from "./trace-context.ts";
export * from "./tracing.ts";
export * from "./request-telemetry.ts";
