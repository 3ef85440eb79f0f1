// Scoped push: one control plane, P simulated proxies (in-process watchers) in a mesh of S services,
// each proxy depending on D of them. Prints the config bytes each proxy holds (scoped vs the whole
// mesh) and the time from `apply` to the ACK of every affected proxy.
//   node --import tsx bench/scoped-push.ts [--services 2000] [--proxies 500] [--deps 5] [--rounds 20] [--nats]
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startControlPlane } from "../control/plane.ts";
import { connectNatsBus, createMemoryBus, createMemoryNetwork, decodeJson, STATUS_SUBJECTS, type Bus } from "../shared/bus/index.ts";
import { createConfigWatcher, type ConfigWatcher, type StatusReport } from "../shared/discovery/index.ts";

const { values } = parseArgs({
  options: {
    services: { type: "string", default: "2000" },
    proxies: { type: "string", default: "500" },
    deps: { type: "string", default: "5" },
    rounds: { type: "string", default: "20" },
    nats: { type: "boolean", default: false },
  },
});
const S = Number(values.services);
const P = Number(values.proxies);
const D = Number(values.deps);
const ROUNDS = Number(values.rounds);

let seed = 42;
const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
const depsOf = Array.from({ length: P }, () => {
  const set = new Set<number>();
  while (set.size < D) set.add(Math.floor(random() * S));
  return [...set];
});

function config(version: number[]): unknown {
  const services: Record<string, object> = {};
  for (let s = 0; s < S; s++) {
    services[`svc-${s}`] = { endpoints: [{ address: `10.0.${Math.floor(s / 250)}.${s % 250}:8080` }], traffic: { timeoutMs: 1000 + version[s]! } };
  }
  const gateways: Record<string, object> = {};
  for (let p = 0; p < P; p++) {
    gateways[`proxy-${p}`] = {
      listeners: [{ port: 8080 }],
      routes: depsOf[p]!.map((s) => ({ match: { path: { prefix: `/s${s}` } }, forward: { to: [{ service: `svc-${s}` }] } })),
    };
  }
  return { services, gateways };
}

const pct = (xs: number[], q: number) => {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
};

async function main() {
  let stopNats = async () => {};
  let connect: () => Promise<Bus>;
  if (values.nats) {
    const dir = await mkdtemp(join(tmpdir(), "weft-bench-nats-"));
    const port = 14222 + Math.floor(Math.random() * 1000);
    const child = spawn("nats-server", ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", dir], { stdio: "ignore" });
    await new Promise((r) => setTimeout(r, 500));
    stopNats = async () => {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
      await rm(dir, { recursive: true, force: true });
    };
    connect = () => connectNatsBus({ servers: `nats://127.0.0.1:${port}` });
  } else {
    const network = createMemoryNetwork();
    connect = async () => createMemoryBus({ network });
  }

  const version = new Array<number>(S).fill(0);
  const control = await startControlPlane({ bus: await connect(), id: "bench-control" });
  const initial = await control.apply(config(version));
  if (!initial.ok) throw new Error(JSON.stringify(initial));

  // Proxies share a few bus connections (as many in-process watchers would).
  const buses = await Promise.all(Array.from({ length: values.nats ? 8 : 1 }, connect));
  const held = new Map<number, number>();
  const acks = new Map<string, { revision: number; at: number }>();
  const statusBus = await connect();
  statusBus.subscribe(STATUS_SUBJECTS, (msg) => {
    const d = decodeJson(msg.data);
    if (!d.ok) return;
    const r = d.value as StatusReport;
    if (r.state === "ACK") acks.set(r.proxyId, { revision: r.revision, at: performance.now() });
  });
  const t0 = performance.now();
  const watchers: ConfigWatcher[] = [];
  for (let p = 0; p < P; p++) {
    const w = createConfigWatcher({
      bus: buses[p % buses.length]!,
      proxyId: `proxy-${p}`,
      role: { kind: "gateway", name: `proxy-${p}` },
      apply: () => {},
      store: { load: async () => undefined, save: async (text) => void held.set(p, text.length) },
      statusIntervalMs: 3_600_000,
      settleMs: 5,
    });
    watchers.push(w);
    await w.start();
  }
  while (acks.size < P) await new Promise((r) => setTimeout(r, 20));
  const startupMs = performance.now() - t0;

  // Everything a proxy would hold without scoping: every key of the bucket.
  const everything = [...control.get("services"), ...control.get("gateways")].length;
  const fullBytes = JSON.stringify(config(version)).length;
  const heldBytes = [...held.values()];

  const latencies: number[] = [];
  let touched = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const changed = Array.from({ length: 10 }, () => Math.floor(random() * S));
    for (const s of changed) version[s]! += 1;
    const affected = depsOf.map((deps, p) => (deps.some((d) => changed.includes(d)) ? p : -1)).filter((p) => p >= 0);
    const before = new Map(affected.map((p) => [p, acks.get(`proxy-${p}`)!.revision]));
    const start = performance.now();
    const r = await control.apply(config(version));
    if (!r.ok) throw new Error(JSON.stringify(r));
    const deadline = performance.now() + 30_000;
    for (;;) {
      const pending = affected.filter((p) => (acks.get(`proxy-${p}`)?.revision ?? 0) <= before.get(p)!);
      if (pending.length === 0 || performance.now() > deadline) break;
      await new Promise((res) => setTimeout(res, 2));
    }
    for (const p of affected) latencies.push(acks.get(`proxy-${p}`)!.at - start);
    touched += affected.length;
  }

  console.log(`scoped push: ${S} services, ${P} proxies × ${D} dependencies, bus ${values.nats ? "NATS" : "memory"}`);
  console.log(`  startup: all ${P} proxies ACKed in ${startupMs.toFixed(0)} ms (${everything} resources in the bucket)`);
  console.log(`  config held per proxy: p50 ${pct(heldBytes, 0.5)} B, max ${Math.max(...heldBytes)} B (scoped) vs ${fullBytes} B (whole mesh) = ${(fullBytes / pct(heldBytes, 0.5)).toFixed(0)}× less`);
  console.log(`  propagation apply → ACK over ${ROUNDS} applies of 10 changed services (${touched} proxy updates): p50 ${pct(latencies, 0.5).toFixed(1)} ms, p99 ${pct(latencies, 0.99).toFixed(1)} ms`);

  for (const w of watchers) w.stop();
  await control.stop();
  for (const b of [...buses, statusBus]) await b.close();
  await stopNats();
}

await main();
