// `node --import tsx bench/telemetry.ts [--duration 5] [--pairs 3] [--only in-process|gateway]`: what telemetry
// costs per request, with and without tracing.
//   in-process: the engine's two telemetry hooks (createRequestTelemetry, as createProxyTelemetry wires
//               them) for one synthetic request: nothing, access log only, metrics only, everything
//               with tracing at 0 / 0.01 / 1.0; at 1.0 the spans go either to a no-op exporter or over
//               OTLP/HTTP JSON to a span-counting sink in a child process. Then engine.handle + finish
//               for one proxied GET (gateway view, one route, round robin over two endpoints) without
//               telemetry and with all of it at the default sampling: the UpstreamClient there answers
//               at once with a 200 head and no socket, so those rows measure the engine's own cost
//               (and telemetry's), never an upstream's. µs per request (median of 5 rounds), CPU µs
//               per request of this process.
//   gateway:    `gateway/main.ts --config` on core 1 (taskset), upstream bench/upstream.ts + wrk + the
//               OTLP sink on core 0; tracing sampleRatio 0 against sampleRatio 1.0 exporting to the sink,
//               access log on (JSON to a file) in both. req/s, the gateway's CPU µs/request from
//               /proc/<pid>/stat, and the traced/untraced ratio, in alternating pairs.
// Bounded loops, children ended by PID, temp dir removed.
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { ExportResultCode } from "@opentelemetry/core";
import type { SpanExporter } from "@opentelemetry/sdk-trace-base";
import { compileMesh, validateMesh } from "../shared/config/index.ts";
import { createEngine, createGatewayView, type Engine, type RequestBody, type RequestHead, type RouteView, type UpstreamClient } from "../shared/proxy/index.ts";
import {
  createAccessLog,
  createBufferedSink,
  createMeshSummary,
  createMetricsRegistry,
  createOtlpHttpExporter,
  createProxyMetrics,
  createRequestTelemetry,
  createTracer,
  type ProxyTracer,
  type RequestTelemetry,
  type TelemetryHead,
  type TelemetryRecord,
} from "../shared/telemetry/index.ts";
import { cpuSeconds, freePort, loadGenerator, markdownTable, parseWrk, requireTools, waitForPort } from "./measure.ts";

const ROOT = resolve(import.meta.dirname, "..");
const ROUNDS = 5;
/** Requests per in-process round; the event loop gets a turn every BATCH (sink flush, span export). */
const IN_PROCESS_COUNT = 20_000;
const BATCH = 200;

interface Row {
  readonly [column: string]: string;
}

const fmt = (n: number | undefined, digits = 0) => (n !== undefined && Number.isFinite(n) ? n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits }) : "-");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// The OTLP sink: a child process (so its JSON reading is not charged to the process measured) that
// answers POST /v1/traces with 200 and counts spans; GET /count reports them.

function runSink(): void {
  let spans = 0;
  let posts = 0;
  let bytes = 0;
  const server = http.createServer((req, res) => {
    if (req.method === "GET" && req.url === "/count") {
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ spans, posts, bytes }));
      return;
    }
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (chunk: string) => (body += chunk));
    req.on("end", () => {
      posts += 1;
      bytes += body.length;
      // Each span carries exactly one "spanId" key (its parent is "parentSpanId").
      for (let i = body.indexOf('"spanId":'); i >= 0; i = body.indexOf('"spanId":', i + 9)) spans += 1;
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  server.listen(0, "127.0.0.1", () => console.log(`sink ${(server.address() as net.AddressInfo).port}`));
  process.on("SIGTERM", () => process.exit(0));
}

interface Sink {
  readonly port: number;
  readonly url: string;
  readonly child: ChildProcess;
  count(): Promise<{ spans: number; posts: number; bytes: number }>;
}

async function startSink(core: number | undefined, children: ChildProcess[]): Promise<Sink> {
  const args = [process.execPath, "--import", "tsx", "bench/telemetry.ts", "--otlp-sink"];
  const child = core === undefined ? spawn(args[0]!, args.slice(1), { cwd: ROOT, stdio: ["ignore", "pipe", "ignore"] }) : spawn("taskset", ["-c", String(core), ...args], { cwd: ROOT, stdio: ["ignore", "pipe", "ignore"] });
  children.push(child);
  const port = await new Promise<number>((resolvePort, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error("OTLP sink did not start in 30 s")), 30_000);
    child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
      out += chunk;
      const m = /sink (\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolvePort(Number(m[1]));
      }
    });
    child.once("exit", (code) => reject(new Error(`OTLP sink exited (${code})`)));
  });
  const url = `http://127.0.0.1:${port}/v1/traces`;
  return {
    port,
    url,
    child,
    count: async () => (await (await fetch(`http://127.0.0.1:${port}/count`)).json()) as { spans: number; posts: number; bytes: number },
  };
}

