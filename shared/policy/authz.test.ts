import { test } from "node:test";
import assert from "node:assert/strict";
import type { AuthzPolicyConfig, PathNormalizationConfig } from "../config/index.ts";
import { compileAuthz, type AuthzRequest } from "./authz.ts";

const PATHS: PathNormalizationConfig = { encodedSlashes: "keep", caseInsensitive: false };
const req = (over: Partial<AuthzRequest> = {}): AuthzRequest => ({
  method: "GET",
  authority: "shop.example.com",
  path: "/",
  headers: {},
  sourceIp: "10.1.2.3",
  port: 8080,
  ...over,
});
const decide = (policies: AuthzPolicyConfig[], r: Partial<AuthzRequest> = {}, paths = PATHS) => compileAuthz(policies, paths).evaluate(req(r));
const allow = (name: string, rules: AuthzPolicyConfig["rules"]): AuthzPolicyConfig => ({ name, action: "ALLOW", rules });
const deny = (name: string, rules: AuthzPolicyConfig["rules"]): AuthzPolicyConfig => ({ name, action: "DENY", rules });
const WEB = "spiffe://cluster.local/ns/shop/sa/web";

test("no policies allow every request", () => {
  const d = decide([]);
  assert.equal(d.allowed, true);
  assert.equal(d.reason, "allowed");
});

test("DENY beats ALLOW when both match", () => {
  const d = decide([allow("all", [{}]), deny("no-admin", [{ to: [{ paths: ["/admin*"] }] }])], { path: "/admin/users" });
  assert.equal(d.allowed, false);
  assert.equal(d.reason, "denied_by_policy");
  assert.equal(d.policy, "no-admin");
});

test("with only DENY policies a request they do not match is allowed", () => {
  const d = decide([deny("no-admin", [{ to: [{ paths: ["/admin*"] }] }])], { path: "/shop" });
  assert.equal(d.allowed, true);
});

test("with ALLOW policies and none matching the request is denied", () => {
  const d = decide([allow("get-only", [{ to: [{ methods: ["GET"] }] }])], { method: "POST" });
  assert.equal(d.allowed, false);
  assert.equal(d.reason, "no_allow_match");
});

test("an ALLOW policy with no rules matches nothing, so it denies everything", () => {
  const d = decide([allow("nothing", [])]);
  assert.equal(d.reason, "no_allow_match");
});

test("a DENY policy with no rules matches nothing", () => {
  assert.equal(decide([deny("inert", [])]).allowed, true);
});

test("an empty rule matches every request", () => {
  const d = decide([allow("everything", [{}])], { path: "/anything", method: "DELETE" });
  assert.equal(d.allowed, true);
  assert.equal(d.policy, "everything");
  assert.equal(d.rule, 0);
});

test("AUDIT never changes the decision but is recorded", () => {
  const d = decide([{ name: "watch", action: "AUDIT", rules: [{}] }, allow("get", [{ to: [{ methods: ["GET"] }] }])], { method: "PUT" });
  assert.equal(d.allowed, false);
  assert.deepEqual(d.audited, ["watch"]);
  const only = decide([{ name: "watch", action: "AUDIT", rules: [{}] }]);
  assert.equal(only.allowed, true);
});

test("principals match exactly, by prefix and by suffix, with or without spiffe://", () => {
  const p = (principals: string[]) => [allow("p", [{ from: [{ principals }] }])];
  assert.equal(decide(p(["cluster.local/ns/shop/sa/web"]), { sourcePrincipal: WEB }).allowed, true);
  assert.equal(decide(p([WEB]), { sourcePrincipal: WEB }).allowed, true);
  assert.equal(decide(p(["cluster.local/ns/shop/*"]), { sourcePrincipal: WEB }).allowed, true);
  assert.equal(decide(p(["*/sa/web"]), { sourcePrincipal: WEB }).allowed, true);
  assert.equal(decide(p(["cluster.local/ns/shop/sa/api"]), { sourcePrincipal: WEB }).allowed, false);
});

test("principals compare literally: a '.' is not a wildcard", () => {
  const d = decide([allow("p", [{ from: [{ principals: ["cluster.local/ns/shop/sa/w.b"] }] }])], { sourcePrincipal: WEB });
  assert.equal(d.allowed, false);
});

test("principals '*' needs an authenticated peer", () => {
  const policies = [allow("any-peer", [{ from: [{ principals: ["*"] }] }])];
  assert.equal(decide(policies, { sourcePrincipal: WEB }).allowed, true);
  assert.equal(decide(policies).allowed, false);
});

