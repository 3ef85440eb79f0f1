import type {
  AuthzConditionConfig,
  AuthzOperationConfig,
  AuthzPolicyConfig,
  AuthzSourceConfig,
  PathNormalizationConfig,
  PolicySetConfig,
} from "../config/index.ts";
import { ipInBlock, parseIp, parseIpBlock, type IpBlock } from "./ip-block.ts";
import { normalizeAuthzPath } from "./normalize.ts";

/** Request headers as lower-case names (repeated ones joined or listed). */
export type AuthzHeaders = Readonly<Record<string, string | readonly string[] | undefined>>;

/** Everything authorization may look at, after authentication. */
export interface AuthzRequest {
  readonly method: string;
  /** Host header or :authority (port allowed). */
  readonly authority: string;
  /** Request target as received (path and query); normalised here before matching. */
  readonly path: string;
  readonly headers: AuthzHeaders;
  /** Local port the request arrived on. */
  readonly port?: number;
  /** Address of the TCP peer. */
  readonly sourceIp: string;
  /** Original client address (trusted x-forwarded-for); default sourceIp. */
  readonly remoteIp?: string;
  /** Peer SPIFFE ID from mTLS; absent on plaintext. */
  readonly sourcePrincipal?: string;
  /** `<iss>/<sub>` of a verified JWT; absent when anonymous. */
  readonly requestPrincipal?: string;
  /** Claims of the verified JWT. */
  readonly claims?: Readonly<Record<string, unknown>>;
  /**
   * A raw TCP connection rather than an HTTP request (Istio semantics): a rule that uses an HTTP-only
   * field (hosts, methods, paths, requestPrincipals, `request.*` conditions) never matches in an ALLOW
   * (or AUDIT) policy, and in a DENY policy those fields are ignored, so the rule matches more.
   */
  readonly tcp?: boolean;
}

/** Why authorization decided as it did. */
export type AuthzReason =
  /** No ALLOW policy exists and no DENY matched, or an ALLOW policy matched. */
  | "allowed"
  /** A DENY policy matched. */
  | "denied_by_policy"
  /** ALLOW policies exist and none matched. */
  | "no_allow_match"
  /** The path could not be normalised (malformed escape, or an encoded slash with encodedSlashes "reject"). */
  | "path_rejected"
  /** Evaluation failed; a policy that cannot be evaluated denies. */
  | "evaluation_error";

export interface AuthzDecision {
  readonly allowed: boolean;
  readonly reason: AuthzReason;
  /** The policy that decided (the DENY or ALLOW that matched). */
  readonly policy?: string;
  /** Index of the matching rule in that policy. */
  readonly rule?: number;
  /** AUDIT policies that matched (they never change the decision). */
  readonly audited: readonly string[];
  /** The path the rules were matched against. */
  readonly normalizedPath?: string;
}

/** Compiled authorization policies: built once per config, evaluated per request. */
export interface Authorizer {
  evaluate(request: AuthzRequest): AuthzDecision;
  /** False when there is nothing to check (no policies): every request is allowed. */
  readonly active: boolean;
}

/** Facts about one request, computed at most once each. */
interface Facts {
  readonly req: AuthzRequest;
  readonly path: string;
  host: string | undefined;
  source: { version: 4 | 6; value: bigint } | undefined | null;
  remote: { version: 4 | 6; value: bigint } | undefined | null;
}

type Check = (f: Facts) => boolean;
type Matcher = (value: string) => boolean;

interface CompiledPolicy {
  readonly name: string;
  readonly rules: readonly Check[];
  /** The same rules as they apply to a raw TCP connection. */
  readonly tcpRules: readonly Check[];
}

/**
 * compileAuthz turns authorization policies into one evaluator with Istio's semantics: any matching
 * DENY denies; then, when ALLOW policies exist, one must match; AUDIT never changes the decision.
 * A policy without rules matches nothing; a rule without from/to/when matches everything. In a DENY
 * policy, an identity the request lacks (no mTLS peer for principals/namespaces, no verified token for
 * requestPrincipals and `request.auth.*` conditions) counts as matching, so a DENY can never be dodged
 * by not authenticating; a verified token without the named claim does not match.
 * @example
 * const authz = compileAuthz([{ name: "no-admin", action: "DENY", rules: [{ to: [{ paths: ["/admin*"] }] }] }], { encodedSlashes: "keep", caseInsensitive: false });
 * authz.evaluate({ method: "GET", authority: "a", path: "/%61dmin", headers: {}, sourceIp: "10.0.0.1" }).allowed // false
 */
