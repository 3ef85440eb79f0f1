// `node --import tsx bench/http2.ts [--duration 10]` (or `npm run bench -- --suite http2`): HTTP/2 and
// gRPC through one weft gateway hop against the same upstream direct. Real processes on loopback:
// the upstream (this file with --serve: a node:http2 h2c server, a node:http HTTP/1.1 server and a
// @grpc/grpc-js server) and the load generators on core 0, the gateway (the production bundle, as
// the image runs it) on core 1 (taskset), as in bench/run.ts.
//   HTTP/2: h2load -t1 -c10 -m10 (h2c prior knowledge) for --duration s → req/s, mean latency; the
//           gateway's utime+stime from /proc/<pid>/stat → CPU µs per request. Rows: direct to the h2c
//           upstream, gateway h2c → h2c upstream (service port protocol http2), gateway h2c → the
//           HTTP/1.1 upstream (translation).
//   gRPC:   a bounded @grpc/grpc-js unary loop (this file with --grpc-load; one channel, 50 calls in
//           flight, at most --duration s and 2,000,000 calls) → calls/s, p50/p99; direct vs gateway
//           (service port protocol grpc).
//   mesh:   nats-server, `weft control` and three `weft sidecar`s (the bundle): the client's sidecar A
//           (outbound), B in front of the HTTP/1.1 app, C in front of the gRPC server; A and B/C talk
//           mesh mTLS. wrk -t1 -c20 through A's outbound to B's app with B's service at
//           h2UpgradePolicy DO_NOT_UPGRADE (HTTP/1.1 between the sidecars) and then UPGRADE (HTTP/2),
//           and the gRPC loop through A to C (HTTP/2 between the sidecars); CPU µs per request of A
//           and of B or C. Sidecars on core 1, everything else on core 0.
// `--only gateway` or `--only mesh` runs one part. Every child is ended by PID, the temp dir removed.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import http2 from "node:http2";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { mintJoinToken } from "../shared/identity/index.ts";
import { weftBundle } from "./weft-bundle.ts";
import { cpuSeconds, freePort, getStatus, killProcessTrees, loadGenerator, markdownTable, parseWrk, requireTools, waitForJsonLog, waitForPort } from "./measure.ts";

const ROOT = resolve(import.meta.dirname, "..");
const GRPC_METHOD = "/weft.bench.Echo/Call";
const GRPC_IN_FLIGHT = 50;
const GRPC_MAX_CALLS = 2_000_000;
const BODY = Buffer.from("hello from the upstream\n");

/** Raw bytes both ways: the bench needs no protobuf, only gRPC's framing and trailers. */
const rawMethod = {
  path: GRPC_METHOD,
  requestStream: false,
  responseStream: false,
  requestSerialize: (b: Buffer) => b,
  requestDeserialize: (b: Buffer) => b,
  responseSerialize: (b: Buffer) => b,
  responseDeserialize: (b: Buffer) => b,
} as const;

