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
