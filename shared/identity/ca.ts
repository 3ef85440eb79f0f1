import { EC_KEY, EC_SIGN, randomSerial, toHex, splitPem, toPem, x509 } from "./x509.ts";
import { isTrustDomain, parseSpiffeId } from "./spiffe-id.ts";
import { parseCsr, type ParsedCsr } from "./csr.ts";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
/** Leaves are backdated this much so a peer whose clock runs a little behind still accepts them. */
export const CLOCK_SKEW_MS = 5 * MINUTE;

export type SignFailure =
  | "bad_csr"
  | "bad_csr_signature"
  | "unsupported_key"
  | "invalid_spiffe_id"
  | "wrong_trust_domain"
  | "bad_ttl"
  | "issuer_expired";

export type SignResult =
  | { ok: true; chainPem: string[]; notAfter: Date; spiffeId: string; serialNumber: string }
  | { ok: false; reason: SignFailure };

export type RotationFailure = "rotation_in_progress" | "no_pending_root" | "not_switched";

/** One CA generation: a root, and the intermediate that signs leaves when the CA uses one. */
export type CaGenerationPem = {
  readonly rootCertPem: string;
  readonly rootKeyPem: string;
  readonly intermediateCertPem?: string;
  readonly intermediateKeyPem?: string;
};

/** Everything needed to bring a CA back after a restart; secret (file mode 0600, never logged). */
export type CaState = {
  readonly trustDomain: string;
  /** Index into generations of the one that issues; the others are only trusted. */
  readonly active: number;
  readonly generations: readonly CaGenerationPem[];
};

export type RotationPhase = "steady" | "prepared" | "switched";

export type CertificateAuthorityOptions = {
  trustDomain: string;
  /** An existing root to issue from (its key must be an ECDSA P-256 signing key). */
  root?: { certPem: string; key: CryptoKey };
  /** State from `exportState()`; wins over `root`. */
  state?: CaState;
  /** Clock in epoch ms; default Date.now. */
  now?: () => number;
  /** Default leaf lifetime; default 1 h. */
  leafTtlMs?: number;
  /** Lifetime of a generated root; default 365 days. */
  rootTtlMs?: number;
  /** Sign leaves with an intermediate under the root; default false. */
  intermediate?: boolean;
  /**
   * Put a critical URI name constraint for the trust domain on generated CA certificates; default false.
   * OpenSSL (Node) and BoringSSL (Bun) enforce it, but Deno's rustls-webpki refuses every chain that
   * carries a URI name constraint, so it is opt-in for meshes without Deno proxies.
   */
  nameConstraints?: boolean;
};

export type CertificateAuthority = {
  readonly trustDomain: string;
  /** Signs a CSR (PEM, or parsed once by parseCsr) for the given, already attested SPIFFE ID; the CSR's own names are ignored. */
  sign(csr: string | ParsedCsr, options: { spiffeId: string; ttlMs?: number }): Promise<SignResult>;
  /** Every root currently trusted (two during a rotation), as PEM. */
  bundle(): string[];
  /**
   * A TLS serving certificate for DNS names (the injection webhook the Kubernetes API server calls),
   * from the issuing root, so that the bundle is its caBundle. Its key is made here and returned. Secret.
   */
  issueServing(dnsNames: readonly string[], ttlMs: number): Promise<{ chainPem: string[]; keyPem: string; notAfter: Date }>;
  /** Where a root rotation stands. */
  phase(): RotationPhase;
  /** Step 1: make a new root and trust it next to the old one; the old one keeps issuing. */
  rotateRoot(): Promise<{ ok: true; rootPem: string } | { ok: false; reason: RotationFailure }>;
  /** Step 2: issue from the new root (do this once every peer has the two-root bundle). */
  switchIssuance(): { ok: true } | { ok: false; reason: RotationFailure };
  /** Step 3: stop trusting the old root (once every leaf it signed has been renewed). */
  retireOldRoot(): { ok: true } | { ok: false; reason: RotationFailure };
  /** The issuing root certificate and its PKCS#8 key, for persistence. Secret. */
  exportRoot(): Promise<{ certPem: string; keyPem: string }>;
  /** Every generation with keys, for persistence across restarts and rotations. Secret. */
  exportState(): Promise<CaState>;
};

