import { test } from "node:test";
import assert from "node:assert/strict";
import { validateMesh, type RouteConfig } from "../config/index.ts";
import type { OutgoingHeaders } from "./headers.ts";
import { applyHeaderOps, redirectLocation, rewritePath } from "./route-actions.ts";
import { createRouter } from "./router.ts";
import type { RequestHead } from "./types.ts";

// Gateway API's ReplacePrefixMatch table (HTTPPathModifier), minus the rows with an empty
// replacement, which weft's schema refuses (a rewrite must start with "/").
const PREFIX_TABLE: readonly (readonly [path: string, prefix: string, replacement: string, expected: string])[] = [
  ["/foo/bar", "/foo", "/xyz", "/xyz/bar"],
  ["/foo/bar", "/foo", "/xyz/", "/xyz/bar"],
  ["/foo/bar", "/foo/", "/xyz", "/xyz/bar"],
  ["/foo/bar", "/foo/", "/xyz/", "/xyz/bar"],
  ["/foo", "/foo", "/xyz", "/xyz"],
  ["/foo/", "/foo", "/xyz", "/xyz/"],
  ["/foo/bar", "/foo", "/", "/bar"],
  ["/foo/", "/foo", "/", "/"],
  ["/foo", "/foo", "/", "/"],
];

for (const [path, prefix, replacement, expected] of PREFIX_TABLE) {
  test(`rewritePath follows ReplacePrefixMatch: ${path} under ${prefix} with ${replacement} is ${expected}`, () => {
    assert.equal(rewritePath(path, prefix, replacement), expected);
  });
}

test("rewritePath keeps the query string untouched", () => {
  assert.equal(rewritePath("/api/users?id=1&next=/api/x", "/api", "/v2"), "/v2/users?id=1&next=/api/x");
  assert.equal(rewritePath("/api?id=1", "/api", "/"), "/?id=1");
});

test("rewritePath under prefix '/' puts the replacement in front of the whole path", () => {
  assert.equal(rewritePath("/foo/bar", "/", "/xyz"), "/xyz/foo/bar");
  assert.equal(rewritePath("/", "/", "/xyz"), "/xyz/");
  assert.equal(rewritePath("/foo?a=1", "/", "/"), "/foo?a=1");
});

test("rewritePath replaces a multi-segment prefix with a multi-segment one", () => {
  assert.equal(rewritePath("/api/v1/users/7", "/api/v1", "/internal/users-service"), "/internal/users-service/users/7");
});

function compile(route: Record<string, unknown>): RouteConfig {
  const r = validateMesh({ gateways: { g: { listeners: [{ port: 0 }], routes: [route] } } });
  if (!r.ok) throw new TypeError(`test route does not validate: ${JSON.stringify(r.issues)}`);
  return r.value.gateways.g!.routes[0]!;
}

function head(authority: string, path: string, scheme: "http" | "https" = "http"): RequestHead {
  return { method: "GET", scheme, authority, path, headers: {}, clientIp: "127.0.0.1", localPort: 8080 };
}

/** Routes the request through a one-route router, then builds the redirect's Location. */
function locationFor(route: Record<string, unknown>, req: RequestHead): string {
  const compiled = compile(route);
  const match = createRouter([compiled]).match(req);
  assert.ok(match, "the test request must match its route");
  return redirectLocation(compiled.redirect!, req, match);
}

test("a redirect defaults to status 301", () => {
  assert.equal(compile({ redirect: { scheme: "https" } }).redirect?.status, 301);
});

test("a scheme redirect drops the request's port and keeps host, path and query", () => {
  assert.equal(locationFor({ redirect: { scheme: "https" } }, head("example.com:8080", "/a/b?x=1")), "https://example.com/a/b?x=1");
});

test("naming the scheme, even the request's own, drops the request's port", () => {
  assert.equal(locationFor({ redirect: { scheme: "http", host: "b.example.com" } }, head("a.example.com:8080", "/")), "http://b.example.com/");
});

test("a host redirect without a scheme keeps the request's scheme and port", () => {
  assert.equal(locationFor({ redirect: { host: "new.example.com" } }, head("old.example.com:8080", "/x")), "http://new.example.com:8080/x");
});

test("an explicit port is written unless it is the scheme's default", () => {
  assert.equal(locationFor({ redirect: { scheme: "https", port: 8443 } }, head("example.com", "/x")), "https://example.com:8443/x");
  assert.equal(locationFor({ redirect: { scheme: "https", port: 443 } }, head("example.com:8080", "/x")), "https://example.com/x");
});