/** The upstream child: h2c, HTTP/1.1 and gRPC servers on the ports given. */
async function serve(h2Port: number, h1Port: number, grpcPort: number): Promise<void> {
  http2
    .createServer({ settings: { maxConcurrentStreams: 1000 } }, (req, res) => {
      req.resume();
      res.writeHead(200, { "content-type": "text/plain", "content-length": BODY.length });
      res.end(BODY);
    })
    .listen(h2Port, "127.0.0.1");
  http
    .createServer((req, res) => {
      req.resume();
      res.writeHead(200, { "content-type": "text/plain", "content-length": BODY.length });
      res.end(BODY);
    })
    .listen(h1Port, "127.0.0.1");
  const server = new grpc.Server();
  server.addService({ Call: rawMethod }, { Call: (call: grpc.ServerUnaryCall<Buffer, Buffer>, done: grpc.sendUnaryData<Buffer>) => done(null, call.request) });
  await new Promise<void>((res, rej) => server.bindAsync(`127.0.0.1:${grpcPort}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? rej(err) : res())));
}

/** The gRPC load child: unary calls with GRPC_IN_FLIGHT in flight until `seconds` pass or the cap; prints JSON. */
async function grpcLoad(port: number, seconds: number, authority: string): Promise<void> {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { "grpc.default_authority": authority });
  const payload = Buffer.from([0x0a, 0x05, 0x68, 0x65, 0x6c, 0x6c, 0x6f]);
  const latencies = new Float64Array(GRPC_MAX_CALLS);
  let calls = 0;
  let errors = 0;
  const endAt = performance.now() + seconds * 1000;
  const started = performance.now();
  await new Promise<void>((done) => {
    let inFlight = 0;
    const next = () => {
      if (calls >= GRPC_MAX_CALLS || performance.now() >= endAt) {
        if (inFlight === 0) done();
        return;
      }
      const sent = performance.now();
      const index = calls++;
      inFlight++;
      client.makeUnaryRequest(GRPC_METHOD, rawMethod.requestSerialize, rawMethod.responseDeserialize, payload, (err) => {
        inFlight--;
        latencies[index] = performance.now() - sent;
        if (err) errors++;
        next();
      });
    };
    for (let i = 0; i < GRPC_IN_FLIGHT; i++) next();
  });
  const elapsed = (performance.now() - started) / 1000;
  client.close();
  const sorted = latencies.subarray(0, calls).sort();
  const pct = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
  process.stdout.write(JSON.stringify({ calls, errors, rps: calls / elapsed, p50Ms: pct(50), p99Ms: pct(99) }));
}

interface Run {
  rps: number;
  requests: number;
  meanMs: number;
  p50Ms?: number;
  p99Ms?: number;
  errors: number;
  cpuUsPerRequest?: number;
}

/** Reads h2load's summary: "finished in 10.00s, 12345.60 req/s", "requests: … succeeded, … failed", "time for request: min max mean". */
function parseH2load(out: string): Omit<Run, "cpuUsPerRequest"> {
  const rps = Number(/finished in [\d.]+m?s, ([\d.]+) req\/s/.exec(out)?.[1] ?? NaN);
  const counts = /requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(out);
  const mean = /time for request:\s+\S+\s+\S+\s+(\S+)/.exec(out)?.[1] ?? "";
  const meanMs = mean.endsWith("us") ? Number(mean.slice(0, -2)) / 1000 : mean.endsWith("ms") ? Number(mean.slice(0, -2)) : Number(mean.slice(0, -1)) * 1000;
  return { rps, requests: Number(counts?.[3] ?? 0), meanMs, errors: Number(counts?.[4] ?? 0) + Number(counts?.[5] ?? 0) };
}

/**
 * main runs the HTTP/2 and gRPC suite and prints its tables.
 * @example
 * await main(["--duration", "10"]);
 */
export async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { duration: { type: "string" }, only: { type: "string" } } });
  const duration = Number(values.duration ?? 10);
  if (!(duration > 0)) throw new Error("--duration must be > 0");
  const parts = values.only === undefined ? ["gateway", "mesh"] : [values.only];
  requireTools(["h2load", "wrk", "taskset", "nats-server"], "nghttp2-client wrk util-linux nats-server");
  const dir = mkdtempSync(join(tmpdir(), "weft-bench-http2-"));
  const children: ChildProcess[] = [];
  const cleanup = () => {
    killProcessTrees(children);
    rmSync(dir, { recursive: true, force: true });
  };
  process.on("exit", cleanup);
  const start = (core: number, args: string[], log: string, env: Record<string, string> = {}) => {
    const child = spawn("taskset", ["-c", String(core), ...args], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ["ignore", openSync(join(dir, `${log}.out`), "a"), openSync(join(dir, `${log}.err`), "a")],
    });
    children.push(child);
    return child;
  };
  const output = (args: string[]) => loadGenerator(args, children, ROOT);
  const waitForLog = (child: ChildProcess, log: string, match: (l: Record<string, unknown>) => boolean) => waitForJsonLog(child, join(dir, `${log}.err`), log, match);

  try {
    const [h2Port, h1Port, grpcPort, gatewayPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
    const upstream = start(0, [process.execPath, "--import", "tsx", "bench/http2.ts", "--serve", String(h2Port), String(h1Port), String(grpcPort)], "upstream");
    await waitForPort(grpcPort, upstream, "upstream");
    const config = join(dir, "weft.json");
    writeFileSync(
      config,
      JSON.stringify({
        accessLog: "json",
        services: {
          h2app: { ports: [{ port: h2Port, protocol: "http2" }], endpoints: [{ address: `127.0.0.1:${h2Port}` }] },
          h1app: { endpoints: [{ address: `127.0.0.1:${h1Port}` }] },
          grpcapp: { ports: [{ port: grpcPort, protocol: "grpc" }], endpoints: [{ address: `127.0.0.1:${grpcPort}` }] },
        },
        gateways: {
          bench: {
            listeners: [{ port: gatewayPort, address: "127.0.0.1", http2: true }],
            routes: [
              { name: "h2", match: { path: { prefix: "/bench" } }, forward: { to: [{ service: "h2app" }] } },
              { name: "h1", match: { path: { prefix: "/h1" } }, forward: { to: [{ service: "h1app" }] } },
              { name: "grpc", match: { path: { prefix: "/weft.bench.Echo/" } }, forward: { to: [{ service: "grpcapp" }] } },
            ],
          },
        },
      }),
    );
    const fmt = (n: number | undefined, digits = 0) => (n !== undefined && Number.isFinite(n) ? n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits }) : "-");
    const grpcRun = async (port: number, seconds: number, pids: number[] = [], authority = "bench.test"): Promise<Run & { cpu: number[] }> => {
      const before = pids.map((p) => cpuSeconds(p));
      const out = JSON.parse(await output([process.execPath, "--import", "tsx", "bench/http2.ts", "--grpc-load", String(port), String(seconds), authority])) as {
        calls: number;
        errors: number;
        rps: number;
        p50Ms: number;
        p99Ms: number;
      };
      const cpu = pids.map((p, i) => ((cpuSeconds(p) - before[i]!) * 1e6) / out.calls);
      return { rps: out.rps, requests: out.calls, meanMs: NaN, p50Ms: out.p50Ms, p99Ms: out.p99Ms, errors: out.errors, cpuUsPerRequest: cpu[0], cpu };
    };
    console.log(`weft bench http2: ${duration}s runs; upstream, load generators (and NATS, control plane) on core 0, proxies (bundle) on core 1; node ${process.version}\n`);
    if (parts.includes("gateway")) await gatewayPart();
    if (parts.includes("mesh")) await meshPart();

    async function gatewayPart() {
    const gateway = start(1, [process.execPath, weftBundle(), "gateway", "--config", config, "--admin", "127.0.0.1:0"], "gateway");
    await waitForPort(gatewayPort, gateway, "gateway");

    const h2load = async (url: string, seconds: number, pid?: number): Promise<Run> => {
      const before = pid ? cpuSeconds(pid) : 0;
      const run = parseH2load(await output(["h2load", "-t1", "-c10", "-m10", "-D", String(seconds), url]));
      const after = pid ? cpuSeconds(pid) : 0;
      return { ...run, cpuUsPerRequest: pid && run.requests > 0 ? ((after - before) * 1e6) / run.requests : undefined };
    };
    const subjects: { name: string; url: string; pid?: number }[] = [
      { name: "direct (h2c upstream)", url: `http://127.0.0.1:${h2Port}/bench` },
      { name: "gateway h2c → h2c", url: `http://127.0.0.1:${gatewayPort}/bench`, pid: gateway.pid },
      { name: "gateway h2c → HTTP/1.1", url: `http://127.0.0.1:${gatewayPort}/h1`, pid: gateway.pid },
    ];
    for (const s of subjects) await h2load(s.url, 2);
    const h2 = new Map<string, Run>();
    for (const s of subjects) h2.set(s.name, await h2load(s.url, duration, s.pid));
    const direct = h2.get(subjects[0]!.name)!;
    console.log("HTTP/2 (h2load -t1 -c10 -m10, h2c prior knowledge)\n");
    console.log(
      markdownTable(
        subjects.map((s) => {
          const r = h2.get(s.name)!;
          return { path: s.name, "req/s": fmt(r.rps), "× direct": fmt(r.rps / direct.rps, 2), "mean ms": fmt(r.meanMs, 2), errors: String(r.errors), "gateway CPU µs/req": fmt(r.cpuUsPerRequest, 1) };
        }),
      ),
    );

    await grpcRun(grpcPort, 2);
    await grpcRun(gatewayPort, 2);
    const grpcDirect = await grpcRun(grpcPort, duration);
    const grpcGateway = await grpcRun(gatewayPort, duration, [gateway.pid!]);
    console.log(`\ngRPC unary (@grpc/grpc-js client, one channel, ${GRPC_IN_FLIGHT} in flight, 7-byte message)\n`);
    console.log(
      markdownTable(
        [
          ["direct (grpc-js server)", grpcDirect],
          ["gateway h2c → grpc", grpcGateway],
        ].map(([name, r]) => {
          const run = r as Run;
          return {
            path: name as string,
            "calls/s": fmt(run.rps),
            "× direct": fmt(run.rps / grpcDirect.rps, 2),
            "p50 ms": fmt(run.p50Ms, 2),
            "p99 ms": fmt(run.p99Ms, 2),
            errors: String(run.errors),
            "gateway CPU µs/call": fmt(run.cpuUsPerRequest, 1),
          };
        }),
      ),
    );
    gateway.kill("SIGKILL");
    }

    /** Client sidecar → mesh mTLS → server sidecar → app, HTTP/1.1 or HTTP/2 between the sidecars. */
    async function meshPart() {
      const natsPort = await freePort();
      const nats = start(0, ["nats-server", "-a", "127.0.0.1", "-p", String(natsPort), "-js", "-sd", join(dir, "nats")], "nats");
      await waitForPort(natsPort, nats, "nats-server");
      const natsUrl = `nats://127.0.0.1:${natsPort}`;
      const env = { WEFT_STATE_DIR: join(dir, "state") };
      const weft = weftBundle();
      const control = start(0, [process.execPath, weft, "control", "--nats", natsUrl, "--id", "control-bench", "--state-dir", join(dir, "control")], "control", env);
      await waitForLog(control, "control", (l) => l.msg === "control plane ready");
      const apply = (upgrade: boolean) => {
        const file = join(dir, "mesh.config.ts");
        const services = {
          "bench-client": {},
          "bench-h1": { ports: [{ port: 8080, protocol: "http" }], traffic: { h2UpgradePolicy: upgrade ? "UPGRADE" : "DO_NOT_UPGRADE" } },
          "bench-grpc": { ports: [{ port: 50051, protocol: "grpc" }] },
        };
        writeFileSync(file, `export default ${JSON.stringify({ accessLog: "json", services })};\n`);
        const r = spawnSync(process.execPath, [weft, "apply", file, "--nats", natsUrl], { cwd: ROOT, encoding: "utf8", timeout: 30_000 });
        if (r.status !== 0) throw new Error(`weft apply failed:\n${r.stderr}`);
      };
      apply(false);
      const key = new Uint8Array(readFileSync(join(dir, "control", "join-token.key")));
      const token = (sa: string) => mintJoinToken({ namespace: "default", serviceAccount: sa, ttlMs: 600_000 }, key);
      const common = ["--nats", natsUrl, "--inbound-port", "0", "--inbound-address", "127.0.0.1", "--outbound-port", "0", "--admin", "127.0.0.1:0"];
      const sidecar = async (service: string, appPort: number, log: string) =>
        start(1, [process.execPath, weft, "sidecar", "--service", service, "--app-port", String(appPort), "--proxy-id", log, "--join-token", await token(service), ...common], log, env);
      const a = await sidecar("bench-client", 1, "sidecar-a");
      const b = await sidecar("bench-h1", h1Port, "sidecar-b");
      const c = await sidecar("bench-grpc", grpcPort, "sidecar-c");
      const outbound = Number((await waitForLog(a, "sidecar-a", (l) => l.msg === "sidecar listening")).outbound);
      for (const [child, log] of [[a, "sidecar-a"], [b, "sidecar-b"], [c, "sidecar-c"]] as const) await waitForLog(child, log, (l) => l.msg === "sidecar ready");

      /** The protocol of B's last access-log line: how A reached it. */
      const lastProtocol = () => {
        const lines = readFileSync(join(dir, "sidecar-b.out"), "utf8").split("\n");
        for (let i = lines.length - 1; i >= 0; i--) {
          try {
            return (JSON.parse(lines[i]!) as { protocol?: string }).protocol;
          } catch {
            // Empty or partly written: the line before.
          }
        }
        return undefined;
      };
      const reachB = async (protocol: string) => {
        const deadline = Date.now() + 30_000;
        for (;;) {
          if ((await getStatus(outbound, "bench-h1")) === 200 && lastProtocol() === protocol) return;
          if (Date.now() > deadline) throw new Error(`sidecar B not reached over ${protocol} within 30 s`);
          await new Promise((r) => setTimeout(r, 200));
        }
      };
      const wrk = async (port: number, seconds: number, pids: number[] = [], host?: string): Promise<Run & { cpu: number[] }> => {
        const before = pids.map((p) => cpuSeconds(p));
        const run = parseWrk(await output(["wrk", "-t1", "-c20", `-d${seconds}s`, "--latency", ...(host ? ["-H", `Host: ${host}`] : []), `http://127.0.0.1:${port}/bench`]));
        const cpu = pids.map((p, i) => ((cpuSeconds(p) - before[i]!) * 1e6) / run.requests);
        return { rps: run.rps, requests: run.requests, meanMs: NaN, p50Ms: run.p50Ms, p99Ms: run.p99Ms, errors: run.errors, cpu };
      };

      await reachB("HTTP/1.1");
      await wrk(outbound, 2, [], "bench-h1");
      const h1Direct = await wrk(h1Port, duration);
      const h1Mesh = await wrk(outbound, duration, [a.pid!, b.pid!], "bench-h1");
      apply(true);
      await reachB("HTTP/2");
      await wrk(outbound, 2, [], "bench-h1");
      const h2Mesh = await wrk(outbound, duration, [a.pid!, b.pid!], "bench-h1");
      await grpcRun(outbound, 2, [], "bench-grpc");
      const grpcDirect = await grpcRun(grpcPort, duration);
      const grpcMesh = await grpcRun(outbound, duration, [a.pid!, c.pid!], "bench-grpc");

      console.log("\nMesh: client → sidecar A outbound → mTLS → sidecar B/C → app (wrk -t1 -c20; gRPC loop as above)\n");
      const row = (path: string, between: string, r: Run & { cpu: number[] }, direct: Run) => ({
        path,
        "between sidecars": between,
        "req/s": fmt(r.rps),
        "× direct": fmt(r.rps / direct.rps, 2),
        "p50 ms": fmt(r.p50Ms, 2),
        "p99 ms": fmt(r.p99Ms, 2),
        errors: String(r.errors),
        "CPU µs/req A": fmt(r.cpu[0], 1),
        "CPU µs/req B or C": fmt(r.cpu[1], 1),
      });
      console.log(
        markdownTable([
          row("HTTP/1.1 app, direct", "-", { ...h1Direct, cpu: [] }, h1Direct),
          row("HTTP/1.1 app, DO_NOT_UPGRADE", "HTTP/1.1", h1Mesh, h1Direct),
          row("HTTP/1.1 app, UPGRADE", "HTTP/2", h2Mesh, h1Direct),
          row("gRPC server, direct", "-", { ...grpcDirect, cpu: [] }, grpcDirect),
          row("gRPC server", "HTTP/2", grpcMesh, grpcDirect),
        ]),
      );
    }

  } finally {
    cleanup();
    process.off("exit", cleanup);
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const { values, positionals } = parseArgs({
    options: { serve: { type: "boolean" }, "grpc-load": { type: "boolean" }, duration: { type: "string" }, only: { type: "string" } },
    allowPositionals: true,
  });
  if (values.serve) await serve(Number(positionals[0]), Number(positionals[1]), Number(positionals[2]));
  else if (values["grpc-load"]) {
    await grpcLoad(Number(positionals[0]), Number(positionals[1]), positionals[2] ?? "bench.test");
    process.exit(0);
  } else {
    await main(process.argv.slice(2));
    process.exit(0);
  }
}
