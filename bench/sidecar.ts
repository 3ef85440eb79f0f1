// `node --import tsx bench/sidecar.ts [--duration 10] [--rate 500]`: what a pair of weft sidecars
// costs. Real processes on loopback: nats-server (JetStream), `weft control` (config + CA), the
// server app (bench/upstream.ts), and two `weft sidecar` processes with join tokens:
//   client (hey / wrk) → sidecar A outbound (plain HTTP, Host: bench-server) → mTLS → sidecar B inbound → app
// Baseline: the same client straight to the app. Load generator, app, NATS and the control plane
// share core 0; both sidecars have core 1 (taskset), as in bench/run.ts.
//   latency:    hey at a fixed --rate (10 workers × rate/10 req/s) for --duration s, direct run paired
//               right before the proxied run → p50/p90/p99 added by the two hops
//   memory:     each sidecar's VmRSS from /proc/<pid>/status idle (ready: certificate + config held,
//               settled), sampled every 200 ms under load (max, at end), and after load settles
//   CPU:        each sidecar's utime+stime from /proc/<pid>/stat around a run → µs per request
//   throughput: wrk -t1 -c20 for --duration s, direct vs through both sidecars
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { mintJoinToken } from "../shared/identity/index.ts";
import { weftBundle } from "./weft-bundle.ts";
import { cpuSeconds, freePort, getStatus, killProcessTrees, loadGenerator, parseWrk, processTable, processTree, requireTools, waitForJsonLog, waitForPort } from "./measure.ts";

const ROOT = resolve(import.meta.dirname, "..");
const SERVER = "bench-server";
const CLIENT = "bench-client";

interface Run {
  rps: number;
  requests: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  errors: number;
}

interface Usage {
  /** CPU µs per request of each sidecar, [A, B]. */
  cpuUsPerRequest: [number, number];
  /** Max VmRSS in MiB seen while the run went on, [A, B]. */
  rssMaxMiB: [number, number];
  /** VmRSS in MiB at the end of the run, [A, B]. */
  rssEndMiB: [number, number];
}

/**
 * main runs the sidecar benchmark and prints its results; children are killed and the temp dir removed when it returns.
 * @example
 * await main(["--duration", "5", "--rate", "500"]);
 */