export function compileAuthz(policies: readonly AuthzPolicyConfig[], paths: PathNormalizationConfig): Authorizer {
  const deny: CompiledPolicy[] = [];
  const allow: CompiledPolicy[] = [];
  const audit: CompiledPolicy[] = [];
  for (const p of policies) {
    const action = p.action ?? "ALLOW";
    const isDeny = action === "DENY";
    const rules = p.rules ?? [];
    const compiled = { name: p.name, rules: rules.map((r) => compileRule(r, isDeny, paths)), tcpRules: rules.map((r) => compileTcpRule(r, isDeny, paths)) };
    (action === "DENY" ? deny : action === "AUDIT" ? audit : allow).push(compiled);
  }
  const active = policies.length > 0;

  function decide(req: AuthzRequest): AuthzDecision {
    if (req.tcp === true) return decideTcp(req);
    const path = normalizeAuthzPath(req.path, paths);
    if (path === undefined) return { allowed: false, reason: "path_rejected", audited: [] };
    const facts: Facts = { req, path, host: undefined, source: null, remote: null };
    const audited: string[] = [];
    for (const p of audit) if (firstMatch(p, facts) >= 0) audited.push(p.name);
    for (const p of deny) {
      const rule = firstMatch(p, facts);
      if (rule >= 0) return { allowed: false, reason: "denied_by_policy", policy: p.name, rule, audited, normalizedPath: path };
    }
    if (allow.length === 0) return { allowed: true, reason: "allowed", audited, normalizedPath: path };
    for (const p of allow) {
      const rule = firstMatch(p, facts);
      if (rule >= 0) return { allowed: true, reason: "allowed", policy: p.name, rule, audited, normalizedPath: path };
    }
    return { allowed: false, reason: "no_allow_match", audited, normalizedPath: path };
  }

  function decideTcp(req: AuthzRequest): AuthzDecision {
    const facts: Facts = { req, path: "", host: undefined, source: null, remote: null };
    const audited: string[] = [];
    for (const p of audit) if (firstMatch(p, facts, true) >= 0) audited.push(p.name);
    for (const p of deny) {
      const rule = firstMatch(p, facts, true);
      if (rule >= 0) return { allowed: false, reason: "denied_by_policy", policy: p.name, rule, audited };
    }
    if (allow.length === 0) return { allowed: true, reason: "allowed", audited };
    for (const p of allow) {
      const rule = firstMatch(p, facts, true);
      if (rule >= 0) return { allowed: true, reason: "allowed", policy: p.name, rule, audited };
    }
    return { allowed: false, reason: "no_allow_match", audited };
  }

  return {
    active,
    evaluate(req) {
      if (!active) return { allowed: true, reason: "allowed", audited: [] };
      try {
        return decide(req);
      } catch {
        return { allowed: false, reason: "evaluation_error", audited: [] };
      }
    },
  };
}

function firstMatch(policy: CompiledPolicy, facts: Facts, tcp = false): number {
  const rules = tcp ? policy.tcpRules : policy.rules;
  for (let i = 0; i < rules.length; i++) if (rules[i]!(facts)) return i;
  return -1;
}

type RuleConfig = { from?: readonly AuthzSourceConfig[]; to?: readonly AuthzOperationConfig[]; when?: readonly AuthzConditionConfig[] };

/** Istio's TCP treatment of a rule: see AuthzRequest.tcp. */
function compileTcpRule(rule: RuleConfig, isDeny: boolean, paths: PathNormalizationConfig): Check {
  const from = rule.from?.map(({ requestPrincipals, notRequestPrincipals, ...rest }) => ({ rest, http: requestPrincipals !== undefined || notRequestPrincipals !== undefined }));
  const to = rule.to?.map(({ hosts, notHosts, methods, notMethods, paths: p, notPaths, ...rest }) => ({
    rest,
    http: [hosts, notHosts, methods, notMethods, p, notPaths].some((f) => f !== undefined),
  }));
  const when = rule.when?.map((c) => ({ c, http: c.key.startsWith("request.") }));
  const usesHttp = [...(from ?? []), ...(to ?? []), ...(when ?? [])].some((part) => part.http);
  if (usesHttp && !isDeny) return () => false;
  return compileRule({ from: from?.map((f) => f.rest), to: to?.map((t) => t.rest), when: when?.filter((w) => !w.http).map((w) => w.c) }, isDeny, paths);
}

