// Global rate limits for real: nats-server, control-plane replicas in this process (one holds the
// limiter's lease, the others stand by), and three processes of one gateway ("edge", so one counter
// domain: the way replicas of a gateway run), each on its own port. Requests spread round-robin over
// the three take from one bucket; after the holder stops, or dies without releasing its lease, a
// stand-by counts (from full buckets); with no control plane left, each limit shows its failure mode.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectNatsBus, type Bus } from "../../shared/bus/index.ts";
import { startControlPlane, type ControlPlane } from "../../control/plane.ts";
import { startNatsServer, type NatsServer } from "../harness/nats-server.ts";
import { request, startUpstream, type TestUpstream } from "../harness/upstream.ts";
import { until } from "../harness/wait.ts";
import { spawnWeft, type WeftProcess } from "../harness/weft-process.ts";

const LIMIT = 30;
const SENT = 90;
// Shorter than the default (6000/1500) so the crash case waits ~3 s, still far above event-loop stalls here.
const LEASE = { leaseTtlMs: 3000, renewMs: 750 };

interface Outcome {
  readonly status: number;
  readonly reason?: string;
  readonly remaining?: string;
  readonly headers: http.IncomingHttpHeaders;
}

async function send(port: number, path: string): Promise<Outcome> {
  const r = await request(port, { path, headers: { host: "shop.test" } });
  return { status: r.status, reason: r.headers["x-weft-reason"] as string | undefined, remaining: r.headers["x-ratelimit-remaining"] as string | undefined, headers: r.headers };
}

/** Sends `count` requests one after another, round-robin over the ports. */
async function spread(ports: readonly number[], path: string, count: number): Promise<Outcome[]> {
  const out: Outcome[] = [];
  for (let i = 0; i < count; i++) out.push(await send(ports[i % ports.length]!, path));
  return out;
}

const statuses = (xs: readonly Outcome[]) => xs.reduce<Record<number, number>>((acc, x) => ((acc[x.status] = (acc[x.status] ?? 0) + 1), acc), {});

