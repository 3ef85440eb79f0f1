import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { startGateway, type GatewayProcess } from "../harness/gateway.ts";
import { deadAddress, request, startUpstream, type TestUpstream } from "../harness/upstream.ts";
import { until } from "../harness/wait.ts";

// A real `weft gateway` process with two upstreams: every request must show up once in the access
// log (stdout), in /stats/prometheus and /stats, and an incoming traceparent must be continued.

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT = "00f067aa0ba902b7";

interface Sample {
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly value: number;
}

/** Reads the text format strictly enough that a malformed exposition fails the test. */
function parseProm(text: string): Sample[] {
  const samples: Sample[] = [];
  const typed = new Set<string>();
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line);
    if (meta) {
      if (meta[1] === "TYPE") typed.add(meta[2]!);
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*",?)*)\})? (\S+)$/.exec(line);
    assert.ok(m, `malformed exposition line: ${JSON.stringify(line)}`);
    const base = m[1]!.replace(/_(bucket|sum|count)$/, "");
    assert.ok(typed.has(m[1]!) || typed.has(base), `no TYPE before ${m[1]}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"/g)) labels[l[1]!] = l[2]!;
    const value = m[3] === "+Inf" ? Infinity : Number(m[3]);
    assert.ok(!Number.isNaN(value), `value in ${line}`);
    samples.push({ name: m[1]!, labels, value });
  }
  return samples;
}

describe("gateway telemetry: access log, Prometheus metrics and trace propagation", () => {
  let alpha: TestUpstream;
  let beta: TestUpstream;
  let gw: GatewayProcess;
  let config: Record<string, unknown>;

  before(async () => {
    alpha = await startUpstream((req, res) => {
      res.writeHead(req.url!.startsWith("/alpha/missing") ? 404 : 200, { "content-type": "text/plain" });
      res.end("alpha");
    });
    beta = await startUpstream((_req, res) => {
      res.writeHead(503);
      res.end("beta down");
    });
    config = {
      tracing: { sampleRatio: 0 },
      services: {
        alpha: { endpoints: [{ address: alpha.address }] },
        beta: { endpoints: [{ address: beta.address }] },
        gone: { endpoints: [{ address: await deadAddress() }] },
      },
      gateways: {
        edge: {
          listeners: [{ port: 0, address: "127.0.0.1" }],
          routes: [
            { name: "alpha", match: { path: { prefix: "/alpha" } }, forward: { to: [{ service: "alpha" }] } },
            { name: "beta", match: { path: { prefix: "/beta" } }, forward: { to: [{ service: "beta" }] } },
            { name: "gone", match: { path: { prefix: "/gone" } }, forward: { to: [{ service: "gone" }] } },
            {
              name: "keyed",
              match: { path: { prefix: "/keyed" }, headers: { "x-api-key": { exact: "s3cr3t-value" } } },
              directResponse: { status: 200, body: "keyed" },
            },
          ],
        },
      },
    };
    gw = await startGateway(config);
  });

  after(async () => {
    await gw?.stop();
    await alpha?.close();
    await beta?.close();
  });

  test("counters by code, access-log lines and the traceparent upstream all match the traffic sent", async (t) => {
    const port = gw.ports[0]!;
    // What each request should produce: [path, status, reason, route].
    const plan: [string, number, string | null, string | null][] = [
      ...Array.from({ length: 12 }, (_, i): [string, number, null, string] => [`/alpha/item/${i}?token=hunter2&page=${i}`, 200, null, "alpha"]),
      ...Array.from({ length: 5 }, (_, i): [string, number, null, string] => [`/alpha/missing/${i}`, 404, null, "alpha"]),
      ...Array.from({ length: 4 }, (_, i): [string, number, string, null] => [`/nowhere/${i}`, 404, "no_route", null]),
      ...Array.from({ length: 6 }, (_, i): [string, number, null, string] => [`/beta/${i}`, 503, null, "beta"]),
      ...Array.from({ length: 3 }, (_, i): [string, number, string, string] => [`/gone/${i}`, 503, "retries_exhausted", "gone"]),
    ];
    const sent: { status: number; path: string }[] = [];
    for (const [path, status] of plan) {
      const r = await request(port, { path, headers: { authorization: "Bearer sekret-token", cookie: "sid=sekret-cookie" } });
      assert.equal(r.status, status, path);
      sent.push({ status: r.status, path });
    }
    const traced = await request(port, { path: "/alpha/traced", headers: { traceparent: `00-${TRACE}-${PARENT}-01`, tracestate: "vendor=v1" } });
    assert.equal(traced.status, 200);
    const untraced = await request(port, { path: "/alpha/untraced" });
    assert.equal(untraced.status, 200);
    const total = plan.length + 2;

    // Access log: one JSON line per request, in order, with status, reason and route.
    const lines = await until("every access-log line", () => (gw.accessLog().length >= total ? gw.accessLog() : undefined), { intervalMs: 25 });
    assert.equal(lines.length, total);
    for (const [i, [path, status, reason, route]] of plan.entries()) {
      const line = lines[i]!;
      assert.equal(line.status, status, `line ${i}`);
      assert.equal(line.reason, reason, `line ${i}`);
      assert.equal(line.route, route, `line ${i}`);
      assert.equal(line.method, "GET");
      assert.equal(typeof line.request_id, "string");
      assert.equal(line.path, path.replace("token=hunter2", "token=[redacted]"));
      assert.match(String(line.trace_id), /^[0-9a-f]{32}$/);
    }
    const gone = lines.find((l) => l.route === "gone")!;
    assert.equal(gone.attempts, 2, "one retry after the connect failure");
    const text = JSON.stringify(lines);
    for (const secret of ["hunter2", "sekret-token", "sekret-cookie"]) assert.ok(!text.includes(secret), `${secret} is not logged`);

    // Trace propagation: same trace id, the proxy's span as the new parent, sampled flag kept.
    const seen = alpha.requests.find((r) => r.url === "/alpha/traced")!;
    const tp = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/.exec(String(seen.headers.traceparent));
    assert.ok(tp, `upstream traceparent ${seen.headers.traceparent}`);
    assert.equal(tp[1], TRACE);
    assert.notEqual(tp[2], PARENT);
    assert.equal(tp[3], "01");
    assert.equal(seen.headers.tracestate, "vendor=v1");
    const tracedLine = lines[plan.length]!;
    assert.equal(tracedLine.trace_id, TRACE);
    assert.equal(tracedLine.span_id, tp[2]);
    // Without a traceparent a new trace starts, unsampled at ratio 0.
    const fresh = alpha.requests.find((r) => r.url === "/alpha/untraced")!;
    const ftp = /^00-([0-9a-f]{32})-([0-9a-f]{16})-00$/.exec(String(fresh.headers.traceparent));
    assert.ok(ftp, `fresh traceparent ${fresh.headers.traceparent}`);
    assert.notEqual(ftp[1], TRACE);
    assert.equal(lines[plan.length + 1]!.trace_id, ftp[1]);

    // Prometheus: parses, and the counters agree with what was sent.
    const prom = await fetch(`http://127.0.0.1:${gw.adminPort}/stats/prometheus`);
    assert.equal(prom.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
    const exposition = await prom.text();
    // Prometheus' own parser and linter (promtool, from Debian's prometheus package; CI installs it).
    const promtool = spawnSync("promtool", ["check", "metrics"], { input: exposition, encoding: "utf8" });
    if (promtool.error) t.diagnostic("promtool not installed: only the test's own parser checked the exposition");
    else assert.equal(promtool.status, 0, `promtool check metrics: ${promtool.stdout}${promtool.stderr}`);
    const samples = parseProm(exposition);
    const byCode = new Map<string, number>();
    for (const s of samples.filter((s) => s.name === "weft_requests_total")) byCode.set(s.labels.code!, (byCode.get(s.labels.code!) ?? 0) + s.value);
    const expected = new Map<string, number>();
    for (const { status } of [...sent, { status: 200 }, { status: 200 }]) expected.set(String(status), (expected.get(String(status)) ?? 0) + 1);
    assert.deepEqual(Object.fromEntries([...byCode].sort()), Object.fromEntries([...expected].sort()));
    const find = (name: string, labels: Record<string, string>) =>
      samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
    assert.equal(find("weft_requests_total", { route: "", code: "404", reason: "no_route" }), 4);
    assert.equal(find("weft_requests_total", { route: "gone", service: "gone", code: "503", reason: "retries_exhausted" }), 3);
    assert.equal(find("weft_requests_total", { route: "beta", service: "beta", code: "503", reason: "" }), 6);
    assert.equal(find("weft_upstream_rq_retry_total", { route: "gone" }), 3);
    assert.equal(find("weft_request_duration_seconds_count", { route: "alpha", code: "200" }), 14);
    assert.equal(find("weft_request_duration_seconds_bucket", { route: "alpha", code: "200", le: "+Inf" }), 14);
    assert.equal(find("weft_response_bytes_total", { route: "alpha" }), 19 * "alpha".length);
    assert.equal(find("weft_requests_in_flight", {}), 0);
    assert.equal(find("weft_config_revision", {}), 0);

    // /stats: the same counters as JSON.
    const stats = (await (await fetch(`http://127.0.0.1:${gw.adminPort}/stats`)).json()) as {
      revision: number;
      metrics: Record<string, { type: string; series: { labels: Record<string, string>; value?: number }[] }>;
    };
    assert.equal(stats.revision, 0);
    const jsonTotal = stats.metrics.weft_requests_total!.series.reduce((sum, s) => sum + s.value!, 0);
    assert.equal(jsonTotal, total);
  });

  test("/config_dump replaces secret-looking fields and keeps the rest", async () => {
    const r = await fetch(`http://127.0.0.1:${gw.adminPort}/config_dump`);
    assert.equal(r.status, 200);
    const text = await r.text();
    assert.ok(!text.includes("s3cr3t-value"), "a header-match secret is not dumped");
    const dump = JSON.parse(text) as { gateways: Record<string, { routes: { name: string; match: { headers: Record<string, unknown> } }[] }> };
    const keyed = dump.gateways.edge!.routes.find((route) => route.name === "keyed")!;
    assert.equal(keyed.match.headers["x-api-key"], "[redacted]");
    assert.ok(text.includes(alpha.address), "non-secret fields are kept");
  });

  test("weft_downstream_connections_active follows the client connections open on the listener", async () => {
    const active = async () =>
      parseProm(await (await fetch(`http://127.0.0.1:${gw.adminPort}/stats/prometheus`)).text()).find((s) => s.name === "weft_downstream_connections_active")?.value;
    const before = await until("the gauge to settle", async () => ((await active()) === 0 ? 0 : undefined));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 3 });
    try {
      await Promise.all(Array.from({ length: 3 }, () => request(gw.ports[0]!, { path: "/alpha/conn", agent })));
      assert.equal(await active(), before + 3);
    } finally {
      agent.destroy();
    }
    assert.equal(await until("the closed connections to leave the gauge", async () => ((await active()) === before ? before : undefined)), before);
  });

  test("a refused config reload counts in weft_config_rejected_total and the revision stays", async () => {
    await gw.writeConfig({ ...config, gateways: { edge: { listeners: [], routes: [] } } });
    const rejected = await until("weft_config_rejected_total to reach 1", async () => {
      const samples = parseProm(await (await fetch(`http://127.0.0.1:${gw.adminPort}/stats/prometheus`)).text());
      const value = samples.find((s) => s.name === "weft_config_rejected_total")?.value;
      return value !== undefined && value >= 1 ? samples : undefined;
    });
    assert.equal(rejected.find((s) => s.name === "weft_config_rejected_total")!.value, 1);
    assert.equal(rejected.find((s) => s.name === "weft_config_revision")!.value, 0);
    assert.equal((await request(gw.ports[0]!, { path: "/alpha/after" })).status, 200);
  });
});