function compileRule(rule: RuleConfig, isDeny: boolean, paths: PathNormalizationConfig): Check {
  const parts: Check[] = [];
  if (rule.from && rule.from.length > 0) parts.push(anyOf(rule.from.map((s) => compileSource(s, isDeny))));
  if (rule.to && rule.to.length > 0) parts.push(anyOf(rule.to.map((o) => compileOperation(o, paths))));
  for (const c of rule.when ?? []) parts.push(compileCondition(c, isDeny));
  return allOf(parts);
}

/**
 * compileOperation builds the check for one `to` entry (also used to pick the requests a rate limit counts).
 * @example
 * compileOperationMatch({ methods: ["GET"], paths: ["/api/*"] }, pathOptions)(request, "/api/x") // true
 */
export function compileOperationMatch(op: AuthzOperationConfig, paths: PathNormalizationConfig): (req: AuthzRequest, normalizedPath: string) => boolean {
  const check = compileOperation(op, paths);
  return (req, path) => check({ req, path, host: undefined, source: null, remote: null });
}

function compileOperation(op: AuthzOperationConfig, paths: PathNormalizationConfig): Check {
  const parts: Check[] = [];
  const hostOf = (f: Facts) => (f.host ??= hostWithoutPort(f.req.authority));
  if (op.hosts?.length) {
    const m = patterns(op.hosts.map((h) => h.toLowerCase()));
    parts.push((f) => m(hostOf(f)));
  }
  if (op.notHosts?.length) {
    const m = patterns(op.notHosts.map((h) => h.toLowerCase()));
    parts.push((f) => !m(hostOf(f)));
  }
  if (op.ports?.length) {
    const set = new Set(op.ports);
    parts.push((f) => f.req.port !== undefined && set.has(f.req.port));
  }
  if (op.notPorts?.length) {
    const set = new Set(op.notPorts);
    parts.push((f) => f.req.port === undefined || !set.has(f.req.port));
  }
  if (op.methods?.length) {
    const m = patterns(op.methods);
    parts.push((f) => m(f.req.method.toUpperCase()));
  }
  if (op.notMethods?.length) {
    const m = patterns(op.notMethods);
    parts.push((f) => !m(f.req.method.toUpperCase()));
  }
  const fold = (p: string) => (paths.caseInsensitive ? p.toLowerCase() : p);
  if (op.paths?.length) {
    const m = patterns(op.paths.map(fold));
    parts.push((f) => m(f.path));
  }
  if (op.notPaths?.length) {
    const m = patterns(op.notPaths.map(fold));
    parts.push((f) => !m(f.path));
  }
  return allOf(parts);
}

function compileSource(src: AuthzSourceConfig, isDeny: boolean): Check {
  const parts: Check[] = [];
  const identity = (values: readonly string[] | undefined, negate: boolean, read: (f: Facts) => string | undefined, strip = false) => {
    if (!values?.length) return;
    const m = patterns(strip ? values.map(stripSpiffe) : values);
    parts.push((f) => {
      const value = read(f);
      // A missing identity matches in a DENY (never dodge a DENY by not authenticating); a `not` form matches it anyway.
      if (value === undefined) return negate || isDeny;
      return m(strip ? stripSpiffe(value) : value) !== negate;
    });
  };
  identity(src.principals, false, (f) => f.req.sourcePrincipal, true);
  identity(src.notPrincipals, true, (f) => f.req.sourcePrincipal, true);
  identity(src.requestPrincipals, false, (f) => f.req.requestPrincipal);
  identity(src.notRequestPrincipals, true, (f) => f.req.requestPrincipal);
  // A peer whose ID carries no namespace is authenticated all the same: it just matches no namespace.
  const namespace = (f: Facts) => (f.req.sourcePrincipal === undefined ? undefined : namespaceOf(f.req.sourcePrincipal) ?? "");
  identity(src.namespaces, false, namespace);
  identity(src.notNamespaces, true, namespace);
  const source = (f: Facts) => (f.source === null ? (f.source = parseIp(f.req.sourceIp)) : f.source);
  const remote = (f: Facts) => (f.remote === null ? (f.remote = parseIp(f.req.remoteIp ?? f.req.sourceIp)) : f.remote);
  const ips = (blocks: readonly string[] | undefined, negate: boolean, read: (f: Facts) => { version: 4 | 6; value: bigint } | undefined) => {
    if (!blocks?.length) return;
    const parsed = blocks.map(parseIpBlock).filter((b): b is IpBlock => b !== undefined);
    if (parsed.length !== blocks.length) throw new TypeError("invalid ip block in authorization policy");
    parts.push((f) => {
      const ip = read(f);
      if (ip === undefined) return negate || isDeny;
      return parsed.some((b) => ipInBlock(ip, b)) !== negate;
    });
  };
  ips(src.ipBlocks, false, source);
  ips(src.notIpBlocks, true, source);
  ips(src.remoteIpBlocks, false, remote);
  ips(src.notRemoteIpBlocks, true, remote);
  return allOf(parts);
}