type Issuer = { cert: x509.X509Certificate; key: CryptoKey; pem: string; keyId: string };
type Generation = { root: Issuer; intermediate?: Issuer };

/**
 * createCertificateAuthority makes (or loads) an ECDSA P-256 SPIFFE CA for one trust domain.
 * @example
 * const ca = await createCertificateAuthority({ trustDomain: "example.org" });
 * const r = await ca.sign(csrPem, { spiffeId: "spiffe://example.org/ns/default/sa/web" });
 */
export async function createCertificateAuthority(options: CertificateAuthorityOptions): Promise<CertificateAuthority> {
  const trustDomain = options.state?.trustDomain ?? options.trustDomain;
  if (!isTrustDomain(trustDomain)) throw new Error(`invalid trust domain: ${trustDomain}`);
  const now = options.now ?? Date.now;
  const leafTtlMs = options.leafTtlMs ?? HOUR;
  const rootTtlMs = options.rootTtlMs ?? 365 * DAY;
  const useIntermediate = options.intermediate ?? false;
  const constrain = options.nameConstraints ?? false;

  let generations: Generation[];
  let active: number;
  if (options.state) {
    generations = await Promise.all(options.state.generations.map(loadGeneration));
    active = options.state.active;
    if (!generations[active]) throw new Error("CA state: active generation missing");
  } else if (options.root) {
    const root = await loadIssuer(options.root.certPem, options.root.key);
    const gen: Generation = { root };
    if (useIntermediate) gen.intermediate = await makeIntermediate(root);
    generations = [gen];
    active = 0;
  } else {
    generations = [await makeGeneration()];
    active = 0;
  }

  async function makeGeneration(): Promise<Generation> {
    const keys = (await crypto.subtle.generateKey(EC_KEY, true, ["sign", "verify"])) as CryptoKeyPair;
    const t = now();
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: randomSerial(),
      name: `O=weft, CN=weft root ${trustDomain} ${new Date(t).toISOString()}`,
      notBefore: new Date(t - CLOCK_SKEW_MS),
      notAfter: new Date(t + rootTtlMs),
      keys,
      signingAlgorithm: EC_SIGN,
      extensions: await caExtensions(keys.publicKey, useIntermediate ? 1 : 0),
    });
    const root = await toIssuer(cert, keys.privateKey);
    const gen: Generation = { root };
    if (useIntermediate) gen.intermediate = await makeIntermediate(root);
    return gen;
  }

  async function makeIntermediate(root: Issuer): Promise<Issuer> {
    const keys = (await crypto.subtle.generateKey(EC_KEY, true, ["sign", "verify"])) as CryptoKeyPair;
    const t = now();
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(),
      subject: `O=weft, CN=weft intermediate ${trustDomain} ${new Date(t).toISOString()}`,
      issuer: root.cert.subjectName,
      notBefore: new Date(t - CLOCK_SKEW_MS),
      notAfter: root.cert.notAfter,
      publicKey: keys.publicKey,
      signingKey: root.key,
      signingAlgorithm: EC_SIGN,
      extensions: [
        ...(await caExtensions(keys.publicKey, 0)),
        new x509.AuthorityKeyIdentifierExtension(root.keyId),
      ],
    });
    return toIssuer(cert, keys.privateKey);
  }

  async function caExtensions(publicKey: CryptoKey, pathLength: number): Promise<x509.Extension[]> {
    const ext: x509.Extension[] = [
      new x509.BasicConstraintsExtension(true, pathLength, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(publicKey),
    ];
    if (constrain) ext.push(uriNameConstraint(trustDomain));
    return ext;
  }

  function issuing(): Generation {
    return generations[active]!;
  }

  async function sign(csrIn: string | ParsedCsr, opts: { spiffeId: string; ttlMs?: number }): Promise<SignResult> {
    const id = parseSpiffeId(opts.spiffeId);
    if (!id.ok || id.path === "") return { ok: false, reason: "invalid_spiffe_id" };
    if (id.trustDomain !== trustDomain) return { ok: false, reason: "wrong_trust_domain" };
    const ttlMs = opts.ttlMs ?? leafTtlMs;
    if (!Number.isFinite(ttlMs) || ttlMs <= 0) return { ok: false, reason: "bad_ttl" };

    const parsed = typeof csrIn === "string" ? parseCsr(csrIn) : csrIn;
    if (parsed === null) return { ok: false, reason: "bad_csr" };
    const csr = parsed.request;
    const alg = csr.publicKey.algorithm as EcKeyAlgorithm;
    if (alg.name !== "ECDSA" || alg.namedCurve !== "P-256") return { ok: false, reason: "unsupported_key" };
    // Proof of possession: only the holder of the private key can sign the request.
    let signed = false;
    try {
      signed = await csr.verify();
    } catch {
      signed = false;
    }
    if (!signed) return { ok: false, reason: "bad_csr_signature" };

    const gen = issuing();
    const signer = gen.intermediate ?? gen.root;
    const t = now();
    const issuerNotAfter = Math.min(gen.root.cert.notAfter.getTime(), signer.cert.notAfter.getTime());
    if (issuerNotAfter <= t) return { ok: false, reason: "issuer_expired" };
    const notAfter = new Date(Math.min(t + ttlMs, issuerNotAfter));
    const leaf = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(),
      subject: "O=weft",
      issuer: signer.cert.subjectName,
      notBefore: new Date(t - CLOCK_SKEW_MS),
      notAfter,
      publicKey: csr.publicKey,
      signingKey: signer.key,
      signingAlgorithm: EC_SIGN,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
        // Exactly one URI SAN, the attested ID; whatever names the CSR asked for are dropped.
        new x509.SubjectAlternativeNameExtension([{ type: "url", value: opts.spiffeId }]),
        await x509.SubjectKeyIdentifierExtension.create(csr.publicKey),
        new x509.AuthorityKeyIdentifierExtension(signer.keyId),
      ],
    });
    const chainPem = [leaf.toString("pem") + "\n"];
    if (gen.intermediate) chainPem.push(gen.intermediate.pem);
    return { ok: true, chainPem, notAfter, spiffeId: opts.spiffeId, serialNumber: leaf.serialNumber };
  }

  function phase(): RotationPhase {
    if (generations.length === 1) return "steady";
    return active === generations.length - 1 ? "switched" : "prepared";
  }

  async function exportGeneration(g: Generation): Promise<CaGenerationPem> {
    const out: { -readonly [K in keyof CaGenerationPem]: CaGenerationPem[K] } = {
      rootCertPem: g.root.pem,
      rootKeyPem: await exportKeyPem(g.root.key),
    };
    if (g.intermediate) {
      out.intermediateCertPem = g.intermediate.pem;
      out.intermediateKeyPem = await exportKeyPem(g.intermediate.key);
    }
    return out;
  }

  async function issueServing(dnsNames: readonly string[], ttlMs: number) {
    const gen = issuing();
    const signer = gen.intermediate ?? gen.root;
    const t = now();
    const notAfter = new Date(Math.min(t + ttlMs, gen.root.cert.notAfter.getTime(), signer.cert.notAfter.getTime()));
    const keys = (await crypto.subtle.generateKey(EC_KEY, true, ["sign", "verify"])) as CryptoKeyPair;
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(),
      subject: `O=weft, CN=${dnsNames[0] ?? "weft"}`,
      issuer: signer.cert.subjectName,
      notBefore: new Date(t - CLOCK_SKEW_MS),
      notAfter,
      publicKey: keys.publicKey,
      signingKey: signer.key,
      signingAlgorithm: EC_SIGN,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension(dnsNames.map((value) => ({ type: "dns" as const, value }))),
        new x509.AuthorityKeyIdentifierExtension(signer.keyId),
      ],
    });
    const chainPem = [cert.toString("pem") + "\n"];
    if (gen.intermediate) chainPem.push(gen.intermediate.pem);
    return { chainPem, keyPem: toPem(await crypto.subtle.exportKey("pkcs8", keys.privateKey), "PRIVATE KEY"), notAfter };
  }

  return {
    trustDomain,
    sign,
    issueServing,
    bundle: () => generations.map((g) => g.root.pem),
    phase,
    async rotateRoot() {
      if (generations.length > 1) return { ok: false, reason: "rotation_in_progress" };
      const next = await makeGeneration();
      generations = [...generations, next];
      return { ok: true, rootPem: next.root.pem };
    },
    switchIssuance() {
      if (phase() !== "prepared") return { ok: false, reason: "no_pending_root" };
      active = generations.length - 1;
      return { ok: true };
    },
    retireOldRoot() {
      if (phase() !== "switched") return { ok: false, reason: "not_switched" };
      generations = [generations[active]!];
      active = 0;
      return { ok: true };
    },
    async exportRoot() {
      const root = issuing().root;
      return { certPem: root.pem, keyPem: await exportKeyPem(root.key) };
    },
    async exportState() {
      return { trustDomain, active, generations: await Promise.all(generations.map(exportGeneration)) };
    },
  };
}

