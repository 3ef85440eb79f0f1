// The mesh view in a real browser: `weft dev` runs the demo mesh, traffic flows through the gateway
// to both sample services, and headless Chromium (Debian's, driven by playwright-core) finds the
// graph's nodes and edges with non-zero request rates. The screenshot lands in test-output/.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import http from "node:http";
import { join } from "node:path";
import { chromium, type Browser } from "playwright-core";
import { spawnWeft, type WeftProcess } from "../harness/weft-process.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

describe("mesh view", () => {
  let dev: WeftProcess;
  let browser: Browser | undefined;
  let stopTraffic = false;
  let traffic: Promise<void> | undefined;

  before(async () => {
    assert.ok(existsSync(CHROMIUM), `Chromium is needed at ${CHROMIUM} (apt-get install -y chromium; .ci/run installs it)`);
    dev = spawnWeft(["dev"]);
    await dev.waitForLog((l) => l.msg === "demo mesh ready", 60_000);
    // Bounded background traffic: at most 20 requests/s to each service, at most 60 s.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 2 });
    const get = (path: string) =>
      new Promise<void>((resolve) => {
        http.get({ host: "127.0.0.1", port: 8080, path, agent }, (res) => res.resume().on("end", resolve)).on("error", () => resolve());
      });
    const started = Date.now();
    traffic = (async () => {
      while (!stopTraffic && Date.now() - started < 60_000) {
        await Promise.all([get("/"), get("/api/items")]);
        await new Promise((r) => setTimeout(r, 50));
      }
      agent.destroy();
    })();
  });

  after(async () => {
    stopTraffic = true;
    await traffic;
    await browser?.close();
    await dev?.stop();
  });

  test("Chromium shows the gateway and both services, with live edges carrying non-zero request rates", async (t) => {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    await page.goto("http://127.0.0.1:15080/");
    const edge = (source: string, destination: string) => `g.edge[data-source="${source}"][data-destination="${destination}"]`;
    // The first summaries arrive within one publish interval (2 s) of traffic.
    await page.waitForFunction(
      (selectors) => selectors.every((s) => Number(document.querySelector(s)?.getAttribute("data-rps") ?? 0) > 0),
      [edge("clients", "ingress"), edge("ingress", "web"), edge("ingress", "api")],
      { timeout: 20_000 },
    );
    const nodes = await page.$$eval("g.node", (els) => els.map((e) => [e.getAttribute("data-name"), e.getAttribute("data-kind"), Number(e.getAttribute("data-proxies"))]));
    assert.deepEqual(
      nodes.filter(([name]) => name !== "clients").sort(),
      [["api", "service", 1], ["ingress", "gateway", 1], ["web", "service", 1]],
    );
    const rates = await page.$$eval("g.edge", (els) => els.map((e) => [e.getAttribute("data-source"), e.getAttribute("data-destination"), Number(e.getAttribute("data-rps")), Number(e.getAttribute("data-error-rate"))]));
    for (const [source, destination] of [["ingress", "web"], ["ingress", "api"]]) {
      const found = rates.find((r) => r[0] === source && r[1] === destination);
      assert.ok(found && (found[2] as number) > 0, `${source} → ${destination}: ${JSON.stringify(rates)}`);
      assert.equal(found[3], 0, "no errors on a healthy edge");
    }
    // Every proxy is listed with its revision, in sync.
    const proxies = await page.$$eval("#proxies tbody tr", (rows) => rows.map((r) => [...r.querySelectorAll("td")].map((td) => td.textContent)));
    assert.equal(proxies.length, 3);
    assert.ok(proxies.every((p) => p[3] === "SYNCED"), JSON.stringify(proxies));
    const dir = join(ROOT, "test-output");
    mkdirSync(dir, { recursive: true });
    const file = join(dir, "mesh-view.png");
    await page.screenshot({ path: file, fullPage: true });
    t.diagnostic(`screenshot: ${file}`);
  });
});
