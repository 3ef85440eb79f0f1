import { EC_KEY, EC_SIGN, toPem, x509 } from "./x509.ts";
import { parseSpiffeId } from "./spiffe-id.ts";

/** A fresh workload key pair and the CSR that proves possession of it. */
export type KeyAndCsr = {
  /** The private signing key; stays in this process. */
  readonly key: CryptoKey;
  /** PKCS#8 PEM of the same key, for node:tls `key`; never send or log it. */
  readonly keyPem: string;
  readonly csrPem: string;
};

/**
 * createKeyAndCsr makes an ECDSA P-256 key in this process and a CSR for it naming the SPIFFE ID.
 * The key is extractable only because the TLS layer needs it as PEM; it must never leave the process.
 * @example const { keyPem, csrPem } = await createKeyAndCsr("spiffe://example.org/ns/default/sa/web");
 */
export async function createKeyAndCsr(spiffeId: string): Promise<KeyAndCsr> {
  const id = parseSpiffeId(spiffeId);
  if (!id.ok) throw new Error(`invalid SPIFFE ID (${id.reason})`);
  const keys = (await crypto.subtle.generateKey(EC_KEY, true, ["sign", "verify"])) as CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: "O=weft",
    keys,
    signingAlgorithm: EC_SIGN,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: "url", value: spiffeId }])],
  });
  const keyPem = toPem(await crypto.subtle.exportKey("pkcs8", keys.privateKey), "PRIVATE KEY");
  return { key: keys.privateKey, keyPem, csrPem: csr.toString("pem") + "\n" };
}

/** A CSR read once: the request the CA signs and the URI SANs it asks for. */
export type ParsedCsr = {
  readonly request: x509.Pkcs10CertificateRequest;
  readonly uriSans: readonly string[];
};

/**
 * parseCsr reads a PEM CSR and the URI SANs it asks for (in its extensionRequest attribute); `null` if it does not parse.
 * @example parseCsr(csrPem)?.uriSans // ["spiffe://example.org/ns/default/sa/web"]
 */
export function parseCsr(csrPem: string): ParsedCsr | null {
  let request: x509.Pkcs10CertificateRequest;
  try {
    request = new x509.Pkcs10CertificateRequest(csrPem);
  } catch {
    return null;
  }
  const uriSans: string[] = [];
  for (const ext of request.extensions) {
    if (ext.type !== "2.5.29.17") continue;
    const san = new x509.SubjectAlternativeNameExtension(ext.rawData);
    for (const n of san.names.items) if (n.type === "url") uriSans.push(n.value);
  }
  return { request, uriSans };
}
