// The control plane's CA over the bus, and the proxy-side identity agent: issuance, refusal, renewal,
// root rotation and persistence. Real keys and certificates; the in-memory bus.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createMemoryBus, createMemoryNetwork } from "../shared/bus/index.ts";
import { createIdentityAgent, type IdentityMaterial } from "../shared/discovery/index.ts";
import { validateSvid } from "../shared/identity/index.ts";
import { startCaService } from "./ca.ts";

const TD = "weft.test";
const WEB = `spiffe://${TD}/ns/default/sa/web`;

async function withCa<T>(fn: (ctx: { network: ReturnType<typeof createMemoryNetwork>; dir: string }) => Promise<T>, dir?: string): Promise<T> {
  const network = createMemoryNetwork();
  const own = dir ?? (await mkdtemp(join(tmpdir(), "weft-ca-")));
  try {
    return await fn({ network, dir: own });
  } finally {
    if (!dir) await rm(own, { recursive: true, force: true });
  }
}

async function until(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test("a proxy with a join token gets an SVID for exactly the attested ID, valid against the published bundle", async () => {
  await withCa(async ({ network, dir }) => {
    const service = await startCaService({ bus: createMemoryBus({ network }), trustDomain: TD, stateDir: dir });
    const token = await service.mintToken("default", "web", 60_000);
    const agent = createIdentityAgent({ bus: createMemoryBus({ network }), trustDomain: TD, spiffeId: WEB, attestation: async () => ({ kind: "join_token", token }) });
    try {
      const m = await agent.start();
      assert.equal(m.svid.spiffeId, WEB);
      assert.deepEqual(m.bundlePem, service.ca.bundle());
      const check = await validateSvid(m.svid.chainPem, m.bundlePem, { trustDomain: TD, expectedId: WEB, now: Date.now() });
      assert.deepEqual(check, { ok: true, spiffeId: WEB });
      assert.match(m.svid.keyPem, /BEGIN PRIVATE KEY/);
      // The CA's secrets are files only its owner reads.
      assert.equal((await stat(join(dir, `ca-${TD}.json`))).mode & 0o777, 0o600);
      assert.equal((await stat(join(dir, "join-token.key"))).mode & 0o777, 0o600);
    } finally {
      agent.stop();
      service.stop();
    }
  });
});

test("a CSR for an ID the token does not prove, and an expired token, are refused", async () => {
  await withCa(async ({ network, dir }) => {
    const service = await startCaService({ bus: createMemoryBus({ network }), trustDomain: TD, stateDir: dir });
    try {
      const webToken = await service.mintToken("default", "web", 60_000);
      const impostor = createIdentityAgent({
        bus: createMemoryBus({ network }),
        trustDomain: TD,
        spiffeId: `spiffe://${TD}/ns/default/sa/payments`,
        attestation: async () => ({ kind: "join_token", token: webToken }),
      });
      await assert.rejects(impostor.start(), (err: Error & { reason?: string }) => err.reason === "id_not_attested");
      impostor.stop();
      const expired = await service.mintToken("default", "web", 1);
      await new Promise((r) => setTimeout(r, 1100));
      const late = createIdentityAgent({ bus: createMemoryBus({ network }), trustDomain: TD, spiffeId: WEB, attestation: async () => ({ kind: "join_token", token: expired }) });
      await assert.rejects(late.start(), (err: Error & { reason?: string }) => err.reason === "join_token_expired");
      late.stop();
    } finally {
      service.stop();
    }
  });
});

test("the agent renews at half-life and follows a root rotation through the bundle", async () => {
  await withCa(async ({ network, dir }) => {
    const service = await startCaService({ bus: createMemoryBus({ network }), trustDomain: TD, stateDir: dir, leafTtlMs: 2000 });
    const token = await service.mintToken("default", "web", 60_000);
    const updates: IdentityMaterial[] = [];
    const agent = createIdentityAgent({
      bus: createMemoryBus({ network }),
      trustDomain: TD,
      spiffeId: WEB,
      attestation: async () => ({ kind: "join_token", token }),
      onUpdate: (m) => updates.push(m),
    });
    try {
      const first = await agent.start();
      await until("two renewals", () => new Set(updates.map((u) => u.svid.chainPem[0])).size >= 3, 6000);
      assert.notEqual(agent.current()!.svid.keyPem, first.svid.keyPem, "a renewal makes a new key");
      assert.ok(await service.rotateRoot().then((r) => r.ok));
      await until("bundle with two roots", () => agent.current()!.bundlePem.length === 2);
      assert.ok((await service.switchIssuance()).ok);
      const oldLeaf = agent.current()!.svid;
      await until("a leaf from the new root", () => agent.current()!.svid.chainPem[0] !== oldLeaf.chainPem[0]);
      assert.ok((await service.retireOldRoot()).ok);
      await until("bundle with one root", () => agent.current()!.bundlePem.length === 1);
      const now = agent.current()!;
      assert.deepEqual(await validateSvid(now.svid.chainPem, now.bundlePem, { trustDomain: TD, expectedId: WEB, now: Date.now() }), { ok: true, spiffeId: WEB });
    } finally {
      agent.stop();
      service.stop();
    }
  });
});

test("a restarted CA keeps its root and its join-token key", async () => {
  const dir = await mkdtemp(join(tmpdir(), "weft-ca-"));
  try {
    const network = createMemoryNetwork();
    const first = await startCaService({ bus: createMemoryBus({ network }), trustDomain: TD, stateDir: dir });
    const token = await first.mintToken("default", "web", 60_000);
    const roots = first.ca.bundle();
    first.stop();
    const second = await startCaService({ bus: createMemoryBus({ network }), trustDomain: TD, stateDir: dir });
    assert.deepEqual(second.ca.bundle(), roots);
    const agent = createIdentityAgent({ bus: createMemoryBus({ network }), trustDomain: TD, spiffeId: WEB, attestation: async () => ({ kind: "join_token", token }) });
    assert.equal((await agent.start()).svid.spiffeId, WEB);
    agent.stop();
    second.stop();
    // A CA with another root for the same trust domain refuses to take over the bundle.
    const other = await mkdtemp(join(tmpdir(), "weft-ca-"));
    await assert.rejects(startCaService({ bus: createMemoryBus({ network }), trustDomain: TD, stateDir: other }), /another CA/);
    await rm(other, { recursive: true, force: true });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