// ---------------------------------------------------------------------------------------------
// In-process: the per-request telemetry hooks.

const HEAD: TelemetryHead = {
  method: "GET",
  headers: { host: "shop.example.com", "user-agent": "wrk/4.1.0", accept: "*/*", "x-request-id": "1f0c6a7e-5b1a-4c36-9d7b-2f2c9e0d4a11" },
};

function recordFor(i: number, started: ReturnType<RequestTelemetry["onRequestStart"]>): TelemetryRecord {
  return {
    startTimeMs: 1_763_900_000_000 + i,
    durationMs: 0.84,
    upstreamDurationMs: 0.51,
    method: "GET",
    authority: "shop.example.com",
    path: "/bench/items?page=2",
    protocol: "HTTP/1.1",
    status: 200,
    route: "bench",
    service: "app",
    upstream: "127.0.0.1:8081",
    bytesIn: 0,
    bytesOut: 24,
    requestId: `req-${i}`,
    traceId: started?.traceId,
    spanId: started?.spanId,
    clientIp: "127.0.0.1",
    userAgent: "wrk/4.1.0",
    attempts: 1,
  };
}

/** The gateway's engine over a one-route view, for the rows that time engine.handle itself. */
interface EngineRun {
  readonly engine: Engine;
  readonly view: RouteView;
}

const ENGINE_HEAD: RequestHead = {
  method: "GET",
  scheme: "http",
  authority: "shop.example.com",
  path: "/bench/items?page=2",
  headers: { host: "shop.example.com", "user-agent": "wrk/4.1.0", accept: "*/*" },
  clientIp: "127.0.0.1",
  localPort: 8080,
};
const NO_BODY: RequestBody = { length: 0, replayable: true };

/**
 * An UpstreamClient that answers every request at once with a 200 head (no socket, no body): it lets
 * the engine rows measure the engine's own cost. A benchmark device only, never a test double.
 */
const IMMEDIATE_UPSTREAM: UpstreamClient = {
  forward: async () => ({ ok: true, response: { status: 200, headers: { "content-type": "text/plain", "content-length": "24" }, discard() {} } }),
  close: async () => {},
};

function engineRun(telemetry: RequestTelemetry | undefined): EngineRun {
  const r = validateMesh({
    services: { app: { endpoints: [{ address: "127.0.0.1:8081" }, { address: "127.0.0.1:8082" }], traffic: { loadBalancer: "round_robin" } } },
    gateways: { bench: { listeners: [{ port: 8080 }], routes: [{ name: "bench", match: { path: { prefix: "/bench" } }, forward: { to: [{ service: "app" }] } }] } },
  });
  if (!r.ok) throw new Error(`bench mesh: ${JSON.stringify(r.issues)}`);
  const engine = createEngine({ client: IMMEDIATE_UPSTREAM, edge: true, ...(telemetry ? { onRequestStart: telemetry.onRequestStart, onRequestDone: telemetry.onRequestDone } : {}) });
  return { engine, view: createGatewayView(compileMesh(r.value, 1), "bench") };
}

interface Variant {
  readonly name: string;
  readonly telemetry: RequestTelemetry;
  /** Drive engine.handle + finish instead of calling the hooks directly (telemetry then runs inside the engine). */
  readonly engine?: EngineRun;
  /** Extra per-request work the gateway does beside the hooks (its mesh summary). */
  readonly after?: (record: TelemetryRecord) => void;
  readonly tracer?: ProxyTracer;
  readonly exported?: () => Promise<number>;
}

