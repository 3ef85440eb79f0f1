import { test } from "node:test";
import assert from "node:assert/strict";
import type { TcpRouteConfig, TlsRouteConfig } from "../config/index.ts";
import { createL4Router } from "./tcp-router.ts";

const to = [{ service: "x", weight: 1 }];
const tls = (name: string, sniHosts: string[], ports?: number[]): TlsRouteConfig => ({ name, to, match: { sniHosts, ports } });
const tcp = (name: string, ports?: number[]): TcpRouteConfig => ({ name, to, match: ports ? { ports } : undefined });

test("tls routes: exact server name, then the longest *.suffix, then *, then declaration order", () => {
  const router = createL4Router([], [
    tls("any", ["*"]),
    tls("wide", ["*.example.com"]),
    tls("narrow", ["*.api.example.com"]),
    tls("exact", ["db.example.com", "other.test"]),
    tls("exact-later", ["db.example.com"]),
  ]);
  const table: [string, string | undefined][] = [
    ["db.example.com", "exact"],
    ["DB.Example.COM", "exact"],
    ["other.test", "exact"],
    ["v1.api.example.com", "narrow"],
    ["a.b.example.com", "wide"],
    ["api.example.com", "wide"],
    ["example.com", "any"],
    ["unrelated.org", "any"],
  ];
  for (const [sni, want] of table) assert.equal(router.matchTls(443, sni)?.route.name, want, sni);
});

test("a *.suffix needs a label before the suffix, and with no * route an unknown name has no route", () => {
  const router = createL4Router([], [tls("wide", ["*.example.com"])]);
  assert.equal(router.matchTls(443, "example.com"), undefined);
  assert.equal(router.matchTls(443, ".example.com"), undefined);
  assert.equal(router.matchTls(443, "x.example.com")?.route.name, "wide");
  assert.equal(router.matchTls(443, "x.example.com.evil.org"), undefined);
});

test("tls routes restricted to ports only take connections on those listener ports", () => {
  const router = createL4Router([], [tls("on-9443", ["db.example.com"], [9443]), tls("fallback", ["*"])]);
  assert.equal(router.matchTls(9443, "db.example.com")?.route.name, "on-9443");
  assert.equal(router.matchTls(8443, "db.example.com")?.route.name, "fallback");
});

test("tcp routes: the first route whose ports include the listener's, or that names no port", () => {
  const router = createL4Router([tcp("db", [5432]), tcp("cache", [6379, 6380]), tcp("rest")], []);
  const table: [number, string | undefined][] = [
    [5432, "db"],
    [6380, "cache"],
    [9000, "rest"],
  ];
  for (const [port, want] of table) assert.equal(router.matchTcp(port)?.route.name, want, String(port));
  assert.equal(createL4Router([tcp("db", [5432])], []).matchTcp(5433), undefined);
});
