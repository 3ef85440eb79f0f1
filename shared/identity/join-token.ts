import { SignJWT, errors, jwtVerify } from "jose";

/** An HMAC-SHA256 key for join tokens: ≥ 32 random bytes, or a WebCrypto HMAC key. */
export type JoinTokenKey = Uint8Array | CryptoKey;

export type JoinTokenFailure = "expired" | "bad_signature" | "malformed" | "not_yet_valid";

export type JoinTokenResult =
  | { ok: true; namespace: string; serviceAccount: string; tokenId: string; expiresAt: number }
  | { ok: false; reason: JoinTokenFailure };

// A join token is a JWS (HS256) with its own typ and audience, so no other HS256 token signed with
// the same secret can pass for one.
const TYP = "weft-join+jwt";
const AUDIENCE = "weft-ca";
// Kubernetes names (DNS-1123 labels): also valid SPIFFE path segments.
const NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * mintJoinToken makes a token that attests one namespace/service account until `ttlMs` from now.
 * @example const token = await mintJoinToken({ namespace: "default", serviceAccount: "web", ttlMs: 3_600_000 }, key);
 */
export async function mintJoinToken(
  claims: { namespace: string; serviceAccount: string; ttlMs: number; now?: number },
  key: JoinTokenKey,
): Promise<string> {
  if (!NAME.test(claims.namespace) || !NAME.test(claims.serviceAccount)) throw new Error("join token: namespace and service account must be DNS-1123 labels");
  if (!Number.isFinite(claims.ttlMs) || claims.ttlMs <= 0) throw new Error("join token: ttlMs must be positive");
  checkKey(key);
  const nowSec = Math.floor((claims.now ?? Date.now()) / 1000);
  return new SignJWT({ ns: claims.namespace, sa: claims.serviceAccount })
    .setProtectedHeader({ alg: "HS256", typ: TYP })
    .setAudience(AUDIENCE)
    .setJti(crypto.randomUUID())
    .setIssuedAt(nowSec)
    .setExpirationTime(nowSec + Math.ceil(claims.ttlMs / 1000))
    .sign(key);
}

/**
 * verifyJoinToken checks a join token's signature, type and expiry, and returns what it attests and
 * its id (`tokenId`, for a caller that wants single use: remember it until `expiresAt`).
 * @example const r = await verifyJoinToken(token, key, Date.now()); if (r.ok) id = workloadId(td, r.namespace, r.serviceAccount);
 */
export async function verifyJoinToken(token: string, key: JoinTokenKey, now: number): Promise<JoinTokenResult> {
  checkKey(key);
  try {
    const { payload } = await jwtVerify(token, key, {
      algorithms: ["HS256"],
      typ: TYP,
      audience: AUDIENCE,
      requiredClaims: ["exp", "jti", "ns", "sa"],
      currentDate: new Date(now),
    });
    const { ns, sa, jti, exp } = payload;
    if (typeof ns !== "string" || typeof sa !== "string" || !NAME.test(ns) || !NAME.test(sa) || typeof jti !== "string" || exp === undefined) {
      return { ok: false, reason: "malformed" };
    }
    return { ok: true, namespace: ns, serviceAccount: sa, tokenId: jti, expiresAt: exp * 1000 };
  } catch (e) {
    if (e instanceof errors.JWTExpired) return { ok: false, reason: "expired" };
    if (e instanceof errors.JWSSignatureVerificationFailed) return { ok: false, reason: "bad_signature" };
    if (e instanceof errors.JWTClaimValidationFailed && (e.claim === "nbf" || e.claim === "iat")) return { ok: false, reason: "not_yet_valid" };
    return { ok: false, reason: "malformed" };
  }
}

/**
 * generateJoinTokenKey makes a fresh 256-bit secret for signing join tokens.
 * @example const key = generateJoinTokenKey();
 */
export function generateJoinTokenKey(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(32));
}

function checkKey(key: JoinTokenKey): void {
  // RFC 7518 §3.2: an HS256 key must be at least as long as the hash output.
  if (key instanceof Uint8Array && key.length < 32) throw new Error("join token key must be at least 32 bytes");
}
