import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify, type JSONWebKeySet, type JWTPayload, type JWTVerifyGetKey } from "jose";
import type { JwtProviderConfig } from "../config/index.ts";
import { claimValue, type AuthzHeaders } from "./authz.ts";
import { createLru } from "./lru.ts";

/** Why a present token was refused; stable codes for logs, tests and `explain`. */
export type JwtFailure =
  | "jwt_malformed"
  | "jwt_too_large"
  | "jwt_multiple_tokens"
  | "jwt_unknown_issuer"
  | "jwt_alg_not_allowed"
  | "jwt_unknown_kid"
  | "jwt_bad_signature"
  | "jwt_expired"
  | "jwt_not_yet_valid"
  | "jwt_wrong_audience"
  | "jwt_missing_claim"
  | "jwks_unavailable";

/** The outcome of request authentication. */
export type AuthnResult =
  | {
      readonly ok: true;
      /** `<iss>/<sub>`; absent when the request carried no token (anonymous). */
      readonly requestPrincipal?: string;
      readonly claims?: Readonly<JWTPayload>;
      /** Headers to set upstream (claims copied out, a cookie header without the token). */
      readonly requestHeaders: readonly (readonly [string, string])[];
      /** Headers to drop upstream (the token unless forwarded; client-sent claim headers). */
      readonly removeHeaders: readonly string[];
      /** The issuer that verified the token. */
      readonly issuer?: string;
    }
  | {
      readonly ok: false;
      readonly failure: JwtFailure;
      /** 401 for an invalid token; 403 for a valid token meant for another audience (as Envoy). */
      readonly status: 401 | 403;
      readonly headers: readonly (readonly [string, string])[];
    };

/** Fetches a JSON Web Key Set; the default uses fetch with a 5 s timeout. */
export type FetchJwks = (uri: string) => Promise<unknown>;

/** Where the keys of one issuer come from: a fixed set or a URI, cached. */
export interface JwksSource {
  readonly getKey: JWTVerifyGetKey;
  /** Changes whenever the key set changes, so tokens verified under old keys are checked again. */
  generation(): number;
}

export interface JwksSourceOptions {
  readonly uri?: string;
  readonly jwks?: JSONWebKeySet;
  readonly fetchJwks?: FetchJwks;
  readonly now?: () => number;
  /** Keys are refreshed (in the background, old ones kept meanwhile) after this long (default 600000). */
  readonly cacheMs?: number;
  /** Least time between fetches caused by unknown `kid`s or failures (default 30000). */
  readonly cooldownMs?: number;
}

const MAX_JWKS_BYTES = 1 << 20;

/** Marks "no keys could be loaded at all": the token is refused (fail closed). */
class JwksUnavailable extends Error {
  readonly code = "WEFT_JWKS_UNAVAILABLE";
}

/**
 * defaultFetchJwks GETs a key set over HTTP(S) with a 5 s timeout and a 1 MiB bound.
 * @example
 * const jwks = await defaultFetchJwks("https://issuer.example/.well-known/jwks.json");
 */
export async function defaultFetchJwks(uri: string): Promise<unknown> {
  const res = await fetch(uri, { signal: AbortSignal.timeout(5000), redirect: "error", headers: { accept: "application/json" } });
  if (!res.ok) throw new Error(`jwks fetch: HTTP ${res.status}`);
  const text = await res.text();
  if (text.length > MAX_JWKS_BYTES) throw new Error("jwks fetch: too large");
  return JSON.parse(text);
}

/**
 * createJwksSource serves keys for one issuer. With a URI the set is fetched on first use, used
 * while fresh, refreshed in the background when stale (keys already known keep working if the
 * endpoint is down), and refetched at once for an unknown `kid` at most once per cooldown; an
 * unknown `kid` that is still unknown afterwards fails closed.
 * @example
 * const keys = createJwksSource({ uri: "https://issuer/jwks.json" });
 * await jwtVerify(token, keys.getKey, { algorithms: ["RS256"] });
 */
