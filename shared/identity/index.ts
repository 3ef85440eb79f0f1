export * from "./spiffe-id.ts";
export * from "./ca.ts";
export * from "./csr.ts";
export * from "./svid.ts";
export * from "./join-token.ts";
export * from "./issuer.ts";
export { splitPem } from "./x509.ts";
