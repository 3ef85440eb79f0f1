import { test } from "node:test";
import assert from "node:assert/strict";
import { validateMesh, type RouteConfig, type RouteMatchConfig } from "../config/index.ts";
import { chooseWeighted, createRouter, normalizePath, splitAuthority } from "./router.ts";
import type { RequestHead } from "./types.ts";

interface Req {
  readonly method?: string;
  readonly authority?: string;
  readonly path: string;
  readonly headers?: Record<string, string | readonly string[]>;
}

interface Case {
  readonly name: string;
  /** Route name → match (or a list of matches, or undefined for "no match field"). */
  readonly routes: readonly (readonly [string, RouteMatchConfig | readonly RouteMatchConfig[] | undefined])[];
  readonly req: Req;
  /** The route name expected to win, or undefined for no route. */
  readonly expect: string | undefined;
}

// Routes go through the real schema, so every case is a config a user could apply.
function compileRoutes(routes: Case["routes"]): RouteConfig[] {
  const input = routes.map(([name, match]) => ({ name, ...(match === undefined ? {} : { match }), directResponse: { status: 200 } }));
  const r = validateMesh({ gateways: { g: { listeners: [{ port: 0 }], routes: input } } });
  if (!r.ok) throw new TypeError(`test routes do not validate: ${JSON.stringify(r.issues)}`);
  return r.value.gateways.g!.routes;
}

function head(req: Req): RequestHead {
  return {
    method: req.method ?? "GET",
    scheme: "http",
    authority: req.authority ?? "example.com",
    path: req.path,
    headers: req.headers ?? {},
    clientIp: "127.0.0.1",
    localPort: 8080,
  };
}

