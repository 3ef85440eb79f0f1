import type { HeaderMap } from "./types.ts";

/** Headers the proxy sends on: lower-case names, a list for a repeated header. */
export type OutgoingHeaders = Record<string, string | string[]>;

// RFC 9110 §7.6.1: connection-specific fields are never forwarded; names listed in
// Connection are hop-by-hop too. `proxy-connection` is a non-standard relic some clients send.
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "host",
]);

// Set only by weft itself: a client must not be able to forge them at the edge.
const EDGE_STRIPPED_PREFIX = "x-weft-";
const EDGE_STRIPPED = new Set(["x-forwarded-client-cert", "x-envoy-original-path"]);

/**
 * copyForwardable copies request or response headers minus hop-by-hop ones (and, at the edge,
 * headers only weft may set). `host` is dropped too; the caller sets the authority it wants.
 * @example
 * const out = copyForwardable(req.headers, true); // no connection, te, upgrade, x-weft-*
 */
export function copyForwardable(headers: HeaderMap, edge: boolean): OutgoingHeaders {
  const connection = headers.connection;
  const named = connection === undefined ? undefined : connectionTokens(connection);
  const out: OutgoingHeaders = {};
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || HOP_BY_HOP.has(name)) continue;
    if (named !== undefined && named.has(name)) continue;
    if (edge && (EDGE_STRIPPED.has(name) || name.startsWith(EDGE_STRIPPED_PREFIX))) continue;
    out[name] = value as string | string[];
  }
  return out;
}

function connectionTokens(value: string | readonly string[]): Set<string> | undefined {
  // The usual values name only fields that are hop-by-hop anyway.
  if (value === "keep-alive" || value === "close") return undefined;
  const joined = typeof value === "string" ? value : value.join(",");
  const names = new Set<string>();
  for (const token of joined.split(",")) {
    const name = token.trim().toLowerCase();
    if (name) names.add(name);
  }
  return names;
}

/** firstValue reads one header value (the first when repeated). */
export function firstValue(headers: HeaderMap, name: string): string | undefined {
  const value = headers[name];
  return value === undefined ? undefined : typeof value === "string" ? value : value[0];
}

/**
 * appendForwardedFor adds the peer address to x-forwarded-for (RFC 7239's de-facto predecessor).
 * @example
 * appendForwardedFor("203.0.113.7", "10.0.0.1") // "203.0.113.7, 10.0.0.1"
 */
export function appendForwardedFor(existing: string | string[] | undefined, clientIp: string): string {
  if (existing === undefined || existing === "") return clientIp;
  return `${Array.isArray(existing) ? existing.join(", ") : existing}, ${clientIp}`;
}

/**
 * trustedClientIp picks the client address honouring `trustedHops` proxies in front of weft:
 * with 0 the TCP peer is the client; with n the n-th address from the right of x-forwarded-for.
 * @example
 * trustedClientIp("1.1.1.1, 10.0.0.9", "10.0.0.10", 1) // "10.0.0.9"
 */
export function trustedClientIp(xff: string | undefined, peerIp: string, trustedHops: number): string {
  if (trustedHops === 0 || !xff) return peerIp;
  const hops = xff.split(",");
  const index = hops.length - trustedHops;
  const candidate = index >= 0 ? hops[index]?.trim() : undefined;
  return candidate || peerIp;
}
