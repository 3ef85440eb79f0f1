import type { RouteConfig, RouteMatchConfig } from "../config/index.ts";
import type { HeaderMap, RequestHead } from "./types.ts";

/** The route a request matched, and what the actions need to know about the match. */
export interface RouteMatch {
  readonly route: RouteConfig;
  /** Index of the route in declaration order. */
  readonly index: number;
  /** The prefix the path matched by, for prefix rewrites and redirects. */
  readonly matchedPrefix?: string;
  /** The request path (and query) after dot-segment normalisation: what routing saw and what goes upstream. */
  readonly path: string;
}

export interface Router {
  match(head: RequestHead): RouteMatch | undefined;
}

type Check = (req: PreparedRequest) => boolean;

interface PreparedRequest {
  readonly head: RequestHead;
  readonly host: string;
  readonly hostPort: string;
  readonly pathOnly: string;
  readonly query: string;
  params: URLSearchParams | undefined;
}

/** One (route, condition, host pattern) triple, ranked. */
interface Entry {
  readonly route: RouteConfig;
  readonly index: number;
  readonly rank: readonly number[];
  readonly host: Check | undefined;
  readonly path: ((path: string) => boolean) | undefined;
  readonly prefix: string | undefined;
  readonly checks: readonly Check[];
}

/**
 * createRouter compiles routes into one ranked list; the first entry that matches wins.
 * Precedence (docs/routing.md): exact host > longest `*.suffix` > any host; then exact path >
 * longest prefix > regex > no path; then more header and query conditions; then a method
 * condition; then declaration order. Prefixes are segment-aware: `/api` matches `/api` and
 * `/api/x`, never `/apix`.
 * @example
 * createRouter(routes).match(head)?.route.name
 */
export function createRouter(routes: readonly RouteConfig[]): Router {
  const entries: Entry[] = [];
  routes.forEach((route, index) => {
    const matches: readonly (RouteMatchConfig | undefined)[] =
      route.match === undefined ? [undefined] : Array.isArray(route.match) ? route.match : [route.match as RouteMatchConfig];
    for (const m of matches) {
      const hosts: readonly (string | undefined)[] = m?.hosts ?? [undefined];
      for (const host of hosts) entries.push(compileEntry(route, index, m, host));
    }
  });
  entries.sort((a, b) => compareRank(a.rank, b.rank) || a.index - b.index);

  return {
    match(head) {
      const normalized = normalizePath(head.path);
      if (normalized === undefined) return undefined;
      const q = normalized.indexOf("?");
      const { host, hostPort } = splitAuthority(head.authority);
      const req: PreparedRequest = {
        head,
        host,
        hostPort,
        pathOnly: q < 0 ? normalized : normalized.slice(0, q),
        query: q < 0 ? "" : normalized.slice(q + 1),
        params: undefined,
      };
      for (const e of entries) {
        if (e.host && !e.host(req)) continue;
        if (e.path && !e.path(req.pathOnly)) continue;
        let ok = true;
        for (const check of e.checks) {
          if (!check(req)) {
            ok = false;
            break;
          }
        }
        if (ok) return { route: e.route, index: e.index, matchedPrefix: e.prefix, path: normalized };
      }
      return undefined;
    },
  };
}

function compareRank(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return b[i]! - a[i]!;
  return 0;
}

