// The proxy-side config watcher on the in-memory bus: the test writes the config keys itself (as the
// control plane would, via splitMesh) and reads the proxy's status reports off the bus.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  BUCKET_HISTORY,
  CONFIG_BUCKET,
  createMemoryBus,
  createMemoryNetwork,
  decodeJson,
  encodeJson,
  endpointsKey,
  statusSubject,
  type Bus,
  type Kv,
} from "../bus/index.ts";
import { validateMesh, type MeshInput, type Snapshot } from "../config/index.ts";
import { splitMesh, type EndpointsResource } from "./resources.ts";
import { createConfigWatcher, restoreLastGood, type ConfigWatcher, type LastGoodStore, type ProxyRole, type StatusReport } from "./watcher.ts";
import { until } from "../../test/harness/wait.ts";

const PROXY_ID = "proxy-1";

function mesh(overrides: Partial<MeshInput> = {}): MeshInput & { services: NonNullable<MeshInput["services"]> } {
  return {
    services: {
      alpha: { endpoints: [{ address: "127.0.0.1:9101" }] },
      beta: { routes: [{ forward: { to: [{ service: "gamma" }] } }] },
      gamma: { endpoints: [{ address: "127.0.0.1:9103" }] },
      delta: { endpoints: [{ address: "127.0.0.1:9104" }] },
      unrelated: { endpoints: [{ address: "127.0.0.1:9105" }] },
    },
    gateways: {
      edge: { listeners: [{ port: 8080 }], routes: [{ forward: { to: [{ service: "beta" }] } }] },
    },
    ...overrides,
  };
}

function memoryStore(): LastGoodStore & { text?: string; saves: number } {
  const store: LastGoodStore & { text?: string; saves: number } = {
    saves: 0,
    load: async () => store.text,
    save: async (t) => {
      store.saves += 1;
      store.text = t;
    },
  };
  return store;
}

interface Fixture {
  readonly kv: Kv;
  readonly watcher: ConfigWatcher;
  readonly applied: Snapshot[];
  readonly reports: StatusReport[];
  readonly store: ReturnType<typeof memoryStore>;
  /** Writes every key of a config at a generation, as an apply that changed all of them would. */
  write(input: MeshInput, generation: number, only?: readonly string[]): Promise<void>;
  acks(revision: number): StatusReport[];
  close(): Promise<void>;
}

async function start(role: ProxyRole, options: { apply?: (s: Snapshot) => void; initial?: MeshInput; settleMs?: number } = {}): Promise<Fixture> {
  const network = createMemoryNetwork();
  const control: Bus = createMemoryBus({ network });
  const proxy: Bus = createMemoryBus({ network });
  const kv = await control.kv(CONFIG_BUCKET, { history: BUCKET_HISTORY });
  const applied: Snapshot[] = [];
  const reports: StatusReport[] = [];
  control.subscribe(statusSubject(PROXY_ID), (msg) => {
    const decoded = decodeJson(msg.data);
    if (decoded.ok) reports.push(decoded.value as StatusReport);
  });
  const write = async (input: MeshInput, generation: number, only?: readonly string[]) => {
    const validated = validateMesh(input);
    if (!validated.ok) assert.fail(`fixture does not validate: ${JSON.stringify(validated.issues)}`);
    for (const [key, value] of splitMesh(validated.value, generation)) {
      if (!only || only.includes(key)) await kv.put(key, encodeJson(value));
    }
  };
  if (options.initial) await write(options.initial, 1);
  const store = memoryStore();
  const watcher = createConfigWatcher({
    bus: proxy,
    proxyId: PROXY_ID,
    role,
    apply: (s) => {
      options.apply?.(s);
      applied.push(s);
    },
    store,
    statusIntervalMs: 60_000,
    ...(options.settleMs ? { settleMs: options.settleMs } : {}),
  });
  await watcher.start();
  return {
    kv,
    watcher,
    applied,
    reports,
    store,
    write,
    acks: (revision) => reports.filter((r) => r.state === "ACK" && r.revision === revision),
    async close() {
      watcher.stop();
      await proxy.close();
      await control.close();
    },
  };
}

test("a gateway watches its own key, the mesh record and the services its routes reach (transitively), nothing else", async () => {
  const f = await start({ kind: "gateway", name: "edge" }, { initial: mesh() });
  try {
    await until("first ACK", () => f.acks(1).length === 1);
    assert.deepEqual(f.watcher.status.watching, ["eps.beta", "eps.gamma", "gw.edge", "mesh", "svc.beta", "svc.gamma"]);
    assert.deepEqual([...f.applied[0]!.services.keys()].sort(), ["beta", "gamma"]);
    assert.deepEqual([...f.applied[0]!.gateways.keys()], ["edge"]);
  } finally {
    await f.close();
  }
});