describe("global rate limit over three gateway processes and control-plane replicas", () => {
  let dir: string;
  let nats: NatsServer;
  const buses: Bus[] = [];
  const controls: ControlPlane[] = [];
  const events: { replica: string; msg: string }[] = [];
  /** How long a replica may take to say it answers, and what it has said so far if it does not. */
  const waitOptions = { timeoutMs: 15_000, intervalMs: 20, detail: () => JSON.stringify(events) };
  let app: TestUpstream;
  const gateways: WeftProcess[] = [];
  const ports: number[] = [];

  async function replica(id: string): Promise<ControlPlane> {
    const bus = await connectNatsBus({ servers: [nats.url], name: id });
    buses.push(bus);
    const record = (msg: string) => void events.push({ replica: id, msg });
    const control = await startControlPlane({ bus, id, log: { info: record, warn: record }, rateLimit: LEASE });
    controls.push(control);
    return control;
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "weft-global-rl-"));
    nats = await startNatsServer();
    const first = await replica("control-1");
    await replica("control-2");
    app = await startUpstream((req, res) => {
      req.resume();
      res.end("ok");
    });
    const applied = await first.apply({
      services: { shop: { endpoints: [{ address: app.address }] } },
      gateways: {
        edge: {
          // Port 0: every process of this gateway binds its own free port on one host.
          listeners: [{ port: 0, address: "127.0.0.1" }],
          routes: [{ name: "all", forward: { to: [{ service: "shop" }] } }],
          policy: {
            rateLimit: {
              global: [
                // A generous timeout: two cores shared by many tests must not turn a slow answer into the failure mode.
                { name: "api", match: { paths: ["/api/*"] }, tokensPerFill: LIMIT, fillIntervalMs: 60_000, maxTokens: LIMIT, failureMode: "open", timeoutMs: 2000 },
                { name: "payments", match: { paths: ["/pay/*"] }, tokensPerFill: 1000, fillIntervalMs: 60_000, maxTokens: 1000, failureMode: "closed", timeoutMs: 2000 },
              ],
            },
          },
        },
      },
    });
    assert.equal(applied.ok, true, JSON.stringify(applied));
    for (const n of [1, 2, 3]) {
      gateways.push(spawnWeft(["gateway", "--nats", nats.url, "--name", "edge", "--proxy-id", `gw-edge-${n}`, "--admin", "127.0.0.1:0"], { env: { WEFT_STATE_DIR: join(dir, `state-${n}`) } }));
    }
    for (const gw of gateways) ports.push((await gw.waitForLog((l) => l.msg === "listening")).port as number);
  });

  after(async () => {
    for (const gw of gateways) await gw.stop();
    for (const c of controls) await c.stop();
    for (const b of buses) await b.close();
    await nats?.stop();
    await app?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test("one replica answers, the other stands by", () => {
    assert.deepEqual(
      events.filter((e) => e.msg === "global rate limiter answering"),
      [{ replica: "control-1", msg: "global rate limiter answering" }],
    );
    assert.equal(new Set(ports).size, 3);
  });

  test(`${SENT} requests round-robin over three gateways: exactly ${LIMIT} pass, the rest are 429 rate_limited with rate-limit headers`, async () => {
    const out = await spread(ports, "/api/items", SENT);
    assert.deepEqual(statuses(out), { 200: LIMIT, 429: SENT - LIMIT });
    const passed = out.filter((o) => o.status === 200);
    // One bucket: the remaining count seen through all three gateways goes 29, 28, ... 0 without a repeat.
    assert.deepEqual(passed.map((o) => Number(o.remaining)), Array.from({ length: LIMIT }, (_, i) => LIMIT - 1 - i));
    assert.equal(app.requests.length, LIMIT, "refused requests never reach the app");
    for (const o of out.filter((x) => x.status === 429)) {
      assert.equal(o.reason, "rate_limited");
      assert.equal(o.headers["ratelimit-policy"], `"api";q=${LIMIT};w=60;burst=${LIMIT}`);
      assert.match(String(o.headers.ratelimit), /^"api";r=0;t=\d+$/);
      assert.ok(Number(o.headers["retry-after"]) >= 1);
    }
    // Every gateway refused some: the count crossed process boundaries.
    for (let g = 0; g < 3; g++) assert.ok(out.some((o, i) => i % 3 === g && o.status === 429), `gateway ${g + 1}`);
  });

  test("when the holder stops, the stand-by takes over and counts from full buckets", async () => {
    await controls[0]!.stop();
    await until("control-2 answering", () => events.some((e) => e.replica === "control-2" && e.msg === "global rate limiter answering"), waitOptions);
    const out = await spread(ports, "/api/items", SENT);
    assert.deepEqual(statuses(out), { 200: LIMIT, 429: SENT - LIMIT });
    assert.equal(events.filter((e) => e.msg === "global rate limiter answering").length, 2);
  });

  test("when the holder dies without releasing its lease, a stand-by takes over once the lease stood still for its ttl", async () => {
    await replica("control-3");
    assert.equal(events.filter((e) => e.replica === "control-3" && e.msg === "global rate limiter answering").length, 0);
    await buses[1]!.close(); // control-2's connection drops as if its process died: no release, no renewals
    await until("control-3 answering", () => events.some((e) => e.replica === "control-3" && e.msg === "global rate limiter answering"), waitOptions);
    const out = await spread(ports, "/api/items", SENT);
    assert.deepEqual(statuses(out), { 200: LIMIT, 429: SENT - LIMIT });
  });

  test("with no control plane left: the closed limit refuses everything, the open one falls back to a bucket per gateway", async () => {
    assert.deepEqual(statuses(await spread(ports, "/pay/card", 3)), { 200: 3 }, "the payments limit has tokens to spare");
    await controls[2]!.stop();

    const closed = await spread(ports, "/pay/card", 3);
    assert.deepEqual(statuses(closed), { 429: 3 });
    for (const o of closed) {
      assert.equal(o.reason, "rate_limited");
      assert.equal(o.headers["retry-after"], "60", "rls_unavailable: retry after one fill interval");
      assert.match(String(o.headers.ratelimit), /^"payments";r=0;/);
    }

    // Open with localFallback: gateway 1 alone enforces the same bucket shape from full.
    const one = await spread([ports[0]!], "/api/items", LIMIT + 1);
    assert.deepEqual(statuses(one), { 200: LIMIT, 429: 1 });
    assert.equal(one[LIMIT]!.reason, "rate_limited");
    // ...and so does every other gateway, on its own.
    assert.deepEqual(statuses(await spread([ports[1]!, ports[2]!], "/api/items", 2)), { 200: 2 });
  });
});
