import { exportJWK, generateKeyPair, SignJWT, type JSONWebKeySet, type JWK, type JWTPayload } from "jose";
import { validatePolicySet, type PolicySetConfig, type PolicySetInput } from "../config/index.ts";
import { createPolicyGate, type PolicyDecision } from "./gate.ts";
import type { FetchJwks } from "./jwt.ts";

/** Issuer of tokens from mintJwt. */
export const TEST_ISSUER = "https://issuer.weft.test";

/** A request to check, with friendly defaults (GET, host `example.com`, source IP 10.0.0.1). */
export interface CheckRequest {
  readonly method?: string;
  readonly path: string;
  readonly host?: string;
  readonly headers?: Readonly<Record<string, string | readonly string[]>>;
  /** Peer SPIFFE ID (as if it came over mTLS), e.g. `spiffe://cluster.local/ns/shop/sa/web`. */
  readonly principal?: string;
  /** Verified-token identity without a token: claims (and optionally the `iss/sub` principal). */
  readonly claims?: Readonly<Record<string, unknown>>;
  readonly requestPrincipal?: string;
  /** A real token, sent as `Authorization: Bearer <token>` and verified (see mintJwt). */
  readonly token?: string;
  readonly sourceIp?: string;
  readonly remoteIp?: string;
  readonly port?: number;
}

/** The decision for one checked request. */
export interface CheckResult {
  readonly allowed: boolean;
  /** 200, 401, 403 or 429. */
  readonly status: number;
  /** `allowed`, `jwt_invalid`, `denied` or `rate_limited`. */
  readonly reason: PolicyDecision["reason"];
  /** Finer cause (`denied_by_policy`, `no_allow_match`, `jwt_expired`, ...). */
  readonly detail: PolicyDecision["detail"];
  /** The authz policy or rate limit that decided. */
  readonly policy?: string;
  readonly rule?: number;
  readonly decision: PolicyDecision;
  /** One line naming the stage, policy and rule that decided. */
  explain(): string;
}

export interface CheckOptions {
  /** Clock for token times and rate limits (default Date.now). */
  readonly now?: () => number;
  /** How jwksUri keys are loaded; default: every URI serves the keys of the test issuers (offline). */
  readonly fetchJwks?: FetchJwks;
  /** More issuers whose keys every jwksUri serves (the default test issuer always is). */
  readonly issuers?: readonly TestIssuer[];
}

/**
 * checkPolicy compiles a policy set once so tests can ask what it decides for requests, offline:
 * jwksUri issuers are served the test keys, so tokens from mintJwt verify.
 * @example
 * const policy = checkPolicy({ authz: [{ name: "no-admin", action: "DENY", rules: [{ to: [{ paths: ["/admin*"] }] }] }] });
 * const r = await policy.request({ path: "/admin/users" });
 * assert.equal(r.allowed, false); // r.explain(): "denied (denied_by_policy) by DENY policy no-admin rule 0 ..."
 */
export function checkPolicy(policySet: PolicySetInput | PolicySetConfig, options: CheckOptions = {}): { request(req: CheckRequest): Promise<CheckResult> } {
  const valid = validatePolicySet(policySet);
  if (!valid.ok) throw new TypeError(`invalid policy set:\n${valid.issues.map((i) => `  ${i.path}: ${i.message}`).join("\n")}`);
  const config = valid.value;
  const issuers = [defaultIssuer(), ...(options.issuers ?? [])];
  const fetchJwks: FetchJwks = options.fetchJwks ?? (async () => ({ keys: (await Promise.all(issuers.map((i) => i.jwks()))).flatMap((s) => s.keys) }));
  const gate = createPolicyGate(config, { now: options.now, fetchJwks });
  const actions = new Map((config.authz ?? []).map((p) => [p.name, p.action]));
  return {
    async request(req) {
      const headers: Record<string, string | readonly string[]> = {};
      for (const [name, value] of Object.entries(req.headers ?? {})) headers[name.toLowerCase()] = value;
      if (req.token !== undefined) headers.authorization = `Bearer ${req.token}`;
      const identity =
        req.claims !== undefined || req.requestPrincipal !== undefined
          ? { claims: req.claims, requestPrincipal: req.requestPrincipal ?? (req.claims ? `${String(req.claims.iss ?? "")}/${String(req.claims.sub ?? "")}` : undefined) }
          : undefined;
      const decision = await gate.decide(
        {
          method: (req.method ?? "GET").toUpperCase(),
          authority: req.host ?? "example.com",
          path: req.path,
          headers,
          port: req.port,
          sourceIp: req.sourceIp ?? "10.0.0.1",
          remoteIp: req.remoteIp,
          sourcePrincipal: req.principal,
        },
        identity,
      );
      return {
        allowed: decision.allowed,
        status: decision.status,
        reason: decision.reason,
        detail: decision.detail,
        policy: decision.policy,
        rule: decision.rule,
        decision,
        explain: () => explainDecision(decision, decision.policy ? actions.get(decision.policy) : undefined),
      };
    },
  };
}