test("a gateway also watches the services its tcp and tls routes send to", async () => {
  const input = mesh();
  input.services.alpha = { ports: [{ port: 5432, protocol: "tcp" }], endpoints: [{ address: "127.0.0.1:9101" }] };
  input.services.delta = { ports: [{ port: 443, protocol: "tls" }], endpoints: [{ address: "127.0.0.1:9104" }] };
  input.gateways = {
    edge: {
      listeners: [{ port: 8080 }, { port: 5432, protocol: "tcp" }, { port: 8443, protocol: "tls" }],
      routes: [{ forward: { to: [{ service: "beta" }] } }],
      tcpRoutes: [{ to: [{ service: "alpha" }] }],
      tlsRoutes: [{ match: { sniHosts: ["db.example.com"] }, to: [{ service: "delta" }] }],
    },
  };
  const f = await start({ kind: "gateway", name: "edge" }, { initial: input });
  try {
    await until("first ACK", () => f.acks(1).length === 1);
    assert.deepEqual([...f.applied[0]!.services.keys()].sort(), ["alpha", "beta", "delta", "gamma"]);
  } finally {
    await f.close();
  }
});

test("a change to a service the proxy does not depend on brings neither an apply nor a status report", async () => {
  const f = await start({ kind: "gateway", name: "edge" }, { initial: mesh() });
  try {
    await until("first ACK", () => f.acks(1).length === 1);
    const changed = mesh();
    changed.services.unrelated = { endpoints: [{ address: "127.0.0.1:9999" }] };
    changed.services.alpha = { endpoints: [{ address: "127.0.0.1:9998" }] };
    await f.write(changed, 2, ["svc.unrelated", "svc.alpha"]);
    await f.kv.put(endpointsKey("unrelated"), encodeJson({ service: "unrelated", endpoints: [] } satisfies EndpointsResource));
    // A change it does depend on, written after: once its ACK arrives, the earlier writes have been delivered too.
    changed.services.gamma = { endpoints: [{ address: "127.0.0.1:9997" }] };
    await f.write(changed, 3, ["svc.gamma"]);
    await until("ACK for the watched change", () => f.acks(3).length === 1);
    assert.equal(f.acks(2).length, 0, "no ACK for generation 2, which touched only other services");
    assert.equal(f.reports.length, 2, "one report per apply, none for unrelated keys");
    assert.equal(f.applied.length, 2);
    assert.deepEqual(f.applied[1]!.services.get("gamma")!.endpoints.map((e) => e.address), ["127.0.0.1:9997"]);
    assert.ok(!f.watcher.status.watching.some((k) => k.endsWith(".unrelated") || k.endsWith(".alpha")));
  } finally {
    await f.close();
  }
});

test("a sidecar watches its own service and the services its own routes send to", async () => {
  const f = await start({ kind: "sidecar", service: "beta" }, { initial: mesh() });
  try {
    await until("first ACK", () => f.acks(1).length === 1);
    assert.deepEqual(f.watcher.status.watching, ["eps.beta", "eps.gamma", "mesh", "svc.beta", "svc.gamma"]);
    assert.deepEqual([...f.applied[0]!.services.keys()].sort(), ["beta", "gamma"]);
    assert.equal(f.applied[0]!.gateways.size, 0);
  } finally {
    await f.close();
  }
});

test("want() adds a service found on demand, with its endpoints, to what the sidecar watches and runs", async () => {
  const f = await start({ kind: "sidecar", service: "alpha" }, { initial: mesh() });
  try {
    await until("first ACK", () => f.acks(1).length === 1);
    assert.deepEqual([...f.applied[0]!.services.keys()], ["alpha"]);
    f.watcher.want("delta");
    await until("apply with delta", () => f.applied.at(-1)!.services.has("delta"));
    assert.deepEqual(f.watcher.status.watching, ["eps.alpha", "eps.delta", "mesh", "svc.alpha", "svc.delta"]);
    // Registered endpoints of the wanted service now reach the proxy.
    const eps: EndpointsResource = { service: "delta", endpoints: [{ address: "10.1.1.1:80", labels: {}, weight: 1, draining: false, proxyId: "sc-delta" }] };
    await f.kv.put(endpointsKey("delta"), encodeJson(eps));
    await until("delta endpoint", () => f.applied.at(-1)!.services.get("delta")!.endpoints.some((e) => e.address === "10.1.1.1:80"));
    // A service the mesh does not have is watched (it may appear later) but not refused.
    f.watcher.want("nosuch");
    await until("watching nosuch", () => f.watcher.status.watching.includes("svc.nosuch"));
    assert.ok(f.reports.every((r) => r.state === "ACK"), JSON.stringify(f.reports.map((r) => r.state)));
    // Wanting a service with routes also pulls in their targets.
    f.watcher.want("beta");
    await until("beta and its target", () => f.applied.at(-1)!.services.has("beta") && f.applied.at(-1)!.services.has("gamma"));
  } finally {
    await f.close();
  }
});

