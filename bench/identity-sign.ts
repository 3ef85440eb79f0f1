// `node --import tsx bench/identity-sign.ts [--duration 3] [--concurrency 16] [--clients 16]`:
// how many SVIDs the mesh CA issues per second, and where the time goes.
//   proxy side:  ECDSA P-256 keygen + CSR (createKeyAndCsr), which each proxy does for itself
//   in-process:  the `weft.ca.sign` handler (request parse, CSR parse, join-token verify, CSR
//                signature check, leaf signing), sequentially and N at a time, plus its parts alone
//   end to end:  a real nats-server (JetStream, temp store), `weft control` as its own process on
//                core 1 answering `weft.ca.sign`, and K bus clients in this process asking at once:
//                SVIDs/s, p50/p99 per issuance, and the control process's CPU per SVID (/proc)
// Every loop is bounded by time and count; children are ended by PID and temp dirs removed.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { CA_SIGN_SUBJECT, connectNatsBus, type Bus } from "../shared/bus/index.ts";
import {
  createAttestationVerifier,
  createCertificateAuthority,
  createKeyAndCsr,
  decodeSignResponse,
  encodeSignRequest,
  generateJoinTokenKey,
  handleSignRequest,
  mintJoinToken,
  parseCsr,
  verifyJoinToken,
} from "../shared/identity/index.ts";
import { startNatsServer, type NatsServer } from "../test/harness/nats-server.ts";
import { markdownTable } from "./measure.ts";

const ROOT = resolve(import.meta.dirname, "..");
const TRUST_DOMAIN = "cluster.local";
const NAMESPACE = "bench";
const SERVICE_ACCOUNT = "web";
const SPIFFE_ID = `spiffe://${TRUST_DOMAIN}/ns/${NAMESPACE}/sa/${SERVICE_ACCOUNT}`;
/** Distinct CSRs the in-process and end-to-end loops cycle through (the CA keeps no memory of them). */
const CSR_POOL = 64;
/** Hard cap on iterations of any one loop, whatever the duration. */
const MAX_OPS = 200_000;

interface Row {
  readonly [column: string]: string;
}

const fmt = (n: number, digits = 0) => (Number.isFinite(n) ? n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits }) : "-");

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

interface Measured {
  readonly ops: number;
  readonly wallMs: number;
  /** CPU of this whole process (all threads: WebCrypto runs on libuv's pool) per op, µs. */
  readonly cpuUsPerOp: number;
  readonly latenciesMs: number[];
}

/** Runs `op` from `workers` loops at once until `seconds` pass (or MAX_OPS), timing each call. */
async function measure(seconds: number, workers: number, op: (i: number) => Promise<unknown>): Promise<Measured> {
  const latenciesMs: number[] = [];
  let next = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  await Promise.all(
    Array.from({ length: workers }, async () => {
      while (performance.now() < end && next < MAX_OPS) {
        const i = next++;
        const s = performance.now();
        await op(i);
        latenciesMs.push(performance.now() - s);
      }
    }),
  );
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const ops = latenciesMs.length;
  latenciesMs.sort((a, b) => a - b);
  return { ops, wallMs, cpuUsPerOp: ops > 0 ? (cpu.user + cpu.system) / ops : NaN, latenciesMs };
}

const CLK_TCK = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim() || 100);

/** CPU seconds (user + system) of one process from /proc/<pid>/stat (the control plane has no children). */
function processCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

async function proxySide(seconds: number): Promise<Row[]> {
  const EC = { name: "ECDSA", namedCurve: "P-256" };
  // Warm the code paths before timing.
  for (let i = 0; i < 20; i++) await createKeyAndCsr(SPIFFE_ID);
  const keygen = await measure(seconds / 2, 1, () => crypto.subtle.generateKey(EC, true, ["sign", "verify"]));
  const full = await measure(seconds / 2, 1, () => createKeyAndCsr(SPIFFE_ID));
  return [
    { step: "ECDSA P-256 keygen alone", "µs each (p50)": fmt(percentile(keygen.latenciesMs, 50) * 1000), "per s": fmt((keygen.ops / keygen.wallMs) * 1000), "CPU µs each": fmt(keygen.cpuUsPerOp) },
    { step: "createKeyAndCsr (keygen + CSR + PKCS#8 export)", "µs each (p50)": fmt(percentile(full.latenciesMs, 50) * 1000), "per s": fmt((full.ops / full.wallMs) * 1000), "CPU µs each": fmt(full.cpuUsPerOp) },
  ];
}

