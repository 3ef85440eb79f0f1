// "NATS comes back": a proxy's watch and subscriptions must keep working across a nats-server restart
// (same port and JetStream store), and the bus must say when it lost and regained the server.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { BUCKET_HISTORY, connectNatsBus, type Bus, type BusStatus, type KvEntry } from "../../shared/bus/index.ts";
import { startNatsServer, type NatsServer } from "../harness/nats-server.ts";
import { until } from "../harness/wait.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

let server: NatsServer;
const buses: Bus[] = [];
const connectBus = async (name: string) => {
  const bus = await connectNatsBus({ servers: server.url, name, reconnectTimeWaitMs: 50 });
  buses.push(bus);
  return bus;
};

before(async () => {
  server = await startNatsServer();
});
after(async () => {
  await Promise.all(buses.map((b) => b.close()));
  await server?.stop();
});

test("a KV watch keeps delivering after nats-server restarts, and onStatus reports disconnected then reconnected", async () => {
  const bus = await connectBus("watcher");
  const statuses: BusStatus[] = [];
  bus.onStatus((s) => statuses.push(s));
  const kv = await bus.kv("weft-config", { history: 5 });
  const entries: KvEntry[] = [];
  let caughtUp = 0;
  const watch = kv.watch("svc.>", (e) => entries.push(e), { onCaughtUp: () => caughtUp++ });
  await until("caught up", () => caughtUp === 1);
  const before = await kv.put("svc.a", enc("before"));
  assert.ok(before.ok);
  await until("svc.a before the restart", () => entries.length === 1);

  await server.restart();
  await until("reconnected", () => statuses.includes("reconnected"));
  assert.deepEqual(statuses, ["disconnected", "reconnected"]);

  const afterRestart = await kv.put("svc.b", enc("after"));
  assert.ok(afterRestart.ok);
  assert.ok(afterRestart.revision > before.revision, "revisions persist across the restart");
  await until("svc.b after the restart", () => entries.some((e) => e.key === "svc.b"));
  assert.deepEqual(entries.map((e) => `${e.key}=${dec(e.value)}@${e.revision}`), [`svc.a=before@${before.revision}`, `svc.b=after@${afterRestart.revision}`]);
  assert.equal(caughtUp, 1);
  watch.stop();
});

// With history 1 JetStream keeps only a key's newest value, so a watcher that reconnects late sees
// the latest state only; weft's buckets keep BUCKET_HISTORY values, so each change still reaches it.
test("changes written while a watcher is still reconnecting reach it, once each", async () => {
  const watcherBus = await connectBus("slow-watcher");
  const kv = await watcherBus.kv("restart-history", { history: BUCKET_HISTORY });
  const entries: KvEntry[] = [];
  let caughtUp = false;
  kv.watch(">", (e) => entries.push(e), { onCaughtUp: () => (caughtUp = true) });
  await until("caught up", () => caughtUp);
  const seeded = await kv.put("bundle.cluster.local", enc("root-1"));
  assert.ok(seeded.ok);
  await until("the first bundle", () => entries.length === 1);

  await server.kill();
  await server.restart();
  // A fresh client writes as soon as the server is back, likely before the watcher has reconnected.
  const writer = await connectBus("writer");
  const writerKv = await writer.kv("restart-history", { history: BUCKET_HISTORY });
  const rotated = await writerKv.update("bundle.cluster.local", enc("root-1+root-2"), seeded.revision);
  assert.ok(rotated.ok);
  await writerKv.delete("bundle.cluster.local");
  await until("the rotation and the delete", () => entries.length >= 3);
  assert.deepEqual(entries.map((e) => `${e.operation}:${dec(e.value)}`), ["PUT:root-1", "PUT:root-1+root-2", "DEL:"]);
});

test("core subscriptions and request/reply work again after the restart", async () => {
  const responder = await connectBus("responder");
  const requester = await connectBus("requester");
  responder.subscribe("weft.ca.sign", (m) => m.respond?.(enc(`signed:${dec(m.data)}`)));
  await responder.flush();
  const statuses: BusStatus[] = [];
  responder.onStatus((s) => statuses.push(s));
  const requesterStatuses: BusStatus[] = [];
  requester.onStatus((s) => requesterStatuses.push(s));

  await server.restart();
  await until("both reconnected", () => statuses.includes("reconnected") && requesterStatuses.includes("reconnected"));
  await responder.flush();
  const reply = await requester.request("weft.ca.sign", enc("csr"), { timeoutMs: 5000 });
  assert.equal(reply.ok && dec(reply.data), "signed:csr");
});

test("a KV write while the server is down fails as timeout, not as a throw", async () => {
  const bus = await connectNatsBus({ servers: server.url, name: "impatient", reconnectTimeWaitMs: 50, kvTimeoutMs: 300 });
  buses.push(bus);
  const kv = await bus.kv("weft-config");
  const statuses: BusStatus[] = [];
  bus.onStatus((s) => statuses.push(s));
  await server.kill();
  await until("disconnected", () => statuses.includes("disconnected"));
  assert.deepEqual(await kv.put("svc.down", enc("x")), { ok: false, reason: "timeout" });
  await assert.rejects(kv.get("svc.down"), (err: unknown) => err instanceof Error && (err as { code?: string }).code === "timeout");
  await server.restart();
  await until("reconnected", () => statuses.includes("reconnected"));
  const retried = await kv.put("svc.down", enc("y"));
  assert.equal(retried.ok, true);
});