function compileCondition(c: AuthzConditionConfig, isDeny: boolean): Check {
  const read = conditionReader(c.key);
  const isIp = c.key === "source.ip" || c.key === "remote.ip";
  // Which identity the key belongs to: when the request never authenticated at that layer, a DENY
  // counts the condition as matching (the client chose the absence). A token that simply lacks a claim
  // is the issuer's statement, not the client's choice: the condition just does not match.
  const unauthenticated: ((f: Facts) => boolean) | undefined = c.key.startsWith("request.auth.")
    ? (f) => f.req.requestPrincipal === undefined
    : c.key === "source.principal" || c.key === "source.namespace"
      ? (f) => f.req.sourcePrincipal === undefined
      : undefined;
  const match = isIp ? ipPatterns(c.values) : c.values ? listPatterns(c.values) : undefined;
  const notMatch = isIp ? ipPatterns(c.notValues) : c.notValues ? listPatterns(c.notValues) : undefined;
  return (f) => {
    const value = read(f);
    if (value === undefined) {
      if (isDeny && unauthenticated?.(f)) return true;
      return match === undefined;
    }
    if (match && !match(value)) return false;
    if (notMatch && notMatch(value)) return false;
    return true;
  };
}

type Value = string | readonly string[];

function conditionReader(key: string): (f: Facts) => Value | undefined {
  if (key.startsWith("request.auth.claims[")) {
    const path = [...key.slice("request.auth.claims".length).matchAll(/\[([^\[\]]+)\]/g)].map((m) => m[1]!);
    return (f) => claimValue(f.req.claims, path);
  }
  if (key.startsWith("request.headers[")) {
    const name = key.slice("request.headers[".length, -1).toLowerCase();
    return (f) => {
      const v = f.req.headers[name];
      return v === undefined ? undefined : typeof v === "string" ? v : v.join(",");
    };
  }
  switch (key) {
    case "request.auth.principal":
      return (f) => f.req.requestPrincipal;
    case "request.auth.audiences":
      return (f) => claimValue(f.req.claims, ["aud"]);
    case "request.auth.presenter":
      return (f) => claimValue(f.req.claims, ["azp"]);
    case "source.principal":
      return (f) => (f.req.sourcePrincipal === undefined ? undefined : stripSpiffe(f.req.sourcePrincipal));
    case "source.namespace":
      return (f) => namespaceOf(f.req.sourcePrincipal);
    case "source.ip":
      return (f) => f.req.sourceIp;
    case "remote.ip":
      return (f) => f.req.remoteIp ?? f.req.sourceIp;
    case "destination.port":
      return (f) => (f.req.port === undefined ? undefined : String(f.req.port));
  }
  throw new TypeError(`unsupported condition key ${key}`);
}

/**
 * claimValue reads a (nested) claim as a string or a list of strings; objects and missing claims
 * read as undefined.
 * @example
 * claimValue({ realm: { roles: ["admin"] } }, ["realm", "roles"]) // ["admin"]
 */
