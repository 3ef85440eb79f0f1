import { parseEndpoint, TLS_MODE_LABEL } from "../../shared/config/index.ts";
import type { MeshIdentity, UpstreamRequest } from "../../shared/proxy/index.ts";
import type { NodeRequestBody } from "../../shared/runtime/node/body.ts";

const emptyBody: NodeRequestBody = { length: 0, replayable: true, bytesRead: 0, sendTo: (target) => target.end() };

/**
 * meshRequest is the bodiless GET a caller's proxy sends to a mesh mTLS port on 127.0.0.1, carrying a forged x-forwarded-client-cert the server must replace.
 * @example
 * const result = await client.forward(meshRequest(inbound.port, caller, "spiffe://example.org/ns/default/sa/api", { http2: true }));
 */
export function meshRequest(port: number, identity: MeshIdentity, expectedId: string, options: { path?: string; http2?: boolean } = {}): UpstreamRequest {
  return {
    endpoint: parseEndpoint(`127.0.0.1:${port}`, { [TLS_MODE_LABEL]: "mesh" }),
    method: "GET",
    path: options.path ?? "/hello",
    headers: { host: "api", "x-forwarded-client-cert": "URI=spiffe://example.org/ns/default/sa/forged" },
    body: emptyBody,
    connectTimeoutMs: 2000,
    timeoutMs: 5000,
    idleTimeoutMs: 10_000,
    maxBodyBytes: undefined,
    maxReplayBytes: 0,
    maxConnections: 8,
    mesh: { identity, expectedId },
    ...(options.http2 ? { http2: true } : {}),
  };
}