/**
 * importCaKey turns a PKCS#8 PEM (from `exportRoot`/`exportState`) back into an ECDSA P-256 signing key.
 * @example const key = await importCaKey(await readFile("root.key", "utf8"));
 */
export async function importCaKey(pkcs8Pem: string): Promise<CryptoKey> {
  const der = x509.PemConverter.decodeFirst(pkcs8Pem);
  // Extractable so exportState can persist it again after a restart.
  return crypto.subtle.importKey("pkcs8", der, EC_KEY, true, ["sign"]);
}

async function loadGeneration(g: CaGenerationPem): Promise<Generation> {
  const root = await loadIssuer(g.rootCertPem, await importCaKey(g.rootKeyPem));
  const gen: Generation = { root };
  if (g.intermediateCertPem && g.intermediateKeyPem) {
    gen.intermediate = await loadIssuer(g.intermediateCertPem, await importCaKey(g.intermediateKeyPem));
  }
  return gen;
}

async function loadIssuer(certPem: string, key: CryptoKey): Promise<Issuer> {
  const pem = splitPem(certPem)[0];
  if (!pem) throw new Error("CA certificate: no PEM certificate found");
  const cert = new x509.X509Certificate(pem);
  const bc = cert.getExtension(x509.BasicConstraintsExtension);
  if (!bc?.ca) throw new Error("CA certificate: not a CA (basicConstraints cA=false)");
  return toIssuer(cert, key);
}

