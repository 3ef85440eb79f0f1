// `npm run bench [-- --suite gateway,sidecar,identity,policy,telemetry,http2 --duration 10 --rate-duration 5]`
// runs every suite by default (about 7 minutes); results and how to read them: bench/RESULTS.md.
// gateway: one gateway hop on loopback, every proxy measured in the same run against the same
// upstream, so the ratios mean something on a noisy machine. Load generator and upstream share
// core 0, the proxy under test has core 1 (taskset).
//   throughput: wrk -t1 -c50 for --duration seconds → requests/s, p50, p99
//   CPU:        the proxy's utime+stime from /proc/<pid>/stat before and after → µs per request
//   latency:    hey at a fixed 1,000 req/s (10 workers × 100/s) → p50/p99 added over direct (median of 3 pairs, in rounds)
// Proxies: direct (no proxy), bench/raw-proxy.ts (the node:http ceiling), weft gateway on Node (the
// production bundle, and the sources through tsx) and on Bun (routing, round-robin over two upstream
// ports, JSON access log to a file), and nginx with one worker, upstream keep-alive and its access
// log on (when nginx is installed).
// sidecar (bench/sidecar.ts), identity (bench/identity-sign.ts), policy (bench/policy.ts) and
// telemetry (bench/telemetry.ts) and http2 (bench/http2.ts) each describe themselves.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { accessSync, constants, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { weftBundle } from "./weft-bundle.ts";
import { cpuSeconds, freePort, loadGenerator, parseWrk, processTable, processTree, waitForPort } from "./measure.ts";

const ROOT = resolve(import.meta.dirname, "..");
const { values } = parseArgs({ options: { duration: { type: "string" }, "rate-duration": { type: "string" }, only: { type: "string" }, suite: { type: "string" } } });
const DURATION = Number(values.duration ?? 10);
const RATE_DURATION = Number(values["rate-duration"] ?? 5);
/** Direct/proxied pairs per proxy at the fixed rate; the median pair is reported, every pair printed. */
const PAIRS = 3;
/** Seconds at the fixed rate through direct, and through a proxy before each of its pairs (see the latency loop). */
const SETTLE_SECONDS = 5;
const has = (cmd: string) => spawnSync("sh", ["-c", `command -v ${cmd}`]).status === 0;

for (const tool of ["wrk", "hey", "taskset"]) {
  if (!has(tool)) {
    console.error(`${tool} is needed: apt-get install -y wrk hey util-linux`);
    process.exit(2);
  }
}

const children: ChildProcess[] = [];
/**
 * The run's files (configs and the proxies' access logs) live on a memory-backed filesystem when
 * there is one. On a disk, the kernel writes a wrk run's ~100 MB of access log back about 30 s
 * later, in the middle of a 1,000 req/s latency run, and that flush stalls both cores for
 * milliseconds; the proxies still format and write every line either way.
 */
