import { test } from "node:test";
import assert from "node:assert/strict";
import { BusError, CONFIG_BUCKET, createMemoryBus, createMemoryNetwork, encodeJson, type Bus, type MemoryNetwork } from "../bus/index.ts";
import { validateMesh, type MeshInput, type Snapshot } from "../config/index.ts";
import { followBus } from "./follow-bus.ts";
import { splitMesh } from "./resources.ts";
import { createConfigWatcher, type LastGoodStore, type LogSink, type ProxyRole } from "./watcher.ts";
import { until } from "../../test/harness/wait.ts";

const ROLE: ProxyRole = { kind: "gateway", name: "edge" };

function mesh(endpoint: string): MeshInput {
  return {
    services: { web: { endpoints: [{ address: endpoint }] } },
    gateways: { edge: { listeners: [{ port: 8080 }], routes: [{ forward: { to: [{ service: "web" }] } }] } },
  };
}

async function writeConfig(network: MemoryNetwork, input: MeshInput, generation: number): Promise<void> {
  const bus = createMemoryBus({ network });
  const kv = await bus.kv(CONFIG_BUCKET);
  const validated = validateMesh(input);
  if (!validated.ok) assert.fail(JSON.stringify(validated.issues));
  for (const [key, value] of splitMesh(validated.value, generation)) await kv.put(key, encodeJson(value));
  await bus.close();
}

function memoryStore(text?: string): LastGoodStore & { text?: string } {
  const store: LastGoodStore & { text?: string } = { text, load: async () => store.text, save: async (t) => void (store.text = t) };
  return store;
}

/** The store a previous run of the proxy left behind: it followed a bus that held `input` at `generation`. */
async function persistedBy(input: MeshInput, generation: number): Promise<string> {
  const network = createMemoryNetwork();
  await writeConfig(network, input, generation);
  const store = memoryStore();
  const bus = createMemoryBus({ network });
  const w = createConfigWatcher({ bus, proxyId: "gw-1", role: ROLE, apply: () => {}, store });
  await w.start();
  await until("persisted", () => store.text !== undefined);
  w.stop();
  await bus.close();
  return store.text!;
}

function recordingLog(): LogSink & { entries: { level: string; msg: string }[] } {
  const entries: { level: string; msg: string }[] = [];
  return {
    entries,
    info: (msg) => void entries.push({ level: "info", msg }),
    warn: (msg) => void entries.push({ level: "warn", msg }),
    error: (msg) => void entries.push({ level: "error", msg }),
  };
}

const addresses = (s: Snapshot | undefined) => s?.services.get("web")?.endpoints.map((e) => e.address);

test("followBus serves the persisted config before the bus answers, then applies and persists what the bus holds", async () => {
  const store = memoryStore(await persistedBy(mesh("127.0.0.1:9001"), 1));
  const network = createMemoryNetwork();
  await writeConfig(network, mesh("127.0.0.1:9002"), 2);
  let connected!: (bus: Bus) => void;
  const applied: Snapshot[] = [];
  const log = recordingLog();
  const follow = await followBus({
    connect: () => new Promise<Bus>((resolve) => (connected = resolve)),
    proxyId: "gw-1",
    role: ROLE,
    store,
    apply: (s) => void applied.push(s),
    log,
  });
  try {
    // followBus returned while connect() is still pending: the restored config is already running.
    assert.equal(applied.length, 1);
    assert.equal(applied[0]!.revision, 1);
    assert.deepEqual(addresses(applied[0]), ["127.0.0.1:9001"]);
    connected(createMemoryBus({ network }));
    const watcher = await follow.watcher;
    await until("the bus's config", () => applied.length === 2);
    assert.equal(applied[1]!.revision, 2);
    assert.deepEqual(addresses(applied[1]), ["127.0.0.1:9002"]);
    assert.equal(watcher.revision, 2);
    await until("persisted", () => store.text !== undefined && JSON.parse(store.text).mesh.generation === 2);
  } finally {
    await follow.stop();
  }
});

