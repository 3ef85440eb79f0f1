import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  BUCKET_HISTORY,
  CA_SIGN_SUBJECT,
  decodeJson,
  encodeJson,
  TRUST_BUCKET,
  trustBundleKey,
  type Bus,
  type Kv,
  type Subscription,
} from "../shared/bus/index.ts";
import {
  createAttestationVerifier,
  createCertificateAuthority,
  generateJoinTokenKey,
  handleSignRequest,
  mintJoinToken,
  type CaState,
  type CertificateAuthority,
  type ReviewServiceAccountToken,
} from "../shared/identity/index.ts";

/** The `bundle.<trust-domain>` value in `weft-trust`: every root currently trusted. */
export interface TrustBundle {
  readonly trustDomain: string;
  readonly roots: readonly string[];
}

export interface CaServiceOptions {
  readonly bus: Bus;
  readonly trustDomain: string;
  /** Folder for the CA state and the join-token key (files mode 0600; mount a secret here for several replicas). */
  readonly stateDir: string;
  /** Leaf lifetime (default 1 h). */
  readonly leafTtlMs?: number;
  readonly reviewServiceAccountToken?: ReviewServiceAccountToken;
  readonly log?: { info(msg: string, fields?: Record<string, unknown>): void; error(msg: string, fields?: Record<string, unknown>): void };
}

export interface CaService {
  readonly ca: CertificateAuthority;
  /** A join token attesting one namespace/service account, for proxies outside Kubernetes. */
  mintToken(namespace: string, serviceAccount: string, ttlMs: number): Promise<string>;
  /** Root rotation, step by step (each step persists the CA and republishes the bundle). */
  rotateRoot(): Promise<{ ok: boolean; reason?: string }>;
  switchIssuance(): Promise<{ ok: boolean; reason?: string }>;
  retireOldRoot(): Promise<{ ok: boolean; reason?: string }>;
  stop(): void;
}

/**
 * startCaService runs the mesh's certificate authority: it loads (or, on first start, creates and
 * persists) the CA for the trust domain, publishes the trust bundle in `weft-trust`, and answers
 * `weft.ca.sign`, signing only the SPIFFE ID a join token or a service-account token proves.
 * The CA key stays in this process and the state file; it is never logged or put on the bus.
 * @example
 * const ca = await startCaService({ bus, trustDomain: "cluster.local", stateDir: ".weft/control" });
 */
export async function startCaService(options: CaServiceOptions): Promise<CaService> {
  const { bus, trustDomain, stateDir, log } = options;
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const stateFile = join(stateDir, `ca-${trustDomain}.json`);
  const keyFile = join(stateDir, "join-token.key");

  const saved = await readFile(stateFile, "utf8").then((t) => JSON.parse(t) as CaState, () => undefined);
  const ca = await createCertificateAuthority({ trustDomain, ...(saved ? { state: saved } : {}), ...(options.leafTtlMs ? { leafTtlMs: options.leafTtlMs } : {}) });
  const persist = async () => writeSecret(stateFile, JSON.stringify(await ca.exportState()));
  if (!saved) {
    await persist();
    log?.info("created a root CA", { trustDomain });
  }
  const storedKey = await readFile(keyFile).then((b) => new Uint8Array(b), () => undefined);
  const joinTokenKey: Uint8Array = storedKey ?? generateJoinTokenKey();
  if (!storedKey) await writeSecret(keyFile, joinTokenKey);

  const trust: Kv = await bus.kv(TRUST_BUCKET, { history: BUCKET_HISTORY });
  const publish = async () => {
    const value: TrustBundle = { trustDomain, roots: ca.bundle() };
    const key = trustBundleKey(trustDomain);
    const current = await trust.get(key);
    if (current) {
      const decoded = decodeJson(current.value);
      const roots = decoded.ok ? ((decoded.value as TrustBundle).roots ?? []) : [];
      // Another CA with different roots owns this trust domain: refuse rather than split the mesh.
      if (!ca.bundle().some((r) => roots.includes(r)) && roots.length > 0) {
        throw new Error(`the trust bundle of ${trustDomain} holds roots of another CA; give every control-plane replica the same CA state (${stateFile})`);
      }
      if (JSON.stringify(roots) === JSON.stringify(value.roots)) return;
    }
    await trust.put(key, encodeJson(value));
    log?.info("trust bundle published", { trustDomain, roots: value.roots.length });
  };
  await publish();

  const sign = handleSignRequest(ca, createAttestationVerifier({ joinTokenKey, reviewServiceAccountToken: options.reviewServiceAccountToken }));
  const sub: Subscription = bus.subscribe(CA_SIGN_SUBJECT, (msg) => {
    void sign(msg.data).then(
      (reply) => msg.respond?.(reply),
      (err: unknown) => {
        log?.error("signing failed", { error: String(err) });
        msg.respond?.(encodeJson({ ok: false, reason: "internal" }));
      },
    );
  });

  const step = async (r: { ok: boolean; reason?: string }) => {
    if (r.ok) {
      await persist();
      await publish();
    }
    return r.ok ? { ok: true } : { ok: false, reason: r.reason };
  };

  return {
    ca,
    mintToken: (namespace, serviceAccount, ttlMs) => mintJoinToken({ namespace, serviceAccount, ttlMs }, joinTokenKey),
    rotateRoot: async () => step(await ca.rotateRoot()),
    switchIssuance: async () => step(ca.switchIssuance()),
    retireOldRoot: async () => step(ca.retireOldRoot()),
    stop: () => sub.unsubscribe(),
  };
}

async function writeSecret(file: string, data: string | Uint8Array): Promise<void> {
  const tmp = `${file}.${Date.now()}.tmp`;
  await writeFile(tmp, data, { mode: 0o600 });
  await rename(tmp, file);
}
