import { createKeyAndCsr, type CertificateAuthority } from "../../shared/identity/index.ts";
import type { MeshIdentity, MeshTlsMaterial } from "../../shared/proxy/index.ts";

/** A MeshIdentity whose material the test holds; `set` plays the identity agent's renewal. */
export type HeldIdentity = MeshIdentity & { set(next: MeshTlsMaterial): void };

/**
 * issueSvid signs a fresh key for `spiffeId` with a test CA and returns it as mesh TLS material (chain, key, the CA's bundle).
 * @example
 * const ca = await createCertificateAuthority({ trustDomain: "example.org" });
 * const web = await issueSvid(ca, "spiffe://example.org/ns/default/sa/web");
 */
export async function issueSvid(ca: CertificateAuthority, spiffeId: string, ttlMs = 3_600_000): Promise<MeshTlsMaterial> {
  const { keyPem, csrPem } = await createKeyAndCsr(spiffeId);
  const r = await ca.sign(csrPem, { spiffeId, ttlMs });
  if (!r.ok) throw new Error(r.reason);
  return { chainPem: r.chainPem, keyPem, bundlePem: ca.bundle() };
}

/**
 * heldIdentity wraps material the test hands in as a MeshIdentity (trust domain taken from the ID unless given); `set` renews it.
 * @example
 * const api = heldIdentity(API, await issueSvid(ca, API));
 * api.set(await issueSvid(ca, API)); // listeners see the new material, generation becomes 2
 */
export function heldIdentity(spiffeId: string, first: MeshTlsMaterial, trustDomain = new URL(spiffeId).host): HeldIdentity {
  let held = first;
  let generation = 1;
  const listeners = new Set<(m: MeshTlsMaterial) => void>();
  return {
    trustDomain,
    spiffeId,
    current: () => held,
    get generation() {
      return generation;
    },
    onUpdate(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    set(next) {
      held = next;
      generation += 1;
      for (const l of listeners) l(next);
    },
  };
}

/**
 * meshIdentity issues an SVID for `spiffeId` from a test CA and holds it as a MeshIdentity.
 * @example
 * const edge = await meshIdentity(ca, "spiffe://example.org/ns/default/sa/edge");
 */
export async function meshIdentity(ca: CertificateAuthority, spiffeId: string, ttlMs?: number): Promise<HeldIdentity> {
  return heldIdentity(spiffeId, await issueSvid(ca, spiffeId, ttlMs));
}
