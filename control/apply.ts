import { APPLIED_KEY, APPLY_LOCK_KEY, decodeJson, encodeJson, parseConfigKey, type Kv, type KvEntry } from "../shared/bus/index.ts";
import type { MeshConfig } from "../shared/config/index.ts";
import { splitMesh, type AppliedRecord } from "../shared/discovery/index.ts";
import type { ConfigMirror } from "./mirror.ts";

export interface Change {
  readonly key: string;
  readonly op: "created" | "updated" | "deleted";
}

export type ApplyResult =
  | { readonly ok: true; readonly generation: number; readonly changes: readonly Change[] }
  | { readonly ok: false; readonly reason: "lock_timeout" | "write_failed"; readonly message: string };

export interface ApplyOptions {
  readonly kv: Kv;
  readonly mirror: ConfigMirror;
  /** Who holds the lock (this replica's id), for operators reading the bucket. */
  readonly holder: string;
  /** A lock older than this is taken over: its holder died mid-apply (default 10000 ms). */
  readonly lockTtlMs?: number;
  /** How long to wait for another replica's apply to finish (default 15000 ms). */
  readonly lockWaitMs?: number;
  readonly now?: () => number;
}

/**
 * applyMesh writes a validated config to the bucket as the next generation. Only keys whose content
 * changed are written (services before the gateways that route to them, deletions after), then the
 * `applied` record; a proxy whose keys did not change hears nothing.
 * Replicas serialise through a compare-and-set lock key; a lock whose holder died expires, and the
 * next apply repairs whatever the dead one half-wrote (it diffs against the bucket, not a cache).
 * @example
 * const r = await applyMesh(config, { kv, mirror, holder: "control-1" });
 */
export async function applyMesh(config: MeshConfig, options: ApplyOptions): Promise<ApplyResult> {
  const { kv, mirror } = options;
  const now = options.now ?? Date.now;
  const lock = await acquireLock(kv, options.holder, options.lockTtlMs ?? 10_000, options.lockWaitMs ?? 15_000, now);
  if (!lock.ok) return { ok: false, reason: "lock_timeout", message: lock.message };
  try {
    // The mirror has seen every write up to our lock: the diff below is against the bucket as it is.
    await mirror.caughtUpTo(lock.revision);
    const current = mirror.entries();
    const appliedNow = current.get(APPLIED_KEY) as AppliedRecord | undefined;
    const generation = (appliedNow?.generation ?? 0) + 1;
    const desired = splitMesh(config, generation);

    const changes: Change[] = [];
    const puts: [string, unknown][] = [];
    for (const [key, value] of desired) {
      const old = current.get(key);
      if (old !== undefined && sameContent(old, value)) continue;
      puts.push([key, value]);
      changes.push({ key, op: old === undefined ? "created" : "updated" });
    }
    const deletes = [...current.keys()].filter((key) => {
      const kind = parseConfigKey(key)?.kind;
      return (kind === "service" || kind === "gateway") && !desired.has(key);
    });
    for (const key of deletes) changes.push({ key, op: "deleted" });
    if (changes.length === 0) return { ok: true, generation: appliedNow?.generation ?? 0, changes };

    // Services first (a gateway's new route must find its service), the mesh and gateways next.
    const order = (key: string) => (key.startsWith("svc.") ? 0 : 1);
    puts.sort(([a], [b]) => order(a) - order(b));
    for (const [key, value] of puts) {
      const r = await kv.put(key, encodeJson(value));
      if (!r.ok) return { ok: false, reason: "write_failed", message: `${key}: ${r.reason}` };
    }
    deletes.sort((a, b) => order(b) - order(a));
    for (const key of deletes) await kv.delete(key);
    const record: AppliedRecord = {
      generation,
      appliedAt: new Date(now()).toISOString(),
      services: Object.keys(config.services).sort(),
      gateways: Object.keys(config.gateways).sort(),
    };
    const r = await kv.put(APPLIED_KEY, encodeJson(record));
    if (!r.ok) return { ok: false, reason: "write_failed", message: `${APPLIED_KEY}: ${r.reason}` };
    return { ok: true, generation, changes };
  } finally {
    await releaseLock(kv, options.holder);
  }
}

/** Compares two resources ignoring their generation. */
function sameContent(a: unknown, b: unknown): boolean {
  const strip = (x: unknown) => {
    const { generation: _g, ...rest } = x as Record<string, unknown>;
    return JSON.stringify(rest);
  };
  return strip(a) === strip(b);
}

interface LockValue {
  readonly holder: string | null;
  readonly expiresAt: number;
}

async function acquireLock(
  kv: Kv,
  holder: string,
  ttlMs: number,
  waitMs: number,
  now: () => number,
): Promise<{ ok: true; revision: number } | { ok: false; message: string }> {
  const deadline = now() + waitMs;
  const mine = () => encodeJson({ holder, expiresAt: now() + ttlMs } satisfies LockValue);
  let backoff = 10;
  for (;;) {
    const entry: KvEntry | undefined = await kv.get(APPLY_LOCK_KEY);
    const held = entry ? (decodeJson(entry.value) as { ok: boolean; value?: LockValue }) : undefined;
    const free = !entry || !held?.ok || held.value?.holder === null || (held.value?.expiresAt ?? 0) < now();
    if (free) {
      const r = entry ? await kv.update(APPLY_LOCK_KEY, mine(), entry.revision) : await kv.create(APPLY_LOCK_KEY, mine());
      if (r.ok) return { ok: true, revision: r.revision };
      if (r.reason !== "conflict") return { ok: false, message: `lock write failed: ${r.reason}` };
    }
    if (now() > deadline) return { ok: false, message: `another apply holds the lock (${held?.value?.holder ?? "unknown"})` };
    await new Promise((r) => setTimeout(r, backoff));
    backoff = Math.min(backoff * 2, 200);
  }
}

async function releaseLock(kv: Kv, holder: string): Promise<void> {
  // Only our own lock is released: if it expired and another replica took it, the holder differs.
  const free: LockValue = { holder: null, expiresAt: 0 };
  const entry = await kv.get(APPLY_LOCK_KEY).catch(() => undefined);
  if (!entry) return;
  const value = decodeJson(entry.value);
  if (value.ok && (value.value as LockValue).holder === holder) await kv.update(APPLY_LOCK_KEY, encodeJson(free), entry.revision);
}
