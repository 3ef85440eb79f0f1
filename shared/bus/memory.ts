import { BusError, DEFAULT_REQUEST_TIMEOUT_MS } from "./bus.ts";
import type { Bus, BusMessage, BusStatus, Kv, KvEntry, KvWatchOptions, KvWriteResult, RequestResult, Subscription, Watch } from "./bus.ts";
import { isValidBucketName, isValidKvFilter, isValidKvKey, isValidSubject, isValidSubjectFilter, subjectMatches } from "./subject.ts";

/** What several memory buses share, as NATS clients share a server: subscriptions and KV buckets. */
export interface MemoryNetwork {
  readonly kind: "memory-network";
}

interface ClientState {
  closed: boolean;
  readonly subscriptions: Set<SubscriptionState>;
  readonly watchers: Set<WatcherState>;
  readonly pending: Set<(result: RequestResult) => void>;
  readonly statusListeners: Set<(status: BusStatus) => void>;
}

interface SubscriptionState {
  readonly filter: string;
  readonly onMessage: (msg: BusMessage) => void;
}

interface StoredEntry {
  readonly value: Uint8Array;
  readonly revision: number;
  readonly operation: "PUT" | "DEL";
}

interface WatcherState {
  readonly filter: string;
  readonly bucket: BucketState;
  deliver(entry: KvEntry): void;
}

interface BucketState {
  seq: number;
  readonly entries: Map<string, StoredEntry>;
  readonly watchers: Set<WatcherState>;
}

interface NetworkState {
  readonly subscriptions: Set<SubscriptionState>;
  readonly buckets: Map<string, BucketState>;
}

const networks = new WeakMap<MemoryNetwork, NetworkState>();

/**
 * createMemoryNetwork makes the shared state that several memory buses talk through (one "server").
 * @example
 * const network = createMemoryNetwork();
 * const control = createMemoryBus({ network });
 * const proxy = createMemoryBus({ network });
 */
export function createMemoryNetwork(): MemoryNetwork {
  const network: MemoryNetwork = Object.freeze({ kind: "memory-network" });
  networks.set(network, { subscriptions: new Set(), buckets: new Map() });
  return network;
}

function checkSubject(subject: string): void {
  if (typeof subject !== "string" || !isValidSubject(subject)) throw new TypeError(`invalid subject ${JSON.stringify(subject)}`);
}

function checkBytes(data: Uint8Array): void {
  if (!(data instanceof Uint8Array)) throw new TypeError("data must be a Uint8Array");
}

function checkKey(key: string): void {
  if (typeof key !== "string" || !isValidKvKey(key)) throw new TypeError(`invalid KV key ${JSON.stringify(key)}`);
}

const CLOSED: { readonly ok: false; readonly reason: "closed" } = { ok: false, reason: "closed" };

/**
 * createMemoryBus is the in-process bus (for `weft dev` and tests) with the NATS semantics of the real one:
 * wildcards, request/reply with `no_responders`, bucket-wide KV revisions, CAS, watches; delivery is asynchronous.
 * Buses made with the same `network` see each other; without one, the bus gets a network of its own.
 * @example
 * const bus = createMemoryBus();
 * const config = await bus.kv("weft-config");
 * await config.put("svc.web", encodeJson(service));
 */