const CASES: readonly Case[] = [
  // Hosts
  {
    name: "an exact host beats a route without hosts declared before it",
    routes: [["any", undefined], ["api", { hosts: ["api.example.com"] }]],
    req: { authority: "api.example.com", path: "/" },
    expect: "api",
  },
  {
    name: "an exact host does not match another host",
    routes: [["api", { hosts: ["api.example.com"] }]],
    req: { authority: "www.example.com", path: "/" },
    expect: undefined,
  },
  {
    name: "a route listing several hosts matches any of them",
    routes: [["r", { hosts: ["a.example.com", "b.example.com"] }]],
    req: { authority: "b.example.com", path: "/" },
    expect: "r",
  },
  {
    name: "a *.suffix wildcard matches a subdomain",
    routes: [["w", { hosts: ["*.example.com"] }]],
    req: { authority: "shop.example.com", path: "/" },
    expect: "w",
  },
  {
    name: "a *.suffix wildcard matches several labels deep",
    routes: [["w", { hosts: ["*.example.com"] }]],
    req: { authority: "a.b.example.com", path: "/" },
    expect: "w",
  },
  {
    name: "a *.suffix wildcard does not match the bare suffix domain",
    routes: [["w", { hosts: ["*.example.com"] }]],
    req: { authority: "example.com", path: "/" },
    expect: undefined,
  },
  {
    name: "a *.suffix wildcard does not match a host that only ends with the same letters",
    routes: [["w", { hosts: ["*.example.com"] }]],
    req: { authority: "badexample.com", path: "/" },
    expect: undefined,
  },
  {
    name: "the longest wildcard suffix wins over a shorter one declared first",
    routes: [["short", { hosts: ["*.example.com"] }], ["long", { hosts: ["*.eu.example.com"] }]],
    req: { authority: "shop.eu.example.com", path: "/" },
    expect: "long",
  },
  {
    name: "an exact host beats a wildcard declared before it",
    routes: [["wild", { hosts: ["*.example.com"] }], ["exact", { hosts: ["api.example.com"] }]],
    req: { authority: "api.example.com", path: "/" },
    expect: "exact",
  },
  {
    name: "a host without a port matches a request that carries a port",
    routes: [["api", { hosts: ["api.example.com"] }]],
    req: { authority: "api.example.com:8443", path: "/" },
    expect: "api",
  },
  {
    name: "a host with a port matches that port",
    routes: [["api", { hosts: ["api.example.com:8443"] }]],
    req: { authority: "api.example.com:8443", path: "/" },
    expect: "api",
  },
  {
    name: "a host with a port does not match another port",
    routes: [["api", { hosts: ["api.example.com:8443"] }]],
    req: { authority: "api.example.com:9000", path: "/" },
    expect: undefined,
  },
  {
    name: "a host with a port does not match a request without a port",
    routes: [["api", { hosts: ["api.example.com:8443"] }]],
    req: { authority: "api.example.com", path: "/" },
    expect: undefined,
  },
  {
    name: "a host with a port beats the same host without one",
    routes: [["plain", { hosts: ["api.example.com"] }], ["ported", { hosts: ["api.example.com:8443"] }]],
    req: { authority: "api.example.com:8443", path: "/" },
    expect: "ported",
  },
  {
    name: "a wildcard with a port matches a subdomain on that port",
    routes: [["w", { hosts: ["*.example.com:8080"] }]],
    req: { authority: "shop.example.com:8080", path: "/" },
    expect: "w",
  },
  {
    name: "host matching ignores case in the request",
    routes: [["api", { hosts: ["api.example.com"] }]],
    req: { authority: "API.Example.COM", path: "/" },
    expect: "api",
  },
  {
    name: "host matching ignores case in the pattern",
    routes: [["api", { hosts: ["API.Example.com"] }, ]],
    req: { authority: "api.example.com", path: "/" },
    expect: "api",
  },
  {
    name: "a trailing dot in the authority is not stripped, so the host does not match",
    routes: [["api", { hosts: ["api.example.com"] }]],
    req: { authority: "api.example.com.", path: "/" },
    expect: undefined,
  },
  {
    name: "the '*' host ranks like no host, so declaration order decides",
    routes: [["first", {}], ["star", { hosts: ["*"] }]],
    req: { authority: "api.example.com", path: "/" },
    expect: "first",
  },
  {
    name: "a more specific host outranks a more specific path",
    routes: [["path", { path: { exact: "/x" } }], ["host", { hosts: ["api.example.com"] }]],
    req: { authority: "api.example.com", path: "/x" },
    expect: "host",
  },

  // Paths
  {
    name: "an exact path matches that path",
    routes: [["login", { path: { exact: "/login" } }]],
    req: { path: "/login" },
    expect: "login",
  },
  {
    name: "an exact path does not match a path below it",
    routes: [["login", { path: { exact: "/login" } }]],
    req: { path: "/login/x" },
    expect: undefined,
  },
  {
    name: "an exact path is trailing-slash sensitive",
    routes: [["login", { path: { exact: "/login" } }]],
    req: { path: "/login/" },
    expect: undefined,
  },
  {
    name: "an exact path ignores the query string",
    routes: [["login", { path: { exact: "/login" } }]],
    req: { path: "/login?next=/home" },
    expect: "login",
  },
  {
    name: "path matching is case-sensitive",
    routes: [["login", { path: { exact: "/login" } }]],
    req: { path: "/Login" },
    expect: undefined,
  },
  {
    name: "a prefix matches the path equal to it",
    routes: [["api", { path: { prefix: "/api" } }]],
    req: { path: "/api" },
    expect: "api",
  },
  {
    name: "a prefix matches a path below it",
    routes: [["api", { path: { prefix: "/api" } }]],
    req: { path: "/api/users" },
    expect: "api",
  },
  {
    name: "a prefix never matches a longer segment that starts with it",
    routes: [["api", { path: { prefix: "/api" } }]],
    req: { path: "/apix" },
    expect: undefined,
  },
  {
    name: "a prefix with a trailing slash also matches the bare path",
    routes: [["api", { path: { prefix: "/api/" } }]],
    req: { path: "/api" },
    expect: "api",
  },
  {
    name: "a prefix with a trailing slash matches a path below it",
    routes: [["api", { path: { prefix: "/api/" } }]],
    req: { path: "/api/users?page=2" },
    expect: "api",
  },
  {
    name: "prefix '/' matches every path",
    routes: [["root", { path: { prefix: "/" } }]],
    req: { path: "/any/depth/at/all" },
    expect: "root",
  },
  {
    name: "the longest prefix wins regardless of declaration order",
    routes: [["short", { path: { prefix: "/api" } }], ["long", { path: { prefix: "/api/v2" } }]],
    req: { path: "/api/v2/users" },
    expect: "long",
  },
  {
    name: "a shorter prefix takes what the longer one does not match",
    routes: [["short", { path: { prefix: "/api" } }], ["long", { path: { prefix: "/api/v2" } }]],
    req: { path: "/api/v1/users" },
    expect: "short",
  },
  {
    name: "an exact path beats a prefix of the same path declared before it",
    routes: [["prefix", { path: { prefix: "/api/users/" } }], ["exact", { path: { exact: "/api/users" } }]],
    req: { path: "/api/users" },
    expect: "exact",
  },
  {
    name: "a regex path matches the whole path",
    routes: [["re", { path: { regex: "/v[0-9]+/users" } }]],
    req: { path: "/v12/users" },
    expect: "re",
  },
  {
    name: "a regex path is anchored: matching only the start is not enough",
    routes: [["re", { path: { regex: "/v[0-9]+" } }]],
    req: { path: "/v1/users" },
    expect: undefined,
  },
  {
    name: "a regex alternation is anchored as a whole",
    routes: [["re", { path: { regex: "/a|/b" } }]],
    req: { path: "/b/x" },
    expect: undefined,
  },
  {
    name: "a regex path is tested without the query string",
    routes: [["re", { path: { regex: "/search" } }]],
    req: { path: "/search?q=x" },
    expect: "re",
  },
  {
    name: "a prefix beats a regex declared before it",
    routes: [["re", { path: { regex: "/api/.*" } }], ["prefix", { path: { prefix: "/api" } }]],
    req: { path: "/api/users" },
    expect: "prefix",
  },
  {
    name: "a regex beats a route without a path condition",
    routes: [["any", {}], ["re", { path: { regex: "/.*" } }]],
    req: { path: "/anything" },
    expect: "re",
  },
  {
    name: "prefix '/' beats a route without a path condition",
    routes: [["any", {}], ["root", { path: { prefix: "/" } }]],
    req: { path: "/anything" },
    expect: "root",
  },

  // Methods
  {
    name: "a method condition matches a listed method",
    routes: [["read", { methods: ["GET", "HEAD"] }]],
    req: { method: "HEAD", path: "/" },
    expect: "read",
  },
  {
    name: "a method condition refuses an unlisted method",
    routes: [["read", { methods: ["GET", "HEAD"] }]],
    req: { method: "POST", path: "/" },
    expect: undefined,
  },
  {
    name: "a GET condition does not take HEAD requests",
    routes: [["get", { methods: ["GET"] }]],
    req: { method: "HEAD", path: "/" },
    expect: undefined,
  },
  {
    name: "method names are case-sensitive",
    routes: [["read", { methods: ["GET"] }]],
    req: { method: "get", path: "/" },
    expect: undefined,
  },
  {
    name: "a method condition beats an otherwise equal route declared before it",
    routes: [["any", { path: { prefix: "/api" } }], ["get", { path: { prefix: "/api" }, methods: ["GET"] }]],
    req: { path: "/api/x" },
    expect: "get",
  },
  {
    name: "a longer prefix outranks a method condition",
    routes: [["get", { path: { prefix: "/api" }, methods: ["GET"] }], ["long", { path: { prefix: "/api/v1" } }]],
    req: { path: "/api/v1/x" },
    expect: "long",
  },

  // Headers
  {
    name: "a header exact condition matches the same value",
    routes: [["canary", { headers: { "x-env": { exact: "canary" } } }]],
    req: { path: "/", headers: { "x-env": "canary" } },
    expect: "canary",
  },
  {
    name: "a header exact condition refuses another value",
    routes: [["canary", { headers: { "x-env": { exact: "canary" } } }]],
    req: { path: "/", headers: { "x-env": "canary2" } },
    expect: undefined,
  },
  {
    name: "header names in the config are case-insensitive",
    routes: [["canary", { headers: { "X-Env": { exact: "canary" } } }]],
    req: { path: "/", headers: { "x-env": "canary" } },
    expect: "canary",
  },
  {
    name: "header values are case-sensitive",
    routes: [["canary", { headers: { "x-env": { exact: "canary" } } }]],
    req: { path: "/", headers: { "x-env": "Canary" } },
    expect: undefined,
  },
  {
    name: "a header prefix condition matches a value starting with it",
    routes: [["moz", { headers: { "user-agent": { prefix: "Mozilla/" } } }]],
    req: { path: "/", headers: { "user-agent": "Mozilla/5.0 (X11)" } },
    expect: "moz",
  },
  {
    name: "a header regex condition is anchored to the whole value",
    routes: [["v1", { headers: { "x-version": { regex: "v1" } } }]],
    req: { path: "/", headers: { "x-version": "v12" } },
    expect: undefined,
  },
  {
    name: "a header regex condition matches a whole value",
    routes: [["v", { headers: { "x-version": { regex: "v[0-9]+" } } }]],
    req: { path: "/", headers: { "x-version": "v12" } },
    expect: "v",
  },
  {
    name: "a header present condition matches an empty value",
    routes: [["dbg", { headers: { "x-debug": { present: true } } }]],
    req: { path: "/", headers: { "x-debug": "" } },
    expect: "dbg",
  },
  {
    name: "a header present condition fails when the header is missing",
    routes: [["dbg", { headers: { "x-debug": { present: true } } }]],
    req: { path: "/" },
    expect: undefined,
  },
  {
    name: "a header absent condition matches when the header is missing",
    routes: [["anon", { headers: { authorization: { absent: true } } }]],
    req: { path: "/" },
    expect: "anon",
  },
  {
    name: "a header absent condition refuses a request that carries the header",
    routes: [["anon", { headers: { authorization: { absent: true } } }]],
    req: { path: "/", headers: { authorization: "Bearer x" } },
    expect: undefined,
  },
  {
    name: "a repeated header is matched as its values joined with ', '",
    routes: [["both", { headers: { "x-tag": { exact: "a, b" } } }]],
    req: { path: "/", headers: { "x-tag": ["a", "b"] } },
    expect: "both",
  },
  {
    name: "more header conditions win over fewer",
    routes: [["one", { headers: { "x-a": { present: true } } }], ["two", { headers: { "x-a": { present: true }, "x-b": { present: true } } }]],
    req: { path: "/", headers: { "x-a": "1", "x-b": "1" } },
    expect: "two",
  },
  {
    name: "a header condition outranks a method condition",
    routes: [["method", { methods: ["GET"] }], ["header", { headers: { "x-a": { present: true } } }]],
    req: { path: "/", headers: { "x-a": "1" } },
    expect: "header",
  },
  {
    name: "a longer prefix outranks more header conditions",
    routes: [["headers", { path: { prefix: "/api" }, headers: { "x-a": { present: true } } }], ["long", { path: { prefix: "/api/v1" } }]],
    req: { path: "/api/v1", headers: { "x-a": "1" } },
    expect: "long",
  },

  // Query parameters
  {
    name: "a query exact condition matches the parameter's value",
    routes: [["v2", { query: { version: { exact: "2" } } }]],
    req: { path: "/items?version=2" },
    expect: "v2",
  },
  {
    name: "a query value is percent-decoded before matching",
    routes: [["ab", { query: { name: { exact: "a b" } } }]],
    req: { path: "/items?name=a%20b" },
    expect: "ab",
  },
  {
    name: "a query prefix condition matches a value starting with it",
    routes: [["en", { query: { lang: { prefix: "en" } } }]],
    req: { path: "/?lang=en-GB" },
    expect: "en",
  },
  {
    name: "a query regex condition is anchored to the whole value",
    routes: [["digit", { query: { page: { regex: "[0-9]" } } }]],
    req: { path: "/?page=12" },
    expect: undefined,
  },
  {
    name: "a query present condition matches a parameter without a value",
    routes: [["dbg", { query: { debug: { present: true } } }]],
    req: { path: "/?debug" },
    expect: "dbg",
  },
  {
    name: "a query condition sees the first of repeated parameters",
    routes: [["v2", { query: { v: { exact: "2" } } }]],
    req: { path: "/?v=1&v=2" },
    expect: undefined,
  },
  {
    name: "query parameter names are case-sensitive",
    routes: [["v2", { query: { version: { exact: "2" } } }]],
    req: { path: "/?Version=2" },
    expect: undefined,
  },
  {
    name: "query and header conditions add up for precedence",
    routes: [["header", { headers: { "x-a": { present: true } } }], ["both", { headers: { "x-a": { present: true } }, query: { debug: { present: true } } }]],
    req: { path: "/?debug=1", headers: { "x-a": "1" } },
    expect: "both",
  },

  // Match blocks
  {
    name: "a route with several match blocks matches when any block does",
    routes: [["r", [{ path: { exact: "/a" } }, { path: { exact: "/b" } }]]],
    req: { path: "/b" },
    expect: "r",
  },
  {
    name: "each match block of a route ranks on its own",
    routes: [["api", { path: { prefix: "/api" } }], ["multi", [{ path: { exact: "/nope" } }, { path: { prefix: "/api/v1" } }]]],
    req: { path: "/api/v1/x" },
    expect: "multi",
  },
  {
    name: "every condition inside one match block must hold",
    routes: [["post", { path: { prefix: "/api" }, methods: ["POST"] }]],
    req: { method: "GET", path: "/api" },
    expect: undefined,
  },
  {
    name: "an empty match block matches every request",
    routes: [["all", {}]],
    req: { method: "DELETE", authority: "anything.test", path: "/x/y" },
    expect: "all",
  },
  {
    name: "a route without a match field matches every request",
    routes: [["all", undefined]],
    req: { method: "PATCH", authority: "anything.test", path: "/x?y=1" },
    expect: "all",
  },

  // Declaration order
  {
    name: "declaration order breaks a tie between equal prefixes",
    routes: [["first", { path: { prefix: "/api" } }], ["second", { path: { prefix: "/api" } }]],
    req: { path: "/api/x" },
    expect: "first",
  },
  {
    name: "declaration order breaks a tie between two matching regexes",
    routes: [["first", { path: { regex: "/a.*" } }], ["second", { path: { regex: "/.*" } }]],
    req: { path: "/abc" },
    expect: "first",
  },
  {
    name: "no routes means no match",
    routes: [],
    req: { path: "/" },
    expect: undefined,
  },

  // Path normalisation
  {
    name: "dot-dot segments are resolved before matching",
    routes: [["public", { path: { prefix: "/public" } }], ["admin", { path: { prefix: "/admin" } }]],
    req: { path: "/public/../admin/users" },
    expect: "admin",
  },
  {
    name: "percent-encoded dot-dot segments are resolved before matching",
    routes: [["public", { path: { prefix: "/public" } }], ["admin", { path: { prefix: "/admin" } }]],
    req: { path: "/public/%2e%2e/admin" },
    expect: "admin",
  },
  {
    name: "mixed-case and half-encoded dot-dot segments are resolved",
    routes: [["public", { path: { prefix: "/public" } }], ["admin", { path: { prefix: "/admin" } }]],
    req: { path: "/public/%2E./admin" },
    expect: "admin",
  },
  {
    name: "repeated slashes are merged before matching",
    routes: [["admin", { path: { exact: "/admin/x" } }]],
    req: { path: "//admin///x" },
    expect: "admin",
  },
  {
    name: "single-dot segments are dropped before matching",
    routes: [["admin", { path: { exact: "/admin/x" } }]],
    req: { path: "/./admin/./x" },
    expect: "admin",
  },
  {
    name: "dot-dot above the root stays at the root",
    routes: [["admin", { path: { exact: "/admin" } }]],
    req: { path: "/../../admin" },
    expect: "admin",
  },
  {
    name: "an encoded dot inside a segment is neither decoded nor resolved",
    routes: [["enc", { path: { exact: "/a%2eb" } }]],
    req: { path: "/a%2eb" },
    expect: "enc",
  },
  {
    name: "the query string is not normalised",
    routes: [["x", { path: { exact: "/x" }, query: { next: { exact: "/a/../b" } } }]],
    req: { path: "/x?next=/a/../b" },
    expect: "x",
  },
  {
    name: "an absolute-form target is refused, even by a catch-all route",
    routes: [["all", undefined]],
    req: { path: "http://example.com/admin" },
    expect: undefined,
  },
  {
    name: "an asterisk-form target is refused, even by a catch-all route",
    routes: [["all", undefined]],
    req: { method: "OPTIONS", path: "*" },
    expect: undefined,
  },
  {
    name: "an empty target is refused, even by a catch-all route",
    routes: [["all", undefined]],
    req: { path: "" },
    expect: undefined,
  },
];