export async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { duration: { type: "string" }, rate: { type: "string" } } });
  const duration = Number(values.duration ?? 10);
  const rate = Number(values.rate ?? 500);
  const workers = 10;
  if (!(duration > 0) || !(rate >= workers)) throw new Error(`--duration must be > 0 and --rate ≥ ${workers}`);
  requireTools(["wrk", "hey", "taskset", "nats-server"], "wrk hey util-linux nats-server");
  const clkTck = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim() || 100);

  const dir = mkdtempSync(join(tmpdir(), "weft-bench-sidecar-"));
  const children: ChildProcess[] = [];
  const cleanup = () => {
    // Kill each child's whole tree by PID, then drop the temp dir (NATS store, CA state, logs).
    killProcessTrees(children);
    rmSync(dir, { recursive: true, force: true });
  };
  const onSignal = () => process.exit(130);
  process.on("exit", cleanup);
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  /** Starts a process pinned to one core; output goes to files so it never blocks on a full pipe. */
  const start = (core: number, cmd: string, args: string[], log: string, env: Record<string, string> = {}) => {
    const child = spawn("taskset", ["-c", String(core), cmd, ...args], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ["ignore", openSync(join(dir, `${log}.out`), "a"), openSync(join(dir, `${log}.err`), "a")],
    });
    children.push(child);
    return child;
  };

  const waitForLog = (child: ChildProcess, log: string, match: (l: Record<string, unknown>) => boolean) => waitForJsonLog(child, join(dir, `${log}.err`), log, match);

  const generate = (args: string[]) => loadGenerator(args, children);

  const hey = async (port: number, seconds: number, host?: string, load = { workers, perWorker: rate / workers }): Promise<Run> => {
    const out = await generate([
      "hey",
      "-z",
      `${seconds}s`,
      "-q",
      String(load.perWorker),
      "-c",
      String(load.workers),
      ...(host ? ["-host", host] : []),
      `http://127.0.0.1:${port}/bench`,
    ]);
    const pct = (p: number) => Number(new RegExp(`${p}% in ([\\d.]+) secs`).exec(out)?.[1] ?? NaN) * 1000;
    const codes = [...out.matchAll(/\[(\d{3})\]\s+(\d+) responses/g)];
    const failed = [...(/Error distribution:([\s\S]*)/.exec(out)?.[1] ?? "").matchAll(/\[(\d+)\]/g)].reduce((a, m) => a + Number(m[1]), 0);
    return {
      rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN),
      requests: codes.reduce((a, c) => a + Number(c[2]), 0),
      p50Ms: pct(50),
      p90Ms: pct(90),
      p99Ms: pct(99),
      errors: codes.filter((c) => c[1] !== "200").reduce((a, c) => a + Number(c[2]), 0) + failed,
    };
  };

  const wrk = async (port: number, seconds: number, host?: string): Promise<Run> => {
    const out = await generate(["wrk", "-t1", "-c20", `-d${seconds}s`, "--latency", ...(host ? ["-H", `Host: ${host}`] : []), `http://127.0.0.1:${port}/bench`]);
    return parseWrk(out);
  };

  try {
    const started = Date.now();
    const [l1, l5, l15] = loadavg();
    console.log(`weft sidecar bench: ${new Date().toISOString()}, node ${process.version}, load average ${l1!.toFixed(2)} ${l5!.toFixed(2)} ${l15!.toFixed(2)} (shared machine)`);
    console.log(`hey at ${rate} req/s (${workers} workers × ${rate / workers}/s) for ${duration}s; wrk -t1 -c20 for ${duration}s`);
    console.log(`core 0: load generator, app, nats-server, control plane; core 1: sidecar A (client side) and sidecar B (server side)\n`);

    // The mesh: NATS with JetStream, the control plane with its CA, the config.
    const natsPort = await freePort();
    const nats = start(0, "nats-server", ["-a", "127.0.0.1", "-p", String(natsPort), "-js", "-sd", join(dir, "nats")], "nats");
    await waitForPort(natsPort, nats, "nats-server");
    const natsUrl = `nats://127.0.0.1:${natsPort}`;
    const env = { WEFT_STATE_DIR: join(dir, "state") };
    // The weft command as the image runs it (the bundle), so RSS and CPU are those of what ships.
    const weft = weftBundle();
    const control = start(0, process.execPath, [weft, "control", "--nats", natsUrl, "--id", "control-bench", "--state-dir", join(dir, "control")], "control", env);
    await waitForLog(control, "control", (l) => l.msg === "control plane ready");
    const configFile = join(dir, "weft.config.ts");
    writeFileSync(configFile, `export default ${JSON.stringify({ services: { [SERVER]: {}, [CLIENT]: {} } })};\n`);
    const applied = spawnSync(process.execPath, [weft, "apply", configFile, "--nats", natsUrl], { cwd: ROOT, encoding: "utf8", timeout: 30_000 });
    if (applied.status !== 0) throw new Error(`weft apply failed:\n${applied.stderr}`);
    // Join tokens from the control plane's key, as `weft token` mints them.
    const key = new Uint8Array(readFileSync(join(dir, "control", "join-token.key")));
    const token = (sa: string) => mintJoinToken({ namespace: "default", serviceAccount: sa, ttlMs: 600_000 }, key);

    // The app, then one sidecar process per side.
    const appPort = await freePort();
    const app = start(0, process.execPath, ["--import", "tsx", "bench/upstream.ts", String(appPort)], "app");
    await waitForPort(appPort, app, "app");
    const common = ["--nats", natsUrl, "--inbound-port", "0", "--inbound-address", "127.0.0.1", "--outbound-port", "0", "--admin", "127.0.0.1:0"];
    const b = start(1, process.execPath, [weft, "sidecar", "--service", SERVER, "--app-port", String(appPort), "--proxy-id", "sc-bench-server", "--join-token", await token(SERVER), ...common], "sidecar-b", env);
    const a = start(1, process.execPath, [weft, "sidecar", "--service", CLIENT, "--app-port", "1", "--proxy-id", "sc-bench-client", "--join-token", await token(CLIENT), ...common], "sidecar-a", env);
    const outbound = Number((await waitForLog(a, "sidecar-a", (l) => l.msg === "sidecar listening")).outbound);
    const inbound = Number((await waitForLog(b, "sidecar-b", (l) => l.msg === "sidecar listening")).inbound);
    await waitForLog(a, "sidecar-a", (l) => l.msg === "sidecar ready");
    await waitForLog(b, "sidecar-b", (l) => l.msg === "sidecar ready");
    const pids: [number, number] = [a.pid!, b.pid!];
    const startupS = (Date.now() - started) / 1000;

    // Idle: both ready (certificate and config held), then left alone to settle.
    await sleep(1000);
    const idleTable0 = processTable();
    const idleCpu0 = pids.map((p) => cpuSeconds(p, idleTable0));
    await sleep(3000);
    const idleTable1 = processTable();
    // CPU ms per second while idle: the floor under the per-request numbers at a low rate.
    const idleCpuMsPerS = pids.map((p, i) => ((cpuSeconds(p, idleTable1) - idleCpu0[i]!) * 1000) / 3);
    const rssIdle = pids.map(rssMiB) as [number, number];
    // Where the idle RSS sits (anonymous: heap, JIT code; file: node's binary and libraries, shared),
    // and any helper processes under a sidecar (their RSS is not in the sidecar's VmRSS).
    const idleSplit = pids.map((p) => ({ anon: statusKiB(p, "RssAnon") / 1024, file: statusKiB(p, "RssFile") / 1024 }));
    const helpers = pids.map((p) => processTree(p, idleTable1).slice(1));

    // First request: sidecar A discovers bench-server on demand, then both hops are warm.
    const deadline = Date.now() + 20_000;
    while ((await getStatus(outbound, SERVER)) !== 200) {
      if (Date.now() > deadline) throw new Error("no 200 through the sidecars within 20 s");
      await sleep(100);
    }
    // Warm-up: a saturating wrk burst gets both sidecars' hot paths compiled (per-request CPU
    // measured after a 2 s hey-only warm-up was ~1.7× that after this), then the fixed rate.
    const warmWrk = await wrk(outbound, 3, SERVER);
    const warm = await hey(outbound, 2, SERVER);
    const warmErrors = warmWrk.errors + warm.errors;
    if (warmErrors > 0) console.log(`warm-up: ${warmErrors} errors of ${warmWrk.requests + warm.requests}`);

    /** Runs `load` while sampling both sidecars' RSS every 200 ms and their CPU before and after. */
    const connections: { established: number; timeWait: number }[] = [];
    const measured = async (load: () => Promise<Run>): Promise<{ run: Run; usage: Usage }> => {
      const table0 = processTable();
      const cpu0 = pids.map((p) => cpuSeconds(p, table0));
      const max: [number, number] = [0, 0];
      const sample = () => pids.forEach((p, i) => (max[i] = Math.max(max[i]!, rssMiB(p))));
      const timer = setInterval(sample, 200);
      const run = await load();
      clearInterval(timer);
      connections.push(tcpTo(inbound));
      sample();
      const table1 = processTable();
      const cpu1 = pids.map((p) => cpuSeconds(p, table1));
      const perRequest = (i: number) => (run.requests > 0 ? ((cpu1[i]! - cpu0[i]!) * 1e6) / run.requests : NaN);
      return { run, usage: { cpuUsPerRequest: [perRequest(0), perRequest(1)], rssMaxMiB: max, rssEndMiB: pids.map(rssMiB) as [number, number] } };
    };

    // Latency: the direct run right before the proxied one, so slow drift cancels out of the difference.
    const direct = await hey(appPort, duration);
    const proxied = await measured(() => hey(outbound, duration, SERVER));
    // One request at a time (100 req/s, one worker): the hops' own latency, without requests
    // queueing behind each other on the sidecars' core.
    const serialSeconds = Math.min(5, duration);
    const serial = { workers: 1, perWorker: 100 };
    const directSerial = await hey(appPort, serialSeconds, undefined, serial);
    const proxiedSerial = await hey(outbound, serialSeconds, SERVER, serial);
    // Throughput, the same pairing.
    const directWrk = await wrk(appPort, duration);
    const proxiedWrk = await measured(() => wrk(outbound, duration, SERVER));
    await sleep(3000);
    const rssAfter = pids.map(rssMiB) as [number, number];
    const hwm = pids.map((p) => statusKiB(p, "VmHWM") / 1024);
    const accessLines = ["sidecar-a", "sidecar-b"].map((s) => lineCount(join(dir, `${s}.out`)));
    const problems = ["sidecar-a", "sidecar-b"].map((s) => logProblems(join(dir, `${s}.err`)));
    const served = warmWrk.requests + warm.requests + proxiedSerial.requests + proxied.run.requests + proxiedWrk.run.requests;

    const f = (n: number, d = 2) => (Number.isNaN(n) ? "-" : n.toFixed(d));
    const pad = (s: string, n: number) => s.padEnd(n);
    console.log(`ready in ${f(startupS, 1)} s from start (nats, control plane, config, app, both sidecars)\n`);
    console.log(`latency at ${rate} req/s, hey -z ${duration}s -q ${rate / workers} -c ${workers} (ms; hey reports to 0.1 ms)`);
    console.log(`${pad("", 26)} ${pad("p50", 7)} ${pad("p90", 7)} ${pad("p99", 7)} ${pad("req/s", 7)} errors`);
    const row = (name: string, r: Run, rps = f(r.rps, 0)) => console.log(`${pad(name, 26)} ${pad(f(r.p50Ms), 7)} ${pad(f(r.p90Ms), 7)} ${pad(f(r.p99Ms), 7)} ${pad(rps, 7)} ${r.errors}`);
    row("direct", direct);
    row("via sidecar A → B (mTLS)", proxied.run);
    const added = (k: "p50Ms" | "p90Ms" | "p99Ms") => proxied.run[k] - direct[k];
    console.log(`${pad("added (2 hops)", 26)} ${pad(f(added("p50Ms")), 7)} ${pad(f(added("p90Ms")), 7)} ${pad(f(added("p99Ms")), 7)}`);
    console.log(`${pad("per hop (added ÷ 2, rough)", 26)} ${pad(f(added("p50Ms") / 2), 7)} ${pad(f(added("p90Ms") / 2), 7)} ${pad(f(added("p99Ms") / 2), 7)}`);
    console.log(`\none request at a time: hey -z ${serialSeconds}s -q 100 -c 1 (100 req/s)`);
    row("direct", directSerial);
    row("via sidecar A → B (mTLS)", proxiedSerial);
    const addedSerial = (k: "p50Ms" | "p90Ms" | "p99Ms") => proxiedSerial[k] - directSerial[k];
    console.log(`${pad("added (2 hops)", 26)} ${pad(f(addedSerial("p50Ms")), 7)} ${pad(f(addedSerial("p90Ms")), 7)} ${pad(f(addedSerial("p99Ms")), 7)}`);
    console.log(`\nthroughput, wrk -t1 -c20 -d${duration}s`);
    console.log(`${pad("", 26)} ${pad("req/s", 8)} ${pad("p50", 7)} ${pad("p90", 7)} ${pad("p99", 7)} errors`);
    const wrow = (name: string, r: Run) => console.log(`${pad(name, 26)} ${pad(f(r.rps, 0), 8)} ${pad(f(r.p50Ms), 7)} ${pad(f(r.p90Ms), 7)} ${pad(f(r.p99Ms), 7)} ${r.errors}`);
    wrow("direct", directWrk);
    wrow("via sidecar A → B (mTLS)", proxiedWrk.run);
    console.log(`proxied / direct: ${f(proxiedWrk.run.rps / directWrk.rps)}×`);
    console.log(`\nsidecars (RSS in MiB from /proc/<pid>/status VmRSS; CPU from /proc/<pid>/stat)`);
    console.log(`${pad("", 12)} ${pad("idle", 6)} ${pad(`max@${rate}/s`, 10)} ${pad(`end@${rate}/s`, 10)} ${pad("max wrk", 8)} ${pad("end wrk", 8)} ${pad("after 3s", 9)} ${pad("VmHWM", 6)} ${pad(`CPU µs/req @${rate}/s`, 18)} CPU µs/req wrk`);
    for (const [i, name] of ["sidecar A", "sidecar B"].entries()) {
      console.log(
        `${pad(name, 12)} ${pad(f(rssIdle[i]!, 1), 6)} ${pad(f(proxied.usage.rssMaxMiB[i]!, 1), 10)} ${pad(f(proxied.usage.rssEndMiB[i]!, 1), 10)} ${pad(f(proxiedWrk.usage.rssMaxMiB[i]!, 1), 8)} ${pad(f(proxiedWrk.usage.rssEndMiB[i]!, 1), 8)} ${pad(f(rssAfter[i]!, 1), 9)} ${pad(f(hwm[i]!, 1), 6)} ${pad(f(proxied.usage.cpuUsPerRequest[i]!, 1), 18)} ${f(proxiedWrk.usage.cpuUsPerRequest[i]!, 1)}`,
      );
    }
    for (const [i, name] of ["sidecar A", "sidecar B"].entries()) {
      const kids = helpers[i]!.map((p) => `${readComm(p)} ${f(rssMiB(p), 1)} MiB`).join(", ");
      console.log(`${name} idle RSS: ${f(idleSplit[i]!.anon, 1)} MiB anonymous + ${f(idleSplit[i]!.file, 1)} MiB file-backed; helper processes: ${kids || "none"}`);
    }
    console.log(`idle CPU (ready, no traffic, 3 s): sidecar A ${f(idleCpuMsPerS[0]!, 1)} ms/s, sidecar B ${f(idleCpuMsPerS[1]!, 1)} ms/s (resolution ${f(1000 / clkTck / 3, 1)} ms/s: /proc counts ${clkTck} ticks/s)`);
    console.log(`A → B TCP connections at the end of each proxied run (established / TIME_WAIT): hey ${connections[0]!.established}/${connections[0]!.timeWait}, wrk ${connections[1]!.established}/${connections[1]!.timeWait}`);
    console.log(`\naccess log lines (JSON, stdout to a file): sidecar A ${accessLines[0]}, sidecar B ${accessLines[1]}, for ~${served} proxied requests counted by hey/wrk`);
    for (const [i, name] of ["sidecar A", "sidecar B"].entries()) {
      const p = problems[i]!;
      console.log(`${name} log: ${p.count} warn/error lines${p.count > 0 ? ` (${[...p.messages].join("; ")})` : ""}`);
    }
    console.log(`done in ${f((Date.now() - started) / 1000, 0)} s`);
  } finally {
    cleanup();
    process.off("exit", cleanup);
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A field of /proc/<pid>/status in KiB (VmRSS, VmHWM). */
function statusKiB(pid: number, field: string): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

function readComm(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
  } catch {
    return String(pid);
  }
}

