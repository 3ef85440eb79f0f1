import type { JWTPayload } from "jose";
import type { Bus } from "../bus/index.ts";
import type { PolicySetConfig } from "../config/index.ts";
import { compileAuthz, type AuthzReason, type AuthzRequest } from "./authz.ts";
import { parseIp } from "./ip-block.ts";
import { createJwtAuthenticator, type FetchJwks, type JwksSource, type JwtFailure } from "./jwt.ts";
import { createGlobalRateLimiter, createLocalRateLimiter } from "./ratelimit.ts";

/** What the gate reads from the engine's RequestHead (declared here: policy sits below the engine). */
export interface PolicyHead {
  readonly method: string;
  readonly authority: string;
  readonly path: string;
  readonly headers: AuthzRequest["headers"];
  readonly clientIp: string;
  readonly localPort: number;
  readonly peer?: { readonly spiffeId: string };
}

/** The gate's answer, the shape of the engine's PolicyVerdict (shared/proxy/engine.ts). */
export type PolicyVerdict =
  | {
      readonly ok: true;
      readonly principal?: string;
      readonly requestHeaders?: readonly (readonly [string, string])[];
      readonly removeHeaders?: readonly string[];
      readonly responseHeaders?: readonly (readonly [string, string])[];
    }
  | { readonly ok: false; readonly reason: "jwt_invalid" | "denied" | "rate_limited"; readonly headers?: readonly (readonly [string, string])[] };

/** A request as the policy engine sees it, before authentication. */
export interface PolicyRequest extends Omit<AuthzRequest, "requestPrincipal" | "claims"> {}

/** An identity established outside the gate (the test kit's `claims`), skipping token verification. */
export interface PresetIdentity {
  readonly requestPrincipal?: string;
  readonly claims?: Readonly<Record<string, unknown>>;
}

/** The full policy decision with its trail; the engine sees the smaller PolicyVerdict. */
export interface PolicyDecision {
  readonly allowed: boolean;
  /** 200 allowed, 401 bad token, 403 denied (or token for another audience), 429 rate limited. */
  readonly status: 200 | 401 | 403 | 429;
  /** The engine's reason: `allowed`, `jwt_invalid`, `denied` or `rate_limited`. */
  readonly reason: "allowed" | "jwt_invalid" | "denied" | "rate_limited";
  /** Finer cause: a JwtFailure, an AuthzReason, `rate_limited` or `rls_unavailable`. */
  readonly detail: JwtFailure | AuthzReason | "rate_limited" | "rls_unavailable";
  /** Stage that decided: authn, authz or ratelimit. */
  readonly stage: "authn" | "authz" | "ratelimit";
  /** The authz policy or rate limit that decided, when one did. */
  readonly policy?: string;
  readonly rule?: number;
  readonly audited: readonly string[];
  readonly requestPrincipal?: string;
  readonly claims?: Readonly<JWTPayload>;
  readonly normalizedPath?: string;
  /** Response headers: WWW-Authenticate on 401, rate-limit fields. */
  readonly headers: readonly (readonly [string, string])[];
  /** Upstream header changes when allowed. */
  readonly requestHeaders: readonly (readonly [string, string])[];
  readonly removeHeaders: readonly string[];
}

/** State worth keeping across config swaps: fetched keys, so a new config does not refetch them. */
export interface PolicyShared {
  readonly jwksSources: Map<string, JwksSource>;
}

/**
 * createPolicyShared makes the state several gates (one per config swap) may share.
 * @example
 * const shared = createPolicyShared();
 * createGatewayView(snapshot, "ingress", { createPolicy: (p) => createPolicyGate(p, { shared }) });
 */
export function createPolicyShared(): PolicyShared {
  return { jwksSources: new Map() };
}

