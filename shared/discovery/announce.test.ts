import { test } from "node:test";
import assert from "node:assert/strict";
import { CONFIG_BUCKET, createMemoryBus, createMemoryNetwork, decodeJson, encodeJson, endpointsKey, registrySubject, type Bus } from "../bus/index.ts";
import { startControlPlane } from "../../control/plane.ts";
import { createAnnouncer, parseHeartbeat, type Heartbeat } from "./announce.ts";
import { type EndpointsResource, type RegisteredEndpoint } from "./resources.ts";
import { until } from "../../test/harness/wait.ts";

const ENDPOINT: Omit<RegisteredEndpoint, "draining"> = { address: "127.0.0.1:9201", labels: { version: "v1" }, weight: 2, proxyId: "sidecar-web-1" };

/** Collects every heartbeat published for a service, parsed as the registry parses them. */
function listen(bus: Bus, service: string): { beats: (Heartbeat | undefined)[] } {
  const out = { beats: [] as (Heartbeat | undefined)[] };
  bus.subscribe(registrySubject(service), (msg) => out.beats.push(parseHeartbeat(msg.data)));
  return out;
}

/** An announcer for "web" on a memory network, and an observer collecting every heartbeat it publishes. */
function announced(intervalMs: number) {
  const network = createMemoryNetwork();
  const observer = createMemoryBus({ network });
  const heard = listen(observer, "web");
  const announcer = createAnnouncer({ bus: createMemoryBus({ network }), service: "web", endpoint: ENDPOINT, intervalMs });
  return { heard, announcer, observer };
}

test("an announcer heartbeats at once on start and then every interval, each beat a valid registration", async () => {
  const { heard, announcer, observer } = announced(20);
  try {
    announcer.start();
    await until("four heartbeats", () => heard.beats.length >= 4, { timeoutMs: 3000 });
    for (const beat of heard.beats) assert.deepEqual(beat, { ...ENDPOINT, draining: false, intervalMs: 20 });
  } finally {
    announcer.stop();
    await observer.close();
  }
});

test("a second start() does not double the heartbeat", async () => {
  const { heard, announcer, observer } = announced(60_000);
  try {
    announcer.start();
    announcer.start();
    await observer.flush();
    await until("the first heartbeat", () => heard.beats.length >= 1);
    // The interval is a minute: only start() itself can have sent anything, and a doubled send would be queued by now.
    await new Promise((r) => setImmediate(r));
    assert.equal(heard.beats.length, 1);
  } finally {
    announcer.stop();
    await observer.close();
  }
});

test("drain() re-announces the endpoint as draining at once, and later beats stay draining", async () => {
  const { heard, announcer, observer } = announced(20);
  try {
    announcer.start();
    await until("first heartbeat", () => heard.beats.length >= 1);
    announcer.drain();
    const drainedFrom = heard.beats.length;
    await until("two draining heartbeats", () => heard.beats.slice(drainedFrom).length >= 2, { timeoutMs: 3000 });
    assert.equal(heard.beats[0]!.draining, false);
    assert.ok(heard.beats.slice(drainedFrom).every((b) => b?.draining === true));
  } finally {
    announcer.stop();
    await observer.close();
  }
});

test("stop() sends one leaving heartbeat and nothing after it", async () => {
  const { heard, announcer, observer } = announced(20);
  announcer.start();
  await until("first heartbeat", () => heard.beats.length >= 1);
  announcer.stop();
  await until("leaving heartbeat", () => heard.beats.some((b) => b?.leaving === true));
  const at = heard.beats.length;
  assert.equal(heard.beats.at(-1)!.leaving, true);
  assert.equal(heard.beats.filter((b) => b?.leaving).length, 1);
  // Wait past several intervals by counting a timer of our own, not by measuring: no beat follows.
  for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(heard.beats.length, at);
  announcer.stop(); // stopping twice says goodbye once
  await new Promise((r) => setImmediate(r));
  assert.equal(heard.beats.length, at);
  await observer.close();
});

test("through the control plane's registry: start registers the endpoint, drain marks it, leaving removes it", async () => {
  const network = createMemoryNetwork();
  const control = await startControlPlane({ bus: createMemoryBus({ network }), id: "c1", sweepMs: 60_000 });
  const reader = createMemoryBus({ network });
  const applied = await control.apply({ services: { web: {} } });
  assert.ok(applied.ok);
  const kv = await reader.kv(CONFIG_BUCKET);
  let eps: EndpointsResource | undefined;
  kv.watch(endpointsKey("web"), (e) => {
    const decoded = decodeJson(e.value);
    eps = e.operation === "PUT" && decoded.ok ? (decoded.value as EndpointsResource) : undefined;
  });
  const announcer = createAnnouncer({ bus: createMemoryBus({ network }), service: "web", endpoint: ENDPOINT, intervalMs: 60_000 });
  try {
    announcer.start();
    await until("registered", () => eps?.endpoints.length === 1);
    assert.deepEqual(eps!.endpoints[0], { ...ENDPOINT, draining: false });
    announcer.drain();
    await until("draining", () => eps?.endpoints[0]?.draining === true);
    announcer.stop();
    await until("removed", () => eps?.endpoints.length === 0);
  } finally {
    announcer.stop();
    await control.stop();
    await reader.close();
  }
});

test("parseHeartbeat refuses malformed payloads (the wire is untrusted)", () => {
  const good: Heartbeat = { ...ENDPOINT, draining: false, intervalMs: 5000 };
  assert.deepEqual(parseHeartbeat(encodeJson(good)), good);
  assert.deepEqual(parseHeartbeat(encodeJson({ ...good, leaving: true })), { ...good, leaving: true });
  const refused: [string, Uint8Array][] = [
    ["not JSON", new TextEncoder().encode("{address:")],
    ["invalid UTF-8", new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])],
    ["a JSON array", encodeJson([good])],
    ["no address", encodeJson({ ...good, address: undefined })],
    ["address without a port", encodeJson({ ...good, address: "10.0.0.1" })],
    ["address with a path", encodeJson({ ...good, address: "http://10.0.0.1:80/x" })],
    ["negative weight", encodeJson({ ...good, weight: -1 })],
    ["fractional weight", encodeJson({ ...good, weight: 1.5 })],
    ["draining not a boolean", encodeJson({ ...good, draining: "yes" })],
    ["label value not a string", encodeJson({ ...good, labels: { version: 1 } })],
    ["proxy id that is not one bus token", encodeJson({ ...good, proxyId: "a.b" })],
    ["interval under 10 ms", encodeJson({ ...good, intervalMs: 1 })],
    ["interval over an hour", encodeJson({ ...good, intervalMs: 3_600_001 })],
    ["leaving not a boolean", encodeJson({ ...good, leaving: 1 })],
  ];
  for (const [what, bytes] of refused) assert.equal(parseHeartbeat(bytes), undefined, what);
});