const rssMiB = (pid: number) => statusKiB(pid, "VmRSS") / 1024;

/** Loopback TCP connections to a port from /proc/net/tcp: established (server side) and in TIME_WAIT (either side). */
function tcpTo(port: number): { established: number; timeWait: number } {
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  let established = 0;
  let timeWait = 0;
  for (const line of readFileSync("/proc/net/tcp", "utf8").split("\n").slice(1)) {
    const [, local, remote, state] = line.trim().split(/\s+/);
    if (!local || !remote) continue;
    if (state === "01" && local.endsWith(`:${hex}`)) established += 1;
    if (state === "06" && (local.endsWith(`:${hex}`) || remote.endsWith(`:${hex}`))) timeWait += 1;
  }
  return { established, timeWait };
}

/** Warn and error lines in a JSON log file, with their distinct messages. */
function logProblems(file: string): { count: number; messages: Set<string> } {
  const messages = new Set<string>();
  let count = 0;
  let text = "";
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return { count, messages };
  }
  for (const line of text.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      const l = JSON.parse(line) as { level?: string; msg?: string; reason?: string };
      if (l.level !== "warn" && l.level !== "error") continue;
      count += 1;
      messages.add(`${l.level} ${l.msg}${l.reason ? ` ${l.reason}` : ""}`);
    } catch {
      // Not JSON (a runtime warning); not counted.
    }
  }
  return { count, messages };
}

/** Lines in a file: a sidecar's stdout is its access log, one JSON line per request. */
function lineCount(file: string): number {
  try {
    let n = 0;
    for (const byte of readFileSync(file)) if (byte === 10) n += 1;
    return n;
  } catch {
    return 0;
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main(process.argv.slice(2));
}