export interface PolicyGateOptions {
  readonly now?: () => number;
  readonly fetchJwks?: FetchJwks;
  /** Needed for global rate limits; without it they apply their failure mode. */
  readonly bus?: Bus;
  /** Counter domain for global limits: the gateway or service name (default "default"). */
  readonly domain?: string;
  /** x-forwarded-for hops to trust for `remoteIpBlocks` and `remoteIp` keys (default 0). */
  readonly xffTrustedHops?: number;
  readonly shared?: PolicyShared;
}

/** The engine's PolicyGate plus the full decision, for the test kit and `explain`. */
export interface PolicyEngineGate {
  /** False when the set asks for nothing (no authn, authz or limits): the proxy may skip the step. */
  readonly active: boolean;
  evaluate(head: PolicyHead): Promise<PolicyVerdict>;
  decide(request: PolicyRequest, identity?: PresetIdentity): Promise<PolicyDecision>;
}

/**
 * createPolicyGate compiles a policy set once into the request-path gate: authentication (JWT) →
 * authorization (RBAC) → rate limits (local, then global). Failures become the engine's reasons:
 * `jwt_invalid` (401), `denied` (403), `rate_limited` (429).
 * @example
 * const view = createGatewayView(snapshot, "ingress", { createPolicy: (p) => createPolicyGate(p, { bus, domain: "ingress" }) });
 */
export function createPolicyGate(policySet: PolicySetConfig, options: PolicyGateOptions = {}): PolicyEngineGate {
  const now = options.now ?? Date.now;
  const paths = policySet.pathNormalization ?? { encodedSlashes: "keep", caseInsensitive: false };
  const authn = createJwtAuthenticator(policySet.authn?.jwt ?? [], { now, fetchJwks: options.fetchJwks, jwksSources: options.shared?.jwksSources });
  const authz = compileAuthz(policySet.authz ?? [], paths);
  const local = createLocalRateLimiter(policySet.rateLimit?.local ?? [], paths, now);
  const globalLimits = policySet.rateLimit?.global ?? [];
  const global = createGlobalRateLimiter(globalLimits, paths, {
    bus: options.bus ?? unreachableBus,
    domain: options.domain ?? "default",
    now,
  });
  const hops = options.xffTrustedHops ?? 0;
  const active = authn.active || authz.active || local.active || global.active;

  async function decide(req: PolicyRequest, identity?: PresetIdentity): Promise<PolicyDecision> {
    let requestPrincipal = identity?.requestPrincipal;
    let claims = identity?.claims as Readonly<JWTPayload> | undefined;
    let requestHeaders: readonly (readonly [string, string])[] = [];
    let removeHeaders: readonly string[] = [];
    if (!identity && authn.active) {
      const r = await authn.authenticate(req.headers);
      if (!r.ok) {
        return {
          allowed: false,
          status: r.status,
          reason: r.status === 401 ? "jwt_invalid" : "denied",
          detail: r.failure,
          stage: "authn",
          audited: [],
          headers: r.headers,
          requestHeaders: [],
          removeHeaders: [],
        };
      }
      requestPrincipal = r.requestPrincipal;
      claims = r.claims;
      requestHeaders = r.requestHeaders;
      removeHeaders = r.removeHeaders;
    }
    // Plain literals, not spreads: object spread costs microseconds per request on V8 here.
    const full: AuthzRequest = requestPrincipal === undefined && claims === undefined ? req : withIdentity(req, requestPrincipal, claims);
    const z = authz.evaluate(full);
    if (!z.allowed) {
      return {
        allowed: false, status: 403, reason: "denied", detail: z.reason, stage: "authz", policy: z.policy, rule: z.rule,
        audited: z.audited, normalizedPath: z.normalizedPath, headers: [], requestPrincipal, claims, requestHeaders, removeHeaders,
      };
    }
    const l = local.check(full);
    if (!l.allowed) {
      return {
        allowed: false, status: 429, reason: "rate_limited", detail: l.detail, stage: "ratelimit", policy: l.limit, rule: undefined,
        audited: z.audited, normalizedPath: z.normalizedPath, headers: l.headers, requestPrincipal, claims, requestHeaders, removeHeaders,
      };
    }
    const g = await global.check(full);
    if (!g.allowed) {
      return {
        allowed: false, status: 429, reason: "rate_limited", detail: g.detail, stage: "ratelimit", policy: g.limit, rule: undefined,
        audited: z.audited, normalizedPath: z.normalizedPath, headers: g.headers, requestPrincipal, claims, requestHeaders, removeHeaders,
      };
    }
    return {
      allowed: true, status: 200, reason: "allowed", detail: "allowed", stage: "ratelimit", policy: z.policy, rule: z.rule,
      audited: z.audited, normalizedPath: z.normalizedPath, headers: g.headers.length ? g.headers : l.headers,
      requestPrincipal, claims, requestHeaders, removeHeaders,
    };
  }

  const pass: Promise<PolicyVerdict> = Promise.resolve({ ok: true });

  return {
    active,
    decide,
    evaluate(head: PolicyHead): Promise<PolicyVerdict> {
      if (!active) return pass;
      return decide(policyRequestOf(head, hops)).then(toVerdict);
    },
  };
}

