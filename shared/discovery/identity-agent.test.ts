// The identity agent against a control plane that runs the mesh CA, all on the in-memory bus.
// Real keys and certificates; short leaf lifetimes so renewals happen within the test.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startControlPlane, type ControlPlane } from "../../control/plane.ts";
import { createMemoryBus, createMemoryNetwork, encodeJson, TRUST_BUCKET, trustBundleKey, type MemoryNetwork } from "../bus/index.ts";
import { nextRefreshAt, validateSvid, type Attestation } from "../identity/index.ts";
import { createIdentityAgent, createIdentitySlot, type IdentityAgent, type IdentityMaterial } from "./identity-agent.ts";
import { until } from "../../test/harness/wait.ts";

const TD = "weft.test";
const WEB = `spiffe://${TD}/ns/default/sa/web`;

interface Mesh {
  readonly network: MemoryNetwork;
  readonly control: ControlPlane;
  token(serviceAccount?: string): Promise<string>;
  agent(options?: { spiffeId?: string; attestation?: () => Promise<Attestation>; onUpdate?: (m: IdentityMaterial) => void; random?: () => number }): IdentityAgent;
}

/** Runs fn against a control plane with a CA (state in a temp dir), stopping agents, plane and dir after. */
async function withMesh(leafTtlMs: number | undefined, fn: (mesh: Mesh) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "weft-agent-"));
  const network = createMemoryNetwork();
  const control = await startControlPlane({ bus: createMemoryBus({ network }), id: "c1", ca: { trustDomain: TD, stateDir: dir, ...(leafTtlMs ? { leafTtlMs } : {}) } });
  const agents: IdentityAgent[] = [];
  const mesh: Mesh = {
    network,
    control,
    token: (serviceAccount = "web") => control.ca!.mintToken("default", serviceAccount, 60_000),
    agent(options = {}) {
      const agent = createIdentityAgent({
        bus: createMemoryBus({ network }),
        trustDomain: TD,
        spiffeId: options.spiffeId ?? WEB,
        attestation: options.attestation ?? (async () => ({ kind: "join_token", token: await mesh.token() })),
        ...(options.onUpdate ? { onUpdate: options.onUpdate } : {}),
        ...(options.random ? { random: options.random } : {}),
      });
      agents.push(agent);
      return agent;
    },
  };
  try {
    await fn(mesh);
  } finally {
    for (const a of agents) a.stop();
    await control.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

test("the agent gets an SVID for its join token's identity, with the CA's bundle, and reports it once", async () => {
  await withMesh(undefined, async (mesh) => {
    const token = await mesh.token();
    const updates: IdentityMaterial[] = [];
    const agent = mesh.agent({ attestation: async () => ({ kind: "join_token", token }), onUpdate: (m) => updates.push(m) });
    assert.equal(agent.current(), undefined);
    const m = await agent.start();
    assert.equal(m.svid.spiffeId, WEB);
    assert.deepEqual(m.bundlePem, mesh.control.ca!.ca.bundle());
    assert.deepEqual(m.chainPem, m.svid.chainPem);
    assert.equal(m.keyPem, m.svid.keyPem);
    assert.deepEqual(await validateSvid(m.chainPem, m.bundlePem, { trustDomain: TD, expectedId: WEB, now: Date.now() }), { ok: true, spiffeId: WEB });
    assert.equal(agent.current(), m);
    assert.equal(agent.generation, 1);
    assert.deepEqual(updates, [m]);
    assert.equal(agent.spiffeId, WEB);
    assert.equal(agent.trustDomain, TD);
  });
});

test("the agent renews at nextRefreshAt, with a new key, before the old certificate expires", async () => {
  await withMesh(3000, async (mesh) => {
    const renewedAt: number[] = [];
    const agent = mesh.agent({ random: () => 0.5, onUpdate: () => renewedAt.push(Date.now()) });
    const first = await agent.start();
    // With random() = 0.5 there is no jitter: the renewal is due at exactly half the lifetime the agent saw.
    const due = nextRefreshAt(first.svid, first.svid.notBefore.getTime(), () => 0.5);
    await until("a renewal", () => agent.generation >= 2, { timeoutMs: 8000 });
    const second = agent.current()!;
    assert.notEqual(second.svid.chainPem[0], first.svid.chainPem[0]);
    assert.notEqual(second.keyPem, first.keyPem, "each renewal makes a new key");
    assert.equal(second.svid.spiffeId, WEB);
    // Order, not speed: not before the due time (timers never fire early by more than a tick), and while the old one still held.
    assert.ok(renewedAt[1]! >= due - 5, `renewed ${due - renewedAt[1]!} ms before it was due`);
    assert.ok(second.svid.notBefore.getTime() < first.svid.notAfter.getTime(), "renewed before the old certificate expired");
    assert.ok(second.svid.notAfter.getTime() > first.svid.notAfter.getTime());
  });
});

test("a refused renewal keeps the current certificate and is retried until the CA signs again", async () => {
  await withMesh(2000, async (mesh) => {
    const token = await mesh.token();
    let calls = 0;
    let agent!: IdentityAgent;
    let heldDuringRefusal: IdentityMaterial | undefined;
    agent = mesh.agent({
      attestation: async () => {
        calls += 1;
        // The second request (the first renewal) presents a token the CA refuses.
        if (calls === 2) {
          heldDuringRefusal = agent.current();
          return { kind: "join_token", token: "revoked" };
        }
        return { kind: "join_token", token };
      },
    });
    const first = await agent.start();
    await until("a renewal after the refusal", () => agent.generation >= 2, { timeoutMs: 8000 });
    assert.ok(calls >= 3);
    assert.equal(heldDuringRefusal, first, "the refusal did not take the certificate away");
    assert.notEqual(agent.current()!.svid.chainPem[0], first.svid.chainPem[0]);
  });
});

test("the agent follows a trust bundle change without a new certificate, telling every listener", async () => {
  await withMesh(undefined, async (mesh) => {
    const agent = mesh.agent();
    const first = await agent.start();
    const seen: IdentityMaterial[] = [];
    const dropped: IdentityMaterial[] = [];
    agent.onUpdate((m) => seen.push(m));
    const unsubscribe = agent.onUpdate((m) => dropped.push(m));
    unsubscribe();
    assert.ok((await mesh.control.ca!.rotateRoot()).ok);
    await until("bundle with two roots", () => agent.current()!.bundlePem.length === 2);
    assert.deepEqual(agent.current()!.bundlePem, mesh.control.ca!.ca.bundle());
    assert.equal(agent.current()!.svid, first.svid, "the certificate is kept; only the roots changed");
    assert.equal(agent.generation, 2);
    assert.equal(seen.length, 1);
    assert.equal(dropped.length, 0, "an unsubscribed listener hears nothing");
  });
});

test("a malformed trust bundle on the bus is ignored: the agent keeps the roots it has", async () => {
  await withMesh(undefined, async (mesh) => {
    const agent = mesh.agent();
    const first = await agent.start();
    const writer = createMemoryBus({ network: mesh.network });
    const trust = await writer.kv(TRUST_BUCKET);
    await trust.put(trustBundleKey(TD), encodeJson({ trustDomain: TD, roots: [] }));
    await trust.put(trustBundleKey(TD), encodeJson({ trustDomain: TD, roots: [42] }));
    await trust.put(trustBundleKey(TD), new TextEncoder().encode("{not json"));
    // A good bundle written after them: once the agent has it, it has seen (and skipped) the bad ones.
    const good = [...first.bundlePem, first.bundlePem[0]!];
    await trust.put(trustBundleKey(TD), encodeJson({ trustDomain: TD, roots: good }));
    await until("the good bundle", () => agent.current()!.bundlePem.length === 2);
    assert.equal(agent.generation, 2, "only the good bundle counted as a change");
    await writer.close();
  });
});

test("a bad join token is refused with the CA's reason, and the agent holds no certificate", async () => {
  await withMesh(undefined, async (mesh) => {
    const updates: IdentityMaterial[] = [];
    const forged = mesh.agent({ attestation: async () => ({ kind: "join_token", token: "not-a-token" }), onUpdate: (m) => updates.push(m) });
    await assert.rejects(forged.start(), (err: Error & { reason?: string }) => err.reason === "join_token_invalid");
    assert.equal(forged.current(), undefined);
    assert.equal(forged.generation, 0);

    const webToken = await mesh.token("web");
    const impostor = mesh.agent({
      spiffeId: `spiffe://${TD}/ns/default/sa/payments`,
      attestation: async () => ({ kind: "join_token", token: webToken }),
      onUpdate: (m) => updates.push(m),
    });
    await assert.rejects(impostor.start(), (err: Error & { reason?: string }) => err.reason === "id_not_attested");
    assert.equal(impostor.current(), undefined);
    assert.deepEqual(updates, []);
  });
});

test("an agent started before the CA answers keeps asking, and gets its certificate once the CA is up", async () => {
  const dir = await mkdtemp(join(tmpdir(), "weft-agent-"));
  const network = createMemoryNetwork();
  let token: Promise<string> | undefined;
  let asked = 0;
  const agent = createIdentityAgent({
    bus: createMemoryBus({ network }),
    trustDomain: TD,
    spiffeId: WEB,
    attestation: async () => {
      asked += 1;
      return { kind: "join_token", token: token ? await token : "not-yet" };
    },
  });
  let control: ControlPlane | undefined;
  try {
    const started = agent.start();
    await until("a second attempt (no responders on weft.ca.sign)", () => asked >= 2);
    control = await startControlPlane({ bus: createMemoryBus({ network }), id: "c1", ca: { trustDomain: TD, stateDir: dir } });
    token = control.ca!.mintToken("default", "web", 60_000);
    const m = await started;
    assert.equal(m.svid.spiffeId, WEB);
    assert.deepEqual(m.bundlePem, control.ca!.ca.bundle());
  } finally {
    agent.stop();
    await control?.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

test("an identity slot is empty until filled, then speaks for the agent", async () => {
  await withMesh(undefined, async (mesh) => {
    const slot = createIdentitySlot();
    assert.equal(slot.trustDomain, "");
    assert.equal(slot.spiffeId, "");
    assert.equal(slot.generation, 0);
    assert.equal(slot.current(), undefined);
    assert.equal(slot.agent, undefined);
    assert.throws(() => slot.onUpdate(() => {}), TypeError);
    const agent = mesh.agent();
    slot.fill(agent);
    const heard: IdentityMaterial[] = [];
    slot.onUpdate((m) => heard.push(m));
    const m = await agent.start();
    assert.equal(slot.agent, agent);
    assert.equal(slot.spiffeId, WEB);
    assert.equal(slot.trustDomain, TD);
    assert.equal(slot.current(), m);
    assert.equal(slot.generation, 1);
    assert.deepEqual(heard, [m]);
  });
});