export function createJwksSource(options: JwksSourceOptions): JwksSource {
  const now = options.now ?? Date.now;
  const fetchJwks = options.fetchJwks ?? defaultFetchJwks;
  const cacheMs = options.cacheMs ?? 600_000;
  const cooldownMs = options.cooldownMs ?? 30_000;
  let generation = 0;
  let keySet: ReturnType<typeof createLocalJWKSet> | undefined;
  let text = "";
  let fetchedAt = -Infinity;
  let attemptedAt = -Infinity;
  let inflight: Promise<void> | undefined;

  if (options.jwks) {
    keySet = createLocalJWKSet(options.jwks);
    generation = 1;
  } else if (!options.uri) {
    throw new TypeError("createJwksSource needs uri or jwks");
  }

  function refresh(): Promise<void> {
    if (inflight) return inflight;
    attemptedAt = now();
    inflight = (async () => {
      try {
        const body = await fetchJwks(options.uri!);
        if (!body || typeof body !== "object" || !Array.isArray((body as JSONWebKeySet).keys)) throw new Error("jwks: no keys array");
        const next = createLocalJWKSet(body as JSONWebKeySet);
        const nextText = JSON.stringify(body);
        if (nextText !== text) {
          text = nextText;
          keySet = next;
          generation++;
        }
        fetchedAt = now();
      } catch {
        // Keep the keys we have: a key endpoint that is down must not break tokens it already vouched for.
      } finally {
        inflight = undefined;
      }
    })();
    return inflight;
  }

  async function current(): Promise<ReturnType<typeof createLocalJWKSet>> {
    if (options.uri) {
      if (!keySet) {
        if (now() - attemptedAt >= cooldownMs || attemptedAt === -Infinity) await refresh();
        else if (inflight) await inflight;
      } else if (now() - fetchedAt >= cacheMs && now() - attemptedAt >= cooldownMs) {
        void refresh();
      }
    }
    if (!keySet) throw new JwksUnavailable("no keys could be loaded");
    return keySet;
  }

  const getKey: JWTVerifyGetKey = async (header, token) => {
    const set = await current();
    try {
      return await set(header, token);
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (!options.uri || code !== "ERR_JWKS_NO_MATCHING_KEY" || now() - attemptedAt < cooldownMs) throw err;
      await refresh();
      return (await current())(header, token);
    }
  };

  return { getKey, generation: () => generation };
}

export interface JwtAuthenticatorOptions {
  readonly now?: () => number;
  readonly fetchJwks?: FetchJwks;
  /** Verified tokens remembered for their remaining lifetime (default 10000). */
  readonly maxCachedTokens?: number;
  /** Key sources shared across config swaps, keyed by JWKS URI (so a swap does not refetch keys). */
  readonly jwksSources?: Map<string, JwksSource>;
}

/** Request authentication for a list of issuers. */
export interface JwtAuthenticator {
  authenticate(headers: AuthzHeaders): Promise<AuthnResult>;
  /** False when no issuer is configured: every request is anonymous and nothing is removed. */
  readonly active: boolean;
}

interface Location {
  readonly key: string;
  readonly kind: "header" | "cookie";
  readonly name: string;
  readonly prefix: string;
}

interface Provider {
  readonly config: JwtProviderConfig;
  readonly keys: JwksSource;
  readonly locations: ReadonlySet<string>;
}

interface CachedToken {
  readonly provider: Provider;
  readonly generation: number;
  readonly expiresAtMs: number;
  readonly principal: string;
  readonly claims: Readonly<JWTPayload>;
  readonly claimHeaders: readonly (readonly [string, string])[];
}

const CLAIM_HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const WWW_AUTHENTICATE = 'Bearer realm="weft", error="invalid_token"';

/**
 * createJwtAuthenticator verifies bearer tokens against configured issuers (Istio RequestAuthentication):
 * a present token must verify (else 401 `jwt_invalid` with WWW-Authenticate), no token passes as anonymous.
 * Algorithms are pinned per issuer (`none` never), `exp` is required, clock skew is bounded, and a token
 * in two places is refused. Verified tokens are cached (LRU) until they expire or their keys change.
 * @example
 * const authn = createJwtAuthenticator(policy.authn.jwt);
 * const r = await authn.authenticate({ authorization: "Bearer eyJ..." });
 * if (r.ok) r.requestPrincipal // "https://issuer/user-1"
 */
