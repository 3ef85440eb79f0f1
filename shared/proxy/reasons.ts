/**
 * Every locally generated failure has one short, greppable reason. This table maps each reason
 * to the status the client sees; the reason itself travels in `x-weft-reason` and the access log.
 */
export const REASONS = {
  bad_request: 400,
  missing_host: 400,
  jwt_invalid: 401,
  denied: 403,
  no_route: 404,
  // A WebSocket upgrade to a destination whose websocket.enabled is false (Envoy's upgrade_failed).
  upgrade_refused: 403,
  body_too_large: 413,
  headers_too_large: 431,
  rate_limited: 429,
  internal: 500,
  // A WebSocket upgrade on a listener that cannot carry the connection on (Bun and Deno).
  upgrade_unsupported: 501,
  no_cluster: 502,
  upstream_reset: 502,
  upstream_protocol_error: 502,
  // TLS originated to an external host failed: handshake, or a certificate not valid for the host.
  upstream_tls_failure: 502,
  no_healthy_upstream: 503,
  // A sidecar asked before it holds any config.
  no_config: 503,
  upstream_connect_failure: 503,
  retries_exhausted: 503,
  circuit_open: 503,
  mtls_unavailable: 503,
  overflow: 503,
  timeout: 504,
  // An ALLOW_ANY pass-through that came back to the sidecar that sent it.
  loop_detected: 508,
  // Injected by a route's fault.abort, whose httpStatus replaces this default.
  fault_abort: 503,
} as const;

export type Reason = keyof typeof REASONS;
