// The only file that imports nats: the bus over NATS core subjects and JetStream KV (nats.js v3).
// Written against nats-server 2.9 (see shared/RUNTIME-NOTES.md §3): one watcher per filter, and
// "caught up" is derived from the entries' pending count because v3 watches have no initializedFn.
import { connect, ClosedConnectionError, NoRespondersError, RequestError, TimeoutError } from "@nats-io/transport-node";
import type { Msg, NatsConnection, QueuedIterator } from "@nats-io/transport-node";
import { jetstream, JetStreamApiError } from "@nats-io/jetstream";
import type { JetStreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { KV, KvWatchEntry } from "@nats-io/kv";
import { BusError, DEFAULT_REQUEST_TIMEOUT_MS } from "./bus.ts";
import type { Bus, BusMessage, BusStatus, Kv, KvEntry, KvWatchOptions, KvWriteResult, RequestResult, Subscription, Watch } from "./bus.ts";
import { isValidBucketName, isValidKvFilter, isValidKvKey, isValidSubject, isValidSubjectFilter } from "./subject.ts";

export interface NatsBusOptions {
  /** Server URL(s), e.g. `nats://127.0.0.1:4222`. */
  servers: string | string[];
  /** Client name shown in the server's monitoring (default none). */
  name?: string;
  /** Wait between reconnect attempts (default 1000). Reconnects never give up. */
  reconnectTimeWaitMs?: number;
  /** How long a KV operation waits for JetStream (default 5000). */
  kvTimeoutMs?: number;
  /** How long the first handshake may take (default 5000). */
  connectTimeoutMs?: number;
  /** Keep trying when no server is reachable at start instead of failing (default false). */
  waitOnFirstConnect?: boolean;
  /** Credentials, when the server requires them (default none). */
  token?: string;
  user?: string;
  pass?: string;
}

const CLOSED: { readonly ok: false; readonly reason: "closed" } = { ok: false, reason: "closed" };
const WRONG_LAST_SEQUENCE = new Set([10071, 10164]);
const STREAM_NAME_IN_USE = 10058;
const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 2000;

// A listener's exception is the listener's bug: surface it as an uncaught error, as the memory bus does,
// instead of letting it break the connection's parser loop or a watch.
function call(fn: () => void): void {
  try {
    fn();
  } catch (err) {
    queueMicrotask(() => {
      throw err;
    });
  }
}

function checkBytes(data: Uint8Array): void {
  if (!(data instanceof Uint8Array)) throw new TypeError("data must be a Uint8Array");
}

function checkKey(key: string): void {
  if (typeof key !== "string" || !isValidKvKey(key)) throw new TypeError(`invalid KV key ${JSON.stringify(key)}`);
}

function checkFilter(filter: string): void {
  if (typeof filter !== "string" || !isValidKvFilter(filter)) throw new TypeError(`invalid KV filter ${JSON.stringify(filter)}`);
}

function isTimeout(err: unknown): boolean {
  return err instanceof TimeoutError || (err instanceof Error && err.cause instanceof TimeoutError);
}

function isConflict(err: unknown): boolean {
  return err instanceof JetStreamApiError && WRONG_LAST_SEQUENCE.has(err.code);
}

function sleep(ms: number, wake: Promise<void>): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([new Promise<void>((r) => (timer = setTimeout(r, ms))), wake]).finally(() => clearTimeout(timer));
}

interface WatchContext {
  readonly kv: KV;
  readonly jsm: JetStreamManager;
  readonly stream: string;
  readonly subjectPrefix: string;
  isClosed(): boolean;
}

interface WatchRunner {
  /** Re-creates the server-side consumer from the last seen revision (after a reconnect). */
  restart(): void;
  stop(): void;
}

