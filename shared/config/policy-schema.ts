import * as v from "valibot";

// Bounds keep a hostile or mistyped policy from hurting a proxy at request time.
const MAX_LIST = 1024;
const MAX_POLICIES = 1024;
const DAY_MS = 24 * 3600 * 1000;

const HeaderName = v.pipe(v.string(), v.regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, "must be a valid HTTP header name"));
const NonEmpty = v.pipe(v.string(), v.minLength(1, "must not be empty"), v.maxLength(4096));
const List = <T extends v.GenericSchema>(item: T) => v.pipe(v.array(item), v.maxLength(MAX_LIST, `must have at most ${MAX_LIST} entries`));
const Count = (min: number, max: number) => v.pipe(v.number(), v.integer("must be an integer"), v.minValue(min), v.maxValue(max));
const Url = v.pipe(v.string(), v.regex(/^https?:\/\/[^\s]+$/, "must be an http:// or https:// URL"));

/** A value pattern: exact, `prefix*`, `*suffix` or `*` (any present value); a `*` anywhere else is refused. */
const Pattern = v.pipe(
  NonEmpty,
  v.check((s) => s === "*" || !s.slice(1, -1).includes("*"), "'*' is allowed only at the start or the end"),
  v.check((s) => s === "*" || !(s.startsWith("*") && s.endsWith("*")), "'*' is allowed at the start or the end, not both"),
);
const PathPattern = v.pipe(
  Pattern,
  v.check((s) => s.startsWith("/") || s.startsWith("*"), "must start with '/' (or be a '*suffix' pattern)"),
);

const IPV4_CIDR = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(\/(\d{1,2}))?$/;
/** An IPv4 or IPv6 address or CIDR block (`10.0.0.0/8`, `2001:db8::/32`). */
const IpBlock = v.pipe(
  v.string(),
  v.check((s) => {
    const m = IPV4_CIDR.exec(s);
    if (m) return [m[1], m[2], m[3], m[4]].every((o) => Number(o) <= 255) && (m[6] === undefined || Number(m[6]) <= 32);
    const [addr, bits, extra] = s.split("/");
    if (extra !== undefined || !addr || !/^[0-9a-f:.]+$/i.test(addr) || !addr.includes(":")) return false;
    if (bits !== undefined && (!/^\d{1,3}$/.test(bits) || Number(bits) > 128)) return false;
    return (addr.match(/::/g) ?? []).length <= 1;
  }, "must be an IPv4 or IPv6 address or CIDR block"),
);

const Method = v.pipe(v.string(), v.regex(/^[A-Z]+$|^\*$/, "must be an upper-case HTTP method"));

/** Who sends the request (Istio `source`); each list is OR, the lists AND. */
export const AuthzSourceSchema = v.strictObject({
  /** Peer SPIFFE IDs from mTLS, with or without `spiffe://` (`cluster.local/ns/a/sa/b`, `prefix*`, `*suffix`, `*`). */
  principals: v.optional(List(Pattern)),
  notPrincipals: v.optional(List(Pattern)),
  /** Request principals from a verified JWT: `<iss>/<sub>` patterns. */
  requestPrincipals: v.optional(List(Pattern)),
  notRequestPrincipals: v.optional(List(Pattern)),
  /** Namespaces of the peer (read from its SPIFFE ID). */
  namespaces: v.optional(List(Pattern)),
  notNamespaces: v.optional(List(Pattern)),
  /** The TCP peer address. */
  ipBlocks: v.optional(List(IpBlock)),
  notIpBlocks: v.optional(List(IpBlock)),
  /** The original client address, from x-forwarded-for as far as the trusted hops allow. */
  remoteIpBlocks: v.optional(List(IpBlock)),
  notRemoteIpBlocks: v.optional(List(IpBlock)),
});

