import { test } from "node:test";
import assert from "node:assert/strict";
import { MAX_CLIENT_HELLO_BYTES, readClientHelloSni } from "./sni.ts";

// Real ClientHellos captured on 127.0.0.1 from node:tls (servername "api.example.com"), openssl 3.0
// s_client (-servername Db.Example.ORG) and node:tls without a servername.
const NODE_TLS_HELLO = "FgMBAXABAAFsAwMMYnGvEb6SzrY5DeB9sc/JKarD6Swp+mUOSLUsBYtz9SBOYrePKKUs07vu/0C4uM09kr7Voi07vKvkeTTWQOwmnQB2EwITAxMBwC/AK8AwwCwAnsAnAGfAKABrAKMAn8ypzKjMqsCvwK3Ao8CfwF3AYcBXwFMAosCuwKzAosCewFzAYMBWwFLAJABqwCMAQMAKwBQAOQA4wAnAEwAzADIAncChwJ3AUQCcwKDAnMBQAD0APAA1AC8A/wEAAK0AAAAUABIAAA9hcGkuZXhhbXBsZS5jb20ACwAEAwABAgAKABYAFAAdABcAHgAZABgBAAEBAQIBAwEEACMAAAAWAAAAFwAAAA0AKgAoBAMFAwYDCAcICAgJCAoICwgECAUIBgQBBQEGAQMDAwEDAgQCBQIGAgArAAUEAwQDAwAtAAIBAQAzACYAJAAdACAj9N/wq6/WSoeppvp2GNI+HOwez+2gDrARuPgwUA/wFQ==";
const OPENSSL_HELLO = "FgMBATsBAAE3AwMj47Xuq+wS4ZGStg+wTRiuKbDMTFw9ox2XjRmS5y1ruiCZQHHGbfCl70iDEQ4EZy+Op+WGu+nsJjCsIJgwC7preAA+EwITAxMBwCzAMACfzKnMqMyqwCvALwCewCTAKABrwCPAJwBnwArAFAA5wAnAEwAzAJ0AnAA9ADwANQAvAP8BAACwAAAAEwARAAAORGIuRXhhbXBsZS5PUkcACwAEAwABAgAKABYAFAAdABcAHgAZABgBAAEBAQIBAwEEACMAAAAWAAAAFwAAAA0AKgAoBAMFAwYDCAcICAgJCAoICwgECAUIBgQBBQEGAQMDAwEDAgQCBQIGAgArAAkIAwQDAwMCAwEALQACAQEAMwAmACQAHQAgfjaM95uEyrLyuK9eGW+B6BSQikYkualm7KdBQzVF1Rs=";
const NODE_TLS_HELLO_NO_SNI = "FgMBAVgBAAFUAwP68+B05a4nOB2qDYrSXg5uvl96sESh2lm5TVzYXFIiviAED+tyMcB0qamvve6qoCMZp6Qr7V61BZNJtQVs+bN4tAB2EwITAxMBwC/AK8AwwCwAnsAnAGfAKABrAKMAn8ypzKjMqsCvwK3Ao8CfwF3AYcBXwFMAosCuwKzAosCewFzAYMBWwFLAJABqwCMAQMAKwBQAOQA4wAnAEwAzADIAncChwJ3AUQCcwKDAnMBQAD0APAA1AC8A/wEAAJUACwAEAwABAgAKABYAFAAdABcAHgAZABgBAAEBAQIBAwEEACMAAAAWAAAAFwAAAA0AKgAoBAMFAwYDCAcICAgJCAoICwgECAUIBgQBBQEGAQMDAwEDAgQCBQIGAgArAAUEAwQDAwAtAAIBAQAzACYAJAAdACCSBUu+ZjzZzam0w3E5p6XTvkkV+/WeHhK+NaWIKoqaQQ==";

const bytes = (b64: string) => new Uint8Array(Buffer.from(b64, "base64"));

test("reads the server name of real ClientHellos from node:tls and openssl, lower-cased", () => {
  assert.deepEqual(readClientHelloSni(bytes(NODE_TLS_HELLO)), { ok: true, sni: "api.example.com" });
  assert.deepEqual(readClientHelloSni(bytes(OPENSSL_HELLO)), { ok: true, sni: "db.example.org" });
});

test("a ClientHello without a server_name extension reads as no SNI", () => {
  assert.deepEqual(readClientHelloSni(bytes(NODE_TLS_HELLO_NO_SNI)), { ok: true, sni: undefined });
});

test("every truncation of a real ClientHello asks for more bytes, never guesses", () => {
  const hello = bytes(OPENSSL_HELLO);
  for (let n = 0; n < hello.length; n++) {
    assert.deepEqual(readClientHelloSni(hello.subarray(0, n)), { ok: false, reason: "incomplete" }, `at ${n} bytes`);
  }
});

test("bytes after the ClientHello (the client's next flight) do not change the answer", () => {
  const hello = bytes(NODE_TLS_HELLO);
  const more = new Uint8Array(hello.length + 64).fill(0xaa);
  more.set(hello);
  assert.deepEqual(readClientHelloSni(more), { ok: true, sni: "api.example.com" });
});

