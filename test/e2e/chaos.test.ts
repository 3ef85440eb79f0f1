import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { MIRROR_MAX_IN_FLIGHT } from "../../shared/proxy/index.ts";
import { startGateway } from "../harness/gateway.ts";
import { request } from "../harness/upstream.ts";
import { settled } from "../harness/wait.ts";

// Chaos through a real `weft gateway` process against upstreams in their own processes: an upstream
// that hangs, one killed and restarted under load, the config file rewritten every 100 ms under
// load, and a slow mirror. Latency is measured by the client; every load loop is bounded in count
// and time. resilience.test.ts covers 500-ejection, the retry budget, fault abort and mirror share.

// An upstream process: `node upstream.mjs <port> <mode> <name> [log]`, mode "ok", "hang" (reads the
// request, never answers), "hold" (answers nothing until SIGUSR1, then everything) or "delay:<ms>". Prints "listening <port>", then with "log" a line
// "req <epoch ms>" per request so the test can count and time arrivals in another process.
const UPSTREAM_SCRIPT = `
import http from "node:http";
const [port, mode, name, log] = process.argv.slice(2);
const delay = mode.startsWith("delay:") ? Number(mode.slice(6)) : 0;
let held = mode === "hold" ? [] : undefined;
process.on("SIGUSR1", () => {
  const answers = held ?? [];
  held = undefined;
  for (const answer of answers) answer();
});
const server = http.createServer((req, res) => {
  if (log === "log") process.stdout.write("req " + Date.now() + "\\n");
  req.resume();
  if (mode === "hang") return;
  const answer = () => {
    res.writeHead(200, { "content-type": "text/plain", "x-upstream": name });
    res.end(name);
  };
  if (held) held.push(answer);
  else if (delay > 0) setTimeout(answer, delay);
  else answer();
});
server.keepAliveTimeout = 60000;
server.listen(Number(port), "127.0.0.1", () => process.stdout.write("listening " + server.address().port + "\\n"));
`;

let scriptDir = "";
let scriptPath = "";
/** Every upstream process this file started, so `after` can SIGKILL any a failed test left behind. */
const spawned = new Set<ChildProcess>();

before(async () => {
  scriptDir = await mkdtemp(join(tmpdir(), "weft-chaos-"));
  scriptPath = join(scriptDir, "upstream.mjs");
  await writeFile(scriptPath, UPSTREAM_SCRIPT);
});

after(async () => {
  for (const child of spawned) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  await rm(scriptDir, { recursive: true, force: true });
});

interface UpstreamProcess {
  readonly port: number;
  readonly address: string;
  readonly pid: number;
  /** Arrival time (epoch ms) of each request, when started with `log`. */
  readonly arrivals: number[];
  /** Sends SIGUSR1: a "hold" upstream answers everything from then on. */
  release(): void;
  /** SIGKILL, resolving once the process is gone. */
  kill(): Promise<void>;
}

/** Runs the upstream script in its own process on `port` (0 = any) and waits until it listens; `log` records arrivals. */
async function spawnUpstream(mode: string, name: string, o: { port?: number; log?: boolean } = {}): Promise<UpstreamProcess> {
  const child = spawn(process.execPath, [scriptPath, String(o.port ?? 0), mode, name, o.log ? "log" : "quiet"], { stdio: ["ignore", "pipe", "inherit"] });
  spawned.add(child);
  const arrivals: number[] = [];
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  let buffered = "";
  const bound = new Promise<number>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`upstream ${name} exited (${code}) before listening`)));
    child.stdout!.on("data", (chunk: Buffer) => {
      buffered += chunk.toString();
      let nl: number;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const [word, value] = buffered.slice(0, nl).split(" ");
        buffered = buffered.slice(nl + 1);
        if (word === "listening") resolve(Number(value));
        else if (word === "req") arrivals.push(Number(value));
      }
    });
  });
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  const boundPort = await bound.finally(() => clearTimeout(timer));
  return {
    port: boundPort,
    address: `127.0.0.1:${boundPort}`,
    pid: child.pid!,
    arrivals,
    release: () => process.kill(child.pid!, "SIGUSR1"),
    async kill() {
      if (child.exitCode === null && child.signalCode === null) {
        process.kill(child.pid!, "SIGKILL");
        await exited;
      }
      spawned.delete(child);
    },
  };
}

