import type { CertificateAuthority, SignFailure } from "./ca.ts";
import { parseCsr } from "./csr.ts";
import { verifyJoinToken, type JoinTokenKey } from "./join-token.ts";
import { workloadId } from "./spiffe-id.ts";

/** What a proxy presents to prove who it is: a join token, or a Kubernetes service-account token. */
export type Attestation = { kind: "join_token"; token: string } | { kind: "k8s_sa_token"; token: string };

export type AttestationFailure =
  | "unsupported_attestation"
  | "join_token_expired"
  | "join_token_invalid"
  | "join_token_reused"
  | "sa_token_invalid";

export type AttestationResult =
  | { ok: true; namespace: string; serviceAccount: string }
  | { ok: false; reason: AttestationFailure };

/** Checks an attestation and says which namespace/service account it proves. */
export type VerifyAttestation = (attestation: Attestation) => Promise<AttestationResult>;

/** Kubernetes TokenReview, injected: the control plane wires the real API call. */
export type ReviewServiceAccountToken = (
  token: string,
) => Promise<{ ok: true; namespace: string; serviceAccount: string } | { ok: false }>;

export type SignRequest = { csrPem: string; attestation: Attestation };

export type SignResponseFailure = "bad_request" | "request_too_large" | "id_not_attested" | AttestationFailure | SignFailure;

export type SignResponse =
  | { ok: true; spiffeId: string; chainPem: string[]; bundlePem: string[]; notAfter: string }
  | { ok: false; reason: SignResponseFailure };

export type AttestationVerifierOptions = {
  /** Secret for join tokens; without it join tokens are refused. */
  joinTokenKey?: JoinTokenKey;
  /** TokenReview; without it service-account tokens are refused. */
  reviewServiceAccountToken?: ReviewServiceAccountToken;
  now?: () => number;
  /** Each join token works once: remembered in memory until it expires. Default false. */
  singleUse?: boolean;
  /** Replaces the in-memory single-use memory (e.g. a KV create): true if the id was not used before. */
  claimTokenId?: (tokenId: string, expiresAt: number) => boolean | Promise<boolean>;
};

/**
 * createAttestationVerifier checks join tokens (HMAC) and service-account tokens (TokenReview).
 * @example const verify = createAttestationVerifier({ joinTokenKey, reviewServiceAccountToken: tokenReview });
 */
export function createAttestationVerifier(options: AttestationVerifierOptions): VerifyAttestation {
  const now = options.now ?? Date.now;
  const used = new Map<string, number>();
  const claim =
    options.claimTokenId ??
    (options.singleUse
      ? (id: string, expiresAt: number) => {
          const t = now();
          for (const [k, exp] of used) if (exp < t) used.delete(k);
          if (used.has(id)) return false;
          used.set(id, expiresAt);
          return true;
        }
      : undefined);

  return async function verifyAttestation(a) {
    if (a.kind === "join_token" && options.joinTokenKey) {
      const r = await verifyJoinToken(a.token, options.joinTokenKey, now());
      if (!r.ok) return { ok: false, reason: r.reason === "expired" ? "join_token_expired" : "join_token_invalid" };
      if (claim && !(await claim(r.tokenId, r.expiresAt))) return { ok: false, reason: "join_token_reused" };
      return { ok: true, namespace: r.namespace, serviceAccount: r.serviceAccount };
    }
    if (a.kind === "k8s_sa_token" && options.reviewServiceAccountToken) {
      let r: Awaited<ReturnType<ReviewServiceAccountToken>>;
      try {
        r = await options.reviewServiceAccountToken(a.token);
      } catch {
        // TokenReview unreachable: fail closed.
        return { ok: false, reason: "sa_token_invalid" };
      }
      return r.ok ? { ok: true, namespace: r.namespace, serviceAccount: r.serviceAccount } : { ok: false, reason: "sa_token_invalid" };
    }
    return { ok: false, reason: "unsupported_attestation" };
  };
}

/**
 * serviceAccountFromUsername reads namespace and name from a TokenReview username
 * (`system:serviceaccount:<ns>:<sa>`); null for any other user.
 * @example serviceAccountFromUsername("system:serviceaccount:default:web") // { namespace: "default", serviceAccount: "web" }
 */