test("a ClientHello split over several records is reassembled", () => {
  const hello = bytes(OPENSSL_HELLO);
  const body = hello.subarray(5);
  const split = [body.subarray(0, 3), body.subarray(3, 100), body.subarray(100)];
  const records = split.map((part) => [0x16, 0x03, 0x01, part.length >> 8, part.length & 0xff, ...part]);
  assert.deepEqual(readClientHelloSni(new Uint8Array(records.flat())), { ok: true, sni: "db.example.org" });
});

test("plaintext and garbage are not TLS", () => {
  for (const text of ["GET / HTTP/1.1\r\nHost: a\r\n\r\n", "\x00\x01\x02", "PRI * HTTP/2.0\r\n"]) {
    assert.deepEqual(readClientHelloSni(new TextEncoder().encode(text)), { ok: false, reason: "not_tls" });
  }
  // A handshake record type with a record version that is not 3.x.
  assert.deepEqual(readClientHelloSni(new Uint8Array([0x16, 0x09, 0x01, 0, 5])), { ok: false, reason: "not_tls" });
});

test("inconsistent lengths are malformed, not read past", () => {
  const hello = bytes(NODE_TLS_HELLO);
  // A handshake message that is not a ClientHello (ServerHello, type 2).
  const serverHello = hello.slice();
  serverHello[5] = 0x02;
  assert.deepEqual(readClientHelloSni(serverHello), { ok: false, reason: "malformed" });
  // The extensions length claims more than the message holds.
  const msg = hello.subarray(5);
  const sessionLength = msg[4 + 34]!;
  let at = 4 + 35 + sessionLength;
  at += 2 + ((msg[at]! << 8) | msg[at + 1]!);
  at += 1 + msg[at]!;
  const longer = hello.slice();
  longer[5 + at] = 0xff;
  assert.deepEqual(readClientHelloSni(longer), { ok: false, reason: "malformed" });
  // A zero-length record.
  assert.deepEqual(readClientHelloSni(new Uint8Array([0x16, 0x03, 0x01, 0, 0])), { ok: false, reason: "malformed" });
  // A record longer than TLS allows.
  assert.deepEqual(readClientHelloSni(new Uint8Array([0x16, 0x03, 0x01, 0x48, 0x01])), { ok: false, reason: "malformed" });
});

test("a ClientHello above the bound is refused from its header alone", () => {
  const size = MAX_CLIENT_HELLO_BYTES + 1;
  const head = new Uint8Array([0x16, 0x03, 0x01, 0x00, 0x04, 0x01, (size >> 16) & 0xff, (size >> 8) & 0xff, size & 0xff]);
  assert.deepEqual(readClientHelloSni(head), { ok: false, reason: "too_large" });
});

/** A minimal ClientHello (TLS 1.2 fields) whose extensions are given raw. */
function helloWith(extensions: number[]): Uint8Array {
  const body = [0x03, 0x03, ...new Array(32).fill(7), 0x00, 0x00, 0x02, 0x13, 0x01, 0x01, 0x00, extensions.length >> 8, extensions.length & 0xff, ...extensions];
  const msg = [0x01, 0, body.length >> 8, body.length & 0xff, ...body];
  return new Uint8Array([0x16, 0x03, 0x01, msg.length >> 8, msg.length & 0xff, ...msg]);
}

function sniExtension(names: (readonly [number, string])[]): number[] {
  const list = names.flatMap(([type, name]) => [type, name.length >> 8, name.length & 0xff, ...Buffer.from(name, "latin1")]);
  const body = [list.length >> 8, list.length & 0xff, ...list];
  return [0x00, 0x00, body.length >> 8, body.length & 0xff, ...body];
}

test("server names that are not DNS host names are malformed", () => {
  assert.deepEqual(readClientHelloSni(helloWith(sniExtension([[0, "ok.example"]]))), { ok: true, sni: "ok.example" });
  for (const bad of ["trailing.dot.", "spa ce.example", "nul\x00.example", "[::1]", "-lead.example", "a..b"]) {
    assert.deepEqual(readClientHelloSni(helloWith(sniExtension([[0, bad]]))), { ok: false, reason: "malformed" }, bad);
  }
  // Two host names, or two server_name extensions.
  assert.deepEqual(readClientHelloSni(helloWith(sniExtension([[0, "a.example"], [0, "b.example"]]))), { ok: false, reason: "malformed" });
  const one = sniExtension([[0, "a.example"]]);
  assert.deepEqual(readClientHelloSni(helloWith([...one, ...one])), { ok: false, reason: "malformed" });
  // A name type other than host_name is skipped.
  assert.deepEqual(readClientHelloSni(helloWith(sniExtension([[7, "opaque"]]))), { ok: true, sni: undefined });
});

test("random bytes behind a handshake record header never throw", () => {
  let seed = 42;
  const random = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) & 0xff);
  for (let i = 0; i < 2000; i++) {
    const length = 1 + (random() << 2);
    const data = new Uint8Array(5 + length);
    data.set([0x16, 0x03, 0x01, length >> 8, length & 0xff]);
    for (let j = 5; j < data.length; j++) data[j] = random();
    if (i % 2 === 0) data[5] = 0x01;
    const r = readClientHelloSni(data);
    assert.ok(r.ok ? r.sni === undefined || typeof r.sni === "string" : ["incomplete", "malformed", "too_large"].includes(r.reason));
  }
});