async function csrPool(): Promise<string[]> {
  const pool: string[] = [];
  for (let i = 0; i < CSR_POOL; i++) pool.push((await createKeyAndCsr(SPIFFE_ID)).csrPem);
  return pool;
}

async function inProcess(seconds: number, concurrency: number, csrs: readonly string[]): Promise<Row[]> {
  const ca = await createCertificateAuthority({ trustDomain: TRUST_DOMAIN });
  const joinTokenKey = generateJoinTokenKey();
  const token = await mintJoinToken({ namespace: NAMESPACE, serviceAccount: SERVICE_ACCOUNT, ttlMs: 3_600_000 }, joinTokenKey);
  const sign = handleSignRequest(ca, createAttestationVerifier({ joinTokenKey }));
  const requests = csrs.map((csrPem) => encodeSignRequest({ csrPem, attestation: { kind: "join_token", token } }));
  const signOne = async (i: number) => {
    const r = decodeSignResponse(await sign(requests[i % requests.length]!));
    if (!r.ok) throw new Error(`sign refused: ${r.reason}`);
  };
  for (let i = 0; i < 50; i++) await signOne(i);

  const rows: Row[] = [];
  const row = (what: string, m: Measured) =>
    rows.push({
      "in-process": what,
      "per s": fmt((m.ops / m.wallMs) * 1000),
      "µs each (wall / per op)": fmt((m.wallMs * 1000) / m.ops),
      "p50 ms": fmt(percentile(m.latenciesMs, 50), 2),
      "p99 ms": fmt(percentile(m.latenciesMs, 99), 2),
      "CPU µs/op": fmt(m.cpuUsPerOp),
    });
  // The parts, alone, sequentially: what the handler spends its time on.
  row("  part: parseCsr (CSR parse)", await measure(seconds / 4, 1, async (i) => parseCsr(csrs[i % csrs.length]!)));
  row("  part: verifyJoinToken (HS256 JWT)", await measure(seconds / 4, 1, (i) => verifyJoinToken(token, joinTokenKey, Date.now() + (i & 1))));
  row("  part: ca.sign (CSR parse + verify + leaf)", await measure(seconds / 2, 1, (i) => ca.sign(csrs[i % csrs.length]!, { spiffeId: SPIFFE_ID })));
  row("weft.ca.sign handler, sequential", await measure(seconds, 1, signOne));
  row(`weft.ca.sign handler, ${concurrency} concurrent`, await measure(seconds, concurrency, signOne));
  return rows;
}