for (const c of CASES) {
  test(c.name, () => {
    const router = createRouter(compileRoutes(c.routes));
    assert.equal(router.match(head(c.req))?.route.name, c.expect);
  });
}

test("a match reports the normalised path with its query, the declaration index and the matched prefix", () => {
  const router = createRouter(compileRoutes([["root", { path: { prefix: "/" } }], ["api", { path: { prefix: "/api/" } }]]));
  const m = router.match(head({ path: "/x/../api//users?id=1" }));
  assert.equal(m?.route.name, "api");
  assert.equal(m?.index, 1);
  assert.equal(m?.matchedPrefix, "/api/");
  assert.equal(m?.path, "/api/users?id=1");
});

test("exact and regex matches report no matched prefix", () => {
  const router = createRouter(compileRoutes([["exact", { path: { exact: "/a" } }], ["re", { path: { regex: "/b+" } }]]));
  assert.equal(router.match(head({ path: "/a" }))?.matchedPrefix, undefined);
  assert.equal(router.match(head({ path: "/bbb" }))?.matchedPrefix, undefined);
  assert.equal(router.match(head({ path: "/bbb" }))?.route.name, "re");
});

test("a path that needs no normalisation is passed through as received", () => {
  const router = createRouter(compileRoutes([["all", undefined]]));
  assert.equal(router.match(head({ path: "/a/b.txt?x=%2e%2e" }))?.path, "/a/b.txt?x=%2e%2e");
});