test("several keys changed together are applied once, as one consistent snapshot", async () => {
  const f = await start({ kind: "gateway", name: "edge" }, { initial: mesh() });
  try {
    await until("first ACK", () => f.acks(1).length === 1);
    // Reroute the gateway to a service it never watched, change that service and the mesh record at once.
    const next = mesh({
      trustDomain: "next.test",
      gateways: { edge: { listeners: [{ port: 8080 }], routes: [{ forward: { to: [{ service: "delta" }] } }] } },
    });
    next.services.delta = { endpoints: [{ address: "127.0.0.1:9204" }] };
    await f.write(next, 2, ["svc.delta", "mesh", "gw.edge"]);
    await until("ACK for generation 2", () => f.acks(2).length === 1);
    assert.equal(f.applied.length, 2, "one apply for the whole change");
    const snap = f.applied[1]!;
    assert.equal(snap.revision, 2);
    assert.equal(snap.trustDomain, "next.test");
    assert.deepEqual([...snap.services.keys()], ["delta"]);
    assert.deepEqual(snap.services.get("delta")!.endpoints.map((e) => e.address), ["127.0.0.1:9204"]);
    assert.ok(f.reports.every((r) => r.state === "ACK"), "no half-applied state was ever refused");
    // The keys it no longer needs are no longer watched.
    assert.deepEqual(f.watcher.status.watching, ["eps.delta", "gw.edge", "mesh", "svc.delta"]);
  } finally {
    await f.close();
  }
});

test("an ACK names the proxy, its role and the revision it now runs", async () => {
  const f = await start({ kind: "gateway", name: "edge" }, { initial: mesh() });
  try {
    await until("first ACK", () => f.acks(1).length === 1);
    const ack = f.acks(1)[0]!;
    assert.equal(ack.proxyId, PROXY_ID);
    assert.equal(ack.role, "gateway");
    assert.equal(ack.name, "edge");
    assert.equal(ack.nack, undefined);
    assert.deepEqual(ack.watching, f.watcher.status.watching);
    const next = mesh();
    next.services.gamma = { endpoints: [{ address: "127.0.0.1:9300" }] };
    await f.write(next, 5, ["svc.gamma"]);
    await until("ACK for generation 5", () => f.acks(5).length === 1);
    assert.equal(f.watcher.revision, 5);
    assert.equal(f.applied.at(-1)!.revision, 5);
  } finally {
    await f.close();
  }
});

test("a refused update is NACKed with its problem paths and the last good snapshot keeps running", async () => {
  const f = await start({ kind: "gateway", name: "edge" }, { initial: mesh() });
  try {
    await until("first ACK", () => f.acks(1).length === 1);
    const goodText = f.store.text;
    assert.ok(goodText);
    // The gateway now routes to a service the mesh does not have: assembling its keys fails validation.
    await f.kv.put(
      "gw.edge",
      encodeJson({ generation: 2, name: "edge", config: { ...gatewaySection(mesh()), routes: [{ forward: { to: [{ service: "ghost", weight: 1 }] } }] } }),
    );
    await until("NACK", () => f.reports.some((r) => r.state === "NACK"));
    const nack = f.reports.find((r) => r.state === "NACK")!;
    assert.equal(nack.revision, 1, "still running revision 1");
    assert.equal(nack.nack!.revision, 2);
    assert.deepEqual(nack.nack!.issues.map((i) => i.path), ["gateways.edge.routes.0.forward.to.0.service"]);
    assert.equal(f.applied.length, 1);
    assert.equal(f.watcher.revision, 1);
    assert.equal(f.store.text, goodText, "the persisted config is still the last good one");
    assert.equal(f.watcher.status.state, "NACK");

    // Bytes that are not JSON, on the key the gateway now routes to, are refused the same way, by key path.
    await f.kv.put("svc.ghost", new TextEncoder().encode("{not json"));
    await until("second NACK", () => f.reports.filter((r) => r.state === "NACK").length === 2);
    const paths = f.reports.filter((r) => r.state === "NACK")[1]!.nack!.issues.map((i) => i.path);
    assert.ok(paths.length > 0 && paths.every((p) => p.startsWith("svc.ghost.")), paths.join());

    // A good update afterwards is applied and clears the NACK.
    await f.write(mesh(), 3, ["gw.edge"]);
    await until("ACK for generation 3", () => f.acks(3).length === 1);
    assert.equal(f.acks(3)[0]!.nack, undefined);
    assert.equal(f.applied.length, 2);
  } finally {
    await f.close();
  }
});

