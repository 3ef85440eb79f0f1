import { test } from "node:test";
import assert from "node:assert/strict";
import { appendForwardedFor, copyForwardable, firstValue, trustedClientIp } from "./headers.ts";

const HOP_BY_HOP = [
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "host",
];

test("copyForwardable drops every hop-by-hop header and host, on the edge and in the mesh", () => {
  const headers: Record<string, string> = { "content-type": "text/plain", accept: "*/*" };
  for (const name of HOP_BY_HOP) headers[name] = "x";
  for (const edge of [true, false]) {
    assert.deepEqual(copyForwardable(headers, edge), { "content-type": "text/plain", accept: "*/*" });
  }
});

test("copyForwardable drops the headers that Connection names, whatever their case or spacing", () => {
  const out = copyForwardable({ connection: "Keep-Alive , X-Secret,,x-other", "x-secret": "s", "x-other": "o", "x-kept": "k" }, false);
  assert.deepEqual(out, { "x-kept": "k" });
});

test("copyForwardable reads Connection given as several header lines", () => {
  const out = copyForwardable({ connection: ["close", "x-a"], "x-a": "1", "x-b": "2" }, false);
  assert.deepEqual(out, { "x-b": "2" });
});

test("copyForwardable at the edge drops headers only weft may set", () => {
  const out = copyForwardable(
    { "x-weft-reason": "forged", "x-weft-anything": "1", "x-forwarded-client-cert": "URI=spiffe://evil", "x-envoy-original-path": "/admin", "x-app": "a" },
    true,
  );
  assert.deepEqual(out, { "x-app": "a" });
});

test("copyForwardable inside the mesh keeps weft's own headers from the sidecar before it", () => {
  const input = { "x-weft-reason": "r", "x-forwarded-client-cert": "URI=spiffe://cluster.local/ns/default/sa/web", "x-envoy-original-path": "/a" };
  assert.deepEqual(copyForwardable(input, false), input);
});

test("copyForwardable keeps repeated headers as lists and skips undefined values", () => {
  const out = copyForwardable({ "set-cookie": ["a=1", "b=2"], "x-missing": undefined }, false);
  assert.deepEqual(out, { "set-cookie": ["a=1", "b=2"] });
});

test("copyForwardable leaves the incoming headers unchanged", () => {
  const input = { connection: "x-a", "x-a": "1", te: "trailers" };
  copyForwardable(input, true);
  assert.deepEqual(input, { connection: "x-a", "x-a": "1", te: "trailers" });
});

test("firstValue reads a single value, the first of a list, or nothing", () => {
  assert.equal(firstValue({ a: "1" }, "a"), "1");
  assert.equal(firstValue({ a: ["1", "2"] }, "a"), "1");
  assert.equal(firstValue({}, "a"), undefined);
});

test("appendForwardedFor starts a list when there is none", () => {
  assert.equal(appendForwardedFor(undefined, "10.0.0.1"), "10.0.0.1");
  assert.equal(appendForwardedFor("", "10.0.0.1"), "10.0.0.1");
});

test("appendForwardedFor appends the peer to an existing list", () => {
  assert.equal(appendForwardedFor("203.0.113.7", "10.0.0.1"), "203.0.113.7, 10.0.0.1");
  assert.equal(appendForwardedFor("203.0.113.7, 198.51.100.2", "10.0.0.1"), "203.0.113.7, 198.51.100.2, 10.0.0.1");
});

test("appendForwardedFor joins several x-forwarded-for lines in order", () => {
  assert.equal(appendForwardedFor(["203.0.113.7", "198.51.100.2"], "10.0.0.1"), "203.0.113.7, 198.51.100.2, 10.0.0.1");
});

test("trustedClientIp with no trusted hops takes the TCP peer and ignores x-forwarded-for", () => {
  assert.equal(trustedClientIp("1.2.3.4", "10.0.0.10", 0), "10.0.0.10");
});

test("trustedClientIp with one trusted hop takes the rightmost x-forwarded-for address", () => {
  assert.equal(trustedClientIp("6.6.6.6, 203.0.113.7", "10.0.0.10", 1), "203.0.113.7");
});

test("trustedClientIp with two trusted hops takes the second address from the right", () => {
  assert.equal(trustedClientIp("6.6.6.6, 203.0.113.7, 10.0.0.9", "10.0.0.10", 2), "203.0.113.7");
});

test("trustedClientIp trims the spaces around an address", () => {
  assert.equal(trustedClientIp("203.0.113.7 ,  10.0.0.9 ", "10.0.0.10", 1), "10.0.0.9");
});

test("trustedClientIp falls back to the peer when x-forwarded-for is shorter than the trusted hops", () => {
  assert.equal(trustedClientIp("203.0.113.7", "10.0.0.10", 2), "10.0.0.10");
});

test("trustedClientIp falls back to the peer when x-forwarded-for is missing or empty", () => {
  assert.equal(trustedClientIp(undefined, "10.0.0.10", 1), "10.0.0.10");
  assert.equal(trustedClientIp("", "10.0.0.10", 1), "10.0.0.10");
});

test("trustedClientIp falls back to the peer when the chosen entry is blank", () => {
  assert.equal(trustedClientIp("203.0.113.7, ,10.0.0.9", "10.0.0.10", 2), "10.0.0.10");
});

test("trustedClientIp cannot be steered by addresses a client prepends", () => {
  // The client controls everything left of what the trusted proxy appended.
  assert.equal(trustedClientIp("127.0.0.1, 10.0.0.1, 198.51.100.2", "10.0.0.10", 1), "198.51.100.2");
});
