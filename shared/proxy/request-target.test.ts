import { test } from "node:test";
import assert from "node:assert/strict";
import { toOriginForm } from "./request-target.ts";
import type { RequestHead } from "./types.ts";

function head(authority: string, path: string): RequestHead {
  return { method: "GET", scheme: "http", authority, path, headers: { host: authority }, clientIp: "127.0.0.1", localPort: 8080 };
}

test("toOriginForm: an absolute-form target becomes origin form with the target's authority; other forms are refused", () => {
  const abs = toOriginForm(head("ignored", "http://orders.shop:8080/a/b?c=1"))!;
  assert.equal(abs.authority, "orders.shop:8080");
  assert.equal(abs.path, "/a/b?c=1");
  assert.equal(toOriginForm(head("x", "http://orders"))!.path, "/");
  assert.equal(toOriginForm(head("x", "HTTP://orders?q=1"))!.path, "/?q=1");
  const origin = head("orders", "/x");
  assert.equal(toOriginForm(origin), origin);
  assert.equal(toOriginForm(head("x", "https://orders/x")), undefined, "https only when allowed");
  assert.equal(toOriginForm(head("x", "*")), undefined);
  assert.equal(toOriginForm(head("x", "orders:443")), undefined);
  assert.equal(toOriginForm(head("x", "ftp://orders/x"), true), undefined);
  assert.equal(toOriginForm(head("x", "http:///x")), undefined, "an empty authority");
});

test("toOriginForm with allowHttps: an https absolute-form target is taken too", () => {
  const abs = toOriginForm(head("ignored", "https://shop.example/cart#frag"), true)!;
  assert.equal(abs.authority, "shop.example");
  assert.equal(abs.path, "/cart");
});