test("notPrincipals excludes a peer and matches plaintext requests", () => {
  const policies = [allow("not-web", [{ from: [{ notPrincipals: ["cluster.local/ns/shop/sa/web"] }] }])];
  assert.equal(decide(policies, { sourcePrincipal: WEB }).allowed, false);
  assert.equal(decide(policies, { sourcePrincipal: "spiffe://cluster.local/ns/shop/sa/api" }).allowed, true);
  assert.equal(decide(policies).allowed, true);
});

test("namespaces are read from the peer SPIFFE ID", () => {
  const policies = [allow("shop-ns", [{ from: [{ namespaces: ["shop"] }] }])];
  assert.equal(decide(policies, { sourcePrincipal: WEB }).allowed, true);
  assert.equal(decide(policies, { sourcePrincipal: "spiffe://cluster.local/ns/billing/sa/web" }).allowed, false);
  const not = [deny("not-shop", [{ from: [{ notNamespaces: ["shop"] }] }])];
  assert.equal(decide(not, { sourcePrincipal: "spiffe://cluster.local/ns/billing/sa/x" }).allowed, false);
  assert.equal(decide(not, { sourcePrincipal: WEB }).allowed, true);
});

test("a DENY on an identity the request lacks still applies (no dodging by not authenticating)", () => {
  const policies = [deny("no-guests", [{ from: [{ principals: ["cluster.local/ns/guest/*"] }] }])];
  assert.equal(decide(policies).reason, "denied_by_policy");
  assert.equal(decide(policies, { sourcePrincipal: WEB }).allowed, true);
  const claims = [deny("no-guests-claim", [{ when: [{ key: "request.auth.claims[role]", values: ["guest"] }] }])];
  assert.equal(decide(claims).allowed, false);
  assert.equal(decide(claims, { claims: { role: "admin" }, requestPrincipal: "i/u" }).allowed, true);
  // A verified token without the claim is the issuer's word, not the client dodging: no match.
  assert.equal(decide(claims, { claims: {}, requestPrincipal: "i/u" }).allowed, true);
  const ns = [deny("no-legacy", [{ from: [{ namespaces: ["legacy"] }] }])];
  assert.equal(decide(ns).allowed, false);
  assert.equal(decide(ns, { sourcePrincipal: "spiffe://cluster.local/odd-id" }).allowed, true);
});

test("requestPrincipals and notRequestPrincipals match iss/sub", () => {
  const policies = [allow("users", [{ from: [{ requestPrincipals: ["https://idp/*"] }] }])];
  assert.equal(decide(policies, { requestPrincipal: "https://idp/alice" }).allowed, true);
  assert.equal(decide(policies).allowed, false);
  const needJwt = [deny("need-jwt", [{ from: [{ notRequestPrincipals: ["*"] }] }])];
  assert.equal(decide(needJwt).reason, "denied_by_policy");
  assert.equal(decide(needJwt, { requestPrincipal: "https://idp/alice" }).allowed, true);
});

test("ipBlocks match IPv4 CIDR blocks and single addresses, and IPv4-mapped IPv6 peers", () => {
  const policies = [allow("office", [{ from: [{ ipBlocks: ["192.168.0.0/16", "10.9.9.9"] }] }])];
  assert.equal(decide(policies, { sourceIp: "192.168.44.1" }).allowed, true);
  assert.equal(decide(policies, { sourceIp: "::ffff:192.168.44.1" }).allowed, true);
  assert.equal(decide(policies, { sourceIp: "10.9.9.9" }).allowed, true);
  assert.equal(decide(policies, { sourceIp: "10.9.9.8" }).allowed, false);
  assert.equal(decide(policies, { sourceIp: "192.169.0.1" }).allowed, false);
});

test("ipBlocks match IPv6 CIDR blocks and never cross IP versions", () => {
  const policies = [allow("v6", [{ from: [{ ipBlocks: ["2001:db8::/32"] }] }])];
  assert.equal(decide(policies, { sourceIp: "2001:db8:1::7" }).allowed, true);
  assert.equal(decide(policies, { sourceIp: "2001:db9::1" }).allowed, false);
  assert.equal(decide(policies, { sourceIp: "32.1.13.184" }).allowed, false);
  const all = [allow("all-v4", [{ from: [{ ipBlocks: ["0.0.0.0/0"] }] }])];
  assert.equal(decide(all, { sourceIp: "::1" }).allowed, false);
  assert.equal(decide(all, { sourceIp: "8.8.8.8" }).allowed, true);
});