function compileEntry(route: RouteConfig, index: number, m: RouteMatchConfig | undefined, hostPattern: string | undefined): Entry {
  const checks: Check[] = [];
  // Rank: [host class, host length, path class, path length, conditions, has methods]
  let hostClass = 0;
  let hostLength = 0;
  let host: Check | undefined;
  if (hostPattern !== undefined && hostPattern !== "*") {
    const pattern = hostPattern.toLowerCase();
    const withPort = /:\d+$/.test(pattern);
    if (pattern.startsWith("*.")) {
      const suffix = pattern.slice(1);
      hostClass = 1;
      hostLength = suffix.length;
      host = withPort
        ? (r) => r.hostPort.endsWith(suffix) && r.hostPort.length > suffix.length
        : (r) => r.host.endsWith(suffix) && r.host.length > suffix.length;
    } else {
      hostClass = 2;
      hostLength = pattern.length;
      host = withPort ? (r) => r.hostPort === pattern : (r) => r.host === pattern;
    }
  }

  let pathClass = 0;
  let pathLength = 0;
  let path: ((p: string) => boolean) | undefined;
  let prefix: string | undefined;
  const pm = m?.path;
  if (pm && "exact" in pm) {
    pathClass = 3;
    pathLength = pm.exact.length;
    const exact = pm.exact;
    path = (p) => p === exact;
  } else if (pm && "prefix" in pm) {
    pathClass = 2;
    prefix = pm.prefix;
    const bare = prefix.length > 1 && prefix.endsWith("/") ? prefix.slice(0, -1) : prefix;
    pathLength = bare.length;
    path = bare === "/" ? undefined : (p) => p.startsWith(bare) && (p.length === bare.length || p.charCodeAt(bare.length) === 47);
  } else if (pm && "regex" in pm) {
    pathClass = 1;
    const re = new RegExp(`^(?:${pm.regex})$`);
    path = (p) => re.test(p);
  }

  let conditions = 0;
  for (const [rawName, hm] of Object.entries(m?.headers ?? {})) {
    conditions++;
    const name = rawName.toLowerCase();
    if ("present" in hm) checks.push((r) => r.head.headers[name] !== undefined);
    else if ("absent" in hm) checks.push((r) => r.head.headers[name] === undefined);
    else {
      const test = stringTest(hm);
      checks.push((r) => {
        const value = headerValue(r.head.headers, name);
        return value !== undefined && test(value);
      });
    }
  }
  for (const [name, qm] of Object.entries(m?.query ?? {})) {
    conditions++;
    if ("present" in qm) checks.push((r) => params(r).has(name));
    else {
      const test = stringTest(qm);
      checks.push((r) => {
        const value = params(r).get(name);
        return value !== null && test(value);
      });
    }
  }
  const methods = m?.methods;
  if (methods) {
    const set = new Set<string>(methods);
    checks.push((r) => set.has(r.head.method));
  }
  return {
    route,
    index,
    rank: [hostClass, hostLength, pathClass, pathLength, conditions, methods ? 1 : 0],
    host,
    path,
    prefix,
    checks,
  };
}

function stringTest(m: { exact: string } | { prefix: string } | { regex: string }): (value: string) => boolean {
  if ("exact" in m) return (v) => v === m.exact;
  if ("prefix" in m) return (v) => v.startsWith(m.prefix);
  const re = new RegExp(`^(?:${m.regex})$`);
  return (v) => re.test(v);
}

function headerValue(headers: HeaderMap, name: string): string | undefined {
  const v = headers[name];
  return v === undefined ? undefined : typeof v === "string" ? v : v.join(", ");
}

function params(r: PreparedRequest): URLSearchParams {
  return (r.params ??= new URLSearchParams(r.query));
}

/** Host (lower case, without port) and host:port, from an authority such as `a.example:8080` or `[::1]:80`. */
export function splitAuthority(authority: string): { host: string; hostPort: string } {
  const hostPort = authority.toLowerCase();
  const end = hostPort.startsWith("[") ? hostPort.indexOf("]") + 1 : hostPort.lastIndexOf(":");
  if (end <= 0) return { host: hostPort, hostPort };
  const colon = hostPort.indexOf(":", end - 1);
  return { host: colon < 0 ? hostPort : hostPort.slice(0, colon), hostPort };
}

/**
 * normalizePath resolves `.` and `..` segments (RFC 3986 §5.2.4), including their percent-encoded
 * forms, and merges repeated slashes, so `/public/../admin` is routed (and forwarded) as `/admin`.
 * Returns undefined for a target that is not origin-form. The query is kept as received.
 */
export function normalizePath(target: string): string | undefined {
  if (target.charCodeAt(0) !== 47) return undefined;
  const q = target.indexOf("?");
  const path = q < 0 ? target : target.slice(0, q);
  if (!/\/\/|\/\.|%2e/i.test(path)) return target;
  const out: string[] = [];
  const segments = path.split("/");
  for (let i = 1; i < segments.length; i++) {
    const seg = segments[i]!;
    const plain = seg.replace(/%2e/gi, ".");
    if (plain === ".") {
      if (i === segments.length - 1) out.push("");
      continue;
    }
    if (plain === "..") {
      out.pop();
      if (i === segments.length - 1) out.push("");
      continue;
    }
    if (seg === "" && i < segments.length - 1) continue;
    out.push(seg);
  }
  return "/" + out.join("/") + (q < 0 ? "" : target.slice(q));
}

/**
 * chooseWeighted picks a destination by weight; zero-weight entries are never picked unless all are zero.
 * @example
 * chooseWeighted([{ weight: 90 }, { weight: 10 }], Math.random)
 */
export function chooseWeighted<T extends { readonly weight: number }>(items: readonly T[], random: () => number): T {
  if (items.length === 1) return items[0]!;
  let total = 0;
  for (const item of items) total += item.weight;
  if (total <= 0) return items[0]!;
  let point = random() * total;
  for (const item of items) {
    point -= item.weight;
    if (point < 0) return item;
  }
  for (let i = items.length - 1; i > 0; i--) if (items[i]!.weight > 0) return items[i]!;
  return items[0]!;
}