/** Alias of checkPolicy, as the docs write it: `import { check } from "weft/testing"`. */
export const check = checkPolicy;

/**
 * explainDecision names the stage, policy and rule behind a decision in one line.
 * @example
 * explainDecision(decision) // "denied (no_allow_match) at authz: no ALLOW policy matched path /x"
 */
export function explainDecision(d: PolicyDecision, action?: string): string {
  const who = d.requestPrincipal ? ` request principal ${d.requestPrincipal}` : " anonymous";
  const path = d.normalizedPath ? ` path ${d.normalizedPath}` : "";
  const audit = d.audited.length ? `; audited by ${d.audited.join(", ")}` : "";
  if (d.stage === "authn") return `${d.reason} (${d.detail}) at authn: the token was refused${audit}`;
  if (d.stage === "authz" && !d.allowed) {
    if (d.detail === "denied_by_policy") return `denied (denied_by_policy) by DENY policy ${d.policy} rule ${d.rule} for${who}${path}${audit}`;
    if (d.detail === "no_allow_match") return `denied (no_allow_match) at authz: no ALLOW policy matched${who}${path}${audit}`;
    return `denied (${d.detail}) at authz${path}${audit}`;
  }
  if (!d.allowed) return `rate_limited (${d.detail}) by limit ${d.policy}${audit}`;
  const by = d.policy ? `by ${action ?? "ALLOW"} policy ${d.policy} rule ${d.rule}` : "with no ALLOW policy to match";
  return `allowed ${by} for${who}${path}${audit}`;
}

/** A signing identity for tests: its JWKS and a way to mint tokens it signs. */
export interface TestIssuer {
  readonly issuer: string;
  readonly kid: string;
  jwks(): Promise<JSONWebKeySet>;
  mint(claims?: Readonly<Record<string, unknown>>, options?: MintOptions): Promise<string>;
}

export interface MintOptions {
  /** `aud` claim (default: none). */
  readonly audience?: string | readonly string[];
  /** Lifetime from `now` (default 3600 s); negative makes an expired token. */
  readonly expiresInSec?: number;
  /** `nbf` relative to `now`, in seconds (default: none). */
  readonly notBeforeSec?: number;
  /** Clock in ms (default Date.now). */
  readonly now?: number;
  /** Header `kid` override (default the issuer's). */
  readonly kid?: string;
  /** Leave out `exp` entirely. */
  readonly noExpiry?: boolean;
}

/**
 * createTestIssuer makes an ES256 key pair and signs real tokens with it, for offline tests.
 * @example
 * const idp = createTestIssuer({ issuer: "https://idp.test", kid: "k2" });
 * const token = await idp.mint({ sub: "alice", role: "admin" });
 */
export function createTestIssuer(options: { issuer?: string; kid?: string } = {}): TestIssuer {
  const issuer = options.issuer ?? TEST_ISSUER;
  const kid = options.kid ?? "weft-test-key";
  const keys = generateKeyPair("ES256", { extractable: true }).then(async (pair) => {
    const pub: JWK = { ...(await exportJWK(pair.publicKey)), kid, alg: "ES256", use: "sig" };
    return { pair, jwks: { keys: [pub] } as JSONWebKeySet };
  });
  return {
    issuer,
    kid,
    jwks: async () => (await keys).jwks,
    async mint(claims = {}, o = {}) {
      const { pair } = await keys;
      const nowSec = Math.floor((o.now ?? Date.now()) / 1000);
      const payload: JWTPayload = { iss: issuer, sub: "test-user", iat: nowSec, ...claims };
      if (!o.noExpiry && payload.exp === undefined) payload.exp = nowSec + (o.expiresInSec ?? 3600);
      if (o.notBeforeSec !== undefined) payload.nbf = nowSec + o.notBeforeSec;
      if (o.audience !== undefined) payload.aud = typeof o.audience === "string" ? o.audience : [...o.audience];
      return new SignJWT(payload).setProtectedHeader({ alg: "ES256", kid: o.kid ?? kid, typ: "JWT" }).sign(pair.privateKey);
    },
  };
}

let fallbackIssuer: TestIssuer | undefined;
function defaultIssuer(): TestIssuer {
  return (fallbackIssuer ??= createTestIssuer());
}

/**
 * mintJwt signs a real token with the default test key (issuer `https://issuer.weft.test`, 1 h life);
 * checkPolicy serves that key for every jwksUri, so the token verifies offline.
 * @example
 * const token = await mintJwt({ sub: "alice", groups: ["admins"] }, { audience: "shop" });
 * await checkPolicy(policy).request({ path: "/orders", token });
 */
export function mintJwt(claims: Readonly<Record<string, unknown>> = {}, options: MintOptions = {}): Promise<string> {
  return defaultIssuer().mint(claims, options);
}

/**
 * testJwks is the key set of the default test issuer, for an inline `jwks` in a test policy.
 * @example
 * const policy = { authn: { jwt: [{ issuer: "https://issuer.weft.test", jwks: await testJwks() }] } };
 */
export function testJwks(): Promise<JSONWebKeySet> {
  return defaultIssuer().jwks();
}
