import * as v from "valibot";

/** Policy attached to a service's inbound side or to a gateway: mTLS mode, authentication, authorization, rate limits. */
export const PolicySetSchema = v.strictObject({
  /** Inbound mTLS: STRICT accepts only mesh peers with a valid SVID; PERMISSIVE also plaintext (default "STRICT"). */
  mtls: v.optional(v.picklist(["STRICT", "PERMISSIVE"]), "STRICT"),
});

export type PolicySetConfig = v.InferOutput<typeof PolicySetSchema>;