/** What the request asks for (Istio `operation`); each list is OR, the lists AND. */
export const AuthzOperationSchema = v.strictObject({
  /** Host names (port ignored, case-insensitive), exact, `prefix*` or `*suffix`. */
  hosts: v.optional(List(Pattern)),
  notHosts: v.optional(List(Pattern)),
  /** Local ports the request arrived on. */
  ports: v.optional(List(Count(1, 65535))),
  notPorts: v.optional(List(Count(1, 65535))),
  methods: v.optional(List(Method)),
  notMethods: v.optional(List(Method)),
  /** Paths (no query), matched after normalisation: exact, `/prefix*`, `*suffix`, `*`. */
  paths: v.optional(List(PathPattern)),
  notPaths: v.optional(List(PathPattern)),
});

const WHEN_KEY = /^(request\.auth\.claims(\[[^\[\]]+\])+|request\.headers\[[!#$%&'*+.^_`|~0-9A-Za-z-]+\]|request\.auth\.(principal|audiences|presenter)|source\.(ip|principal|namespace)|remote\.ip|destination\.port)$/;

/** An extra condition; `values` OR, `notValues` none may match. */
export const AuthzConditionSchema = v.pipe(
  v.strictObject({
    /** `request.auth.claims[name]` (nested: `[a][b]`; list claims match on any element), `request.headers[name]`,
     * `request.auth.principal|audiences|presenter`, `source.ip|principal|namespace`, `remote.ip`, `destination.port`. */
    key: v.pipe(v.string(), v.regex(WHEN_KEY, "must be a supported key such as request.auth.claims[role], request.headers[x-name] or source.ip")),
    values: v.optional(List(Pattern)),
    notValues: v.optional(List(Pattern)),
  }),
  v.check((c) => c.values !== undefined || c.notValues !== undefined, "needs values or notValues"),
);

/** One rule: every `from`, `to` and `when` part must hold; an empty rule matches every request. */
export const AuthzRuleSchema = v.strictObject({
  /** Any entry may match (OR); default: any source. */
  from: v.optional(List(AuthzSourceSchema)),
  /** Any entry may match (OR); default: any operation. */
  to: v.optional(List(AuthzOperationSchema)),
  /** Every condition must hold (AND). */
  when: v.optional(List(AuthzConditionSchema)),
});

/** An authorization policy with Istio semantics: DENY first, then ALLOW; AUDIT only records. */
export const AuthzPolicySchema = v.strictObject({
  name: v.pipe(v.string(), v.regex(/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/, "must be 1-128 letters, digits, '.', '_' or '-'")),
  /** ALLOW (default), DENY or AUDIT. */
  action: v.optional(v.picklist(["ALLOW", "DENY", "AUDIT"]), "ALLOW"),
  /** A policy matches when any rule matches; no rules: it never matches (an ALLOW without rules allows nothing). */
  rules: v.optional(List(AuthzRuleSchema), []),
});

// Asymmetric only: an HMAC secret in a key set invites algorithm confusion (an RSA public key used as
// an HS256 secret), and jose refuses symmetric keys from a JWKS anyway. `none` is never listed.
const JWS_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"] as const;

const Jwk = v.looseObject({ kty: v.picklist(["RSA", "EC", "OKP"], "must be an RSA, EC or OKP public key"), kid: v.optional(v.string()) });

/** One JWT issuer the proxy accepts (Istio RequestAuthentication jwtRules). */
export const JwtProviderSchema = v.pipe(
  v.strictObject({
    /** Exact `iss` a token must carry. */
    issuer: NonEmpty,
    /** Accepted `aud` values; a token must carry one of them. Default: any audience. */
    audiences: v.optional(List(NonEmpty)),
    /** Where to fetch the JSON Web Key Set (cached; refetched on an unknown `kid` at most once per cooldown). */
    jwksUri: v.optional(Url),
    /** Inline JSON Web Key Set, instead of jwksUri. */
    jwks: v.optional(v.strictObject({ keys: v.pipe(v.array(Jwk), v.minLength(1), v.maxLength(64)) })),
    /** Headers carrying the token with an optional value prefix (default: `Authorization: Bearer <token>`). */
    fromHeaders: v.optional(List(v.strictObject({ name: HeaderName, prefix: v.optional(v.string()) })), [{ name: "authorization", prefix: "Bearer " }]),
    /** Cookies carrying the token (default none). */
    fromCookies: v.optional(List(v.pipe(v.string(), v.regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, "must be a valid cookie name")))),
    /** Send the token upstream (default false: the header or cookie it came in is removed). */
    forwardOriginalToken: v.optional(v.boolean(), false),
    /** Copy claims into request headers sent upstream; a client-sent header of that name is always removed. */
    outputClaimToHeaders: v.optional(List(v.strictObject({ header: HeaderName, claim: NonEmpty }))),
    /** Leeway for exp/nbf/iat (default 60 s, at most 300 s). */
    clockSkewSec: v.optional(Count(0, 300), 60),
    /** Accepted signature algorithms, asymmetric only (default: all of RS*, PS*, ES*, EdDSA; `none` and HS* are never accepted). */
    algorithms: v.optional(v.pipe(v.array(v.picklist(JWS_ALGORITHMS)), v.minLength(1)), [...JWS_ALGORITHMS]),
    /** Longest token accepted, in bytes (default 8192). */
    maxTokenBytes: v.optional(Count(64, 65536), 8192),
    /** How long fetched keys are used before a refetch (default 600000 ms). */
    jwksCacheMs: v.optional(Count(1000, DAY_MS), 600_000),
    /** Least time between two fetches triggered by unknown `kid`s (default 30000 ms). */
    jwksCooldownMs: v.optional(Count(0, DAY_MS), 30_000),
  }),
  v.check((p) => (p.jwksUri === undefined) !== (p.jwks === undefined), "needs exactly one of jwksUri or jwks"),
);

/** Which requests a rate limit counts; every field given must hold. Default: every request. */
const RateLimitMatch = AuthzOperationSchema;

/** What requests share a bucket; default: all requests share one. */
const RateLimitKey = v.union(
  [
    v.picklist(["none", "sourceIp", "remoteIp", "principal", "requestPrincipal", "path"]),
    v.strictObject({ header: HeaderName }),
    v.strictObject({ claim: NonEmpty }),
  ],
  "must be 'none', 'sourceIp', 'remoteIp', 'principal', 'requestPrincipal', 'path', { header } or { claim }",
);

const BucketFields = {
  name: v.pipe(v.string(), v.regex(/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/, "must be 1-128 letters, digits, '.', '_' or '-'")),
  match: v.optional(RateLimitMatch),
  /** Tokens added per fill interval. */
  tokensPerFill: Count(1, 1_000_000_000),
  fillIntervalMs: Count(1, DAY_MS),
  /** Bucket size: the burst allowed after a quiet period. */
  maxTokens: Count(1, 1_000_000_000),
  key: v.optional(RateLimitKey, "none"),
};

/** A token bucket per key kept by this proxy alone. */
export const LocalRateLimitSchema = v.strictObject({
  ...BucketFields,
  /** Distinct keys kept; the least recently used is forgotten beyond (default 10000). */
  maxKeys: v.optional(Count(1, 1_000_000), 10_000),
});

/** A token bucket per key shared by every replica, kept by the control plane (`weft.rls.check`). */
export const GlobalRateLimitSchema = v.strictObject({
  ...BucketFields,
  /** When the limiter does not answer in time: "open" allows (and applies this bucket locally, see localFallback), "closed" answers 429 (default "open"). */
  failureMode: v.optional(v.picklist(["open", "closed"]), "open"),
  /** With failureMode "open": enforce the same bucket in this proxy alone while the limiter is unreachable (default true). */
  localFallback: v.optional(v.boolean(), true),
  /** How long to wait for the limiter (default 100 ms). */
  timeoutMs: v.optional(Count(1, 10_000), 100),
});

export const RateLimitSetSchema = v.strictObject({
  local: v.optional(List(LocalRateLimitSchema), []),
  global: v.optional(List(GlobalRateLimitSchema), []),
});

/** How paths are prepared before authorization matching (see docs in shared/policy/normalize.ts). */
export const PathNormalizationSchema = v.strictObject({
  /** `%2F`, `%5C` and `\`: "keep" (not separators, default), "decode" (as `/`, then merged), "reject" (denied). */
  encodedSlashes: v.optional(v.picklist(["keep", "decode", "reject"]), "keep"),
  /** Compare paths case-insensitively (default false: `/Admin` is not `/admin`, as for most upstreams). */
  caseInsensitive: v.optional(v.boolean(), false),
});

/** Policy attached to a service's inbound side or to a gateway: mTLS mode, authentication, authorization, rate limits. */
export const PolicySetSchema = v.pipe(
  v.strictObject({
    /** Inbound mTLS: STRICT accepts only mesh peers with a valid SVID; PERMISSIVE also plaintext (default "STRICT"). */
    mtls: v.optional(v.picklist(["STRICT", "PERMISSIVE"]), "STRICT"),
    /** Request authentication: a present token must verify (else 401); no token leaves the request anonymous. */
    authn: v.optional(v.strictObject({ jwt: v.optional(v.pipe(v.array(JwtProviderSchema), v.maxLength(64)), []) })),
    /** Authorization policies (Istio AuthorizationPolicy semantics). */
    authz: v.optional(v.pipe(v.array(AuthzPolicySchema), v.maxLength(MAX_POLICIES))),
    /** Local and global rate limits, checked after authorization. */
    rateLimit: v.optional(RateLimitSetSchema),
    /** Path preparation for authorization (default: keep encoded slashes, case-sensitive). */
    pathNormalization: v.optional(PathNormalizationSchema, {}),
  }),
  v.check((p) => {
    const names = (p.authz ?? []).map((a) => a.name);
    return new Set(names).size === names.length;
  }, "authz policy names must be unique"),
  v.check((p) => {
    const names = [...(p.rateLimit?.local ?? []), ...(p.rateLimit?.global ?? [])].map((r) => r.name);
    return new Set(names).size === names.length;
  }, "rate limit names must be unique"),
  v.check((p) => new Set((p.authn?.jwt ?? []).map((j) => j.issuer)).size === (p.authn?.jwt ?? []).length, "jwt issuers must be unique"),
);

export type PolicySetConfig = v.InferOutput<typeof PolicySetSchema>;
export type PolicySetInput = v.InferInput<typeof PolicySetSchema>;
export type JwtProviderConfig = v.InferOutput<typeof JwtProviderSchema>;
export type AuthzPolicyConfig = v.InferOutput<typeof AuthzPolicySchema>;
export type AuthzRuleConfig = v.InferOutput<typeof AuthzRuleSchema>;
export type AuthzSourceConfig = v.InferOutput<typeof AuthzSourceSchema>;
export type AuthzOperationConfig = v.InferOutput<typeof AuthzOperationSchema>;
export type AuthzConditionConfig = v.InferOutput<typeof AuthzConditionSchema>;
export type LocalRateLimitConfig = v.InferOutput<typeof LocalRateLimitSchema>;
export type GlobalRateLimitConfig = v.InferOutput<typeof GlobalRateLimitSchema>;
export type RateLimitKeyConfig = v.InferOutput<typeof RateLimitKey>;
export type PathNormalizationConfig = v.InferOutput<typeof PathNormalizationSchema>;

/**
 * validatePolicySet checks one policy set on its own (the test kit, `weft explain`), listing every issue.
 * @example
 * const r = validatePolicySet({ authz: [{ name: "x", action: "DENY" }] });
 * if (!r.ok) console.error(r.issues);
 */
export function validatePolicySet(
  input: unknown,
): { readonly ok: true; readonly value: PolicySetConfig } | { readonly ok: false; readonly issues: readonly { readonly path: string; readonly message: string }[] } {
  const parsed = v.safeParse(PolicySetSchema, input, { abortEarly: false });
  if (parsed.success) return { ok: true, value: parsed.output };
  return { ok: false, issues: parsed.issues.map((i) => ({ path: v.getDotPath(i) ?? "(root)", message: i.message })) };
}