test("the request's default port is not repeated in the Location", () => {
  assert.equal(locationFor({ redirect: { host: "b.example.com" } }, head("a.example.com:80", "/x")), "http://b.example.com/x");
  assert.equal(locationFor({ redirect: { host: "b.example.com" } }, head("a.example.com:443", "/x", "https")), "https://b.example.com/x");
});

test("an empty or non-numeric port in the request's Host is not copied into the Location", () => {
  // RFC 3986 §3.2.3 allows an empty port ("host:"); neither it nor junk may become ":0" or ":NaN".
  assert.equal(locationFor({ redirect: { host: "b.example.com" } }, head("a.example.com:", "/x")), "http://b.example.com/x");
  assert.equal(locationFor({ redirect: { host: "b.example.com" } }, head("a.example.com:abc", "/x")), "http://b.example.com/x");
  assert.equal(locationFor({ redirect: { path: "/y" } }, head("[::1]:", "/x")), "http://[::1]/y");
});

test("a path redirect replaces the whole path and keeps the request's query", () => {
  assert.equal(locationFor({ redirect: { path: "/new" } }, head("example.com", "/old/deep?a=1")), "http://example.com/new?a=1");
});

test("a path redirect that carries its own query replaces the request's query", () => {
  assert.equal(locationFor({ redirect: { path: "/new?b=2" } }, head("example.com", "/old?a=1")), "http://example.com/new?b=2");
});

test("a prefix redirect replaces the matched prefix and keeps the rest and the query", () => {
  const route = { match: { path: { prefix: "/old" } }, redirect: { prefixRewrite: "/new" } };
  assert.equal(locationFor(route, head("example.com", "/old/x/y?a=1")), "http://example.com/new/x/y?a=1");
  assert.equal(locationFor(route, head("example.com", "/old")), "http://example.com/new");
});

test("a redirect is built from the normalised path", () => {
  const route = { match: { path: { prefix: "/old" } }, redirect: { prefixRewrite: "/new" } };
  assert.equal(locationFor(route, head("example.com", "/x/../old//y")), "http://example.com/new/y");
});

test("the redirect host comes from the request in lower case", () => {
  assert.equal(locationFor({ redirect: { scheme: "https" } }, head("Example.COM", "/X")), "https://example.com/X");
});

test("an IPv6 literal authority keeps its brackets in the Location", () => {
  assert.equal(locationFor({ redirect: { scheme: "https" } }, head("[::1]:8080", "/x")), "https://[::1]/x");
  assert.equal(locationFor({ redirect: { path: "/y" } }, head("[::1]:8080", "/x")), "http://[::1]:8080/y");
});

test("applyHeaderOps removes, then sets, then adds", () => {
  const headers: OutgoingHeaders = { "x-a": "old", "x-b": "keep" };
  applyHeaderOps({ remove: ["x-a"], set: { "x-a": "set" }, add: { "x-a": "added" } }, headers);
  // remove before set: the set value survives; add after set: both values are sent.
  assert.deepEqual(headers, { "x-a": ["set", "added"], "x-b": "keep" });
});

test("applyHeaderOps set replaces every existing value", () => {
  const headers: OutgoingHeaders = { "x-tag": ["1", "2"] };
  applyHeaderOps({ set: { "x-tag": "3" } }, headers);
  assert.deepEqual(headers, { "x-tag": "3" });
});

test("applyHeaderOps add creates, then appends to, a header", () => {
  const headers: OutgoingHeaders = { "x-one": "1", "x-many": ["1", "2"] };
  applyHeaderOps({ add: { "x-new": "n", "x-one": "2", "x-many": "3" } }, headers);
  assert.deepEqual(headers, { "x-new": "n", "x-one": ["1", "2"], "x-many": ["1", "2", "3"] });
});

test("applyHeaderOps matches header names case-insensitively and writes them in lower case", () => {
  const headers: OutgoingHeaders = { "x-powered-by": "php", server: "nginx" };
  applyHeaderOps({ remove: ["X-Powered-By", "Server"], set: { "X-Env": "prod" }, add: { "X-Trace": "t" } }, headers);
  assert.deepEqual(headers, { "x-env": "prod", "x-trace": "t" });
});

test("applyHeaderOps removing an absent header changes nothing", () => {
  const headers: OutgoingHeaders = { a: "1" };
  applyHeaderOps({ remove: ["b"] }, headers);
  assert.deepEqual(headers, { a: "1" });
});