const MEMORY_FS = "/dev/shm";
const dir = mkdtempSync(join(writable(MEMORY_FS) ? MEMORY_FS : tmpdir(), "weft-bench-"));
function writable(path: string): boolean {
  try {
    accessSync(path, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}
/** Kills each child's whole tree by PID: killing only nginx's master would orphan its worker. */
function stopChildren() {
  const stats = processTable();
  for (const c of children.splice(0)) {
    if (c.pid === undefined || c.exitCode !== null) continue;
    for (const pid of processTree(c.pid, stats)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
  }
}
function cleanup() {
  stopChildren();
  rmSync(dir, { recursive: true, force: true });
}
process.on("exit", cleanup);
for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => process.exit(130));

/** Starts a process pinned to one core; its output goes to a file so it never blocks on a full pipe. */
function start(core: number, cmd: string, args: string[], log: string): ChildProcess {
  const out = openSync(join(dir, `${log}.out`), "a");
  const err = openSync(join(dir, `${log}.err`), "a");
  const child = spawn("taskset", ["-c", String(core), cmd, ...args], { cwd: ROOT, stdio: ["ignore", out, err] });
  children.push(child);
  return child;
}

interface Throughput {
  rps: number;
  requests: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  cpuUsPerRequest?: number;
}


async function wrk(port: number, seconds: number, pid?: number): Promise<Throughput> {
  const before = pid ? cpuSeconds(pid) : 0;
  const out = await loadGenerator(["wrk", "-t1", "-c50", `-d${seconds}s`, "--latency", `http://127.0.0.1:${port}/bench`], children);
  const after = pid ? cpuSeconds(pid) : 0;
  const { rps, requests, p50Ms, p99Ms, errors } = parseWrk(out);
  return {
    rps,
    requests,
    p50Ms,
    p99Ms,
    errors,
    cpuUsPerRequest: pid && requests > 0 ? ((after - before) * 1e6) / requests : undefined,
  };
}

async function heyAtRate(port: number, seconds: number): Promise<{ p50Ms: number; p99Ms: number; errors: number; requests: number; rps: number }> {
  const out = await loadGenerator(["hey", "-z", `${seconds}s`, "-q", "100", "-c", "10", `http://127.0.0.1:${port}/bench`], children);
  const pct = (p: number) => Number(new RegExp(`${p}%% in ([\\d.]+) secs`.replace("%%", "%")).exec(out)?.[1] ?? NaN) * 1000;
  const codes = [...out.matchAll(/\[(\d{3})\]\s+(\d+) responses/g)];
  const errors = codes.filter((c) => c[1] !== "200").reduce((a, c) => a + Number(c[2]), 0) + Number(/Error distribution:[\s\S]*?\[(\d+)\]/.exec(out)?.[1] ?? 0);
  return { p50Ms: pct(50), p99Ms: pct(99), errors, requests: codes.reduce((a, c) => a + Number(c[2]), 0), rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN) };
}

/** One gateway hop: throughput, CPU per request and added latency of every proxy, in one run. */
async function gatewaySuite(): Promise<void> {
  const upstreamPorts = [await freePort(), await freePort()];
  const upstream = start(0, process.execPath, ["--import", "tsx", "bench/upstream.ts", ...upstreamPorts.map(String)], "upstream");
  await waitForPort(upstreamPorts[1]!, upstream, "upstream");

  const logName = (name: string) => name.replace(/[^a-z0-9]+/gi, "-");
  /** Lines in a file: the weft gateway's stdout is its access log, one JSON line per request. */
  function lineCount(file: string): number {
    try {
      const text = readFileSync(file);
      let n = 0;
      for (const byte of text) if (byte === 10) n += 1;
      return n;
    } catch {
      return 0;
    }
  }

  interface Subject {
    name: string;
    port: number;
    pid?: number;
  }
  const subjects: Subject[] = [{ name: "direct", port: upstreamPorts[0]! }];

  async function addProxy(name: string, cmd: string, args: (port: number) => string[]) {
    if (values.only && !values.only.split(",").includes(name)) return;
    const port = await freePort();
    const child = start(1, cmd, args(port), logName(name));
    await waitForPort(port, child, name);
    subjects.push({ name, port, pid: child.pid });
  }

  await addProxy("raw node:http", process.execPath, (port) => ["--import", "tsx", "bench/raw-proxy.ts", String(port), String(upstreamPorts[0])]);

  function weftConfig(port: number): string {
    const file = join(dir, `weft-${port}.json`);
    writeFileSync(
      file,
      JSON.stringify({
        accessLog: "json",
        services: { app: { endpoints: upstreamPorts.map((p) => ({ address: `127.0.0.1:${p}` })), traffic: { loadBalancer: "round_robin" } } },
        gateways: {
          bench: {
            listeners: [{ port, address: "127.0.0.1" }],
            routes: [
              { name: "health", match: { path: { exact: "/healthz" } }, directResponse: { status: 200, body: "ok" } },
              { name: "bench", match: { path: { prefix: "/bench" } }, forward: { to: [{ service: "app" }] } },
            ],
          },
        },
      }),
    );
    return file;
  }
  // weft on Node as the image runs it (scripts/build.mjs's bundle), and from the sources through tsx
  // (as `npm start` and the tests do), which costs more per request.
  await addProxy("weft (Node)", process.execPath, (port) => [weftBundle(), "gateway", "--config", weftConfig(port), "--admin", "127.0.0.1:0"]);
  await addProxy("weft (Node+tsx)", process.execPath, (port) => ["--import", "tsx", "gateway/main.ts", "--config", weftConfig(port), "--admin", "127.0.0.1:0"]);
  if (existsBun()) await addProxy("weft (Bun)", join(ROOT, "node_modules/.bin/bun"), (port) => ["gateway/main.ts", "--config", weftConfig(port), "--admin", "127.0.0.1:0"]);
  if (has("nginx")) {
    await addProxy("nginx (1 worker)", "nginx", (port) => {
      const conf = join(dir, `nginx-${port}.conf`);
      writeFileSync(
        conf,
        `worker_processes 1;
  daemon off;
  pid ${dir}/nginx.pid;
  error_log ${dir}/nginx-error.log warn;
  events { worker_connections 1024; }
  http {
    access_log ${dir}/nginx-access.log;
    client_body_temp_path ${dir}/client_body;
    proxy_temp_path ${dir}/proxy_temp;
    fastcgi_temp_path ${dir}/fastcgi_temp;
    uwsgi_temp_path ${dir}/uwsgi_temp;
    scgi_temp_path ${dir}/scgi_temp;
    upstream app { server 127.0.0.1:${upstreamPorts[0]}; server 127.0.0.1:${upstreamPorts[1]}; keepalive 64; }
    server {
      listen 127.0.0.1:${port};
      location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
  }
  `,
      );
      return ["-c", conf, "-e", join(dir, "nginx-error.log")];
    });
  }

  function existsBun(): boolean {
    try {
      readFileSync(join(ROOT, "node_modules/.bin/bun"));
      return true;
    } catch {
      return false;
    }
  }

  console.log(`weft bench: ${DURATION}s wrk runs (1 thread, 50 connections), ${RATE_DURATION}s at 1,000 req/s; node ${process.version}`);
  console.log(`load generator + upstream on core 0, proxy on core 1; access logs in ${dir}; numbers are from this run only\n`);

  // Warm every proxy (JIT, pools) before measuring.
  // served counts every request a subject answered, to check its access log kept a line for each.
  const served = new Map<string, number>();
  const count = (name: string, n: number) => served.set(name, (served.get(name) ?? 0) + n);
  for (const s of subjects) count(s.name, (await wrk(s.port, 2)).requests);
  const results = new Map<string, Throughput>();
  for (const s of subjects) {
    const r = await wrk(s.port, DURATION, s.pid);
    count(s.name, r.requests);
    results.set(s.name, r);
  }
  // Each proxy's latency run is paired with a direct run just before it, and the added latency is
  // the difference within the pair. The pairs go in rounds, one pair of every proxy per round, so
  // that a proxy's pairs are minutes apart: a stretch of other work on this shared machine (a
  // minute of it was seen) spoils at most one pair of each, and the median pair (by added p99) is
  // reported, every pair printed. Before every pair, SETTLE_SECONDS at the rate through the proxy:
  // V8 re-optimizes, a few ms per function on the proxy's one core, the code that a change of load
  // deoptimized. Before the first pair that change is the end of the 50-connection runs above;
  // before the later ones, the idle minute during the other proxies' pairs, in which V8's memory
  // reducer runs its "(reduce)" mark-compacts: those keep no unused maps, so ~140 optimized
  // functions (node's http, undici, weft) are deoptimized for "weak objects" and recompile under
  // the next load for longer than the settle (bench/RESULTS.md, Added latency, Round 2).
  type Pair = { proxied: Awaited<ReturnType<typeof heyAtRate>>; direct: Awaited<ReturnType<typeof heyAtRate>> };
  const pairsOf = new Map<string, Pair[]>(subjects.slice(1).map((s) => [s.name, []]));
  count("direct", (await heyAtRate(subjects[0]!.port, SETTLE_SECONDS)).requests);
  for (let round = 0; round < PAIRS; round++) {
    for (const s of subjects.slice(1)) {
      count(s.name, (await heyAtRate(s.port, SETTLE_SECONDS)).requests);
      const direct = await heyAtRate(subjects[0]!.port, RATE_DURATION);
      count("direct", direct.requests);
      const proxied = await heyAtRate(s.port, RATE_DURATION);
      count(s.name, proxied.requests);
      pairsOf.get(s.name)!.push({ proxied, direct });
    }
  }
  const latency = new Map<string, { median: Pair; pairs: Pair[] }>();
  for (const [name, pairs] of pairsOf) {
    const byAddedP99 = [...pairs].sort((a, b) => a.proxied.p99Ms - a.direct.p99Ms - (b.proxied.p99Ms - b.direct.p99Ms));
    latency.set(name, { median: byAddedP99[Math.floor(PAIRS / 2)]!, pairs });
  }

  const nginx = results.get("nginx (1 worker)");
  const raw = results.get("raw node:http");
  const pad = (s: string, n: number) => s.padEnd(n);
  const num = (n: number | undefined, d = 0) => (n === undefined || Number.isNaN(n) ? "-" : n.toFixed(d));
  console.log(`${pad("proxy", 18)} ${pad("req/s", 9)} ${pad("p50 ms", 8)} ${pad("p99 ms", 8)} ${pad("errors", 7)} ${pad("CPU µs/req", 11)} ${pad("× nginx", 8)} ${pad("× raw", 7)} ${pad("CPU × nginx", 11)}`);
  for (const s of subjects) {
    const r = results.get(s.name)!;
    console.log(
      `${pad(s.name, 18)} ${pad(num(r.rps), 9)} ${pad(num(r.p50Ms, 2), 8)} ${pad(num(r.p99Ms, 2), 8)} ${pad(String(r.errors), 7)} ${pad(num(r.cpuUsPerRequest, 1), 11)} ${pad(nginx ? num(r.rps / nginx.rps, 2) : "-", 8)} ${pad(raw ? num(r.rps / raw.rps, 2) : "-", 7)} ${pad(nginx?.cpuUsPerRequest && r.cpuUsPerRequest ? num(r.cpuUsPerRequest / nginx.cpuUsPerRequest, 2) : "-", 11)}`,
    );
  }
  console.log(`\nadded latency of one hop at 1,000 req/s (hey -q 100 -c 10, ${RATE_DURATION}s; ${PAIRS} rounds of one pair per proxy, each proxied run paired with a direct run just before it; the median pair by added p99, then every pair's added p99)`);
  for (const s of subjects.slice(1)) {
    const { median, pairs } = latency.get(s.name)!;
    const { proxied: l, direct } = median;
    const each = pairs.map((p) => num(p.proxied.p99Ms - p.direct.p99Ms, 1)).join(" / ");
    const errors = pairs.reduce((n, p) => n + p.proxied.errors, 0);
    console.log(
      `${pad(s.name, 18)} added p50 ${pad(num(l.p50Ms - direct.p50Ms, 2), 6)} ms   added p99 ${pad(num(l.p99Ms - direct.p99Ms, 2), 6)} ms   (direct ${num(direct.p50Ms, 2)}/${num(direct.p99Ms, 2)}, proxied ${num(l.p50Ms, 2)}/${num(l.p99Ms, 2)} ms; pairs ${each})   achieved ${num(l.rps)} req/s   errors ${errors}`,
    );
  }
  for (const name of ["weft (Node)", "weft (Node+tsx)", "weft (Bun)"]) {
    if (subjects.some((s) => s.name === name)) console.log(`${name} access log: ${lineCount(join(dir, `${logName(name)}.out`))} JSON lines for ${served.get(name)} requests (stdout to a file)`);
  }
  if (subjects.some((s) => s.name === "nginx (1 worker)")) console.log(`nginx access log: ${lineCount(join(dir, "nginx-access.log"))} lines for ${served.get("nginx (1 worker)")} requests (to a file)`);

  const node = results.get("weft (Node)");
  const bun = results.get("weft (Bun)");
  const nodeLatency = latency.get("weft (Node)")?.median;
  const verdict = (ok: boolean | undefined) => (ok === undefined ? "n/a " : ok ? "PASS" : "MISS");
  console.log("\ntargets");
  console.log(`${verdict(node && nginx ? node.rps >= 0.3 * nginx.rps : undefined)} weft (Node) ≥ 0.30× nginx req/s`);
  console.log(`${verdict(node && raw ? node.rps >= 0.75 * raw.rps : undefined)} weft (Node) ≥ 0.75× raw node:http req/s`);
  console.log(`${verdict(bun && nginx ? bun.rps >= 0.5 * nginx.rps : undefined)} weft (Bun) ≥ 0.5× nginx req/s`);
  console.log(`${verdict(nodeLatency ? nodeLatency.proxied.p99Ms - nodeLatency.direct.p99Ms <= 2 : undefined)} weft (Node) added p99 at 1,000 req/s ≤ 2 ms`);
  stopChildren();
}

// Every suite, in the order `npm run bench` runs them; `--suite a,b` picks some.
const SUITES: Record<string, () => Promise<void>> = {
  gateway: gatewaySuite,
  sidecar: async () => (await import("./sidecar.ts")).main(values.duration ? ["--duration", values.duration] : []),
  identity: async () => (await import("./identity-sign.ts")).main([]),
  policy: async () => (await import("./policy.ts")).main([]),
  telemetry: async () => (await import("./telemetry.ts")).main([]),
  http2: async () => (await import("./http2.ts")).main(values.duration ? ["--duration", values.duration] : []),
};
const selected = (values.suite ?? Object.keys(SUITES).join(",")).split(",");
for (const name of selected) {
  const suite = SUITES[name];
  if (!suite) {
    console.error(`unknown suite ${name}: one of ${Object.keys(SUITES).join(", ")}`);
    process.exit(2);
  }
}
for (const name of selected) {
  console.log(`\n## ${name}\n`);
  await SUITES[name]!();
}
// The children's handles keep the event loop alive: exit, which kills them (see cleanup).
process.exit(0);
