import { splitPem, x509 } from "./x509.ts";
import { parseSpiffeId } from "./spiffe-id.ts";

export type SvidFailure =
  | "no_certificate"
  | "malformed"
  | "not_a_leaf"
  | "bad_key_usage"
  | "no_uri_san"
  | "multiple_uri_sans"
  | "invalid_spiffe_id"
  | "wrong_trust_domain"
  | "id_mismatch"
  | "expired"
  | "not_yet_valid"
  | "untrusted"
  | "issuer_not_ca"
  | "path_too_long";

export type SvidCheck = { ok: true; spiffeId: string } | { ok: false; reason: SvidFailure };

export type SvidRules = {
  /** The trust domain the peer must belong to; its bundle is the one to validate against. */
  trustDomain: string;
  /** The peer must have exactly this ID, or one of these. */
  expectedId?: string | readonly string[];
};

/** An X.509-SVID this process holds: its chain (leaf first), its key, and when it stops being valid. */
export type Svid = {
  readonly spiffeId: string;
  readonly chainPem: readonly string[];
  readonly keyPem: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
};

const MAX_CHAIN = 5;
const CA_USAGES = x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign;

/**
 * checkSvidLeaf applies the SPIFFE X.509-SVID leaf rules and the caller's ID rules to one certificate,
 * synchronously, so it fits node:tls `checkServerIdentity` once node:tls has verified the chain.
 * @example checkSvidLeaf(new Uint8Array(peer.raw), { trustDomain: "example.org", expectedId: "spiffe://example.org/ns/default/sa/api" })
 */
export function checkSvidLeaf(cert: string | Uint8Array, rules: SvidRules & { now?: number }): SvidCheck {
  let leaf: x509.X509Certificate;
  try {
    leaf = new x509.X509Certificate(typeof cert === "string" ? cert : toArrayBuffer(cert));
  } catch {
    return { ok: false, reason: "malformed" };
  }
  return checkLeaf(leaf, rules);
}

function checkLeaf(leaf: x509.X509Certificate, rules: SvidRules & { now?: number }): SvidCheck {
  let bc: x509.BasicConstraintsExtension | null;
  let ku: x509.KeyUsagesExtension | null;
  let sans: x509.SubjectAlternativeNameExtension[];
  try {
    bc = leaf.getExtension(x509.BasicConstraintsExtension);
    ku = leaf.getExtension(x509.KeyUsagesExtension);
    sans = leaf.getExtensions(x509.SubjectAlternativeNameExtension);
  } catch {
    return { ok: false, reason: "malformed" };
  }
  // X.509-SVID §4.1, §4.3: a leaf is not a CA and never carries keyCertSign/cRLSign.
  if (bc?.ca) return { ok: false, reason: "not_a_leaf" };
  if (ku && (ku.usages & CA_USAGES) !== 0) return { ok: false, reason: "not_a_leaf" };
  if (!ku || (ku.usages & x509.KeyUsageFlags.digitalSignature) === 0) return { ok: false, reason: "bad_key_usage" };
  const uris = sans.flatMap((s) => s.names.items.filter((n) => n.type === "url").map((n) => n.value));
  if (uris.length === 0) return { ok: false, reason: "no_uri_san" };
  if (uris.length > 1) return { ok: false, reason: "multiple_uri_sans" };
  const spiffeId = uris[0]!;
  const id = parseSpiffeId(spiffeId);
  if (!id.ok || id.path === "") return { ok: false, reason: "invalid_spiffe_id" };
  if (id.trustDomain !== rules.trustDomain) return { ok: false, reason: "wrong_trust_domain" };
  if (rules.expectedId !== undefined) {
    const allowed = typeof rules.expectedId === "string" ? [rules.expectedId] : rules.expectedId;
    if (!allowed.includes(spiffeId)) return { ok: false, reason: "id_mismatch" };
  }
  if (rules.now !== undefined) {
    const dated = checkDates(leaf, rules.now);
    if (dated) return { ok: false, reason: dated };
  }
  return { ok: true, spiffeId };
}

/**
 * validateSvid verifies an SVID chain (leaf first) up to a root of the peer trust domain's bundle —
 * signature, validity and CA constraints on every link — and then the SPIFFE ID rules.
 * @example
 * const r = await validateSvid(chainPem, bundlePem, { now: Date.now(), trustDomain: "example.org" });
 * if (r.ok) principal = r.spiffeId;
 */
