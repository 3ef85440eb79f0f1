/**
 * The config bus: what the control plane and the proxies say to each other.
 * Two implementations: NATS (JetStream KV + subjects) for every multi-process setup,
 * and in-memory for one-process `weft dev` and unit tests. One conformance suite runs on both.
 */

/** A message on a subject; `respond` is set when the sender asked for a reply. */
export interface BusMessage {
  readonly subject: string;
  readonly data: Uint8Array;
  respond?(data: Uint8Array): void;
}

export interface Subscription {
  unsubscribe(): void;
}

export type RequestResult =
  | { readonly ok: true; readonly data: Uint8Array }
  | { readonly ok: false; readonly reason: "timeout" | "no_responders" | "closed" };

/** A value in a KV bucket with the bucket-wide revision it was written at. */
export interface KvEntry {
  readonly key: string;
  readonly value: Uint8Array;
  readonly revision: number;
  readonly operation: "PUT" | "DEL";
}

export type KvWriteResult =
  | { readonly ok: true; readonly revision: number }
  | { readonly ok: false; readonly reason: "conflict" | "closed" };

export interface KvWatchOptions {
  /** Called once the current values have all been delivered (the watch is caught up). */
  onCaughtUp?(): void;
  /** Deliver only changes after the current values (default false: current values first). */
  updatesOnly?: boolean;
}

export interface Watch {
  stop(): void;
}

export interface Kv {
  get(key: string): Promise<KvEntry | undefined>;
  put(key: string, value: Uint8Array): Promise<KvWriteResult>;
  /** Writes only when the key does not exist (or was deleted); else `conflict`. */
  create(key: string, value: Uint8Array): Promise<KvWriteResult>;
  /** Writes only when the key's last revision is `expectedRevision`; else `conflict`. */
  update(key: string, value: Uint8Array, expectedRevision: number): Promise<KvWriteResult>;
  delete(key: string): Promise<void>;
  /** Keys matching a NATS-style filter (`svc.*`, `svc.>`, or exact). */
  keys(filter?: string): Promise<string[]>;
  /** Watches keys matching a filter: current values first (unless updatesOnly), then every change. */
  watch(filter: string, onEntry: (entry: KvEntry) => void, options?: KvWatchOptions): Watch;
}

export type BusStatus = "connected" | "disconnected" | "reconnected" | "closed";

export interface Bus {
  publish(subject: string, data: Uint8Array): void;
  /** Subject may use NATS wildcards `*` (one token) and `>` (the rest). */
  subscribe(subject: string, onMessage: (msg: BusMessage) => void): Subscription;
  request(subject: string, data: Uint8Array, options?: { timeoutMs?: number }): Promise<RequestResult>;
  /** Opens (creating when missing) a KV bucket. */
  kv(bucket: string, options?: { history?: number }): Promise<Kv>;
  onStatus(listener: (status: BusStatus) => void): () => void;
  close(): Promise<void>;
}
