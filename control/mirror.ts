import { decodeJson, type Kv, type Watch } from "../shared/bus/index.ts";

/**
 * The control plane's read view of the `weft-config` bucket, kept current by one watch. Applies
 * diff against it (after waiting for it to reach their lock's revision), and status/get read it.
 */
export interface ConfigMirror {
  /** Resolves once the initial values are in. */
  ready(): Promise<void>;
  /** Resolves once every write up to `revision` has been seen. */
  caughtUpTo(revision: number): Promise<void>;
  /** Live keys and their decoded values (undecodable values are left out). */
  entries(): ReadonlyMap<string, unknown>;
  get(key: string): unknown;
  /** Revision of the last write seen. */
  readonly revision: number;
  stop(): void;
}

/**
 * createConfigMirror watches every key of the bucket.
 * @example
 * const mirror = createConfigMirror(kv); await mirror.ready();
 */
export function createConfigMirror(kv: Kv): ConfigMirror {
  const values = new Map<string, unknown>();
  let revision = 0;
  let caughtUp = false;
  const waiters: { revision: number; resolve: () => void }[] = [];
  let readyResolve!: () => void;
  const readyPromise = new Promise<void>((r) => (readyResolve = r));
  const wake = () => {
    for (let i = waiters.length - 1; i >= 0; i--) {
      if (caughtUp && waiters[i]!.revision <= revision) waiters.splice(i, 1)[0]!.resolve();
    }
  };
  const watch: Watch = kv.watch(
    ">",
    (e) => {
      revision = Math.max(revision, e.revision);
      if (e.operation === "DEL") values.delete(e.key);
      else {
        const decoded = decodeJson(e.value);
        if (decoded.ok) values.set(e.key, decoded.value);
        else values.delete(e.key);
      }
      wake();
    },
    {
      onCaughtUp: () => {
        caughtUp = true;
        readyResolve();
        wake();
      },
    },
  );
  return {
    ready: () => readyPromise,
    caughtUpTo: (rev) => new Promise<void>((resolve) => {
      waiters.push({ revision: rev, resolve });
      wake();
    }),
    entries: () => values,
    get: (key) => values.get(key),
    get revision() {
      return revision;
    },
    stop: () => watch.stop(),
  };
}
