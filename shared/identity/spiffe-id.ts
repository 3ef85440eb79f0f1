/** A parsed SPIFFE ID: `spiffe://<trustDomain><path>`; path is "" or starts with "/". */
export type SpiffeId = { readonly trustDomain: string; readonly path: string };

export type SpiffeIdError =
  | "empty"
  | "too_long"
  | "wrong_scheme"
  | "bad_trust_domain"
  | "bad_path";

export type SpiffeIdResult = ({ ok: true } & SpiffeId) | { ok: false; reason: SpiffeIdError };

// SPIFFE ID standard §2: trust domain [a-z0-9._-], path segments [A-Za-z0-9._-], no empty,
// "." or ".." segments, no trailing slash, no query/fragment/port/userinfo; at most 2048 bytes.
const TRUST_DOMAIN = /^[a-z0-9._-]+$/;
const SEGMENT = /^[A-Za-z0-9._-]+$/;
const SCHEME = "spiffe://";
const MAX_BYTES = 2048;

/**
 * parseSpiffeId checks a URI against the SPIFFE ID rules and splits it into trust domain and path.
 * @example parseSpiffeId("spiffe://example.org/ns/default/sa/web") // { ok: true, trustDomain: "example.org", path: "/ns/default/sa/web" }
 */
export function parseSpiffeId(uri: string): SpiffeIdResult {
  if (uri.length === 0) return { ok: false, reason: "empty" };
  if (new TextEncoder().encode(uri).length > MAX_BYTES) return { ok: false, reason: "too_long" };
  // The scheme is matched case-sensitively on purpose: the standard requires lowercase "spiffe".
  if (!uri.startsWith(SCHEME)) return { ok: false, reason: "wrong_scheme" };
  const rest = uri.slice(SCHEME.length);
  const slash = rest.indexOf("/");
  const trustDomain = slash === -1 ? rest : rest.slice(0, slash);
  const path = slash === -1 ? "" : rest.slice(slash);
  if (!isTrustDomain(trustDomain)) return { ok: false, reason: "bad_trust_domain" };
  if (path !== "") {
    const segments = path.slice(1).split("/");
    for (const s of segments) {
      if (!SEGMENT.test(s) || s === "." || s === "..") return { ok: false, reason: "bad_path" };
    }
  }
  return { ok: true, trustDomain, path };
}

/**
 * isTrustDomain tells whether a string is a valid SPIFFE trust domain name.
 * @example isTrustDomain("example.org") // true
 */
export function isTrustDomain(name: string): boolean {
  return name.length > 0 && name.length <= 255 && TRUST_DOMAIN.test(name);
}

/**
 * workloadId builds the SPIFFE ID weft gives a workload: `spiffe://<td>/ns/<ns>/sa/<sa>`.
 * @example workloadId("example.org", "default", "web") // "spiffe://example.org/ns/default/sa/web"
 */
export function workloadId(trustDomain: string, namespace: string, serviceAccount: string): string {
  return `${SCHEME}${trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
}

/**
 * parseWorkloadId reads namespace and service account back out of a weft workload SPIFFE ID.
 * @example parseWorkloadId("spiffe://example.org/ns/default/sa/web") // { ok: true, trustDomain: "example.org", namespace: "default", serviceAccount: "web" }
 */
export function parseWorkloadId(
  uri: string,
): { ok: true; trustDomain: string; namespace: string; serviceAccount: string } | { ok: false; reason: SpiffeIdError | "not_a_workload_id" } {
  const id = parseSpiffeId(uri);
  if (!id.ok) return id;
  const parts = id.path.split("/");
  if (parts.length !== 5 || parts[1] !== "ns" || parts[3] !== "sa") return { ok: false, reason: "not_a_workload_id" };
  return { ok: true, trustDomain: id.trustDomain, namespace: parts[2]!, serviceAccount: parts[4]! };
}