describe("gateway telemetry: spans exported over OTLP/HTTP", () => {
  test("a sampled request's server span reaches the configured collector by the time the gateway stops", async () => {
    const received: any[] = [];
    const collector = http.createServer((req, res) => {
      let text = "";
      req.on("data", (c: Buffer) => (text += c));
      req.on("end", () => {
        received.push({ url: req.url, body: JSON.parse(text) });
        res.end("{}");
      });
    });
    await new Promise<void>((r) => collector.listen(0, "127.0.0.1", r));
    const upstream = await startUpstream();
    const gw = await startGateway({
      tracing: { sampleRatio: 1, otlpEndpoint: `http://127.0.0.1:${(collector.address() as AddressInfo).port}/v1/traces` },
      services: { web: { endpoints: [{ address: upstream.address }] } },
      gateways: { edge: { listeners: [{ port: 0, address: "127.0.0.1" }], routes: [{ name: "web", forward: { to: [{ service: "web" }] } }] } },
    });
    try {
      const r = await request(gw.ports[0]!, { path: "/hello", headers: { traceparent: `00-${TRACE}-${PARENT}-01` } });
      assert.equal(r.status, 200);
    } finally {
      await gw.stop();
      await upstream.close();
      await new Promise<void>((r) => collector.close(() => r()));
    }
    const spans = received.flatMap((b) => b.body.resourceSpans.flatMap((rs: any) => rs.scopeSpans.flatMap((ss: any) => ss.spans)));
    assert.equal(spans.length, 1);
    assert.equal(received[0].url, "/v1/traces");
    assert.equal(received[0].body.resourceSpans[0].resource.attributes[0].value.stringValue, "weft-gateway-edge");
    assert.equal(spans[0].traceId, TRACE);
    assert.equal(spans[0].parentSpanId, PARENT);
    assert.equal(spans[0].spanId, upstream.requests[0]!.headers.traceparent!.toString().split("-")[2]);
    assert.equal(spans[0].name, "GET web");
  });
});
