import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { compileMesh, validateMesh } from "../config/index.ts";
import { createEngine } from "./engine.ts";
import { MIRROR_MAX_IN_FLIGHT, shadowHost, type MirrorOutcome } from "./mirror.ts";
import type { RequestBody, RequestHead, UpstreamClient, UpstreamRequest, UpstreamResult } from "./types.ts";
import { createGatewayView } from "./view.ts";

test("shadowHost appends -shadow to the host, before any port", () => {
  assert.equal(shadowHost("shop"), "shop-shadow");
  assert.equal(shadowHost("shop.example.com"), "shop.example.com-shadow");
  assert.equal(shadowHost("shop.example.com:8080"), "shop.example.com-shadow:8080");
});

const PRIMARY = "10.0.0.1:80";
const SHADOW = "10.0.0.9:80";

function view(mirror: Record<string, unknown>, shadowTraffic: Record<string, unknown> = {}) {
  const r = validateMesh({
    services: {
      shop: { endpoints: [{ address: PRIMARY }] },
      "shop-next": { versions: { v2: { version: "v2" } }, endpoints: [{ address: SHADOW, version: "v2" }, { address: "10.0.0.8:80" }], traffic: shadowTraffic },
    },
    gateways: {
      edge: {
        listeners: [{ port: 0 }],
        routes: [{ forward: { to: [{ service: "shop" }], mirror }, headers: { request: { set: { "x-route": "main" } } } }],
      },
    },
  });
  assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
  return createGatewayView(compileMesh(r.value, 1), "edge");
}

const head = (extra: Partial<RequestHead> = {}): RequestHead => ({
  method: "GET",
  scheme: "http",
  authority: "shop.example:8080",
  path: "/cart?id=7",
  headers: { host: "shop.example:8080" },
  clientIp: "192.0.2.1",
  localPort: 80,
  ...extra,
});
const NO_BODY: RequestBody = { length: 0, replayable: true };

/** An upstream client recording each request; the shadow's answers can be held forever. */
function recording(options: { holdShadow?: boolean; shadowStatus?: number } = {}) {
  const sent: UpstreamRequest[] = [];
  const client: UpstreamClient = {
    forward(req) {
      sent.push(req);
      if (req.endpoint.address !== PRIMARY && options.holdShadow) return new Promise<UpstreamResult>(() => {});
      const status = req.endpoint.address === PRIMARY ? 200 : (options.shadowStatus ?? 204);
      return Promise.resolve({ ok: true, response: { status, headers: {}, discard() {} } });
    },
    async close() {},
  };
  return { client, sent, toShadow: () => sent.filter((r) => r.endpoint.address !== PRIMARY) };
}

const ticks = () => new Promise<void>((r) => setImmediate(r));

