import { describe, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { startGateway } from "../harness/gateway.ts";
import { assertShare, loadLoop } from "../harness/load.ts";
import { request, startUpstream, type TestUpstream } from "../harness/upstream.ts";
import { settled, until } from "../harness/wait.ts";

// Resilience through a real `weft gateway` process against real upstreams: outlier ejection, the
// retry budget in a retry storm, fault injection and mirroring, each measured over many requests.

const gatewayWith = (services: Record<string, unknown>, routes: unknown[]) => ({
  accessLog: "off",
  services,
  gateways: { edge: { listeners: [{ port: 0, address: "127.0.0.1" }], routes } },
});

describe("gateway: outlier detection", () => {
  test("with one of three upstreams answering 500, at least 99.9% of the 10,000 requests after its ejection succeed", async (t) => {
    const good1 = await startUpstream((_req, res) => res.end("ok"));
    const good2 = await startUpstream((_req, res) => res.end("ok"));
    const bad = await startUpstream((_req, res) => {
      res.statusCode = 500;
      res.end("broken");
    });
    // Ejected for two minutes, longer than the run, so the count below is the ejection's effect alone.
    const gw = await startGateway(
      gatewayWith(
        {
          web: {
            endpoints: [{ address: good1.address }, { address: bad.address }, { address: good2.address }],
            traffic: { outlierDetection: { consecutive5xxErrors: 5, baseEjectionTimeMs: 120_000 } },
          },
        },
        [{ name: "web", forward: { to: [{ service: "web" }] } }],
      ),
    );
    const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
    try {
      const port = gw.ports[0]!;
      // Round robin sends every third request to the bad endpoint: 5 failures eject it.
      const warmup: number[] = [];
      for (let i = 0; i < 30; i++) warmup.push((await request(port, { path: "/", agent })).status);
      assert.equal(bad.requests.length, 5, "ejected after its fifth consecutive 500");
      assert.equal(warmup.filter((s) => s === 500).length, 5);

      const before = bad.requests.length;
      let ok = 0;
      const total = 10_000;
      const done = await loadLoop(total, 32, 120_000, async () => {
        if ((await request(port, { path: "/", agent })).status === 200) ok++;
      });
      assert.equal(done, total, "the load loop ran out of time");
      const rate = ok / total;
      t.diagnostic(`success after ejection: ${ok}/${total}`);
      assert.ok(rate >= 0.999, `success rate ${(rate * 100).toFixed(2)}%`);
      assert.equal(bad.requests.length - before, 0, "the ejected endpoint got no requests");
      assert.equal(good1.requests.length + good2.requests.length, 25 + total);

      // The ejection is visible to the operator: metrics and /clusters name the endpoint.
      const admin = `http://127.0.0.1:${gw.adminPort}`;
      const metrics = await (await fetch(`${admin}/stats/prometheus`)).text();
      assert.match(metrics, /^weft_outlier_ejections_total\{service="web"\} 1$/m);
      assert.match(metrics, /^weft_outlier_ejections_active\{service="web"\} 1$/m);
      assert.match(metrics, new RegExp(`^weft_upstream_endpoint_healthy\\{service="web",endpoint="${bad.address}"\\} 0$`, "m"));
      assert.match(metrics, new RegExp(`^weft_upstream_endpoint_healthy\\{service="web",endpoint="${good1.address}"\\} 1$`, "m"));
      const clusters = (await (await fetch(`${admin}/clusters`)).json()) as {
        clusters: { service: string; outlierEjectionsTotal: number; endpoints: { address: string; healthy: boolean; outlier: { ejectedUntil: string } | null }[] }[];
      };
      const web = clusters.clusters.find((c) => c.service === "web")!;
      assert.equal(web.outlierEjectionsTotal, 1);
      const badEntry = web.endpoints.find((e) => e.address === bad.address)!;
      assert.equal(badEntry.healthy, false);
      assert.ok(Date.parse(badEntry.outlier!.ejectedUntil) > Date.now());
      assert.equal(web.endpoints.find((e) => e.address === good1.address)!.outlier, null);
    } finally {
      agent.destroy();
      await gw.stop();
      await Promise.all([good1.close(), good2.close(), bad.close()]);
    }
  });
});

describe("gateway: circuit breaking", () => {
  test("a retry storm against a failing dependency is capped by the retry budget", async (t) => {
    const failing = await startUpstream((_req, res) => {
      res.statusCode = 503;
      res.end("down");
    });
    const control = await startUpstream((_req, res) => {
      res.statusCode = 503;
      res.end("down");
    });
    const retries = { attempts: 3, retryOn: ["retriable-status-codes"], retriableStatusCodes: [503], backoff: { baseMs: 1, maxMs: 4 } };
    const gw = await startGateway(
      gatewayWith(
        {
          budgeted: {
            endpoints: [{ address: failing.address }],
            traffic: { retries, connectionPool: { retryBudget: { budgetPercent: 20, minRetryConcurrency: 3 } } },
          },
          unbudgeted: { endpoints: [{ address: control.address }], traffic: { retries } },
        },
        [
          { name: "budgeted", match: { path: { prefix: "/budgeted" } }, forward: { to: [{ service: "budgeted" }] } },
          { name: "unbudgeted", match: { path: { prefix: "/unbudgeted" } }, forward: { to: [{ service: "unbudgeted" }] } },
        ],
      ),
    );
    const agent = new http.Agent({ keepAlive: true, maxSockets: 40 });
    try {
      const port = gw.ports[0]!;
      const total = 2000;
      const statuses = new Map<number, number>();
      const storm = (path: string) =>
        loadLoop(total, 40, 90_000, async () => {
          const r = await request(port, { path, agent });
          statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
        });
      assert.equal(await storm("/unbudgeted"), total);
      assert.equal(control.requests.length, total * 4, "without a budget every request makes its 3 retries");
      assert.equal(await storm("/budgeted"), total);
      assert.deepEqual([...statuses.keys()], [503], "every request ends with the upstream's 503");
      const attempts = failing.requests.length;
      t.diagnostic(`upstream tries for ${total} requests: ${attempts} with the budget, ${control.requests.length} without`);
      // 40 requests in flight allow 8 retries in flight (20%): about one retry per four requests.
      assert.ok(attempts > total, `some retries are made within the budget (${attempts} tries)`);
      assert.ok(attempts <= total * 1.5, `${attempts} tries for ${total} requests, not ${total * 4}`);
      // A refused retry ends its request, so each request counts at most one refusal, and only those
      // that got all 3 retries (at most a third of the retries made) count none.
      const metrics = await (await fetch(`http://127.0.0.1:${gw.adminPort}/stats/prometheus`)).text();
      const refused = Number(/^weft_upstream_rq_retry_overflow_total\{service="budgeted"\} (\d+)$/m.exec(metrics)?.[1]);
      assert.ok(refused <= total && refused >= total - (attempts - total) / 3, `${attempts} tries, ${refused} retries refused`);
    } finally {
      agent.destroy();
      await gw.stop();
      await Promise.all([failing.close(), control.close()]);
    }
  });

  test("beyond maxRequests in flight, requests fail fast with overflow and never reach the upstream", async () => {
    const release: (() => void)[] = [];
    // Holds its first four answers until the test lets them go; answers later requests at once.
    const slow = await startUpstream((_req, res, i) => {
      if (i < 4) release.push(() => res.end("late"));
      else res.end("fresh");
    });
    const gw = await startGateway(
      gatewayWith({ slow: { endpoints: [{ address: slow.address }], traffic: { connectionPool: { maxRequests: 4 } } } }, [
        { name: "slow", forward: { to: [{ service: "slow" }] } },
      ]),
    );
    try {
      const port = gw.ports[0]!;
      const held = Array.from({ length: 4 }, () => request(port, { path: "/" }));
      const stopAt = Date.now() + 10_000;
      while (slow.requests.length < 4 && Date.now() < stopAt) await new Promise((r) => setTimeout(r, 20));
      assert.equal(slow.requests.length, 4);
      const refused = await Promise.all(Array.from({ length: 10 }, () => request(port, { path: "/" })));
      for (const r of refused) {
        assert.equal(r.status, 503);
        assert.equal(r.headers["x-weft-reason"], "overflow");
      }
      assert.equal(slow.requests.length, 4);
      for (const answer of release.splice(0)) answer();
      for (const r of await Promise.all(held)) assert.equal(r.status, 200);
      const after = await request(port, { path: "/" });
      assert.equal(after.status, 200, "answered requests gave their slots back");
      assert.equal(after.body, "fresh");
    } finally {
      for (const answer of release.splice(0)) answer();
      await gw.stop();
      await slow.close();
    }
  });
});

describe("gateway: fault injection", () => {
  test("a 10% abort answers 10% of 10,000 requests with fault_abort, within six standard deviations (1.8 points); none reach the upstream", async () => {
    const up = await startUpstream((_req, res) => res.end("ok"));
    const gw = await startGateway(
      gatewayWith({ shop: { endpoints: [{ address: up.address }] } }, [
        { name: "chaos", forward: { to: [{ service: "shop" }], fault: { abort: { httpStatus: 503, percentage: 10 } } } },
      ]),
    );
    const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
    try {
      const port = gw.ports[0]!;
      let aborted = 0;
      let other = 0;
      const total = 10_000;
      const done = await loadLoop(total, 32, 90_000, async () => {
        const r = await request(port, { path: "/", agent });
        if (r.status === 503 && r.headers["x-weft-reason"] === "fault_abort") aborted++;
        else if (r.status !== 200) other++;
      });
      assert.equal(done, total, "the load loop ran out of time");
      assert.equal(other, 0);
      assertShare(aborted, total, 0.1, "aborted");
      assert.equal(up.requests.length, total - aborted);
    } finally {
      agent.destroy();
      await gw.stop();
      await up.close();
    }
  });
});

describe("gateway: mirroring", () => {
  test("a 20% mirror delivers 20% of requests to the shadow with Host <host>-shadow, and bodies held whole", async () => {
    const primary = await startUpstream((req, res) => {
      req.resume();
      req.on("end", () => res.end("primary"));
    });
    const shadowBodies: string[] = [];
    const shadow: TestUpstream = await startUpstream((req, res) => {
      let text = "";
      req.on("data", (c: Buffer) => (text += c.toString()));
      req.on("end", () => {
        shadowBodies.push(text);
        res.statusCode = 500;
        res.end("shadow answers are discarded");
      });
    });
    const gw = await startGateway(
      gatewayWith(
        { shop: { endpoints: [{ address: primary.address }] }, "shop-next": { endpoints: [{ address: shadow.address }] } },
        [
          { name: "orders", match: { path: { prefix: "/orders" } }, forward: { to: [{ service: "shop" }], mirror: { service: "shop-next" } } },
          { name: "browse", forward: { to: [{ service: "shop" }], mirror: { service: "shop-next", percentage: 20 } } },
        ],
      ),
    );
    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    try {
      const port = gw.ports[0]!;
      const total = 2000;
      let ok = 0;
      const done = await loadLoop(total, 16, 60_000, async () => {
        const r = await request(port, { path: "/browse", agent, headers: { host: "shop.example:8080" } });
        if (r.status === 200 && r.body === "primary") ok++;
      });
      assert.equal(done, total);
      assert.equal(ok, total, "the shadow's 500s never reach the client");
      const copies = await settled(() => shadow.requests.length);
      assertShare(copies, total, 0.2, "mirrored");
      assert.ok(shadow.requests.every((r) => r.headers.host === "shop.example-shadow:8080"));
      const metrics = await (await fetch(`http://127.0.0.1:${gw.adminPort}/stats/prometheus`)).text();
      assert.match(metrics, new RegExp(`^weft_mirror_requests_total\\{service="shop-next",outcome="sent"\\} ${copies}$`, "m"));

      const posts = 50;
      for (let i = 0; i < posts; i++) {
        const r = await request(port, { method: "POST", path: "/orders", agent, body: `order-${i}`, headers: { host: "shop.example" } });
        assert.equal(r.status, 200);
      }
      await settled(() => shadow.requests.length);
      const orders = shadow.requests.filter((r) => r.url === "/orders");
      assert.equal(orders.length, posts, "a 100% mirror copies every request whose body was held");
      assert.deepEqual(shadowBodies.filter((b) => b.startsWith("order-")).sort(), Array.from({ length: posts }, (_, i) => `order-${i}`).sort());
    } finally {
      agent.destroy();
      await gw.stop();
      await Promise.all([primary.close(), shadow.close()]);
    }
  });
});

describe("gateway: active health checks", () => {
  test("an endpoint failing its health checks gets no requests while it still answers them 200, and gets them again once it passes", async () => {
    let sick = false;
    // Both answer every request 200; only b's health path turns 503 while `sick`.
    const handler = (name: string) => (req: http.IncomingMessage, res: http.ServerResponse) => {
      if (req.url === "/health" && name === "b" && sick) res.statusCode = 503;
      res.end(name);
    };
    const a = await startUpstream(handler("a"));
    const b = await startUpstream(handler("b"));
    const gw = await startGateway(
      gatewayWith(
        {
          web: {
            endpoints: [{ address: a.address }, { address: b.address }],
            traffic: { healthCheck: { path: "/health", intervalMs: 100, timeoutMs: 1000, unhealthyThreshold: 2, healthyThreshold: 2 } },
          },
        },
        [{ name: "web", forward: { to: [{ service: "web" }] } }],
      ),
    );
    const admin = `http://127.0.0.1:${gw.adminPort}`;
    const gauge = async (address: string) => {
      const m = new RegExp(`^weft_upstream_endpoint_healthy\\{service="web",endpoint="${address}"\\} (\\d)$`, "m").exec(await (await fetch(`${admin}/stats/prometheus`)).text());
      return m ? Number(m[1]) : undefined;
    };
    const activeHealth = async (address: string) => {
      const body = (await (await fetch(`${admin}/clusters`)).json()) as { clusters: { service: string; endpoints: { address: string; activeHealth: string | null }[] }[] };
      return body.clusters.find((c) => c.service === "web")!.endpoints.find((e) => e.address === address)!.activeHealth;
    };
    const requestsTo = (u: TestUpstream) => u.requests.filter((r) => r.url !== "/health").length;
    const healthLogs = (msg: string) => gw.logs().filter((l) => l.msg === msg && l.endpoint === b.address);
    const port = gw.ports[0]!;
    try {
      // Checks run: both endpoints are healthy and share the traffic.
      await until("b checked", () => b.requests.some((r) => r.url === "/health"), { timeoutMs: 10_000, intervalMs: 20 });
      assert.equal(b.requests.find((r) => r.url === "/health")!.headers["user-agent"], "weft-health-check");
      for (let i = 0; i < 20; i++) assert.equal((await request(port, { path: "/" })).status, 200);
      assert.ok(requestsTo(b) >= 5, `b got ${requestsTo(b)} of 20`);
      assert.equal(await gauge(b.address), 1);
      assert.equal(await activeHealth(b.address), "healthy");

      sick = true;
      await until("b marked unhealthy", () => healthLogs("endpoint fails its health checks").length > 0, { timeoutMs: 10_000, intervalMs: 20 });
      const [warned] = healthLogs("endpoint fails its health checks");
      assert.equal(warned!.level, "warn");
      assert.equal(warned!.status, 503);
      const before = requestsTo(b);
      const answers: string[] = [];
      for (let i = 0; i < 40; i++) {
        const r = await request(port, { path: "/" });
        assert.equal(r.status, 200);
        answers.push(r.body);
      }
      assert.equal(requestsTo(b) - before, 0, "no request went to the endpoint failing its checks");
      assert.deepEqual([...new Set(answers)], ["a"]);
      assert.equal(await gauge(b.address), 0);
      assert.equal(await gauge(a.address), 1);
      assert.equal(await activeHealth(b.address), "unhealthy");
      assert.equal(healthLogs("endpoint fails its health checks").length, 1, "the change is logged once");

      sick = false;
      await until("b healthy again", () => healthLogs("endpoint passes its health checks again").length > 0, { timeoutMs: 10_000, intervalMs: 20 });
      assert.equal(healthLogs("endpoint passes its health checks again")[0]!.level, "info");
      const back = requestsTo(b);
      for (let i = 0; i < 20; i++) assert.equal((await request(port, { path: "/" })).status, 200);
      assert.ok(requestsTo(b) - back >= 5, `b got ${requestsTo(b) - back} of 20 after recovering`);
      assert.equal(await gauge(b.address), 1);
      assert.equal(await activeHealth(b.address), "healthy");
    } finally {
      await gw.stop();
      await Promise.all([a.close(), b.close()]);
    }
  });
});
