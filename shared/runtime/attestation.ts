import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import type { Attestation } from "../identity/index.ts";

/** Where Kubernetes projects a pod's service-account token. */
export const KUBERNETES_SA_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token";

export interface AttestationFlags {
  /** --join-token (or WEFT_JOIN_TOKEN). */
  readonly joinToken?: string;
  /** --join-token-file (or WEFT_JOIN_TOKEN_FILE): read again for every request. */
  readonly joinTokenFile?: string;
  /** --sa-token-file: a service-account token (default: Kubernetes' projected token, if present). */
  readonly saTokenFile?: string;
}

/**
 * attestationSource picks how this proxy proves its identity to the CA: a join token (flag,
 * environment or file), else a Kubernetes service-account token; undefined when there is none.
 * Files are read fresh on every call (tokens rotate on disk).
 * @example
 * const attestation = attestationSource({ joinToken: values["join-token"] }, process.env);
 */
export function attestationSource(
  flags: AttestationFlags,
  env: Readonly<Record<string, string | undefined>>,
): (() => Promise<Attestation>) | undefined {
  const token = flags.joinToken ?? (env.WEFT_JOIN_TOKEN || undefined);
  if (token) return async () => ({ kind: "join_token", token });
  const tokenFile = flags.joinTokenFile ?? (env.WEFT_JOIN_TOKEN_FILE || undefined);
  if (tokenFile) return async () => ({ kind: "join_token", token: (await readFile(tokenFile, "utf8")).trim() });
  const saFile = flags.saTokenFile ?? (existsSync(KUBERNETES_SA_TOKEN) ? KUBERNETES_SA_TOKEN : undefined);
  if (saFile) return async () => ({ kind: "k8s_sa_token", token: (await readFile(saFile, "utf8")).trim() });
  return undefined;
}
