import type { RouteConfig } from "../config/index.ts";
import type { OutgoingHeaders } from "./headers.ts";
import { splitAuthority, type RouteMatch } from "./router.ts";
import type { RequestHead } from "./types.ts";

type HeaderOps = NonNullable<NonNullable<RouteConfig["headers"]>["request"]>;
type Redirect = NonNullable<RouteConfig["redirect"]>;

/**
 * rewritePath replaces the matched prefix of a path, keeping the query, the way Gateway API's
 * ReplacePrefixMatch does: prefix `/api` to `/` turns `/api/x?y` into `/x?y` and `/api` into `/`.
 * @example
 * rewritePath("/api/users?id=1", "/api", "/v2") // "/v2/users?id=1"
 */
export function rewritePath(path: string, matchedPrefix: string, replacement: string): string {
  const q = path.indexOf("?");
  const pathOnly = q < 0 ? path : path.slice(0, q);
  const bare = matchedPrefix.length > 1 && matchedPrefix.endsWith("/") ? matchedPrefix.slice(0, -1) : matchedPrefix;
  const rest = bare === "/" ? pathOnly : pathOnly.slice(bare.length);
  const head = replacement.endsWith("/") ? replacement.slice(0, -1) : replacement;
  let out = head + (head === "" || rest === "" || rest.startsWith("/") ? rest : `/${rest}`);
  if (out === "") out = "/";
  return q < 0 ? out : out + path.slice(q);
}

/**
 * redirectLocation builds the Location of a redirect route from the request: each part the route
 * does not replace is kept, and the port is dropped when the scheme changes (or is its default).
 * @example
 * redirectLocation({ scheme: "https", status: 301 }, head, match) // "https://example.com/path"
 */
export function redirectLocation(redirect: Redirect, head: RequestHead, match: RouteMatch): string {
  const scheme = redirect.scheme ?? head.scheme;
  const { host, hostPort } = splitAuthority(head.authority);
  const host0 = redirect.host ?? host;
  let port: number | undefined = redirect.port;
  if (port === undefined && redirect.scheme === undefined) {
    // An empty port ("host:", RFC 3986 §3.2.3) or junk is dropped rather than written as ":0" or ":NaN".
    const requestPort = hostPort.slice(host.length + 1);
    if (/^\d{1,5}$/.test(requestPort)) port = Number(requestPort);
  }
  const defaultPort = scheme === "https" ? 443 : 80;
  const authority = port === undefined || port === defaultPort ? host0 : `${host0}:${port}`;
  let path: string;
  if (redirect.path !== undefined) {
    const q = match.path.indexOf("?");
    path = redirect.path.includes("?") || q < 0 ? redirect.path : redirect.path + match.path.slice(q);
  } else if (redirect.prefixRewrite !== undefined && match.matchedPrefix !== undefined) {
    path = rewritePath(match.path, match.matchedPrefix, redirect.prefixRewrite);
  } else {
    path = match.path;
  }
  return `${scheme}://${authority}${path}`;
}

/**
 * applyHeaderOps edits headers in place: `remove` first, then `set` (replaces), then `add`
 * (appends another value). Names are matched case-insensitively.
 * @example
 * applyHeaderOps({ set: { "x-env": "prod" }, remove: ["server"] }, headers)
 */
export function applyHeaderOps(ops: HeaderOps, headers: OutgoingHeaders): void {
  if (ops.remove) for (const name of ops.remove) delete headers[name.toLowerCase()];
  if (ops.set) for (const [name, value] of Object.entries(ops.set)) headers[name.toLowerCase()] = value;
  if (ops.add) {
    for (const [rawName, value] of Object.entries(ops.add)) {
      const name = rawName.toLowerCase();
      const existing = headers[name];
      headers[name] = existing === undefined ? value : Array.isArray(existing) ? [...existing, value] : [existing, value];
    }
  }
}