test("notIpBlocks and remoteIpBlocks", () => {
  const policies = [deny("outside", [{ from: [{ notIpBlocks: ["10.0.0.0/8"] }] }])];
  assert.equal(decide(policies, { sourceIp: "10.3.3.3" }).allowed, true);
  assert.equal(decide(policies, { sourceIp: "172.16.0.1" }).allowed, false);
  const remote = [allow("client", [{ from: [{ remoteIpBlocks: ["203.0.113.0/24"] }] }])];
  assert.equal(decide(remote, { sourceIp: "10.0.0.1", remoteIp: "203.0.113.9" }).allowed, true);
  assert.equal(decide(remote, { sourceIp: "203.0.113.9", remoteIp: "198.51.100.1" }).allowed, false);
});

test("methods, notMethods, hosts and ports", () => {
  const policies = [allow("reads", [{ to: [{ methods: ["GET", "HEAD"], hosts: ["*.example.com"], notHosts: ["admin.example.com"], ports: [8080] }] }])];
  assert.equal(decide(policies).allowed, true);
  assert.equal(decide(policies, { authority: "SHOP.example.com:8080" }).allowed, true);
  assert.equal(decide(policies, { authority: "admin.example.com" }).allowed, false);
  assert.equal(decide(policies, { authority: "example.org" }).allowed, false);
  assert.equal(decide(policies, { method: "POST" }).allowed, false);
  assert.equal(decide(policies, { port: 9090 }).allowed, false);
  const notPost = [allow("no-post", [{ to: [{ notMethods: ["POST"] }] }])];
  assert.equal(decide(notPost, { method: "POST" }).allowed, false);
  assert.equal(decide(notPost, { method: "PATCH" }).allowed, true);
});

test("paths match exact, prefix* and *suffix; notPaths excludes; the query is ignored", () => {
  const policies = [allow("api", [{ to: [{ paths: ["/health", "/api/*", "*.png"], notPaths: ["/api/internal*"] }] }])];
  assert.equal(decide(policies, { path: "/health?verbose=1" }).allowed, true);
  assert.equal(decide(policies, { path: "/healthz" }).allowed, false);
  assert.equal(decide(policies, { path: "/api/orders" }).allowed, true);
  assert.equal(decide(policies, { path: "/static/logo.png" }).allowed, true);
  assert.equal(decide(policies, { path: "/api/internal/keys" }).allowed, false);
});

test("from, to and when all have to hold within one rule; rules of a policy are OR", () => {
  const policies = [
    allow("two-rules", [
      { from: [{ namespaces: ["shop"] }], to: [{ methods: ["POST"] }] },
      { to: [{ paths: ["/public*"] }] },
    ]),
  ];
  assert.equal(decide(policies, { sourcePrincipal: WEB, method: "POST" }).allowed, true);
  assert.equal(decide(policies, { sourcePrincipal: WEB, method: "GET" }).allowed, false);
  assert.equal(decide(policies, { method: "POST" }).allowed, false);
  const d = decide(policies, { path: "/public/x" });
  assert.equal(d.allowed, true);
  assert.equal(d.rule, 1);
});

test("when: claims, nested claims and list claims", () => {
  const policies = [
    allow("admins", [
      {
        when: [
          { key: "request.auth.claims[groups]", values: ["admins"] },
          { key: "request.auth.claims[realm][tier]", values: ["gold", "plat*"] },
        ],
      },
    ]),
  ];
  const claims = (groups: unknown, tier: unknown) => ({ requestPrincipal: "i/u", claims: { groups, realm: { tier } } });
  assert.equal(decide(policies, claims(["users", "admins"], "gold")).allowed, true);
  assert.equal(decide(policies, claims("admins", "platinum")).allowed, true);
  assert.equal(decide(policies, claims(["users"], "gold")).allowed, false);
  assert.equal(decide(policies, claims(["admins"], "silver")).allowed, false);
  assert.equal(decide(policies, claims(["admins"], undefined)).allowed, false);
  assert.equal(decide(policies).allowed, false);
});

test("when: notValues on claims and headers", () => {
  const policies = [allow("not-banned", [{ when: [{ key: "request.auth.claims[status]", notValues: ["banned"] }, { key: "request.headers[x-env]", values: ["prod"] }] }])];
  assert.equal(decide(policies, { claims: { status: "ok" }, headers: { "x-env": "prod" } }).allowed, true);
  assert.equal(decide(policies, { claims: { status: "banned" }, headers: { "x-env": "prod" } }).allowed, false);
  assert.equal(decide(policies, { claims: { status: "ok" }, headers: { "x-env": "dev" } }).allowed, false);
  assert.equal(decide(policies, { claims: { status: "ok" } }).allowed, false);
});