async function inProcess(children: ChildProcess[]): Promise<{ rows: Row[]; notes: string[] }> {
  const devNull = openSync("/dev/null", "w");
  const sink = await startSink(undefined, children);
  const notes: string[] = [];
  const tracers: ProxyTracer[] = [];
  try {
    const accessLog = () => {
      // As the gateway: lines batched per event-loop turn, written with one call (here to /dev/null).
      const buffered = createBufferedSink({ write: (chunk) => writeSync(devNull, chunk), schedule: (flush) => setImmediate(flush) });
      return createAccessLog({ write: buffered.write });
    };
    const metrics = () => createProxyMetrics(createMetricsRegistry());
    const summary = () => {
      const s = createMeshSummary({ proxyId: "gateway-bench", role: "gateway", workload: "bench" });
      return (r: TelemetryRecord) => s.record(r);
    };
    let noopSpans = 0;
    const noop: SpanExporter = {
      export(spans, done) {
        noopSpans += spans.length;
        done({ code: ExportResultCode.SUCCESS });
      },
      shutdown: async () => {},
    };
    const tracer = (sampleRatio: number, exporter?: SpanExporter) => {
      const t = createTracer({ sampleRatio, ...(exporter ? { exporter } : {}) });
      tracers.push(t);
      return t;
    };
    const everything = (name: string, t: ProxyTracer, exported?: () => Promise<number>): Variant => ({
      name,
      telemetry: createRequestTelemetry({ accessLog: accessLog(), metrics: metrics(), tracer: t }),
      after: summary(),
      tracer: t,
      exported,
    });
    const engineWithAll = (name: string, t: ProxyTracer): Variant => {
      const telemetry = createRequestTelemetry({ accessLog: accessLog(), metrics: metrics(), tracer: t });
      const record = summary();
      // As createProxyTelemetry wires them: the request hooks, then the mesh summary.
      return { name, telemetry, engine: engineRun({ onRequestStart: telemetry.onRequestStart, onRequestDone: (r) => (telemetry.onRequestDone(r), record(r)) }), tracer: t };
    };
    let otlpBase = 0;
    const variants: Variant[] = [
      { name: "nothing (hooks with no parts)", telemetry: createRequestTelemetry({}) },
      { name: "access log only (JSON line, buffered)", telemetry: createRequestTelemetry({ accessLog: accessLog() }) },
      { name: "metrics only (counters + histogram)", telemetry: createRequestTelemetry({ metrics: metrics() }) },
      { name: "tracer only, sampleRatio 0", telemetry: createRequestTelemetry({ tracer: tracer(0) }) },
      { name: "mesh summary only (mesh view)", telemetry: createRequestTelemetry({}), after: summary() },
      everything("all, tracing sampleRatio 0", tracer(0)),
      everything("all, tracing 0.01 (default), no exporter", tracer(0.01)),
      everything("all, tracing 1.0 → no-op exporter", tracer(1, noop), async () => noopSpans),
      everything("all, tracing 1.0 → OTLP/HTTP JSON sink", tracer(1, createOtlpHttpExporter({ url: sink.url, serviceName: "weft-gateway-bench" })), async () => (await sink.count()).spans - otlpBase),
      { name: "engine.handle + finish, no telemetry (immediate upstream)", telemetry: createRequestTelemetry({}), engine: engineRun(undefined) },
      engineWithAll("engine.handle + finish + all, tracing 0.01 (gateway default)", tracer(0.01)),
    ];

    const rows: Row[] = [];
    let baseline: number | undefined;
    for (const v of variants) {
      const exportedBefore = v.exported ? await v.exported() : 0;
      if (v.name.includes("OTLP")) otlpBase = (await sink.count()).spans;
      const rounds: { us: number; cpu: number }[] = [];
      let started = 0;
      for (let round = -1; round < ROUNDS; round++) {
        // Round -1 is the warm-up.
        const cpu0 = process.cpuUsage();
        const t0 = performance.now();
        for (let i = 0; i < IN_PROCESS_COUNT; i++) {
          if (v.engine) {
            const exchange = await v.engine.engine.handle(ENGINE_HEAD, NO_BODY, v.engine.view);
            exchange.finish(0, 24);
          } else {
            const s = v.telemetry.onRequestStart(HEAD);
            const record = recordFor(i, s);
            v.telemetry.onRequestDone(record);
            v.after?.(record);
          }
          started += 1;
          // Give the loop a turn as a server would between reads: the sink flushes, spans export.
          if (i % BATCH === BATCH - 1) await new Promise((r) => setImmediate(r));
        }
        await new Promise((r) => setImmediate(r));
        const wall = performance.now() - t0;
        const cpu = process.cpuUsage(cpu0);
        if (round >= 0) rounds.push({ us: (wall * 1000) / IN_PROCESS_COUNT, cpu: (cpu.user + cpu.system) / IN_PROCESS_COUNT });
      }
      let exported: number | undefined;
      if (v.tracer && v.exported) {
        await v.tracer.flush();
        await sleep(200);
        exported = (await v.exported()) - (v.name.includes("OTLP") ? 0 : exportedBefore);
      }
      const sorted = [...rounds].sort((a, b) => a.us - b.us);
      const median = sorted[Math.floor(ROUNDS / 2)]!;
      baseline ??= median.us;
      rows.push({
        "per request (in-process)": v.name,
        "µs/req": fmt(median.us, 2),
        "CPU µs/req": fmt(median.cpu, 2),
        "+µs over nothing": v === variants[0] ? "baseline" : fmt(median.us - baseline, 2),
        "spans exported": exported === undefined ? "-" : `${fmt(exported)} of ${fmt(started)}`,
        "round spread": `${fmt(((sorted.at(-1)!.us - sorted[0]!.us) / median.us) * 100)}%`,
      });
    }
    notes.push(`${IN_PROCESS_COUNT} requests per round, ${ROUNDS} rounds after a warm-up round, an event-loop turn every ${BATCH}; access log to /dev/null through the gateway's buffered sink; "all" = metrics + access log + tracer + mesh summary, as createProxyTelemetry wires them; BatchSpanProcessor defaults (queue 2048, batch 512); the engine rows answer from an UpstreamClient that returns a 200 head at once (the engine's own cost, no socket)`);
    return { rows, notes };
  } finally {
    for (const t of tracers) await t.shutdown().catch(() => undefined);
    closeSync(devNull);
    stopChild(sink.child);
  }
}