test("normalizePath follows RFC 3986 §5.2.4 for trailing dot segments", () => {
  assert.equal(normalizePath("/a/b/.."), "/a/");
  assert.equal(normalizePath("/a/b/."), "/a/b/");
  assert.equal(normalizePath("/.."), "/");
  assert.equal(normalizePath("/a/b/c/./../../g"), "/a/g");
  assert.equal(normalizePath("/a//"), "/a/");
  assert.equal(normalizePath("/.well-known/x"), "/.well-known/x");
});

test("normalizePath refuses targets that are not origin-form", () => {
  assert.equal(normalizePath("example.com:443"), undefined);
  assert.equal(normalizePath("https://example.com/"), undefined);
  assert.equal(normalizePath("*"), undefined);
});

test("splitAuthority lower-cases and separates the port, IPv6 literals included", () => {
  assert.deepEqual(splitAuthority("API.example.com:8080"), { host: "api.example.com", hostPort: "api.example.com:8080" });
  assert.deepEqual(splitAuthority("example.com"), { host: "example.com", hostPort: "example.com" });
  assert.deepEqual(splitAuthority("[::1]:80"), { host: "[::1]", hostPort: "[::1]:80" });
  assert.deepEqual(splitAuthority("[::1]"), { host: "[::1]", hostPort: "[::1]" });
});

test("chooseWeighted splits the random range by weight", () => {
  const items = [{ name: "v1", weight: 90 }, { name: "v2", weight: 10 }];
  assert.equal(chooseWeighted(items, () => 0).name, "v1");
  assert.equal(chooseWeighted(items, () => 0.899).name, "v1");
  assert.equal(chooseWeighted(items, () => 0.9).name, "v2");
  assert.equal(chooseWeighted(items, () => 0.999999).name, "v2");
});

test("chooseWeighted never picks a zero-weight destination", () => {
  const items = [{ name: "off", weight: 0 }, { name: "on", weight: 1 }, { name: "off2", weight: 0 }];
  for (const r of [0, 0.25, 0.5, 0.75, 0.9999999]) assert.equal(chooseWeighted(items, () => r).name, "on");
});

test("chooseWeighted falls back to the first destination when every weight is zero", () => {
  const items = [{ name: "a", weight: 0 }, { name: "b", weight: 0 }];
  assert.equal(chooseWeighted(items, () => 0.7).name, "a");
});
