/**
 * The request as telemetry reads it. Declared here (the consumer owns the interface) so that
 * telemetry never imports the engine; shared/proxy's RequestHead and RequestRecord satisfy these.
 */
export interface TelemetryHead {
  readonly method: string;
  readonly headers: Readonly<Record<string, string | readonly string[] | undefined>>;
}

/** Everything known about a finished request (shared/proxy's RequestRecord). */
export interface TelemetryRecord {
  readonly startTimeMs: number;
  readonly durationMs: number;
  readonly upstreamDurationMs?: number;
  readonly method: string;
  readonly authority: string;
  readonly path: string;
  readonly protocol: string;
  readonly status: number;
  readonly reason?: string;
  readonly route?: string;
  readonly service?: string;
  readonly upstream?: string;
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly requestId: string;
  readonly traceId?: string;
  readonly spanId?: string;
  /** The mTLS peer's SPIFFE ID. */
  readonly sourcePrincipal?: string;
  /** The JWT's `iss/sub` (end user); logged and traced, never a metric label. */
  readonly requestPrincipal?: string;
  readonly clientIp: string;
  readonly userAgent?: string;
  readonly attempts: number;
  /** A gRPC call's grpc-status (weft's own answer or the upstream's); absent for other requests. */
  readonly grpcStatus?: number;
}