async function endToEnd(seconds: number, clientCounts: readonly number[], csrs: readonly string[]): Promise<{ rows: Row[]; notes: string[] }> {
  const dir = mkdtempSync(join(tmpdir(), "weft-bench-ca-"));
  let nats: NatsServer | undefined;
  let control: ChildProcess | undefined;
  const buses: Bus[] = [];
  const notes: string[] = [];
  try {
    nats = await startNatsServer();
    // The control plane reads its join-token key from the state dir; writing it first lets this
    // process mint tokens the CA accepts, the way `weft token` does.
    const joinTokenKey = generateJoinTokenKey();
    const stateDir = join(dir, "control");
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    writeFileSync(join(stateDir, "join-token.key"), joinTokenKey, { mode: 0o600 });
    control = spawn("taskset", ["-c", "1", process.execPath, "--import", "tsx", "control/main.ts", "--nats", nats.url, "--id", "bench-ca", "--state-dir", stateDir, "--trust-domain", TRUST_DOMAIN, "--ui", "off"], {
      cwd: ROOT,
      stdio: ["ignore", "ignore", "ignore"],
    });
    const token = await mintJoinToken({ namespace: NAMESPACE, serviceAccount: SERVICE_ACCOUNT, ttlMs: 3_600_000 }, joinTokenKey);
    const requests = csrs.map((csrPem) => encodeSignRequest({ csrPem, attestation: { kind: "join_token", token } }));
    const maxClients = Math.max(...clientCounts);
    for (let i = 0; i < maxClients; i++) buses.push(await connectNatsBus({ servers: [nats.url], name: `bench-proxy-${i}` }));

    // Ready when the CA answers; a request before it subscribed gets no_responders.
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (control.exitCode !== null) throw new Error(`weft control exited (${control.exitCode})`);
      const r = await buses[0]!.request(CA_SIGN_SUBJECT, requests[0]!, { timeoutMs: 2000 });
      if (r.ok && decodeSignResponse(r.data).ok) break;
      if (Date.now() > deadline) throw new Error("weft control did not answer weft.ca.sign within 30 s");
      await new Promise((r) => setTimeout(r, 200));
    }

    let failures = 0;
    const issue = (bus: Bus) => async (i: number) => {
      const r = await bus.request(CA_SIGN_SUBJECT, requests[i % requests.length]!, { timeoutMs: 10_000 });
      if (!r.ok || !decodeSignResponse(r.data).ok) failures += 1;
    };
    const rows: Row[] = [];
    for (const k of clientCounts) {
      // Each client is its own NATS connection asking one SVID at a time, like k proxies starting together.
      const run = async (s: number) => {
        const results = await Promise.all(buses.slice(0, k).map((bus) => measure(s, 1, issue(bus))));
        const latencies = results.flatMap((r) => r.latenciesMs).sort((a, b) => a - b);
        return { ops: latencies.length, wallMs: Math.max(...results.map((r) => r.wallMs)), latencies };
      };
      await run(Math.min(1, seconds / 2));
      failures = 0;
      const cpu0 = processCpuSeconds(control.pid!);
      const m = await run(seconds);
      const cpu = processCpuSeconds(control.pid!) - cpu0;
      rows.push({
        "end to end (NATS)": `${k} client${k === 1 ? "" : "s"}`,
        "SVIDs/s": fmt((m.ops / m.wallMs) * 1000),
        "p50 ms": fmt(percentile(m.latencies, 50), 2),
        "p99 ms": fmt(percentile(m.latencies, 99), 2),
        "control CPU µs/SVID": fmt((cpu * 1e6) / m.ops),
        issued: fmt(m.ops),
        failed: String(failures),
      });
    }
    notes.push(`nats-server ${natsVersion()} on 127.0.0.1:${nats.port} (JetStream, temp store), weft control on core 1 (taskset), clients + nats unpinned`);
    return { rows, notes };
  } finally {
    await Promise.all(buses.map((b) => b.close().catch(() => undefined)));
    if (control?.pid !== undefined && control.exitCode === null) {
      const exited = new Promise((r) => control!.once("exit", r));
      process.kill(control.pid, "SIGTERM");
      const timer = setTimeout(() => control!.pid !== undefined && control!.exitCode === null && process.kill(control!.pid, "SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    }
    await nats?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

function natsVersion(): string {
  const out = spawnSync("nats-server", ["--version"], { encoding: "utf8" });
  return /v?([\d.]+)/.exec(out.stdout ?? "")?.[1] ?? "?";
}

/**
 * main measures SVID issuance (proxy keygen, the CA handler in-process, and over NATS to `weft control`) and prints tables.
 * @example await main(["--duration", "2"]);
 */
export async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { duration: { type: "string" }, concurrency: { type: "string" }, clients: { type: "string" } } });
  const seconds = Number(values.duration ?? 3);
  const concurrency = Number(values.concurrency ?? 16);
  const clients = Number(values.clients ?? 16);
  if (!(seconds > 0 && seconds <= 60) || !(concurrency >= 1 && concurrency <= 256) || !(clients >= 1 && clients <= 256)) {
    throw new RangeError("--duration 0..60 s, --concurrency and --clients 1..256");
  }
  console.log(`SVID signing: ${seconds}s per measurement, node ${process.version}, load average ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}`);
  console.log(`command: node --import tsx bench/identity-sign.ts ${argv.join(" ")}`.trimEnd() + "\n");

  console.log("proxy side (per SVID, in the proxy, not the CA)\n");
  console.log(markdownTable(await proxySide(seconds)) + "\n");
  const csrs = await csrPool();
  console.log(`CA side, in-process (ECDSA P-256 root, leaf TTL 1 h, join-token attestation, ${CSR_POOL} distinct CSRs cycled)\n`);
  console.log(markdownTable(await inProcess(seconds, concurrency, csrs)) + "\n");
  const e2e = await endToEnd(seconds, [...new Set([1, clients])], csrs);
  console.log(markdownTable(e2e.rows));
  for (const n of e2e.notes) console.log(`\n${n}`);
  console.log(`\nload average at the end: ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")} (other work on this 2-core machine shows up here)`);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main(process.argv.slice(2));
  // The nats client's timers may outlive the closed connections by a moment; nothing else is left.
  process.exit(0);
}
