// @peculiar/x509 resolves its algorithm registry through tsyringe, which needs the Reflect metadata
// polyfill loaded first (RUNTIME-NOTES §5); WebCrypto from globalThis keeps this portable to Bun and Deno.
import "reflect-metadata";
import * as x509 from "@peculiar/x509";

x509.cryptoProvider.set(globalThis.crypto);

export { x509 };

/** ECDSA P-256 with SHA-256: the only key and signature type weft issues or accepts. */
export const EC_KEY = { name: "ECDSA", namedCurve: "P-256" } as const;
export const EC_SIGN = { name: "ECDSA", hash: "SHA-256" } as const;

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?-----END \1-----/g;

/**
 * splitPem returns every PEM block of the given label found in the text, in order.
 * @example splitPem(bundleText, "CERTIFICATE") // ["-----BEGIN CERTIFICATE-----\n…", …]
 */
export function splitPem(text: string, label = "CERTIFICATE"): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(PEM_BLOCK)) if (m[1] === label) out.push(m[0] + "\n");
  return out;
}

/**
 * toPem wraps DER bytes in a PEM block with 64-column base64 lines.
 * @example toPem(pkcs8Bytes, "PRIVATE KEY")
 */
export function toPem(der: ArrayBuffer | Uint8Array, label: string): string {
  return x509.PemConverter.encode(der instanceof Uint8Array ? der.slice().buffer : der, label);
}

/**
 * randomSerial makes a certificate serial number: 16 random bytes, sign bit cleared (a positive
 * INTEGER, RFC 5280 §4.1.2.2) and first byte non-zero so the encoding keeps all 16 octets.
 * @example x509.X509CertificateGenerator.create({ serialNumber: randomSerial(), ... })
 */
export function randomSerial(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0]! & 0x7f) | 0x01;
  return toHex(bytes);
}

/** toHex renders bytes as lower-case hex. */
export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