export async function validateSvid(
  chainPem: readonly string[],
  bundlePem: readonly string[],
  options: SvidRules & { now: number },
): Promise<SvidCheck> {
  const pems = chainPem.flatMap((p) => splitPem(p));
  if (pems.length === 0) return { ok: false, reason: "no_certificate" };
  let chain: x509.X509Certificate[];
  let roots: x509.X509Certificate[];
  try {
    chain = pems.map((p) => new x509.X509Certificate(p));
    roots = bundlePem.flatMap((p) => splitPem(p)).map((p) => new x509.X509Certificate(p));
  } catch {
    return { ok: false, reason: "malformed" };
  }
  const leaf = chain[0]!;
  const checked = checkLeaf(leaf, { ...options, now: options.now });
  if (!checked.ok) return checked;
  // An empty bundle trusts nothing from the domain (SPIFFE trust domain and bundle §4).
  if (roots.length === 0) return { ok: false, reason: "untrusted" };

  const intermediates = chain.slice(1);
  let current = leaf;
  for (let depth = 0; depth <= MAX_CHAIN; depth++) {
    const root = await findIssuer(current, roots);
    if (root) return (await checkIssuer(root, depth, options.now)) ?? checked;
    const next = await findIssuer(current, intermediates);
    if (!next) return { ok: false, reason: "untrusted" };
    const bad = await checkIssuer(next, depth, options.now);
    if (bad) return bad;
    current = next;
  }
  return { ok: false, reason: "path_too_long" };
}

async function findIssuer(cert: x509.X509Certificate, candidates: readonly x509.X509Certificate[]) {
  for (const c of candidates) {
    if (c.subject !== cert.issuer) continue;
    try {
      if (await cert.verify({ publicKey: c.publicKey, signatureOnly: true })) return c;
    } catch {
      // A candidate whose key cannot verify this signature is simply not the issuer.
    }
  }
  return undefined;
}

/** depth counts the CA certificates below this issuer (0 = it signed the leaf). */
async function checkIssuer(ca: x509.X509Certificate, depth: number, now: number): Promise<{ ok: false; reason: SvidFailure } | undefined> {
  const dated = checkDates(ca, now);
  if (dated) return { ok: false, reason: dated };
  const bc = ca.getExtension(x509.BasicConstraintsExtension);
  if (!bc?.ca) return { ok: false, reason: "issuer_not_ca" };
  const ku = ca.getExtension(x509.KeyUsagesExtension);
  if (ku && (ku.usages & x509.KeyUsageFlags.keyCertSign) === 0) return { ok: false, reason: "issuer_not_ca" };
  if (bc.pathLength !== undefined && depth > bc.pathLength) return { ok: false, reason: "path_too_long" };
  return undefined;
}

function checkDates(cert: x509.X509Certificate, now: number): "expired" | "not_yet_valid" | undefined {
  if (now < cert.notBefore.getTime()) return "not_yet_valid";
  if (now > cert.notAfter.getTime()) return "expired";
  return undefined;
}

/**
 * nextRefreshAt tells when to renew an SVID received at `receivedAt`: half its remaining life, moved by
 * up to ±10% of it (SPIRE's jitter) so a fleet issued together does not renew together. notBefore is
 * not used because leaves are backdated for clock skew.
 * @example setTimeout(renew, nextRefreshAt(svid, Date.now()) - Date.now())
 */
export function nextRefreshAt(svid: Pick<Svid, "notAfter">, receivedAt: number, random: () => number = Math.random): number {
  const life = Math.max(0, svid.notAfter.getTime() - receivedAt);
  const jitter = (random() * 2 - 1) * 0.1 * life;
  return receivedAt + life / 2 + jitter;
}

/**
 * svidTlsOptions gives the node:tls options for mutual TLS with an SVID: own chain and key, the peer
 * domain's bundle as `ca`, client certificates required and verified.
 * @example tls.createServer({ ...svidTlsOptions(svid, bundlePem), minVersion: "TLSv1.3" }, onSecure)
 */
export function svidTlsOptions(svid: Pick<Svid, "chainPem" | "keyPem">, bundlePem: readonly string[]) {
  return {
    key: svid.keyPem,
    cert: svid.chainPem.join(""),
    ca: [...bundlePem],
    requestCert: true,
    rejectUnauthorized: true,
  };
}

function toArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
}
