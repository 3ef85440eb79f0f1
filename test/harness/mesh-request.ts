import { parseEndpoint, TLS_MODE_LABEL } from "../../shared/config/index.ts";
import type { MeshIdentity, UpstreamRequest } from "../../shared/proxy/index.ts";
import type { NodeRequestBody } from "../../shared/runtime/node/body.ts";

/** A request body of length 0, as node's listener hands a bodiless request to the engine. */
export const NO_BODY: NodeRequestBody = { length: 0, replayable: true, bytesRead: 0, sendTo: (target) => target.end() };

/**
 * requestTo is the bodiless GET a proxy's engine hands its upstream client for an endpoint on 127.0.0.1; `overrides` replace any field.
 * @example
 * const result = await client.forward(requestTo(port, { path: "/slow", timeoutMs: 100 }));
 */
export function requestTo(port: number, overrides: Partial<UpstreamRequest> = {}): UpstreamRequest {
  return {
    endpoint: parseEndpoint(`127.0.0.1:${port}`),
    method: "GET",
    path: "/",
    headers: { host: "svc.test" },
    body: NO_BODY,
    connectTimeoutMs: 1000,
    timeoutMs: 2000,
    idleTimeoutMs: 5000,
    maxBodyBytes: undefined,
    maxReplayBytes: 65536,
    maxConnections: 4,
    ...overrides,
  };
}

/**
 * meshRequest is the bodiless GET a caller's proxy sends to a mesh mTLS port on 127.0.0.1, carrying a forged x-forwarded-client-cert the server must replace.
 * @example
 * const result = await client.forward(meshRequest(inbound.port, caller, "spiffe://example.org/ns/default/sa/api", { http2: true }));
 */
export function meshRequest(port: number, identity: MeshIdentity, expectedId: string, options: { path?: string; http2?: boolean } = {}): UpstreamRequest {
  return requestTo(port, {
    endpoint: parseEndpoint(`127.0.0.1:${port}`, { [TLS_MODE_LABEL]: "mesh" }),
    path: options.path ?? "/hello",
    headers: { host: "api", "x-forwarded-client-cert": "URI=spiffe://example.org/ns/default/sa/forged" },
    connectTimeoutMs: 2000,
    timeoutMs: 5000,
    idleTimeoutMs: 10_000,
    maxReplayBytes: 0,
    maxConnections: 8,
    mesh: { identity, expectedId },
    ...(options.http2 ? { http2: true } : {}),
  });
}