export function createJwtAuthenticator(providers: readonly JwtProviderConfig[], options: JwtAuthenticatorOptions = {}): JwtAuthenticator {
  const now = options.now ?? Date.now;
  const cache = createLru<CachedToken>(options.maxCachedTokens ?? 10_000);
  const locations = new Map<string, Location>();
  const byIssuer = new Map<string, Provider>();
  const claimHeaderNames = new Set<string>();
  for (const config of providers) {
    const mine = new Set<string>();
    for (const h of config.fromHeaders) {
      const name = h.name.toLowerCase();
      const key = `header:${name}:${h.prefix ?? ""}`;
      locations.set(key, { key, kind: "header", name, prefix: h.prefix ?? "" });
      mine.add(key);
    }
    for (const c of config.fromCookies ?? []) {
      const key = `cookie:${c}`;
      locations.set(key, { key, kind: "cookie", name: c, prefix: "" });
      mine.add(key);
    }
    for (const o of config.outputClaimToHeaders ?? []) claimHeaderNames.add(o.header.toLowerCase());
    let keys: JwksSource;
    if (config.jwksUri) {
      const shared = options.jwksSources?.get(config.jwksUri);
      keys = shared ?? createJwksSource({ uri: config.jwksUri, fetchJwks: options.fetchJwks, now, cacheMs: config.jwksCacheMs, cooldownMs: config.jwksCooldownMs });
      options.jwksSources?.set(config.jwksUri, keys);
    } else {
      keys = createJwksSource({ jwks: config.jwks as JSONWebKeySet, now });
    }
    byIssuer.set(config.issuer, { config, keys, locations: mine });
  }
  const alwaysRemove = [...claimHeaderNames];
  const maxTokenBytes = Math.max(0, ...providers.map((p) => p.maxTokenBytes));
  const anonymous: AuthnResult = { ok: true, requestHeaders: [], removeHeaders: alwaysRemove };
  const fail = (failure: JwtFailure, status: 401 | 403 = 401): AuthnResult => ({
    ok: false,
    failure,
    status,
    headers: status === 401 ? [["www-authenticate", WWW_AUTHENTICATE]] : [],
  });

  async function authenticate(headers: AuthzHeaders): Promise<AuthnResult> {
    const found: { location: Location; token: string }[] = [];
    let cookies: Map<string, string[]> | undefined;
    for (const location of locations.values()) {
      if (location.kind === "header") {
        const raw = headers[location.name];
        const values = raw === undefined ? [] : typeof raw === "string" ? [raw] : raw;
        for (const value of values) {
          const token = stripPrefix(value, location.prefix);
          if (token !== undefined) found.push({ location, token });
        }
      } else {
        cookies ??= parseCookies(headers.cookie);
        for (const token of cookies.get(location.name) ?? []) found.push({ location, token });
      }
    }
    if (found.length === 0) return anonymous;
    // One request, one identity: two tokens (two places, or one header repeated) cannot be told apart safely.
    if (found.length > 1) return fail("jwt_multiple_tokens");
    const { location, token } = found[0]!;
    if (token.includes(",")) return fail("jwt_multiple_tokens");
    // Bounded before any decoding, so an oversize token costs nothing.
    if (token.length > maxTokenBytes) return fail("jwt_too_large");

    const hit = cache.get(token);
    if (hit && hit.provider.locations.has(location.key)) {
      if (hit.generation === hit.provider.keys.generation() && now() < hit.expiresAtMs) {
        return success(hit, location, headers);
      }
      cache.delete(token);
    }

    let issuer: unknown;
    let alg: unknown;
    try {
      alg = decodeProtectedHeader(token).alg;
      issuer = decodeJwt(token).iss;
    } catch {
      return fail("jwt_malformed");
    }
    const provider = typeof issuer === "string" ? byIssuer.get(issuer) : undefined;
    if (!provider || !provider.locations.has(location.key)) return fail("jwt_unknown_issuer");
    const config = provider.config;
    if (token.length > config.maxTokenBytes) return fail("jwt_too_large");
    if (typeof alg !== "string" || alg === "none" || !(config.algorithms as readonly string[]).includes(alg)) return fail("jwt_alg_not_allowed");

    const generation = provider.keys.generation();
    let payload: JWTPayload;
    try {
      const verified = await jwtVerify(token, provider.keys.getKey, {
        issuer: config.issuer,
        audience: config.audiences?.length ? [...config.audiences] : undefined,
        algorithms: [...config.algorithms],
        clockTolerance: config.clockSkewSec,
        currentDate: new Date(now()),
        requiredClaims: ["exp"],
      });
      payload = verified.payload;
    } catch (err) {
      const failure = failureOf(err);
      return fail(failure, failure === "jwt_wrong_audience" ? 403 : 401);
    }
    const principal = `${payload.iss}/${payload.sub ?? ""}`;
    const claimHeaders: [string, string][] = [];
    for (const o of config.outputClaimToHeaders ?? []) {
      const value = claimValue(payload, [o.claim]) ?? claimValue(payload, o.claim.split("."));
      if (value === undefined) continue;
      const text = typeof value === "string" ? value : value.join(",");
      // A claim is attacker-influenced text: CR/LF or other controls would inject headers, so it is dropped.
      if (text.length <= 8192 && CLAIM_HEADER_VALUE.test(text)) claimHeaders.push([o.header.toLowerCase(), text]);
    }
    const entry: CachedToken = {
      provider,
      generation,
      expiresAtMs: (payload.exp ?? 0) * 1000 + config.clockSkewSec * 1000,
      principal,
      claims: Object.freeze(payload),
      claimHeaders,
    };
    cache.set(token, entry);
    return success(entry, location, headers);
  }

  function success(entry: CachedToken, location: Location, headers: AuthzHeaders): AuthnResult {
    const requestHeaders: (readonly [string, string])[] = [...entry.claimHeaders];
    const removeHeaders = [...alwaysRemove];
    if (!entry.provider.config.forwardOriginalToken) {
      removeHeaders.push(location.kind === "header" ? location.name : "cookie");
      if (location.kind === "cookie") {
        const rest = cookieHeaderWithout(headers.cookie, location.name);
        if (rest) requestHeaders.push(["cookie", rest]);
      }
    }
    return { ok: true, requestPrincipal: entry.principal, claims: entry.claims, requestHeaders, removeHeaders, issuer: entry.provider.config.issuer };
  }

  return { authenticate, active: providers.length > 0 };
}

