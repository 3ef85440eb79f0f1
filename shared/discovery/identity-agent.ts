import { BUCKET_HISTORY, CA_SIGN_SUBJECT, decodeJson, TRUST_BUCKET, trustBundleKey, type Bus, type Watch } from "../bus/index.ts";
import {
  createKeyAndCsr,
  decodeSignResponse,
  encodeSignRequest,
  nextRefreshAt,
  type Attestation,
  type Svid,
} from "../identity/index.ts";
import type { LogSink } from "./watcher.ts";

/** What a proxy holds to speak mTLS: its SVID and the roots it trusts. */
export interface IdentityMaterial {
  readonly svid: Svid;
  readonly bundlePem: readonly string[];
  /** The SVID's chain and key again, as listeners and upstream pools take them. */
  readonly chainPem: readonly string[];
  readonly keyPem: string;
}

export interface IdentityAgentOptions {
  readonly bus: Bus;
  readonly trustDomain: string;
  /** The ID this proxy asks for; the CA signs it only if the attestation proves it. */
  readonly spiffeId: string;
  /** Read fresh for every request (a projected service-account token rotates on disk). */
  attestation(): Promise<Attestation>;
  /** Called with new material after every renewal and every bundle change. */
  onUpdate?(material: IdentityMaterial): void;
  readonly log?: LogSink;
  readonly now?: () => number;
  readonly random?: () => number;
}

/** The agent is also the proxy's mesh identity (shared/proxy MeshIdentity) for listeners and upstream pools. */
export interface IdentityAgent {
  readonly trustDomain: string;
  readonly spiffeId: string;
  /** Resolves once the first SVID and bundle are held; rejects with the CA's reason if it refuses. */
  start(): Promise<IdentityMaterial>;
  current(): IdentityMaterial | undefined;
  /** Counts material changes (renewals, bundle updates). */
  readonly generation: number;
  onUpdate(listener: (material: IdentityMaterial) => void): () => void;
  stop(): void;
}

/**
 * createIdentityAgent keeps a proxy's X.509-SVID fresh: it makes its own P-256 key (which never
 * leaves the process), sends a CSR with its attestation over `weft.ca.sign`, renews at half-life
 * (with jitter), retries with backoff while the CA is unreachable, and follows the trust bundle
 * (two roots during a rotation). New connections use the new material; open ones finish on the old.
 * @example
 * const agent = createIdentityAgent({ bus, trustDomain, spiffeId, attestation: async () => ({ kind: "join_token", token }) });
 * const { svid, bundlePem } = await agent.start();
 */