export function serviceAccountFromUsername(username: string): { namespace: string; serviceAccount: string } | null {
  const m = /^system:serviceaccount:([a-z0-9]([a-z0-9-]*[a-z0-9])?):([a-z0-9]([a-z0-9.-]*[a-z0-9])?)$/.exec(username);
  return m ? { namespace: m[1]!, serviceAccount: m[3]! } : null;
}

const MAX_REQUEST_BYTES = 64 * 1024;

/**
 * handleSignRequest makes the `weft.ca.sign` handler: JSON `{ csrPem, attestation }` in, JSON
 * SignResponse out. It signs only `spiffe://<td>/ns/<ns>/sa/<sa>` that the attestation proves.
 * @example bus.reply("weft.ca.sign", handleSignRequest(ca, createAttestationVerifier({ joinTokenKey })));
 */
export function handleSignRequest(
  ca: CertificateAuthority,
  verifyAttestation: VerifyAttestation,
  options: { ttlMs?: number } = {},
): (request: Uint8Array) => Promise<Uint8Array> {
  const encode = (r: SignResponse) => new TextEncoder().encode(JSON.stringify(r));
  return async function signRequest(request) {
    if (request.byteLength > MAX_REQUEST_BYTES) return encode({ ok: false, reason: "request_too_large" });
    const req = parseRequest(request);
    if (!req) return encode({ ok: false, reason: "bad_request" });
    // Parse the CSR before attesting, so an unreadable request never spends a single-use token.
    const csr = parseCsr(req.csrPem);
    if (csr === null) return encode({ ok: false, reason: "bad_csr" });
    const asked = csr.uriSans;
    const attested = await verifyAttestation(req.attestation);
    if (!attested.ok) return encode({ ok: false, reason: attested.reason });
    const spiffeId = workloadId(ca.trustDomain, attested.namespace, attested.serviceAccount);
    // The CSR may name no ID, or exactly the attested one; anything else is a request for an
    // identity the caller has not proven.
    if (asked.length > 1 || (asked.length === 1 && asked[0] !== spiffeId)) return encode({ ok: false, reason: "id_not_attested" });
    const signed = await ca.sign(csr, { spiffeId, ...(options.ttlMs !== undefined ? { ttlMs: options.ttlMs } : {}) });
    if (!signed.ok) return encode({ ok: false, reason: signed.reason });
    return encode({ ok: true, spiffeId, chainPem: signed.chainPem, bundlePem: ca.bundle(), notAfter: signed.notAfter.toISOString() });
  };
}

function parseRequest(bytes: Uint8Array): SignRequest | null {
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    return null;
  }
  if (typeof v !== "object" || v === null) return null;
  const { csrPem, attestation } = v as Record<string, unknown>;
  if (typeof csrPem !== "string" || typeof attestation !== "object" || attestation === null) return null;
  const { kind, token } = attestation as Record<string, unknown>;
  if ((kind !== "join_token" && kind !== "k8s_sa_token") || typeof token !== "string") return null;
  return { csrPem, attestation: { kind, token } };
}

/**
 * encodeSignRequest is the proxy side of `weft.ca.sign`: the request bytes for a CSR and an attestation.
 * @example const reply = await bus.request("weft.ca.sign", encodeSignRequest({ csrPem, attestation: { kind: "join_token", token } }));
 */
export function encodeSignRequest(request: SignRequest): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(request));
}

/**
 * decodeSignResponse reads the CA's reply bytes; a reply that does not parse is `bad_request`.
 * @example const r = decodeSignResponse(reply); if (r.ok) useSvid(r.chainPem, keyPem);
 */
export function decodeSignResponse(bytes: Uint8Array): SignResponse {
  try {
    const v = JSON.parse(new TextDecoder().decode(bytes)) as SignResponse;
    if (v && typeof v === "object" && typeof v.ok === "boolean") return v;
  } catch {
    // fall through
  }
  return { ok: false, reason: "bad_request" };
}