function startWatch(ctx: WatchContext, filter: string, onEntry: (entry: KvEntry) => void, options: KvWatchOptions, onStop: () => void): WatchRunner {
  let stopped = false;
  let caughtUp = false;
  // Highest revision seen: the resume point, and the guard against delivering an entry twice.
  let lastRevision = 0;
  let restartRequested = false;
  let iter: QueuedIterator<KvWatchEntry> | undefined;
  let wakeUp = () => {};
  let wake = new Promise<void>((r) => (wakeUp = r));
  // Keys handed out as current values before onCaughtUp: a delete of one of them must still be reported.
  const snapshotKeys = new Set<string>();
  const active = () => !stopped && !ctx.isClosed();

  const markCaughtUp = () => {
    if (caughtUp) return;
    caughtUp = true;
    snapshotKeys.clear();
    if (options.onCaughtUp) call(options.onCaughtUp);
  };

  const handle = (e: KvWatchEntry) => {
    const endOfSnapshot = e.delta === 0;
    if (e.revision > lastRevision) {
      lastRevision = e.revision;
      const operation = e.operation === "PUT" ? "PUT" : "DEL";
      // Deleted keys are not current values; before catching up only deletes of delivered keys matter.
      if (caughtUp || operation === "PUT" || snapshotKeys.has(e.key)) {
        if (!caughtUp) {
          if (operation === "PUT") snapshotKeys.add(e.key);
          else snapshotKeys.delete(e.key);
        }
        const entry: KvEntry = { key: e.key, value: operation === "PUT" ? e.value : new Uint8Array(0), revision: e.revision, operation };
        call(() => onEntry(entry));
      }
    }
    if (!caughtUp && endOfSnapshot) markCaughtUp();
  };

  const once = async () => {
    const info = await ctx.jsm.streams.info(ctx.stream, { subjects_filter: `${ctx.subjectPrefix}${filter}` });
    if (!active()) return;
    if (!caughtUp && options.updatesOnly) lastRevision = Math.max(lastRevision, info.state.last_seq);
    // Once caught up (or updates-only) a (re)start resumes right after the last revision seen: every
    // change made while the consumer was gone is delivered, nothing twice.
    const resume = caughtUp || options.updatesOnly === true;
    const watch = await ctx.kv.watch(resume ? { key: filter, resumeFromRevision: lastRevision + 1 } : { key: filter });
    if (!active()) {
      watch.stop();
      return;
    }
    iter = watch;
    const empty = Object.keys(info.state.subjects ?? {}).length === 0;
    if (!caughtUp && (resume || empty)) markCaughtUp();
    for await (const e of watch) {
      if (!active()) break;
      handle(e);
    }
  };

  (async () => {
    let failures = 0;
    while (active()) {
      restartRequested = false;
      try {
        await once();
        // An iterator that ended by itself (consumer gone) is retried like a failure, with backoff.
        failures = restartRequested ? 0 : failures + 1;
      } catch {
        failures++;
      }
      iter = undefined;
      if (!active() || failures === 0) continue;
      await sleep(Math.min(RETRY_MIN_MS * 2 ** (failures - 1), RETRY_MAX_MS), wake);
    }
  })();

  const interrupt = () => {
    iter?.stop();
    wakeUp();
    wake = new Promise<void>((r) => (wakeUp = r));
  };

  return {
    restart() {
      restartRequested = true;
      interrupt();
    },
    stop() {
      if (stopped) return;
      stopped = true;
      interrupt();
      onStop();
    },
  };
}

/**
 * connectNatsBus connects to NATS and returns the bus over it: core subjects for pub/sub and request/reply,
 * JetStream KV for config; reconnects forever and keeps KV watches alive across reconnects and server restarts.
 * Rejects with BusError `unavailable` when the first connection fails (unless waitOnFirstConnect).
 * @example
 * const bus = await connectNatsBus({ servers: env.natsUrl, name: proxyId });
 * bus.onStatus((status) => log.info("bus", { status }));
 */
