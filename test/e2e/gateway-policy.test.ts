// The gateway enforces its policy set from the config: JWT authentication with an inline JWKS,
// authorization, and a local rate limit, all on a gateway process with real tokens.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createTestIssuer } from "../../shared/policy/testing.ts";
import { startGateway, type GatewayProcess } from "../harness/gateway.ts";
import { request, startUpstream, type TestUpstream } from "../harness/upstream.ts";

describe("gateway policy: JWT, authorization and local rate limits", () => {
  const idp = createTestIssuer({ issuer: "https://idp.weft.test" });
  let app: TestUpstream;
  let gw: GatewayProcess;
  let port: number;

  before(async () => {
    app = await startUpstream((req, res) => res.end(JSON.stringify({ user: req.headers["x-user"] ?? null, auth: req.headers.authorization ?? null })));
    gw = await startGateway({
      services: { app: { endpoints: [{ address: app.address }] } },
      gateways: {
        edge: {
          listeners: [{ port: 0, address: "127.0.0.1" }],
          routes: [{ name: "all", forward: { to: [{ service: "app" }] } }],
          policy: {
            authn: { jwt: [{ issuer: idp.issuer, jwks: await idp.jwks(), audiences: ["shop"], outputClaimToHeaders: [{ header: "x-user", claim: "sub" }] }] },
            authz: [
              {
                name: "shop",
                rules: [
                  { to: [{ paths: ["/public*", "/limited"] }] },
                  { from: [{ requestPrincipals: [`${idp.issuer}/*`] }], to: [{ paths: ["/me"] }] },
                ],
              },
            ],
            rateLimit: { local: [{ name: "limited", match: { paths: ["/limited"] }, tokensPerFill: 2, fillIntervalMs: 60_000, maxTokens: 2 }] },
          },
        },
      },
    });
    port = gw.ports[0]!;
  });

  after(async () => {
    await gw?.stop();
    await app?.close();
  });

  test("a public path passes without a token", async () => {
    const r = await request(port, { path: "/public/x" });
    assert.equal(r.status, 200);
  });

  test("a protected path without a token is denied 403, and the app never sees it", async () => {
    const before = app.requests.length;
    const r = await request(port, { path: "/me" });
    assert.equal(r.status, 403);
    assert.equal(r.headers["x-weft-reason"], "denied");
    assert.equal(app.requests.length, before);
  });

  test("a valid token reaches the app with its claim as a header and without the token itself", async () => {
    const token = await idp.mint({ sub: "alice" }, { audience: "shop" });
    const r = await request(port, { path: "/me", headers: { authorization: `Bearer ${token}` } });
    assert.equal(r.status, 200);
    assert.deepEqual(JSON.parse(r.body), { user: "alice", auth: null });
  });

  test("the token's iss/sub is logged as request_principal and never becomes a metric label (one series per end user would be unbounded)", async () => {
    const token = await idp.mint({ sub: "carol" }, { audience: "shop" });
    const r = await request(port, { path: "/me", headers: { authorization: `Bearer ${token}` } });
    assert.equal(r.status, 200);
    let line: Record<string, unknown> | undefined;
    for (let i = 0; i < 50 && line === undefined; i++) {
      line = gw.accessLog().find((l) => l.request_principal === `${idp.issuer}/carol`);
      if (line === undefined) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.ok(line, "access log line with the request principal");
    assert.equal(line.source_principal, null);
    const metrics = await (await fetch(`http://127.0.0.1:${gw.adminPort}/stats/prometheus`)).text();
    assert.doesNotMatch(metrics, /carol/);
    assert.match(metrics, /weft_requests_total\{source="",route="all",service="app",code="200",reason=""\} [1-9]/);
  });

  test("an expired token is refused with 401 jwt_invalid; a token for another audience with 403 (as Envoy's jwt_authn)", async () => {
    const expired = await idp.mint({ sub: "alice" }, { audience: "shop", expiresInSec: -600 });
    const r401 = await request(port, { path: "/me", headers: { authorization: `Bearer ${expired}` } });
    assert.deepEqual([r401.status, r401.headers["x-weft-reason"]], [401, "jwt_invalid"]);
    assert.match(String(r401.headers["www-authenticate"]), /Bearer/);
    const other = await idp.mint({ sub: "alice" }, { audience: "other" });
    const r403 = await request(port, { path: "/me", headers: { authorization: `Bearer ${other}` } });
    assert.deepEqual([r403.status, r403.headers["x-weft-reason"]], [403, "denied"]);
  });

  test("the local rate limit lets the burst through and answers 429 rate_limited after it", async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push((await request(port, { path: "/limited" })).status);
    assert.deepEqual(statuses, [200, 200, 429]);
  });
});