test("when: source.ip CIDR, source.namespace and request.auth.audiences", () => {
  const policies = [
    allow("internal", [
      {
        when: [
          { key: "source.ip", values: ["10.0.0.0/8"] },
          { key: "source.namespace", values: ["shop"] },
          { key: "request.auth.audiences", values: ["shop-api"] },
        ],
      },
    ]),
  ];
  const ok = { sourceIp: "10.2.3.4", sourcePrincipal: WEB, requestPrincipal: "i/u", claims: { aud: ["other", "shop-api"] } };
  assert.equal(decide(policies, ok).allowed, true);
  assert.equal(decide(policies, { ...ok, sourceIp: "11.0.0.1" }).allowed, false);
  assert.equal(decide(policies, { ...ok, claims: { aud: "other" } }).allowed, false);
});

test("a request whose path cannot be normalised is denied, never waved through", () => {
  const policies = [deny("no-admin", [{ to: [{ paths: ["/admin*"] }] }])];
  assert.equal(decide(policies, { path: "/x%zz" }).reason, "path_rejected");
  assert.equal(decide(policies, { path: "/x%4" }).reason, "path_rejected");
});

test("an error while evaluating denies", () => {
  const throwing = new Proxy({}, { get() { throw new Error("boom"); } }) as AuthzRequest["headers"];
  const d = decide([allow("h", [{ when: [{ key: "request.headers[x-a]", values: ["1"] }] }])], { headers: throwing });
  assert.equal(d.allowed, false);
  assert.equal(d.reason, "evaluation_error");
});

test("path normalisation bypass attempts against a DENY on /admin* are all denied", () => {
  const policies = [allow("all", [{}]), deny("no-admin", [{ to: [{ paths: ["/admin*"] }] }])];
  for (const path of [
    "/admin",
    "/admin/../admin",
    "/public/../admin/users",
    "//admin",
    "///admin/x",
    "/./admin",
    "/%61dmin",
    "/%61%64%6D%69%6E/keys",
    "/%2e/admin",
    "/%2E%2E/admin",
    "/admin%2F",
    "/admin%2fsecrets",
    "/admin?x=1",
    "/x/../../admin",
    "\\admin",
    "/\\admin",
  ]) {
    const d = decide(policies, { path });
    assert.equal(d.allowed, false, `${path} slipped past the DENY`);
  }
});

test("/Admin is a different path when case matters, and denied when caseInsensitive is set", () => {
  const policies = [allow("all", [{}]), deny("no-admin", [{ to: [{ paths: ["/admin*"] }] }])];
  assert.equal(decide(policies, { path: "/Admin" }).allowed, true);
  const folded = decide(policies, { path: "/Admin" }, { encodedSlashes: "keep", caseInsensitive: true });
  assert.equal(folded.allowed, false);
  assert.equal(decide(policies, { path: "/%41DMIN" }, { encodedSlashes: "keep", caseInsensitive: true }).allowed, false);
});

test("encoded slashes: keep treats %2F as a plain character, decode as '/', reject refuses", () => {
  const exact = [allow("all", [{}]), deny("no-admin-keys", [{ to: [{ paths: ["/admin/keys"] }] }])];
  assert.equal(decide(exact, { path: "/admin%2Fkeys" }).allowed, true);
  assert.equal(decide(exact, { path: "/admin%2Fkeys" }, { encodedSlashes: "decode", caseInsensitive: false }).allowed, false);
  assert.equal(decide(exact, { path: "/public%2F..%2Fadmin/keys" }, { encodedSlashes: "decode", caseInsensitive: false }).allowed, false);
  const rejected = decide(exact, { path: "/a%2Fb" }, { encodedSlashes: "reject", caseInsensitive: false });
  assert.equal(rejected.reason, "path_rejected");
  assert.equal(decide(exact, { path: "/a/b" }, { encodedSlashes: "reject", caseInsensitive: false }).allowed, true);
});

test("an ALLOW on a prefix is not widened by dot segments", () => {
  const policies = [allow("public", [{ to: [{ paths: ["/public/*"] }] }])];
  assert.equal(decide(policies, { path: "/public/a" }).allowed, true);
  assert.equal(decide(policies, { path: "/public/../admin" }).allowed, false);
  assert.equal(decide(policies, { path: "/public/%2e%2e/admin" }).allowed, false);
});