export async function connectNatsBus(options: NatsBusOptions): Promise<Bus> {
  const servers = options.servers;
  if (typeof servers === "string" ? servers === "" : !Array.isArray(servers) || servers.length === 0) {
    throw new TypeError("connectNatsBus: servers is required");
  }
  const kvTimeoutMs = options.kvTimeoutMs ?? 5000;
  let nc: NatsConnection;
  try {
    nc = await connect({
      servers,
      name: options.name,
      maxReconnectAttempts: -1,
      reconnectTimeWait: options.reconnectTimeWaitMs ?? 1000,
      timeout: options.connectTimeoutMs ?? 5000,
      waitOnFirstConnect: options.waitOnFirstConnect ?? false,
      token: options.token,
      user: options.user,
      pass: options.pass,
    });
  } catch (err) {
    throw new BusError("unavailable", `cannot connect to NATS at ${String(servers)}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }

  let closed = false;
  const isClosed = () => closed || nc.isClosed();
  const statusListeners = new Set<(status: BusStatus) => void>();
  const watches = new Set<WatchRunner>();
  const buckets = new Map<string, Promise<Kv>>();
  const js = jetstream(nc, { timeout: kvTimeoutMs });

  const emit = (status: BusStatus) => {
    for (const listener of [...statusListeners]) call(() => listener(status));
  };

  const failure = (err: unknown): "timeout" | "closed" | "unavailable" => {
    if (isClosed() || err instanceof ClosedConnectionError) return "closed";
    return isTimeout(err) ? "timeout" : "unavailable";
  };

  const busError = (err: unknown, what: string) => {
    const code = failure(err);
    return new BusError(code, `${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  };

  (async () => {
    let connected = true;
    for await (const status of nc.status()) {
      if (status.type === "disconnect" && connected) {
        connected = false;
        emit("disconnected");
      } else if (status.type === "reconnect") {
        connected = true;
        emit("reconnected");
        // Push consumers on a restarted server may be gone; re-create them now rather than
        // waiting for missed heartbeats (10 s or more).
        for (const watch of watches) watch.restart();
      }
    }
  })().catch(() => {});
  nc.closed().then(() => {
    closed = true;
    for (const watch of [...watches]) watch.stop();
    emit("closed");
    statusListeners.clear();
  }, () => {});

  const openKv = async (bucket: string, history: number): Promise<Kv> => {
    const kvm = new Kvm(js);
    let kv: KV;
    try {
      kv = await kvm.create(bucket, { history });
    } catch (err) {
      // Another process created it first with other settings: use the bucket as it is.
      if (!(err instanceof JetStreamApiError && err.code === STREAM_NAME_IN_USE)) throw busError(err, `cannot open KV bucket ${bucket}`);
      kv = await kvm.open(bucket);
    }
    let jsm: JetStreamManager;
    try {
      jsm = await js.jetstreamManager();
    } catch (err) {
      throw busError(err, `cannot open KV bucket ${bucket}`);
    }
    const ctx: WatchContext = { kv, jsm, stream: `KV_${bucket}`, subjectPrefix: `$KV.${bucket}.`, isClosed };

    const write = async (op: () => Promise<number>): Promise<KvWriteResult> => {
      if (isClosed()) return CLOSED;
      try {
        return { ok: true, revision: await op() };
      } catch (err) {
        if (isConflict(err)) return { ok: false, reason: "conflict" };
        const code = failure(err);
        if (code === "unavailable") throw busError(err, "KV write failed");
        return { ok: false, reason: code };
      }
    };

    const read = async <T>(what: string, op: () => Promise<T>): Promise<T> => {
      if (isClosed()) throw new BusError("closed", "bus is closed");
      try {
        return await op();
      } catch (err) {
        throw busError(err, what);
      }
    };

    return {
      async get(key) {
        checkKey(key);
        const e = await read(`KV get ${key}`, () => kv.get(key));
        if (!e || e.operation !== "PUT") return undefined;
        return { key, value: e.value, revision: e.revision, operation: "PUT" };
      },
      async put(key, value) {
        checkKey(key);
        checkBytes(value);
        return write(() => kv.put(key, value));
      },
      async create(key, value) {
        checkKey(key);
        checkBytes(value);
        return write(() => kv.create(key, value));
      },
      async update(key, value, expectedRevision) {
        checkKey(key);
        checkBytes(value);
        if (!Number.isSafeInteger(expectedRevision) || expectedRevision < 0) {
          throw new TypeError(`expectedRevision must be a non-negative integer, got ${expectedRevision}`);
        }
        // kv.update refuses revision 0; the expected-last-subject-sequence header takes it (= never written).
        return write(() => kv.put(key, value, { previousSeq: expectedRevision }));
      },
      async delete(key) {
        checkKey(key);
        await read(`KV delete ${key}`, () => kv.delete(key));
      },
      async keys(filter = ">") {
        checkFilter(filter);
        return read(`KV keys ${filter}`, async () => {
          const found = new Set<string>();
          for await (const key of await kv.keys(filter)) found.add(key);
          return [...found].sort();
        });
      },
      watch(filter, onEntry, watchOptions = {}): Watch {
        checkFilter(filter);
        if (isClosed()) return { stop() {} };
        const runner = startWatch(ctx, filter, onEntry, watchOptions, () => watches.delete(runner));
        watches.add(runner);
        return { stop: () => runner.stop() };
      },
    };
  };

  const toMessage = (msg: Msg): BusMessage => {
    if (!msg.reply) return { subject: msg.subject, data: msg.data };
    return {
      subject: msg.subject,
      data: msg.data,
      respond(reply: Uint8Array) {
        checkBytes(reply);
        if (isClosed()) return;
        try {
          msg.respond(reply);
        } catch {
          // The connection closed meanwhile; the requester sees a timeout, as with a lost reply.
        }
      },
    };
  };

  return {
    publish(subject, data) {
      if (typeof subject !== "string" || !isValidSubject(subject)) throw new TypeError(`invalid subject ${JSON.stringify(subject)}`);
      checkBytes(data);
      if (isClosed()) return;
      try {
        nc.publish(subject, data);
      } catch (err) {
        if (!(err instanceof ClosedConnectionError)) throw err;
      }
    },

    subscribe(subject, onMessage): Subscription {
      if (typeof subject !== "string" || !isValidSubjectFilter(subject)) throw new TypeError(`invalid subject ${JSON.stringify(subject)}`);
      if (isClosed()) return { unsubscribe() {} };
      const sub = nc.subscribe(subject, {
        callback: (err, msg) => {
          if (!err) call(() => onMessage(toMessage(msg)));
        },
      });
      return {
        unsubscribe() {
          if (!sub.isClosed()) sub.unsubscribe();
        },
      };
    },

    async request(subject, data, requestOptions = {}): Promise<RequestResult> {
      if (typeof subject !== "string" || !isValidSubject(subject)) throw new TypeError(`invalid subject ${JSON.stringify(subject)}`);
      checkBytes(data);
      const timeoutMs = requestOptions.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
      if (!(timeoutMs > 0)) throw new TypeError(`timeoutMs must be positive, got ${timeoutMs}`);
      if (isClosed()) return CLOSED;
      try {
        const reply = await nc.request(subject, data, { timeout: timeoutMs });
        return { ok: true, data: reply.data };
      } catch (err) {
        if (err instanceof NoRespondersError || (err instanceof RequestError && err.isNoResponders())) return { ok: false, reason: "no_responders" };
        if (isClosed() || err instanceof ClosedConnectionError) return CLOSED;
        // A RequestError other than no-responders is a request lost with the connection: no reply in time.
        if (isTimeout(err) || err instanceof RequestError) return { ok: false, reason: "timeout" };
        throw err;
      }
    },

    kv(bucket, kvOptions = {}) {
      if (typeof bucket !== "string" || !isValidBucketName(bucket)) return Promise.reject(new TypeError(`invalid bucket name ${JSON.stringify(bucket)}`));
      const history = kvOptions.history ?? 1;
      if (!Number.isInteger(history) || history < 1 || history > 64) return Promise.reject(new TypeError(`history must be 1..64, got ${history}`));
      if (isClosed()) return Promise.reject(new BusError("closed", "bus is closed"));
      let opened = buckets.get(bucket);
      if (!opened) {
        opened = openKv(bucket, history);
        buckets.set(bucket, opened);
        // A failed open is not cached: the next call tries again (e.g. after a reconnect).
        opened.catch(() => buckets.delete(bucket));
      }
      return opened;
    },

    async flush() {
      if (isClosed()) throw new BusError("closed", "bus is closed");
      try {
        await nc.flush();
      } catch (err) {
        throw busError(err, "flush failed");
      }
    },

    onStatus(listener) {
      statusListeners.add(listener);
      return () => {
        statusListeners.delete(listener);
      };
    },

    async close() {
      if (closed) return;
      closed = true;
      for (const watch of [...watches]) watch.stop();
      await nc.close();
      await nc.closed();
    },
  };
}
