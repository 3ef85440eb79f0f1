import type { Endpoint } from "../config/index.ts";

/** Request headers as lower-case names; repeated headers are joined (set-cookie stays a list). */
export type HeaderMap = Readonly<Record<string, string | readonly string[] | undefined>>;

/** The verified identity of the peer proxy on an mTLS connection. */
export interface PeerIdentity {
  readonly spiffeId: string;
}

/**
 * The light, runtime-neutral view of an incoming request that the engine decides on.
 * Adapters build it from node:http, Bun.serve or Deno.serve without copying the body.
 */
export interface RequestHead {
  readonly method: string;
  readonly scheme: "http" | "https";
  /** Host header (HTTP/1.1) or :authority, as received. */
  readonly authority: string;
  /** Request target in origin form: path plus optional query, as received. */
  readonly path: string;
  readonly headers: HeaderMap;
  /** Address of the TCP peer (before any x-forwarded-for processing). */
  readonly clientIp: string;
  /** Local port the request arrived on. */
  readonly localPort: number;
  readonly peer?: PeerIdentity;
}

export type { Endpoint };