async function toIssuer(cert: x509.X509Certificate, key: CryptoKey): Promise<Issuer> {
  const ski = cert.getExtension(x509.SubjectKeyIdentifierExtension);
  const keyId = ski?.keyId ?? toHex(new Uint8Array(await cert.publicKey.getKeyIdentifier()));
  return { cert, key, pem: cert.toString("pem") + "\n", keyId };
}

async function exportKeyPem(key: CryptoKey): Promise<string> {
  return toPem(await crypto.subtle.exportKey("pkcs8", key), "PRIVATE KEY");
}

/** A critical nameConstraints extension permitting URIs whose host is the trust domain (RFC 5280 §4.2.1.10). */
function uriNameConstraint(trustDomain: string): x509.Extension {
  const uri = der(0x86, new TextEncoder().encode(trustDomain));
  const subtree = der(0x30, uri);
  const permitted = der(0xa0, subtree);
  return new x509.Extension("2.5.29.30", true, der(0x30, permitted));
}

function der(tag: number, body: Uint8Array): Uint8Array<ArrayBuffer> {
  const len = body.length;
  const head =
    len < 0x80 ? [tag, len] : len < 0x100 ? [tag, 0x81, len] : [tag, 0x82, len >> 8, len & 0xff];
  const out = new Uint8Array(head.length + len);
  out.set(head, 0);
  out.set(body, head.length);
  return out;
}
