// The control plane and the proxy-side watcher together, on the in-memory bus (same semantics as NATS;
// the NATS runs are in test/integration/control-plane.test.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import { CONFIG_BUCKET, createMemoryBus, createMemoryNetwork, decodeJson, APPLIED_KEY, type Bus } from "../shared/bus/index.ts";
import type { MeshInput, Snapshot } from "../shared/config/index.ts";
import { createAnnouncer, createConfigWatcher, type LastGoodStore } from "../shared/discovery/index.ts";
import { startControlPlane } from "./plane.ts";

function meshConfig(target: "alpha" | "beta", extra: Partial<MeshInput> = {}): MeshInput {
  return {
    services: {
      alpha: { endpoints: [{ address: "127.0.0.1:9101" }] },
      beta: { versions: { v1: { version: "v1" } } },
      unrelated: { endpoints: [{ address: "127.0.0.1:9103" }] },
    },
    gateways: {
      edge: { listeners: [{ port: 8080 }], routes: [{ name: "all", forward: { to: [{ service: target }] } }] },
    },
    ...extra,
  };
}

async function until(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function memoryStore(): LastGoodStore & { text?: string } {
  const store: LastGoodStore & { text?: string } = {
    load: async () => store.text,
    save: async (t) => void (store.text = t),
  };
  return store;
}

async function gatewayWatcher(bus: Bus, store = memoryStore()) {
  const applied: Snapshot[] = [];
  const watcher = createConfigWatcher({ bus, proxyId: "gw-1", role: { kind: "gateway", name: "edge" }, apply: (s) => void applied.push(s), store, statusIntervalMs: 100 });
  await watcher.start();
  return { watcher, applied, store, last: () => applied[applied.length - 1] };
}

test("an apply reaches a gateway watcher, which reports the revision it runs", async () => {
  const network = createMemoryNetwork();
  const control = await startControlPlane({ bus: createMemoryBus({ network }), id: "c1" });
  const gw = await gatewayWatcher(createMemoryBus({ network }));
  try {
    const r = await control.apply(meshConfig("alpha"));
    assert.ok(r.ok);
    assert.equal(r.generation, 1);
    await until("first snapshot", () => gw.applied.length === 1);
    const snap = gw.last()!;
    assert.equal(snap.revision, 1);
    assert.deepEqual([...snap.services.keys()].sort(), ["alpha"], "scoped: only the service its routes reach");
    assert.deepEqual([...snap.gateways.keys()], ["edge"]);
    await until("status row", () => control.status().some((row) => row.proxyId === "gw-1" && row.sync === "SYNCED" && row.revision === 1));
  } finally {
    gw.watcher.stop();
    await control.stop();
  }
});

test("an invalid apply is refused whole, listing every problem, and the proxy keeps its config", async () => {
  const network = createMemoryNetwork();
  const control = await startControlPlane({ bus: createMemoryBus({ network }), id: "c1" });
  const gw = await gatewayWatcher(createMemoryBus({ network }));
  try {
    await control.apply(meshConfig("alpha"));
    await until("first snapshot", () => gw.applied.length === 1);
    const bad = meshConfig("alpha") as { gateways: Record<string, { routes: unknown[] }> };
    bad.gateways.edge!.routes.push({ forward: { to: [{ service: "nope" }] } }, { match: { path: { regex: "(a+)+$" } }, directResponse: { status: 200 } });
    const r = await control.apply(bad);
    assert.equal(r.ok, false);
    assert.ok(!r.ok && r.reason === "invalid_config");
    const paths = !r.ok && r.reason === "invalid_config" ? r.issues.map((i) => i.path) : [];
    assert.ok(paths.includes("gateways.edge.routes.1.forward.to.0.service"), paths.join());
    assert.ok(paths.includes("gateways.edge.routes.2.match.path.regex"), paths.join());
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(gw.applied.length, 1);
    assert.equal(gw.watcher.revision, 1);
  } finally {
    gw.watcher.stop();
    await control.stop();
  }
});

test("only changed keys are written, and a change the proxy does not depend on does not touch it", async () => {
  const network = createMemoryNetwork();
  const control = await startControlPlane({ bus: createMemoryBus({ network }), id: "c1" });
  const gw = await gatewayWatcher(createMemoryBus({ network }));
  try {
    await control.apply(meshConfig("alpha"));
    await until("first snapshot", () => gw.applied.length === 1);
    const same = await control.apply(meshConfig("alpha"));
    assert.ok(same.ok);
    assert.deepEqual(same.changes, []);
    const c = meshConfig("alpha") as { services: Record<string, { endpoints?: { address: string }[] }> };
    c.services.unrelated!.endpoints = [{ address: "127.0.0.1:9999" }];
    const r = await control.apply(c);
    assert.ok(r.ok);
    assert.deepEqual(r.changes.map((x) => `${x.key} ${x.op}`), ["svc.unrelated updated"]);
    // None of the gateway's keys changed: it hears nothing and stays on revision 1.
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(gw.applied.length, 1);
    assert.equal(gw.watcher.revision, 1);
    const rerouted = await control.apply(meshConfig("beta"));
    assert.ok(rerouted.ok);
    await until("rerouted", () => gw.last()!.services.has("beta"));
    assert.deepEqual([...gw.last()!.services.keys()], ["beta"]);
  } finally {
    gw.watcher.stop();
    await control.stop();
  }
});

test("registered endpoints join the snapshot, draining is marked, and silent ones expire after 3 heartbeats", async () => {
  const network = createMemoryNetwork();
  const control = await startControlPlane({ bus: createMemoryBus({ network }), id: "c1", sweepMs: 20 });
  const gw = await gatewayWatcher(createMemoryBus({ network }));
  const sidecarBus = createMemoryBus({ network });
  const announcer = createAnnouncer({
    bus: sidecarBus,
    service: "beta",
    endpoint: { address: "127.0.0.1:9201", labels: { version: "v1" }, weight: 1, proxyId: "sidecar-beta-1" },
    intervalMs: 50,
  });
  try {
    await control.apply(meshConfig("beta"));
    announcer.start();
    const endpoints = () => gw.last()?.services.get("beta")?.endpoints ?? [];
    await until("registered endpoint", () => endpoints().length === 1);
    assert.equal(endpoints()[0]!.address, "127.0.0.1:9201");
    assert.equal(endpoints()[0]!.labels.version, "v1");
    announcer.drain();
    await until("draining", () => endpoints()[0]?.draining === true);
    // Stop heartbeats without saying goodbye (a crashed sidecar): gone within 3 intervals (+ sweep).
    const silentAt = Date.now();
    (sidecarBus as { publish: Bus["publish"] }).publish = () => {};
    await until("expired", () => endpoints().length === 0, 2000);
    const took = Date.now() - silentAt;
    assert.ok(took <= 3 * 50 + 20 + 200, `expired after ${took} ms`);
  } finally {
    announcer.stop();
    gw.watcher.stop();
    await control.stop();
  }
});

test("a proxy restarted without the bus serves the config it persisted", async () => {
  const network = createMemoryNetwork();
  const control = await startControlPlane({ bus: createMemoryBus({ network }), id: "c1" });
  const gw = await gatewayWatcher(createMemoryBus({ network }));
  await control.apply(meshConfig("beta"));
  await until("persisted", () => gw.store.text !== undefined && gw.watcher.revision === 1);
  gw.watcher.stop();
  await control.stop();
  const { restoreLastGood } = await import("../shared/discovery/index.ts");
  const restored: Snapshot[] = [];
  const rev = await restoreLastGood(gw.store, (s) => void restored.push(s));
  assert.equal(rev, 1);
  assert.deepEqual([...restored[0]!.services.keys()], ["beta"]);
});

test("two control-plane replicas applying at once leave a consistent bucket", async () => {
  const network = createMemoryNetwork();
  const a = await startControlPlane({ bus: createMemoryBus({ network }), id: "c1" });
  const b = await startControlPlane({ bus: createMemoryBus({ network }), id: "c2" });
  const reader = createMemoryBus({ network });
  try {
    const configs = Array.from({ length: 6 }, (_, i) => {
      const services: Record<string, object> = {};
      for (let s = 0; s < 5; s++) services[`s${i}-${s}`] = { endpoints: [{ address: `127.0.0.1:${9000 + s}` }] };
      return { services, gateways: { edge: { listeners: [{ port: 8080 }], routes: [{ forward: { to: [{ service: `s${i}-0` }] } }] } } };
    });
    const results = await Promise.all(configs.map((c, i) => (i % 2 ? a : b).apply(c)));
    for (const r of results) assert.ok(r.ok, JSON.stringify(r));
    const gens = results.map((r) => (r.ok ? r.generation : 0)).sort((x, y) => x - y);
    assert.deepEqual(gens, [1, 2, 3, 4, 5, 6], "each apply got its own generation");
    const kv = await reader.kv(CONFIG_BUCKET);
    const mesh = decodeJson((await kv.get(APPLIED_KEY))!.value);
    assert.ok(mesh.ok);
    const declared = (mesh.value as { services: string[]; generation: number }).services;
    const stored = (await kv.keys("svc.*")).map((k) => k.slice(4));
    assert.deepEqual(stored, [...declared].sort(), "the service keys are exactly the last apply's services");
    for (const key of await kv.keys("svc.*")) {
      const v = decodeJson((await kv.get(key))!.value);
      assert.ok(v.ok && (v.value as { generation: number }).generation <= (mesh.value as { generation: number }).generation);
    }
  } finally {
    await a.stop();
    await b.stop();
  }
});