describe("the engine with a route mirror", () => {
  test("a copy goes to the shadow service's subset with Host <host>-shadow and the primary's headers and path", async () => {
    const up = recording();
    const outcomes: [string, MirrorOutcome][] = [];
    const engine = createEngine({ client: up.client, edge: true, onMirrorDone: (s, o) => outcomes.push([s, o]) });
    const ex = await engine.handle(head(), NO_BODY, view({ service: "shop-next", subset: "v2" }));
    assert.equal(ex.status, 200);
    await ticks();
    const [copy] = up.toShadow();
    assert.ok(copy);
    assert.equal(copy.endpoint.address, SHADOW);
    assert.equal(copy.headers.host, "shop.example-shadow:8080");
    assert.equal(copy.headers["x-route"], "main");
    assert.equal(copy.path, "/cart?id=7");
    assert.equal(up.sent.find((r) => r.endpoint.address === PRIMARY)?.headers.host, "shop.example:8080", "the primary keeps its Host");
    assert.deepEqual(outcomes, [["shop-next", { sent: true, status: 204, endpoint: SHADOW }]]);
  });

  test("a shadow that never answers does not hold the primary", async () => {
    const up = recording({ holdShadow: true });
    const engine = createEngine({ client: up.client, edge: true });
    const ex = await engine.handle(head(), NO_BODY, view({ service: "shop-next" }));
    assert.equal(ex.status, 200);
    assert.equal(up.toShadow().length, 1);
  });

  test("the shadow's 5xx answers never reach the client", async () => {
    const up = recording({ shadowStatus: 500 });
    const engine = createEngine({ client: up.client, edge: true });
    for (let i = 0; i < 5; i++) assert.equal((await engine.handle(head(), NO_BODY, view({ service: "shop-next" }))).status, 200);
  });

  test("percentage picks the share of requests copied, from the engine's random", async () => {
    const up = recording();
    let i = 0;
    // Draws cycle through 0.00, 0.01, ... 0.99: exactly 25 of every 100 fall below 25%.
    const engine = createEngine({ client: up.client, edge: true, random: () => (i++ % 100) / 100 });
    const v25 = view({ service: "shop-next", percentage: 25 });
    for (let n = 0; n < 400; n++) await engine.handle(head(), NO_BODY, v25);
    await ticks();
    assert.equal(up.toShadow().length, 100);
  });

  test("a body is copied once the primary is done, only when all of it was read and held", async () => {
    const up = recording();
    const engine = createEngine({ client: up.client, edge: true });
    const v = view({ service: "shop-next", subset: "v2" });
    const post = head({ method: "POST" });

    const held = await engine.handle(post, { length: 10, replayable: true }, v);
    await ticks();
    assert.equal(up.toShadow().length, 0, "not while the primary may still be reading the body");
    held.finish(10, 2);
    await ticks();
    assert.equal(up.toShadow().length, 1);
    assert.equal(up.toShadow()[0]!.body.length, 10);

    const cut = await engine.handle(post, { length: 10, replayable: true }, v);
    cut.finish(4, 2, "client_closed");
    const streamed = await engine.handle(post, { length: 1 << 20, replayable: false }, v);
    streamed.finish(1 << 20, 2);
    const chunked = await engine.handle(post, { length: undefined, replayable: true }, v);
    chunked.finish(10, 2);
    await ticks();
    assert.equal(up.toShadow().length, 1, "a partly read, a streamed and a chunked body are not copied");
  });

  test("a full shadow circuit drops the copy and leaves the primary alone", async () => {
    const up = recording({ holdShadow: true });
    const outcomes: MirrorOutcome[] = [];
    const engine = createEngine({ client: up.client, edge: true, onMirrorDone: (_s, o) => outcomes.push(o) });
    const v = view({ service: "shop-next" }, { connectionPool: { maxRequests: 1, maxPendingRequests: 5 } });
    for (let n = 0; n < 3; n++) assert.equal((await engine.handle(head(), NO_BODY, v)).status, 200);
    await ticks();
    assert.equal(up.toShadow().length, 1);
    assert.deepEqual(outcomes, [{ sent: false, reason: "overflow" }, { sent: false, reason: "overflow" }]);
  });

  test("a shadow that never answers holds at most MIRROR_MAX_IN_FLIGHT copies; further ones are dropped with overflow until one ends", async () => {
    const answers: (() => void)[] = [];
    let toShadow = 0;
    const client: UpstreamClient = {
      forward(req) {
        const ok: UpstreamResult = { ok: true, response: { status: 200, headers: {}, discard() {} } };
        if (req.endpoint.address === PRIMARY) return Promise.resolve(ok);
        toShadow++;
        return new Promise<UpstreamResult>((resolve) => answers.push(() => resolve(ok)));
      },
      async close() {},
    };
    const outcomes: MirrorOutcome[] = [];
    const engine = createEngine({ client, edge: true, onMirrorDone: (_s, o) => outcomes.push(o) });
    const v = view({ service: "shop-next" });
    for (let n = 0; n < MIRROR_MAX_IN_FLIGHT + 5; n++) assert.equal((await engine.handle(head(), NO_BODY, v)).status, 200);
    await ticks();
    assert.equal(toShadow, MIRROR_MAX_IN_FLIGHT);
    assert.deepEqual(outcomes, Array.from({ length: 5 }, () => ({ sent: false, reason: "overflow" })));

    // The count is the proxy's, not the snapshot's: a config swap does not reset it.
    const swapped = view({ service: "shop-next" });
    await engine.handle(head(), NO_BODY, swapped);
    await ticks();
    assert.equal(toShadow, MIRROR_MAX_IN_FLIGHT);
    assert.equal(outcomes.length, 6);

    answers.shift()!();
    await ticks();
    await engine.handle(head(), NO_BODY, swapped);
    await ticks();
    assert.equal(toShadow, MIRROR_MAX_IN_FLIGHT + 1, "an answered copy gives its place back");
    for (const answer of answers.splice(0)) answer();
  });

  test("a shadow whose connectionPool sets maxRequests is bounded by that, not by MIRROR_MAX_IN_FLIGHT", async () => {
    const up = recording({ holdShadow: true });
    const engine = createEngine({ client: up.client, edge: true });
    const maxRequests = MIRROR_MAX_IN_FLIGHT + 100;
    const v = view({ service: "shop-next" }, { connectionPool: { maxRequests } });
    for (let n = 0; n < maxRequests + 3; n++) await engine.handle(head(), NO_BODY, v);
    await ticks();
    assert.equal(up.toShadow().length, maxRequests);
  });

  test("a mirror to a service the snapshot does not hold is skipped", async () => {
    const up = recording();
    const engine = createEngine({ client: up.client, edge: true });
    const v = view({ service: "shop-next" });
    const missing = { ...v, cluster: (name: string) => (name === "shop-next" ? undefined : v.cluster(name)) };
    assert.equal((await engine.handle(head(), NO_BODY, missing)).status, 200);
    await ticks();
    assert.equal(up.toShadow().length, 0);
  });
});

test("a mirror's percentage defaults to 100 and must stay within 0..100", () => {
  const mesh = (mirror: unknown) => validateMesh({ services: { a: { routes: [{ forward: { to: [{ service: "a" }], mirror } }] } } });
  const ok = mesh({ service: "a" });
  assert.ok(ok.ok);
  assert.equal(ok.value.services.a!.routes![0]!.forward!.mirror!.percentage, 100);
  const bad = mesh({ service: "a", percentage: 150 });
  assert.ok(!bad.ok);
  assert.deepEqual(bad.issues.map((i) => i.path), ["services.a.routes.0.forward.mirror.percentage"]);
});