interface Sample {
  /** Epoch ms the request was sent. */
  readonly startedAt: number;
  readonly latencyMs: number;
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
}

/**
 * Sends GET `path` with `concurrency` requests in flight until `total` were sent or `durationMs`
 * passed, over a keep-alive agent. A request that fails at the socket is a sample with status 0.
 */
async function load(port: number, path: string, o: { total: number; concurrency: number; durationMs: number }): Promise<Sample[]> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: o.concurrency });
  const samples: Sample[] = [];
  const stopAt = Date.now() + o.durationMs;
  let started = 0;
  const worker = async () => {
    while (started < o.total && Date.now() < stopAt) {
      started++;
      const startedAt = Date.now();
      const t0 = performance.now();
      try {
        const r = await request(port, { path, agent });
        samples.push({ startedAt, latencyMs: performance.now() - t0, status: r.status, headers: r.headers });
      } catch {
        samples.push({ startedAt, latencyMs: performance.now() - t0, status: 0, headers: {} });
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: o.concurrency }, worker));
  } finally {
    agent.destroy();
  }
  return samples;
}

/** The p-th percentile (0–100) of the samples' client-observed latency, nearest rank. */
function percentile(samples: readonly Sample[], p: number): number {
  const sorted = samples.map((s) => s.latencyMs).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/** Reads one Prometheus sample value from the gateway's admin port (0 when the series is absent). */
async function metric(adminPort: number, series: RegExp): Promise<{ value: number; text: string }> {
  const text = (await request(adminPort, { path: "/stats/prometheus" })).body;
  let value = 0;
  for (const line of text.split("\n")) if (series.test(line)) value += Number(line.slice(line.lastIndexOf(" ") + 1));
  return { value, text };
}

const gatewayWith = (services: Record<string, unknown>, routes: unknown[]) => ({
  accessLog: "off",
  services,
  gateways: { edge: { listeners: [{ port: 0, address: "127.0.0.1" }], routes } },
});

const ms = (n: number) => `${n.toFixed(1)} ms`;

describe("chaos: a hanging upstream", () => {
  test("with one of three upstreams never answering, p99 stays under the 200 ms route timeout and at least 99.9% succeed after its ejection", async (t) => {
    const ok1 = await spawnUpstream("ok", "ok1");
    const hang = await spawnUpstream("hang", "hang", { log: true });
    const ok2 = await spawnUpstream("ok", "ok2");
    const routeTimeoutMs = 200;
    // Ejected after three gateway errors (its per-try timeouts) for longer than the run.
    const gw = await startGateway(
      gatewayWith(
        {
          web: {
            endpoints: [{ address: ok1.address }, { address: hang.address }, { address: ok2.address }],
            traffic: { outlierDetection: { consecutiveGatewayErrors: 3, baseEjectionTimeMs: 120_000 } },
          },
        },
        [
          {
            name: "web",
            forward: {
              to: [{ service: "web" }],
              timeoutMs: routeTimeoutMs,
              retries: { attempts: 2, perTryTimeoutMs: 50, retryOn: ["reset", "5xx"], backoff: { baseMs: 1, maxMs: 5 } },
            },
          },
        ],
      ),
    );
    try {
      const total = 2000;
      const samples = await load(gw.ports[0]!, "/", { total, concurrency: 10, durationMs: 60_000 });
      assert.equal(samples.length, total, "the load ran out of time");
      await settled(() => hang.arrivals.length, { maxMs: 1000 });
      // The ejection window begins after the last request the hanging upstream received: every
      // request sent later cannot have been sent there.
      const ejectedAt = Math.max(...hang.arrivals);
      const after = samples.filter((s) => s.startedAt > ejectedAt);
      const before = samples.length - after.length;
      const okAfter = after.filter((s) => s.status === 200).length;
      const okAll = samples.filter((s) => s.status === 200).length;
      const p99 = percentile(after, 99);
      t.diagnostic(
        `hanging upstream got ${hang.arrivals.length} requests; ${before} requests sent before its ejection (p99 ${ms(percentile(samples.slice(0, Math.max(before, 1)), 99))}), ` +
          `${after.length} after: ${okAfter} ok, p50 ${ms(percentile(after, 50))}, p99 ${ms(p99)}, max ${ms(percentile(after, 100))}; all ${total}: ${okAll} ok, p99 ${ms(percentile(samples, 99))}`,
      );
      assert.ok(hang.arrivals.length >= 3, "the hanging upstream was tried until ejected");
      // Until its third timeout is counted each of the 10 client slots may land on it again, once per
      // 50 ms try: a few rounds at most, not a share of the 2,000.
      assert.ok(hang.arrivals.length <= 30, `the hanging upstream got ${hang.arrivals.length} requests`);
      assert.ok(after.length >= total * 0.9, `${after.length} of ${total} requests came after the ejection`);
      assert.ok(okAfter / after.length >= 0.999, `success after ejection ${okAfter}/${after.length}`);
      assert.ok(p99 < routeTimeoutMs, `p99 after ejection ${ms(p99)}`);
      // Before the ejection a request that met the hanging upstream was retried after its 50 ms try.
      assert.equal(okAll, total, "the per-try timeout and retry answered even the requests that met the hanging upstream");
      const retries = await metric(gw.adminPort, /^weft_upstream_rq_retry_total\{.*service="web"/);
      // Each try sent there timed out and was retried, counted: a try cut before the upstream read it is not among its arrivals.
      assert.ok(retries.value >= hang.arrivals.length && retries.value <= 30, `${retries.value} retries counted, ${hang.arrivals.length} tries reached the hanging upstream`);
      const outlierSeries = retries.text.split("\n").filter((l) => !l.startsWith("#") && /ejection|outlier|endpoint_healthy/.test(l));
      t.diagnostic(`outlier metrics: ${outlierSeries.join("; ") || "none"}`);
    } finally {
      await gw.stop();
      await Promise.all([ok1.kill(), hang.kill(), ok2.kill()]);
    }
  });
});

describe("chaos: an upstream killed and restarted", () => {
  test("SIGKILL of one of two upstreams under load and its restart a second later fail no request", async (t) => {
    const a = await spawnUpstream("delay:1", "a");
    const b = await spawnUpstream("delay:1", "b");
    const gw = await startGateway(
      gatewayWith({ web: { endpoints: [{ address: a.address }, { address: b.address }] } }, [
        {
          name: "web",
          forward: {
            to: [{ service: "web" }],
            timeoutMs: 5000,
            retries: { attempts: 3, retryOn: ["connect-failure", "reset", "5xx"], backoff: { baseMs: 5, maxMs: 40 } },
          },
        },
      ]),
    );
    let restarted: UpstreamProcess | undefined;
    try {
      const running = load(gw.ports[0]!, "/", { total: 200_000, concurrency: 30, durationMs: 8000 });
      await new Promise((r) => setTimeout(r, 2000));
      const killedAt = Date.now();
      await a.kill();
      await new Promise((r) => setTimeout(r, 1000));
      const restartedAt = Date.now();
      restarted = await spawnUpstream("delay:1", "a", { port: a.port });
      const samples = await running;
      const failed = samples.filter((s) => s.status !== 200);
      const fromA = (from: number, to = Infinity) => samples.filter((s) => s.headers["x-upstream"] === "a" && s.startedAt >= from && s.startedAt < to).length;
      const reasons = [...new Set(failed.map((s) => `${s.status} ${s.headers["x-weft-reason"] ?? ""}`))];
      t.diagnostic(
        `${samples.length} requests, ${failed.length} failed ${JSON.stringify(reasons)}; answered by a: ${fromA(0, killedAt)} before the kill, ` +
          `${fromA(killedAt + 50, restartedAt)} while down, ${fromA(restartedAt)} after the restart; p99 ${ms(percentile(samples, 99))}`,
      );
      assert.ok(samples.length >= 1000, `only ${samples.length} requests were made`);
      assert.equal(failed.length, 0, "no request failed");
      assert.equal(fromA(killedAt + 50, restartedAt), 0, "nothing was answered by the killed upstream while it was down");
      assert.ok(fromA(restartedAt) > 0, "the restarted upstream serves again");
    } finally {
      await gw.stop();
      await Promise.all([a.kill(), b.kill(), restarted?.kill()]);
    }
  });
});

describe("chaos: config reloads under load", () => {
  test("rewriting the config file every 100 ms for 30 s under load loses no request, and the reloads apply", async (t) => {
    const blue = await spawnUpstream("ok", "blue");
    const green = await spawnUpstream("ok", "green");
    const config = (color: "blue" | "green", revisionTag: number) =>
      gatewayWith(
        {
          blue: { endpoints: [{ address: blue.address }] },
          green: { endpoints: [{ address: green.address }] },
        },
        [
          {
            name: "web",
            forward: { to: [{ service: "blue", weight: color === "blue" ? 90 : 10 }, { service: "green", weight: color === "blue" ? 10 : 90 }] },
            headers: { response: { set: { "x-config": color, "x-config-write": String(revisionTag) } } },
          },
        ],
      );
    const gw = await startGateway(config("blue", 0));
    let writes = 0;
    let writer: ReturnType<typeof setInterval> | undefined;
    try {
      const revisionBefore = (JSON.parse((await request(gw.adminPort, { path: "/config_dump" })).body) as { revision: number }).revision;
      const rssBefore = gw.rss();
      writer = setInterval(() => {
        writes++;
        void gw.writeConfig(config(writes % 2 === 0 ? "blue" : "green", writes));
      }, 100);
      const samples = await load(gw.ports[0]!, "/", { total: 500_000, concurrency: 10, durationMs: 30_000 });
      clearInterval(writer);
      writer = undefined;
      // The last write settles (the gateway waits 100 ms after a change before it reloads).
      await new Promise((r) => setTimeout(r, 1000));
      const revisionAfter = (JSON.parse((await request(gw.adminPort, { path: "/config_dump" })).body) as { revision: number }).revision;
      const failed = samples.filter((s) => s.status !== 200);
      const tags = new Set(samples.map((s) => s.headers["x-config-write"]));
      const colors = new Map<string, number>();
      for (const s of samples) colors.set(String(s.headers["x-config"]), (colors.get(String(s.headers["x-config"])) ?? 0) + 1);
      const rejected = await metric(gw.adminPort, /^weft_config_rejected_total/);
      const reloadLogs = gw.logs().filter((l) => l.msg === "config reloaded").length;
      const refusals = [...new Set(gw.logs().filter((l) => l.msg === "invalid config").map((l) => String(l.reason).slice(0, 120)))];
      t.diagnostic(
        `${writes} writes, ${reloadLogs} reloads (revision ${revisionBefore} → ${revisionAfter}), ${rejected.value} refused ${JSON.stringify(refusals)}; ${samples.length} requests, ` +
          `${failed.length} failed; ${tags.size} distinct configs seen by clients; by x-config ${JSON.stringify(Object.fromEntries(colors))}; ` +
          `rss ${(rssBefore / 2 ** 20).toFixed(0)} → ${(gw.rss() / 2 ** 20).toFixed(0)} MiB; p99 ${ms(percentile(samples, 99))}`,
      );
      assert.ok(writes >= 200, `only ${writes} config writes`);
      assert.ok(samples.length >= 1000, `only ${samples.length} requests were made`);
      assert.equal(failed.length, 0, `failed: ${JSON.stringify([...new Set(failed.map((s) => `${s.status} ${s.headers["x-weft-reason"] ?? ""}`))])}`);
      assert.ok(samples.every((s) => s.headers["x-config"] === "blue" || s.headers["x-config"] === "green"), "every answer carries one config's header");
      assert.ok(revisionAfter > revisionBefore, "the gateway's revision moved");
      assert.equal(revisionAfter - revisionBefore, reloadLogs, "each reload logged is a revision");
      assert.equal((await metric(gw.adminPort, /^weft_config_revision /)).value, revisionAfter, "the revision metric follows");
      // Each write that was applied while requests ran shows up in some answer's header.
      assert.ok(tags.size >= 3, `clients saw ${tags.size} configs`);
    } finally {
      if (writer) clearInterval(writer);
      await gw.stop();
      await Promise.all([blue.kill(), green.kill()]);
    }
  });
});

describe("chaos: mirroring to a slow shadow", () => {
  test("a 100% mirror to a shadow answering after 200 ms leaves the primary's p99 well under 200 ms", async (t) => {
    const shadowDelayMs = 200;
    const primary = await spawnUpstream("ok", "primary");
    const shadow = await spawnUpstream(`delay:${shadowDelayMs}`, "shadow", { log: true });
    const gw = await startGateway(
      gatewayWith(
        { shop: { endpoints: [{ address: primary.address }] }, "shop-next": { endpoints: [{ address: shadow.address }] } },
        [
          { name: "mirrored", match: { path: { prefix: "/mirrored" } }, forward: { to: [{ service: "shop" }], mirror: { service: "shop-next" } } },
          { name: "plain", forward: { to: [{ service: "shop" }] } },
        ],
      ),
    );
    try {
      const port = gw.ports[0]!;
      const total = 1500;
      const plain = await load(port, "/plain", { total, concurrency: 10, durationMs: 30_000 });
      const mirrored = await load(port, "/mirrored", { total, concurrency: 10, durationMs: 30_000 });
      const copies = await settled(() => shadow.arrivals.length);
      t.diagnostic(
        `without mirror: p50 ${ms(percentile(plain, 50))}, p99 ${ms(percentile(plain, 99))}; ` +
          `100% mirror to a ${shadowDelayMs} ms shadow: p50 ${ms(percentile(mirrored, 50))}, p99 ${ms(percentile(mirrored, 99))}; shadow got ${copies}/${total} copies`,
      );
      assert.equal(plain.length, total);
      assert.equal(mirrored.length, total);
      assert.ok(mirrored.every((s) => s.status === 200 && s.headers["x-upstream"] === "primary"));
      // The shadow takes 128 connections × 5 answers a second; copies beyond MIRROR_MAX_IN_FLIGHT waiting are dropped.
      assert.ok(copies >= Math.min(total, MIRROR_MAX_IN_FLIGHT), `the shadow got ${copies} copies of ${total}`);
      // Were the primary waiting on its copy, every answer would take the shadow's 200 ms.
      assert.ok(percentile(mirrored, 99) < shadowDelayMs / 2, `mirrored p99 ${ms(percentile(mirrored, 99))}`);
      assert.ok(percentile(mirrored, 50) < shadowDelayMs / 4, `mirrored p50 ${ms(percentile(mirrored, 50))}`);
    } finally {
      await gw.stop();
      await Promise.all([primary.kill(), shadow.kill()]);
    }
  });

  test("a 100% mirror to a shadow that hangs holds at most MIRROR_MAX_IN_FLIGHT copies: the rest are dropped, not queued", async (t) => {
    const primary = await spawnUpstream("ok", "primary");
    const shadow = await spawnUpstream("hold", "shadow", { log: true });
    const gw = await startGateway(
      gatewayWith(
        // The shadow's timeout outlasts the run: without a cap every copy would wait for a connection and arrive once it answers.
        { shop: { endpoints: [{ address: primary.address }] }, "shop-next": { endpoints: [{ address: shadow.address }], traffic: { timeoutMs: 60_000 } } },
        [{ name: "mirrored", forward: { to: [{ service: "shop" }], mirror: { service: "shop-next" } } }],
      ),
    );
    try {
      const total = 4000;
      const rssBefore = gw.rss();
      const samples = await load(gw.ports[0]!, "/", { total, concurrency: 20, durationMs: 40_000 });
      const rssLoaded = gw.rss();
      const whileHung = await settled(() => shadow.arrivals.length, { maxMs: 2000 });
      shadow.release();
      const copies = await settled(() => shadow.arrivals.length);
      t.diagnostic(
        `${samples.length} requests, p50 ${ms(percentile(samples, 50))}, p99 ${ms(percentile(samples, 99))}; shadow got ${whileHung} copies while hung, ` +
          `${copies} in all once it answered; gateway rss ${(rssBefore / 2 ** 20).toFixed(0)} → ${(rssLoaded / 2 ** 20).toFixed(0)} MiB`,
      );
      assert.equal(samples.length, total);
      assert.ok(samples.every((s) => s.status === 200 && s.headers["x-upstream"] === "primary"), "the primary answered every request");
      assert.ok(whileHung > 0, "copies reached the shadow");
      // The copies in flight when it answered (on its connections or waiting for one), and none of the others.
      assert.ok(copies <= MIRROR_MAX_IN_FLIGHT, `the shadow got ${copies} copies of ${total}`);
    } finally {
      await gw.stop();
      await Promise.all([primary.kill(), shadow.kill()]);
    }
  });
});