export function createIdentityAgent(options: IdentityAgentOptions): IdentityAgent {
  const { bus, trustDomain, spiffeId, log } = options;
  const now = options.now ?? Date.now;
  const random = options.random ?? Math.random;
  let svid: Svid | undefined;
  let bundle: readonly string[] = [];
  let timer: ReturnType<typeof setTimeout> | undefined;
  let watch: Watch | undefined;
  let stopped = false;
  let generation = 0;
  let held: IdentityMaterial | undefined;
  const listeners = new Set<(material: IdentityMaterial) => void>();

  const material = () => held;
  const emit = () => {
    if (!svid) return;
    generation += 1;
    held = { svid, bundlePem: bundle, chainPem: svid.chainPem, keyPem: svid.keyPem };
    options.onUpdate?.(held);
    for (const listener of listeners) listener(held);
  };

  async function obtain(): Promise<Svid> {
    const { keyPem, csrPem } = await createKeyAndCsr(spiffeId);
    const reply = await bus.request(CA_SIGN_SUBJECT, encodeSignRequest({ csrPem, attestation: await options.attestation() }), { timeoutMs: 5000 });
    if (!reply.ok) throw Object.assign(new Error(`CA unreachable: ${reply.reason}`), { retry: true });
    const r = decodeSignResponse(reply.data);
    if (!r.ok) throw Object.assign(new Error(`CA refused: ${r.reason}`), { reason: r.reason, retry: false });
    if (bundle.length === 0) bundle = r.bundlePem;
    return { spiffeId: r.spiffeId, chainPem: r.chainPem, keyPem, notBefore: new Date(now()), notAfter: new Date(r.notAfter) };
  }

  function scheduleRenewal(delayMs: number, failures = 0): void {
    if (stopped) return;
    clearTimeout(timer);
    timer = setTimeout(async () => {
      try {
        svid = await obtain();
        log?.info("certificate renewed", { spiffeId, notAfter: svid.notAfter.toISOString() });
        emit();
        scheduleRenewal(nextRefreshAt(svid, now(), random) - now());
      } catch (err) {
        const wait = Math.min(30_000, 250 * 2 ** failures);
        log?.warn("certificate renewal failed, retrying", { error: String((err as Error).message), retryInMs: wait });
        scheduleRenewal(wait, failures + 1);
      }
    }, Math.max(0, delayMs));
    (timer as { unref?: () => void }).unref?.();
  }

  return {
    trustDomain,
    spiffeId,
    get generation() {
      return generation;
    },
    onUpdate(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    async start() {
      const trust = await bus.kv(TRUST_BUCKET, { history: BUCKET_HISTORY });
      watch = trust.watch(trustBundleKey(trustDomain), (e) => {
        if (e.operation !== "PUT") return;
        const decoded = decodeJson(e.value);
        const roots = decoded.ok ? (decoded.value as { roots?: unknown }).roots : undefined;
        if (!Array.isArray(roots) || !roots.every((r) => typeof r === "string") || roots.length === 0) return;
        bundle = roots as string[];
        log?.info("trust bundle updated", { roots: bundle.length });
        emit();
      });
      for (let failures = 0; ; failures++) {
        try {
          svid = await obtain();
          break;
        } catch (err) {
          if ((err as { retry?: boolean }).retry === false || stopped) throw err;
          await new Promise((r) => setTimeout(r, Math.min(5000, 100 * 2 ** failures)));
        }
      }
      log?.info("certificate issued", { spiffeId, notAfter: svid.notAfter.toISOString() });
      scheduleRenewal(nextRefreshAt(svid, now(), random) - now());
      emit();
      return held!;
    },
    current: material,
    stop() {
      stopped = true;
      clearTimeout(timer);
      watch?.stop();
    },
  };
}

/** The proxy's mesh identity before its agent exists: empty until `fill`, then the agent's. */
export interface IdentitySlot {
  readonly trustDomain: string;
  readonly spiffeId: string;
  readonly generation: number;
  current(): IdentityMaterial | undefined;
  onUpdate(listener: (material: IdentityMaterial) => void): () => void;
  readonly agent: IdentityAgent | undefined;
  fill(agent: IdentityAgent): void;
}

/**
 * createIdentitySlot stands in for a proxy's identity (shared/proxy MeshIdentity) from startup on,
 * since the trust domain and SPIFFE ID are known only once the first config arrives.
 * @example
 * const slot = createIdentitySlot();
 * const engine = createEngine({ client, edge: false, meshIdentity: slot });
 * slot.fill(createIdentityAgent({ bus, trustDomain, spiffeId, attestation }));
 */
export function createIdentitySlot(): IdentitySlot {
  let agent: IdentityAgent | undefined;
  return {
    get trustDomain() {
      return agent?.trustDomain ?? "";
    },
    get spiffeId() {
      return agent?.spiffeId ?? "";
    },
    get generation() {
      return agent?.generation ?? 0;
    },
    current: () => agent?.current(),
    onUpdate(listener) {
      if (!agent) throw new TypeError("no identity yet");
      return agent.onUpdate(listener);
    },
    get agent() {
      return agent;
    },
    fill(next) {
      agent = next;
    },
  };
}