test("a hundred policies still decide by the same rules", () => {
  const many: AuthzPolicyConfig[] = [];
  for (let i = 0; i < 100; i++) many.push(allow(`svc-${i}`, [{ from: [{ principals: [`cluster.local/ns/ns${i}/sa/*`] }], to: [{ paths: [`/svc${i}/*`] }] }]));
  assert.equal(decide(many, { sourcePrincipal: "spiffe://cluster.local/ns/ns99/sa/a", path: "/svc99/x" }).policy, "svc-99");
  assert.equal(decide(many, { sourcePrincipal: "spiffe://cluster.local/ns/ns98/sa/a", path: "/svc99/x" }).allowed, false);
});

const tcpConn = (over: Partial<AuthzRequest> = {}): Partial<AuthzRequest> => ({ tcp: true, method: "", authority: "", path: "", port: 5432, sourcePrincipal: WEB, ...over });

test("TCP: principals, namespaces, ip blocks, ports and source.* conditions apply to a connection as to a request", () => {
  const policies = [allow("web-db", [{ from: [{ principals: ["cluster.local/ns/shop/sa/web"], namespaces: ["shop"], ipBlocks: ["10.0.0.0/8"] }], to: [{ ports: [5432] }], when: [{ key: "source.namespace", values: ["shop"] }] }])];
  assert.equal(decide(policies, tcpConn()).allowed, true);
  assert.equal(decide(policies, tcpConn({ sourcePrincipal: "spiffe://cluster.local/ns/shop/sa/other" })).reason, "no_allow_match");
  assert.equal(decide(policies, tcpConn({ port: 6379 })).reason, "no_allow_match");
  assert.equal(decide(policies, tcpConn({ sourceIp: "192.168.1.1" })).reason, "no_allow_match");
  assert.equal(decide(policies, tcpConn({ sourcePrincipal: undefined })).reason, "no_allow_match");
});

test("TCP: an ALLOW rule that uses an HTTP-only field never matches a connection (Istio), whatever else it says", () => {
  const httpOnly: AuthzPolicyConfig["rules"] = [
    { to: [{ methods: ["GET"] }] },
    { to: [{ ports: [5432], paths: ["/x"] }] },
    { to: [{ hosts: ["db"] }] },
    { from: [{ principals: [WEB], requestPrincipals: ["*"] }] },
    { when: [{ key: "request.headers[x-a]", values: ["b"] }] },
    { when: [{ key: "request.auth.claims[role]", values: ["admin"] }] },
  ];
  for (const [i, rule] of httpOnly.entries()) {
    assert.equal(decide([allow("a", [rule])], tcpConn()).reason, "no_allow_match", `rule ${i}`);
  }
  // The same kind of rule does match an HTTP request that satisfies it.
  assert.equal(decide([allow("a", [{ to: [{ methods: ["GET"] }] }])], { method: "GET" }).allowed, true);
  // A rule without HTTP-only fields beside it still allows.
  assert.equal(decide([allow("a", [{ to: [{ methods: ["GET"] }] }, { to: [{ ports: [5432] }] }])], tcpConn()).rule, 1);
});

test("TCP: a DENY rule ignores its HTTP-only fields, so it matches more connections (Istio)", () => {
  // Denies port 5432 for GET: over TCP the method is ignored and every connection to 5432 is denied.
  const d = decide([deny("no-get", [{ to: [{ methods: ["GET"], ports: [5432] }] }])], tcpConn());
  assert.deepEqual([d.allowed, d.reason, d.policy], [false, "denied_by_policy", "no-get"]);
  assert.equal(decide([deny("no-get", [{ to: [{ methods: ["GET"], ports: [5432] }] }])], tcpConn({ port: 6379 })).allowed, true);
  // Only HTTP-only fields: the rule matches every connection.
  assert.equal(decide([deny("hdr", [{ when: [{ key: "request.headers[x-debug]", values: ["1"] }] }])], tcpConn()).allowed, false);
  assert.equal(decide([deny("jwt", [{ from: [{ requestPrincipals: ["issuer/admin"] }] }])], tcpConn()).allowed, false);
  // The TCP-valid parts still have to match.
  assert.equal(decide([deny("ns", [{ from: [{ namespaces: ["other"], requestPrincipals: ["*"] }] }])], tcpConn()).allowed, true);
});