export function claimValue(claims: Readonly<Record<string, unknown>> | undefined, path: readonly string[]): Value | undefined {
  let cur: unknown = claims;
  for (const part of path) {
    if (cur === null || typeof cur !== "object" || Array.isArray(cur)) return undefined;
    if (!Object.prototype.hasOwnProperty.call(cur, part)) return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  if (typeof cur === "string") return cur;
  if (typeof cur === "number" || typeof cur === "boolean") return String(cur);
  if (Array.isArray(cur)) return cur.filter((x) => typeof x === "string" || typeof x === "number" || typeof x === "boolean").map(String);
  return undefined;
}

function listPatterns(values: readonly string[]): (value: Value) => boolean {
  const m = patterns(values);
  return (value) => (typeof value === "string" ? m(value) : value.some(m));
}

function ipPatterns(values: readonly string[] | undefined): ((value: Value) => boolean) | undefined {
  if (!values) return undefined;
  const blocks = values.map(parseIpBlock);
  if (blocks.some((b) => b === undefined)) throw new TypeError("invalid ip block in authorization condition");
  return (value) => typeof value === "string" && (blocks as IpBlock[]).some((b) => ipInBlock(value, b));
}

/**
 * patterns compiles Istio string patterns: exact, `prefix*`, `*suffix`, and `*` (any non-empty value).
 * @example
 * patterns(["/api/*", "*.json"])("/api/v1") // true
 */
export function patterns(list: readonly string[]): Matcher {
  const exact = new Set<string>();
  const prefixes: string[] = [];
  const suffixes: string[] = [];
  let any = false;
  for (const p of list) {
    if (p === "*") any = true;
    else if (p.endsWith("*")) prefixes.push(p.slice(0, -1));
    else if (p.startsWith("*")) suffixes.push(p.slice(1));
    else exact.add(p);
  }
  return (value) => {
    if (any) return value !== "";
    if (exact.has(value)) return true;
    for (const p of prefixes) if (value.startsWith(p)) return true;
    for (const s of suffixes) if (value.endsWith(s)) return true;
    return false;
  };
}

function anyOf(checks: readonly Check[]): Check {
  if (checks.length === 1) return checks[0]!;
  return (f) => checks.some((c) => c(f));
}

function allOf(checks: readonly Check[]): Check {
  if (checks.length === 0) return () => true;
  if (checks.length === 1) return checks[0]!;
  return (f) => checks.every((c) => c(f));
}

function stripSpiffe(id: string): string {
  return id.startsWith("spiffe://") ? id.slice(9) : id;
}

/** The namespace in a SPIFFE ID `spiffe://<td>/ns/<ns>/sa/<sa>`. */
function namespaceOf(spiffeId: string | undefined): string | undefined {
  if (spiffeId === undefined) return undefined;
  const m = /^(?:spiffe:\/\/)?[^/]+\/ns\/([^/]+)\//.exec(spiffeId);
  return m?.[1];
}

function hostWithoutPort(authority: string): string {
  const a = authority.toLowerCase();
  if (a.startsWith("[")) {
    const close = a.indexOf("]");
    return close < 0 ? a : a.slice(0, close + 1);
  }
  const colon = a.lastIndexOf(":");
  return colon >= 0 && a.indexOf(":") === colon ? a.slice(0, colon) : a;
}

/** A proxied TCP connection as connection authorization sees it. */
export interface ConnectionPeer {
  /** Local port the connection arrived on. */
  readonly localPort: number;
  readonly clientIp: string;
  /** The mTLS peer, when the connection came over mesh mTLS. */
  readonly peer?: { readonly spiffeId: string };
}

/**
 * compileConnectionAuthz compiles a policy set's authorization for raw TCP connections, with Istio's
 * TCP semantics (principal, namespace, address and port decide; rules with HTTP-only fields never
 * allow and, in DENY, have those fields ignored). JWT and rate limits are HTTP-only and do not apply.
 * @example
 * const allowed = compileConnectionAuthz(service.inbound);
 * allowed({ localPort: 5432, clientIp: "10.0.0.7", peer: { spiffeId } }) // true or false
 */
export function compileConnectionAuthz(policy: PolicySetConfig | undefined): (connection: ConnectionPeer) => boolean {
  const authz = compileAuthz(policy?.authz ?? [], policy?.pathNormalization ?? { encodedSlashes: "keep", caseInsensitive: false });
  return (c) =>
    authz.evaluate({
      tcp: true,
      method: "",
      authority: "",
      path: "",
      headers: {},
      port: c.localPort,
      sourceIp: c.clientIp,
      sourcePrincipal: c.peer?.spiffeId,
    }).allowed;
}
