import { test } from "node:test";
import assert from "node:assert/strict";
import { runBusConformance } from "./bus.conformance.ts";
import { createMemoryBus, createMemoryNetwork } from "./memory.ts";

runBusConformance("memory", async () => {
  const network = createMemoryNetwork();
  const bus = createMemoryBus({ network });
  const bus2 = createMemoryBus({ network });
  return {
    bus,
    bus2,
    async cleanup() {
      await bus.close();
      await bus2.close();
    },
  };
});

test("memory buses on different networks do not see each other", async () => {
  const a = createMemoryBus();
  const b = createMemoryBus();
  const kvA = await a.kv("weft-config");
  const kvB = await b.kv("weft-config");
  await kvA.put("svc.web", new Uint8Array([1]));
  assert.equal(await kvB.get("svc.web"), undefined);
  assert.deepEqual(await b.request("svc.web", new Uint8Array()), { ok: false, reason: "no_responders" });
  await a.close();
  await b.close();
});

test("delivery is asynchronous: a subscriber never runs inside publish", async () => {
  const bus = createMemoryBus();
  let inside = false;
  let ranInside: boolean | undefined;
  const done = new Promise<void>((resolve) =>
    bus.subscribe("x", () => {
      ranInside = inside;
      resolve();
    }),
  );
  inside = true;
  bus.publish("x", new Uint8Array());
  inside = false;
  await done;
  assert.equal(ranInside, false);
  await bus.close();
});

test("a stored value is a copy: mutating the written or read bytes changes nothing", async () => {
  const bus = createMemoryBus();
  const kv = await bus.kv("b");
  const written = new Uint8Array([1, 2, 3]);
  await kv.put("k", written);
  written[0] = 9;
  const read = (await kv.get("k"))!.value;
  read[1] = 9;
  assert.deepEqual([...(await kv.get("k"))!.value], [1, 2, 3]);
  await bus.close();
});

test("closing one client keeps the network's data for the others", async () => {
  const network = createMemoryNetwork();
  const a = createMemoryBus({ network });
  await (await a.kv("b")).put("k", new Uint8Array([7]));
  await a.close();
  const b = createMemoryBus({ network });
  assert.deepEqual([...(await (await b.kv("b")).get("k"))!.value], [7]);
  await b.close();
});

test("a network not made by createMemoryNetwork is refused", () => {
  assert.throws(() => createMemoryBus({ network: { kind: "memory-network" } }), TypeError);
});
