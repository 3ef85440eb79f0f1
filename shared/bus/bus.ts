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

/** How long `request` waits for a reply when no `timeoutMs` is given. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 1000;

export type RequestResult =
  | { readonly ok: true; readonly data: Uint8Array }
  | { readonly ok: false; readonly reason: "timeout" | "no_responders" | "closed" };

/**
 * A value in a KV bucket with the bucket-wide revision it was written at (JetStream stream sequence:
 * every write to any key of the bucket takes the next number). A `DEL` entry has an empty value.
 */
export interface KvEntry {
  readonly key: string;
  readonly value: Uint8Array;
  readonly revision: number;
  readonly operation: "PUT" | "DEL";
}

/** `timeout`: the server did not confirm the write in time (e.g. while disconnected); it may or may not have happened. */
export type KvWriteResult =
  | { readonly ok: true; readonly revision: number }
  | { readonly ok: false; readonly reason: "conflict" | "closed" | "timeout" };

/**
 * BusError is what a bus operation without a result type (`get`, `keys`, `delete`, `kv`) rejects with;
 * `code` is stable: `timeout` (no answer in time), `closed` (bus closed), `unavailable` (anything else).
 * Invalid subjects, keys, filters and bucket names are API misuse and throw `TypeError` instead.
 */
export class BusError extends Error {
  readonly code: "timeout" | "closed" | "unavailable";
  constructor(code: BusError["code"], message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "BusError";
    this.code = code;
  }
}

export interface KvWatchOptions {
  /** Called exactly once, when the current values have all been delivered (also for an empty filter). */
  onCaughtUp?(): void;
  /** Deliver only changes after the current values (default false: current values first). */
  updatesOnly?: boolean;
}

export interface Watch {
  stop(): void;
}

export interface Kv {
  /** The key's live value; `undefined` when it never existed or its last write was a delete. */
  get(key: string): Promise<KvEntry | undefined>;
  put(key: string, value: Uint8Array): Promise<KvWriteResult>;
  /** Writes only when the key does not exist (or was deleted); else `conflict`. */
  create(key: string, value: Uint8Array): Promise<KvWriteResult>;
  /** Writes only when the key's last revision is `expectedRevision`; else `conflict`. */
  update(key: string, value: Uint8Array, expectedRevision: number): Promise<KvWriteResult>;
  /** Writes a delete marker (watchers see a `DEL` entry), also when the key does not exist. */
  delete(key: string): Promise<void>;
  /** Live keys matching a NATS-style filter (`svc.*`, `svc.>`, or exact; default `>`), sorted. */
  keys(filter?: string): Promise<string[]>;
  /**
   * Watches keys matching a filter: the current live values first (unless updatesOnly; deleted keys are
   * not current values), then `onCaughtUp`, then every change (`PUT` and `DEL`) in revision order.
   * A NATS watch survives reconnects and server restarts without losing or repeating changes.
   */
  watch(filter: string, onEntry: (entry: KvEntry) => void, options?: KvWatchOptions): Watch;
}

/** Connection changes; a memory bus only ever reports `closed`. */
export type BusStatus = "connected" | "disconnected" | "reconnected" | "closed";

export interface Bus {
  /** Fire-and-forget; a no-op once the bus is closed. */
  publish(subject: string, data: Uint8Array): void;
  /** Subject may use NATS wildcards `*` (one token) and `>` (the rest). Inert once the bus is closed. */
  subscribe(subject: string, onMessage: (msg: BusMessage) => void): Subscription;
  /** Sends and waits for the first reply (default timeout DEFAULT_REQUEST_TIMEOUT_MS); `no_responders` when nobody subscribes. */
  request(subject: string, data: Uint8Array, options?: { timeoutMs?: number }): Promise<RequestResult>;
  /** Opens (creating when missing) a KV bucket; `history` is values kept per key on creation (1..64, default 1). */
  kv(bucket: string, options?: { history?: number }): Promise<Kv>;
  /** Resolves once the server has processed everything this client sent before (subscriptions included). */
  flush(): Promise<void>;
  onStatus(listener: (status: BusStatus) => void): () => void;
  close(): Promise<void>;
}