test("followBus with nothing persisted applies nothing until the bus answers", async () => {
  const network = createMemoryNetwork();
  await writeConfig(network, mesh("127.0.0.1:9002"), 3);
  const applied: Snapshot[] = [];
  let connected!: (bus: Bus) => void;
  const follow = await followBus({
    connect: () => new Promise<Bus>((resolve) => (connected = resolve)),
    proxyId: "gw-1",
    role: ROLE,
    store: memoryStore(),
    apply: (s) => void applied.push(s),
    log: recordingLog(),
  });
  try {
    assert.equal(applied.length, 0);
    connected(createMemoryBus({ network }));
    await until("the bus's config", () => applied.length === 1);
    assert.equal(applied[0]!.revision, 3);
  } finally {
    await follow.stop();
  }
});

test("a failed connect is retried while the persisted config keeps serving", async () => {
  const store = memoryStore(await persistedBy(mesh("127.0.0.1:9001"), 1));
  const network = createMemoryNetwork();
  await writeConfig(network, mesh("127.0.0.1:9002"), 2);
  let attempts = 0;
  const applied: Snapshot[] = [];
  const log = recordingLog();
  const follow = await followBus({
    connect: async () => {
      attempts += 1;
      if (attempts <= 2) throw new BusError("unavailable", "connection refused");
      return createMemoryBus({ network });
    },
    proxyId: "gw-1",
    role: ROLE,
    store,
    apply: (s) => void applied.push(s),
    log,
  });
  try {
    assert.equal(applied[0]?.revision, 1, "the persisted config serves while the bus is down");
    const watcher = await follow.watcher;
    assert.equal(attempts, 3);
    await until("the bus's config", () => watcher.revision === 2);
    assert.deepEqual(applied.map((s) => s.revision), [1, 2]);
    assert.ok(log.entries.filter((e) => e.level === "warn").length >= 2, "each failed attempt is logged");
  } finally {
    await follow.stop();
  }
});

test("a bus whose config bucket cannot be opened is closed, and the proxy connects again", async () => {
  const network = createMemoryNetwork();
  await writeConfig(network, mesh("127.0.0.1:9002"), 2);
  const closed: boolean[] = [];
  let attempts = 0;
  const applied: Snapshot[] = [];
  const follow = await followBus({
    connect: async () => {
      attempts += 1;
      const bus = createMemoryBus({ network });
      const index = closed.push(false) - 1;
      const close = bus.close.bind(bus);
      const flaky: Bus = {
        ...bus,
        // JetStream not answering yet: the first connection cannot open the bucket.
        kv: attempts === 1 ? () => Promise.reject(new BusError("timeout", "no JetStream response")) : bus.kv.bind(bus),
        close: async () => {
          closed[index] = true;
          await close();
        },
      };
      return flaky;
    },
    proxyId: "gw-1",
    role: ROLE,
    store: memoryStore(),
    apply: (s) => void applied.push(s),
    log: recordingLog(),
  });
  try {
    await follow.watcher;
    await until("the bus's config", () => applied.length === 1);
    assert.equal(attempts, 2);
    assert.deepEqual(closed, [true, false], "the failed connection is closed, the working one kept");
  } finally {
    await follow.stop();
  }
});

test("stop() ends the retries: no connect attempt follows it", async () => {
  let attempts = 0;
  const follow = await followBus({
    connect: async () => {
      attempts += 1;
      throw new BusError("unavailable", "connection refused");
    },
    proxyId: "gw-1",
    role: ROLE,
    store: memoryStore(),
    apply: () => assert.fail("nothing to apply"),
    log: recordingLog(),
  });
  await until("a retry", () => attempts >= 2);
  await follow.stop();
  const after = attempts;
  await assert.rejects(follow.watcher);
  // Longer than the retry backoff so far (100 ms, 200 ms): a live retry loop would have tried again.
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(attempts, after);
});

test("a bus that answers only after stop() is closed, not followed", async () => {
  const network = createMemoryNetwork();
  let connected!: (bus: Bus) => void;
  let closedLate = false;
  const follow = await followBus({
    connect: () => new Promise<Bus>((resolve) => (connected = resolve)),
    proxyId: "gw-1",
    role: ROLE,
    store: memoryStore(),
    apply: () => assert.fail("nothing to apply"),
    log: recordingLog(),
  });
  await follow.stop();
  const late = createMemoryBus({ network });
  connected({ ...late, close: async () => void (closedLate = true) });
  await assert.rejects(follow.watcher);
  assert.equal(closedLate, true);
  await late.close();
});