function failureOf(err: unknown): JwtFailure {
  if (err instanceof JwksUnavailable) return "jwks_unavailable";
  const e = err as { code?: string; claim?: string; reason?: string };
  switch (e.code) {
    case "ERR_JWT_EXPIRED":
      return "jwt_expired";
    case "ERR_JWT_CLAIM_VALIDATION_FAILED":
      if (e.reason === "missing") return "jwt_missing_claim";
      if (e.claim === "nbf" || e.claim === "iat") return "jwt_not_yet_valid";
      if (e.claim === "aud") return "jwt_wrong_audience";
      if (e.claim === "iss") return "jwt_unknown_issuer";
      return "jwt_malformed";
    case "ERR_JOSE_ALG_NOT_ALLOWED":
    case "ERR_JOSE_NOT_SUPPORTED":
      return "jwt_alg_not_allowed";
    case "ERR_JWKS_NO_MATCHING_KEY":
    case "ERR_JWKS_MULTIPLE_MATCHING_KEYS":
      return "jwt_unknown_kid";
    case "ERR_JWS_SIGNATURE_VERIFICATION_FAILED":
      return "jwt_bad_signature";
    default:
      return "jwt_malformed";
  }
}

function stripPrefix(value: string, prefix: string): string | undefined {
  if (prefix === "") return value.trim() || undefined;
  // The auth scheme is case-insensitive (RFC 9110 §11.1); another scheme (Basic) is not a JWT.
  if (value.length <= prefix.length || value.slice(0, prefix.length).toLowerCase() !== prefix.toLowerCase()) return undefined;
  return value.slice(prefix.length).trim() || undefined;
}

function parseCookies(raw: string | readonly string[] | undefined): Map<string, string[]> {
  const out = new Map<string, string[]>();
  if (raw === undefined) return out;
  for (const line of typeof raw === "string" ? [raw] : raw) {
    for (const part of line.split(";")) {
      const eq = part.indexOf("=");
      if (eq < 0) continue;
      const name = part.slice(0, eq).trim();
      const value = part.slice(eq + 1).trim();
      if (!value) continue;
      const list = out.get(name);
      if (list) list.push(value);
      else out.set(name, [value]);
    }
  }
  return out;
}

function cookieHeaderWithout(raw: string | readonly string[] | undefined, name: string): string {
  if (raw === undefined) return "";
  const parts: string[] = [];
  for (const line of typeof raw === "string" ? [raw] : raw) {
    for (const part of line.split(";")) {
      const trimmed = part.trim();
      if (!trimmed) continue;
      const eq = trimmed.indexOf("=");
      if ((eq < 0 ? trimmed : trimmed.slice(0, eq).trim()) === name) continue;
      parts.push(trimmed);
    }
  }
  return parts.join("; ");
}