export function createMemoryBus(options: { network?: MemoryNetwork } = {}): Bus {
  const network = networks.get(options.network ?? createMemoryNetwork());
  if (!network) throw new TypeError("createMemoryBus: network was not made by createMemoryNetwork");
  const client: ClientState = {
    closed: false,
    subscriptions: new Set(),
    watchers: new Set(),
    pending: new Set(),
    statusListeners: new Set(),
  };

  const deliverMessage = (subject: string, data: Uint8Array, respond?: (reply: Uint8Array) => void): number => {
    let delivered = 0;
    for (const sub of network.subscriptions) {
      if (!subjectMatches(sub.filter, subject)) continue;
      delivered++;
      // Each subscriber gets its own copy, as each NATS client gets its own bytes off the wire.
      const msg: BusMessage = respond ? { subject, data: data.slice(), respond } : { subject, data: data.slice() };
      queueMicrotask(() => {
        if (network.subscriptions.has(sub)) sub.onMessage(msg);
      });
    }
    return delivered;
  };

  const openBucket = (name: string): Kv => {
    let bucket = network.buckets.get(name);
    if (!bucket) {
      bucket = { seq: 0, entries: new Map(), watchers: new Set() };
      network.buckets.set(name, bucket);
    }
    const state = bucket;

    const write = (key: string, value: Uint8Array, operation: "PUT" | "DEL"): number => {
      const revision = ++state.seq;
      const stored: StoredEntry = { value: value.slice(), revision, operation };
      state.entries.set(key, stored);
      for (const watcher of state.watchers) {
        if (subjectMatches(watcher.filter, key)) watcher.deliver({ key, value: stored.value.slice(), revision, operation });
      }
      return revision;
    };

    const checkedWrite = async (key: string, value: Uint8Array, allowed: (current: StoredEntry | undefined) => boolean): Promise<KvWriteResult> => {
      checkKey(key);
      checkBytes(value);
      if (client.closed) return CLOSED;
      if (!allowed(state.entries.get(key))) return { ok: false, reason: "conflict" };
      return { ok: true, revision: write(key, value, "PUT") };
    };

    return {
      async get(key) {
        checkKey(key);
        if (client.closed) throw new BusError("closed", "bus is closed");
        const stored = state.entries.get(key);
        if (!stored || stored.operation === "DEL") return undefined;
        return { key, value: stored.value.slice(), revision: stored.revision, operation: "PUT" };
      },
      put(key, value) {
        return checkedWrite(key, value, () => true);
      },
      create(key, value) {
        return checkedWrite(key, value, (current) => !current || current.operation === "DEL");
      },
      async update(key, value, expectedRevision) {
        if (!Number.isSafeInteger(expectedRevision) || expectedRevision < 0) {
          throw new TypeError(`expectedRevision must be a non-negative integer, got ${expectedRevision}`);
        }
        // Like JetStream's expected-last-subject-sequence: the key's last write (a delete included), 0 = never written.
        return checkedWrite(key, value, (current) => (current?.revision ?? 0) === expectedRevision);
      },
      async delete(key) {
        checkKey(key);
        if (client.closed) throw new BusError("closed", "bus is closed");
        write(key, new Uint8Array(0), "DEL");
      },
      async keys(filter = ">") {
        if (typeof filter !== "string" || !isValidKvFilter(filter)) throw new TypeError(`invalid KV filter ${JSON.stringify(filter)}`);
        if (client.closed) throw new BusError("closed", "bus is closed");
        const keys: string[] = [];
        for (const [key, stored] of state.entries) {
          if (stored.operation === "PUT" && subjectMatches(filter, key)) keys.push(key);
        }
        return keys.sort();
      },
      watch(filter: string, onEntry: (entry: KvEntry) => void, watchOptions: KvWatchOptions = {}): Watch {
        if (typeof filter !== "string" || !isValidKvFilter(filter)) throw new TypeError(`invalid KV filter ${JSON.stringify(filter)}`);
        if (client.closed) return { stop() {} };
        let active = true;
        const live = () => active && !client.closed;
        const watcher: WatcherState = {
          filter,
          bucket: state,
          deliver(entry) {
            queueMicrotask(() => {
              if (live()) onEntry(entry);
            });
          },
        };
        // Everything below runs synchronously, so the snapshot, onCaughtUp and later writes keep their order.
        if (!watchOptions.updatesOnly) {
          const current = [...state.entries]
            .filter(([key, stored]) => stored.operation === "PUT" && subjectMatches(filter, key))
            .sort((a, b) => a[1].revision - b[1].revision);
          for (const [key, stored] of current) {
            watcher.deliver({ key, value: stored.value.slice(), revision: stored.revision, operation: "PUT" });
          }
        }
        queueMicrotask(() => {
          if (live()) watchOptions.onCaughtUp?.();
        });
        state.watchers.add(watcher);
        client.watchers.add(watcher);
        return {
          stop() {
            active = false;
            state.watchers.delete(watcher);
            client.watchers.delete(watcher);
          },
        };
      },
    };
  };

  return {
    publish(subject, data) {
      checkSubject(subject);
      checkBytes(data);
      if (client.closed) return;
      deliverMessage(subject, data);
    },

    subscribe(subject, onMessage): Subscription {
      if (typeof subject !== "string" || !isValidSubjectFilter(subject)) throw new TypeError(`invalid subject ${JSON.stringify(subject)}`);
      if (client.closed) return { unsubscribe() {} };
      const sub: SubscriptionState = { filter: subject, onMessage };
      network.subscriptions.add(sub);
      client.subscriptions.add(sub);
      return {
        unsubscribe() {
          network.subscriptions.delete(sub);
          client.subscriptions.delete(sub);
        },
      };
    },

    async request(subject, data, requestOptions = {}) {
      checkSubject(subject);
      checkBytes(data);
      const timeoutMs = requestOptions.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
      if (!(timeoutMs > 0)) throw new TypeError(`timeoutMs must be positive, got ${timeoutMs}`);
      if (client.closed) return CLOSED;
      return new Promise<RequestResult>((resolve) => {
        let done = false;
        const finish = (result: RequestResult) => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          client.pending.delete(finish);
          resolve(result);
        };
        const timer = setTimeout(() => finish({ ok: false, reason: "timeout" }), timeoutMs);
        client.pending.add(finish);
        // The first reply wins; later ones go nowhere, as with a NATS inbox that has been answered.
        const respond = (reply: Uint8Array) => {
          checkBytes(reply);
          const copy = reply.slice();
          queueMicrotask(() => finish({ ok: true, data: copy }));
        };
        if (deliverMessage(subject, data, respond) === 0) queueMicrotask(() => finish({ ok: false, reason: "no_responders" }));
      });
    },

    async kv(bucket, kvOptions = {}) {
      if (typeof bucket !== "string" || !isValidBucketName(bucket)) throw new TypeError(`invalid bucket name ${JSON.stringify(bucket)}`);
      const history = kvOptions.history ?? 1;
      if (!Number.isInteger(history) || history < 1 || history > 64) throw new TypeError(`history must be 1..64, got ${history}`);
      if (client.closed) throw new BusError("closed", "bus is closed");
      // Only the last value per key is observable through Kv, so the memory bucket keeps no history.
      return openBucket(bucket);
    },

    async flush() {
      if (client.closed) throw new BusError("closed", "bus is closed");
    },

    onStatus(listener) {
      client.statusListeners.add(listener);
      return () => {
        client.statusListeners.delete(listener);
      };
    },

    async close() {
      if (client.closed) return;
      client.closed = true;
      for (const sub of client.subscriptions) network.subscriptions.delete(sub);
      client.subscriptions.clear();
      for (const watcher of client.watchers) watcher.bucket.watchers.delete(watcher);
      client.watchers.clear();
      for (const finish of [...client.pending]) finish(CLOSED);
      for (const listener of [...client.statusListeners]) listener("closed");
      client.statusListeners.clear();
    },
  };
}