// ---------------------------------------------------------------------------------------------
// End to end through the gateway process.


function stopChild(child: ChildProcess): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(child.pid, "SIGKILL");
  } catch {
    // Already gone.
  }
}

interface WrkResult {
  readonly rps: number;
  readonly requests: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly errors: number;
  readonly cpuUsPerRequest: number;
}

async function wrk(port: number, seconds: number, pid: number, children: ChildProcess[]): Promise<WrkResult> {
  const before = cpuSeconds(pid);
  const out = await loadGenerator(["wrk", "-t1", "-c50", `-d${seconds}s`, "--latency", `http://127.0.0.1:${port}/bench`], children);
  const after = cpuSeconds(pid);
  const { rps, requests, p50Ms, p99Ms, errors } = parseWrk(out);
  return {
    rps,
    requests,
    p50Ms,
    p99Ms,
    errors,
    cpuUsPerRequest: requests > 0 ? ((after - before) * 1e6) / requests : NaN,
  };
}

async function throughGateway(seconds: number, pairCount: number, children: ChildProcess[]): Promise<{ rows: Row[]; notes: string[] }> {
  requireTools(["wrk", "taskset"], "wrk util-linux");
  const dir = mkdtempSync(join(tmpdir(), "weft-bench-telemetry-"));
  try {
    const upstreamPorts = [await freePort(), await freePort()];
    const upstream = spawn("taskset", ["-c", "0", process.execPath, "--import", "tsx", "bench/upstream.ts", ...upstreamPorts.map(String)], { cwd: ROOT, stdio: "ignore" });
    children.push(upstream);
    await waitForPort(upstreamPorts[1]!, upstream, "upstream");
    const sink = await startSink(0, children);

    const gateway = async (name: string, tracing: { sampleRatio: number; otlpEndpoint?: string }) => {
      const port = await freePort();
      const config = join(dir, `${name}.json`);
      writeFileSync(
        config,
        JSON.stringify({
          accessLog: "json",
          tracing,
          services: { app: { endpoints: upstreamPorts.map((p) => ({ address: `127.0.0.1:${p}` })), traffic: { loadBalancer: "round_robin" } } },
          gateways: {
            bench: {
              listeners: [{ port, address: "127.0.0.1" }],
              routes: [{ name: "bench", match: { path: { prefix: "/bench" } }, forward: { to: [{ service: "app" }] } }],
            },
          },
        }),
      );
      const out = openSync(join(dir, `${name}.out`), "a");
      const err = openSync(join(dir, `${name}.err`), "a");
      const child = spawn("taskset", ["-c", "1", process.execPath, "--import", "tsx", "gateway/main.ts", "--config", config, "--admin", "127.0.0.1:0"], { cwd: ROOT, stdio: ["ignore", out, err] });
      children.push(child);
      closeSync(out);
      closeSync(err);
      await waitForPort(port, child, `gateway (${name})`);
      return { name, port, pid: child.pid!, child };
    };
    const untraced = await gateway("untraced", { sampleRatio: 0 });
    const traced = await gateway("traced", { sampleRatio: 1, otlpEndpoint: sink.url });

    let tracedServed = 0;
    tracedServed += (await wrk(traced.port, 2, traced.pid, children)).requests;
    await wrk(untraced.port, 2, untraced.pid, children);
    const pairs: { off: WrkResult; on: WrkResult }[] = [];
    for (let pair = 0; pair < pairCount; pair++) {
      const off = await wrk(untraced.port, seconds, untraced.pid, children);
      const on = await wrk(traced.port, seconds, traced.pid, children);
      tracedServed += on.requests;
      pairs.push({ off, on });
    }
    // Spans still queued (under one batch of 512) go out after the processor's 5 s delay; wait for most.
    await sleep(1500);
    const exported = await sink.count();

    const rows: Row[] = [];
    const row = (label: string, r: WrkResult, ratioRps?: number, ratioCpu?: number) =>
      rows.push({
        "through the gateway (wrk -c50)": label,
        "req/s": fmt(r.rps),
        "p50 ms": fmt(r.p50Ms, 2),
        "p99 ms": fmt(r.p99Ms, 2),
        "CPU µs/req": fmt(r.cpuUsPerRequest, 1),
        "traced/untraced req/s": ratioRps === undefined ? "" : fmt(ratioRps, 2),
        "traced/untraced CPU": ratioCpu === undefined ? "" : fmt(ratioCpu, 2),
        errors: String(r.errors),
      });
    pairs.forEach(({ off, on }, i) => {
      row(`pair ${i + 1}: tracing off (sampleRatio 0)`, off);
      row(`pair ${i + 1}: tracing 1.0 → OTLP sink`, on, on.rps / off.rps, on.cpuUsPerRequest / off.cpuUsPerRequest);
    });
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const notes = [
      `mean of the pairs: traced/untraced req/s ${fmt(mean(pairs.map((p) => p.on.rps / p.off.rps)), 2)}, CPU/request ${fmt(mean(pairs.map((p) => p.on.cpuUsPerRequest / p.off.cpuUsPerRequest)), 2)} (${fmt(mean(pairs.map((p) => p.off.cpuUsPerRequest)), 1)} → ${fmt(mean(pairs.map((p) => p.on.cpuUsPerRequest)), 1)} µs)`,
      `spans received by the sink: ${fmt(exported.spans)} for ${fmt(tracedServed)} traced requests (${fmt((exported.spans / tracedServed) * 100, 1)}%; up to 511 may still wait in the batch processor) in ${fmt(exported.posts)} POSTs, ${fmt(exported.bytes / Math.max(1, exported.spans))} bytes of OTLP JSON per span`,
      `${seconds}s wrk runs (1 thread, 50 connections) after a 2 s warm-up each; gateway on core 1, wrk + upstream + sink on core 0; access log on (JSON, stdout to a file) in both`,
    ];
    stopChild(untraced.child);
    stopChild(traced.child);
    return { rows, notes };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * main measures telemetry's per-request cost in-process and through the gateway, with and without tracing, and prints tables.
 * @example await main(["--duration", "5"]);
 */
export async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { duration: { type: "string" }, pairs: { type: "string" }, only: { type: "string" }, "otlp-sink": { type: "boolean" } } });
  if (values["otlp-sink"]) return runSink();
  const seconds = Number(values.duration ?? 5);
  const pairs = Number(values.pairs ?? 3);
  if (!(seconds >= 1 && seconds <= 60)) throw new RangeError("--duration is seconds per wrk run, 1..60");
  if (!(Number.isInteger(pairs) && pairs >= 1 && pairs <= 10)) throw new RangeError("--pairs is 1..10");
  if (values.only !== undefined && values.only !== "in-process" && values.only !== "gateway") throw new RangeError("--only in-process or gateway");
  const children: ChildProcess[] = [];
  const cleanup = () => children.forEach(stopChild);
  process.once("exit", cleanup);
  try {
    console.log(`Telemetry cost: node ${process.version}, load average ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}`);
    console.log(`command: node --import tsx bench/telemetry.ts ${argv.join(" ")}`.trimEnd() + "\n");
    if (values.only !== "gateway") {
      const r = await inProcess(children);
      console.log(markdownTable(r.rows));
      for (const n of r.notes) console.log(`\n${n}`);
      console.log();
    }
    if (values.only !== "in-process") {
      const r = await throughGateway(seconds, pairs, children);
      console.log(markdownTable(r.rows));
      for (const n of r.notes) console.log(`\n${n}`);
    }
    console.log(`\nload average at the end: ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")} (other work on this 2-core machine shows up here)`);
  } finally {
    cleanup();
    process.off("exit", cleanup);
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const sinkMode = process.argv.includes("--otlp-sink");
  await main(process.argv.slice(2));
  // The exporter's keep-alive sockets would hold the loop open; the sink runs until it is killed.
  if (!sinkMode) process.exit(0);
}