/**
 * activeGate gives the gate only when it has something to enforce, so an empty policy set costs
 * the request path nothing.
 * @example createGatewayView(snapshot, "ingress", { createPolicy: (p) => activeGate(createPolicyGate(p)) })
 */
export function activeGate(gate: PolicyEngineGate): PolicyEngineGate | undefined {
  return gate.active ? gate : undefined;
}

/**
 * policyRequestOf reads what policy needs from the engine's request head.
 * @example
 * policyRequestOf(head, 1).remoteIp // the client address one trusted proxy reported
 */
export function policyRequestOf(head: PolicyHead, xffTrustedHops: number): PolicyRequest {
  return {
    method: head.method,
    authority: head.authority,
    path: head.path,
    headers: head.headers,
    port: head.localPort,
    sourceIp: head.clientIp,
    remoteIp: xffTrustedHops > 0 ? remoteIpOf(head.headers["x-forwarded-for"], head.clientIp, xffTrustedHops) : head.clientIp,
    sourcePrincipal: head.peer?.spiffeId,
  };
}

/** The request with the identity authentication established (every AuthzRequest field listed: no spread on the request path). */
function withIdentity(req: PolicyRequest, requestPrincipal: string | undefined, claims: Readonly<JWTPayload> | undefined): AuthzRequest {
  return {
    method: req.method,
    authority: req.authority,
    path: req.path,
    headers: req.headers,
    port: req.port,
    sourceIp: req.sourceIp,
    remoteIp: req.remoteIp,
    sourcePrincipal: req.sourcePrincipal,
    requestPrincipal,
    claims,
  };
}


function toVerdict(d: PolicyDecision): PolicyVerdict {
  if (!d.allowed) return { ok: false, reason: d.reason as "jwt_invalid" | "denied" | "rate_limited", headers: d.headers };
  return {
    ok: true,
    principal: d.requestPrincipal,
    requestHeaders: d.requestHeaders,
    removeHeaders: d.removeHeaders,
    responseHeaders: d.headers,
  };
}

/** The client address `hops` trusted proxies away, as the engine's access log reads it (proxy/headers.ts trustedClientIp). */
function remoteIpOf(xff: string | readonly string[] | undefined, peer: string, hops: number): string {
  if (xff === undefined) return peer;
  const list = (typeof xff === "string" ? xff : xff.join(",")).split(",");
  const index = list.length - hops;
  const candidate = index >= 0 ? list[index]?.trim() : undefined;
  return candidate && parseIp(candidate) ? candidate : peer;
}

const unreachableBus: Bus = {
  publish() {},
  subscribe: () => ({ unsubscribe() {} }),
  request: async () => ({ ok: false, reason: "no_responders" }),
  kv: () => Promise.reject(new Error("no bus")),
  flush: async () => {},
  onStatus: () => () => {},
  close: async () => {},
};