test("a snapshot the proxy itself refuses (apply throws) is NACKed at (apply) and not persisted", async () => {
  let refuse = false;
  const f = await start(
    { kind: "gateway", name: "edge" },
    {
      initial: mesh(),
      apply: () => {
        if (refuse) throw new Error("listener port in use");
      },
    },
  );
  try {
    await until("first ACK", () => f.acks(1).length === 1);
    const saves = f.store.saves;
    refuse = true;
    const next = mesh();
    next.services.gamma = { endpoints: [{ address: "127.0.0.1:9400" }] };
    await f.write(next, 2, ["svc.gamma"]);
    await until("NACK", () => f.reports.some((r) => r.state === "NACK"));
    const nack = f.reports.find((r) => r.state === "NACK")!;
    assert.deepEqual(nack.nack!.issues.map((i) => i.path), ["(apply)"]);
    assert.equal(nack.nack!.revision, 2);
    assert.equal(f.watcher.revision, 1);
    assert.equal(f.store.saves, saves);
  } finally {
    await f.close();
  }
});

test("a config the watcher applied and persisted is restored whole by restoreLastGood (LastGoodStore round-trip)", async () => {
  const f = await start({ kind: "gateway", name: "edge" }, { initial: mesh() });
  try {
    const eps: EndpointsResource = { service: "gamma", endpoints: [{ address: "10.2.2.2:80", labels: { version: "v1" }, weight: 2, draining: true, proxyId: "sc-gamma" }] };
    await f.kv.put(endpointsKey("gamma"), encodeJson(eps));
    await until("endpoint applied and persisted", () => f.applied.at(-1)?.services.get("gamma")?.endpoints.length === 2 && f.store.saves === f.applied.length);
    const restored: Snapshot[] = [];
    const revision = await restoreLastGood(f.store, (s) => void restored.push(s));
    assert.equal(revision, 1);
    assert.equal(restored.length, 1);
    assert.deepEqual(restored[0], f.applied.at(-1));
  } finally {
    await f.close();
  }
});

test("restoreLastGood serves the persisted snapshot before any bus exists, and declines what it cannot use", async () => {
  const f = await start({ kind: "sidecar", service: "beta" }, { initial: mesh() });
  await until("persisted", () => f.store.text !== undefined);
  await f.close();
  // A fresh process: only the store, no bus at all.
  const restored: Snapshot[] = [];
  assert.equal(await restoreLastGood({ load: async () => f.store.text, save: async () => {} }, (s) => void restored.push(s)), 1);
  assert.deepEqual([...restored[0]!.services.keys()].sort(), ["beta", "gamma"]);

  const never = (s: Snapshot) => assert.fail(`applied revision ${s.revision}`);
  assert.equal(await restoreLastGood({ load: async () => undefined, save: async () => {} }, never), undefined, "nothing persisted");
  assert.equal(await restoreLastGood({ load: async () => "{truncated", save: async () => {} }, never), undefined, "corrupt file");
  assert.equal(await restoreLastGood({ load: () => Promise.reject(new Error("EACCES")), save: async () => {} }, never), undefined, "unreadable file");
  const tampered = JSON.parse(f.store.text!) as { mesh: { outboundTrafficPolicy: string } };
  tampered.mesh.outboundTrafficPolicy = "SOMETIMES";
  assert.equal(await restoreLastGood({ load: async () => JSON.stringify(tampered), save: async () => {} }, never), undefined, "fails validation");
});

function gatewaySection(input: MeshInput) {
  const validated = validateMesh(input);
  if (!validated.ok) assert.fail("fixture does not validate");
  return validated.value.gateways.edge!;
}
