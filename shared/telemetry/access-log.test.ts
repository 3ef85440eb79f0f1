import { test } from "node:test";
import assert from "node:assert/strict";
import { ACCESS_LOG_FIELDS, compileTextFormat, createAccessLog, createBufferedSink, formatJsonLine, redactQuery } from "./access-log.ts";
import type { TelemetryRecord } from "./record.ts";

const base: TelemetryRecord = {
  startTimeMs: Date.UTC(2025, 0, 2, 3, 4, 5, 67),
  durationMs: 12,
  upstreamDurationMs: 9,
  method: "GET",
  authority: "shop.example",
  path: "/cart",
  protocol: "HTTP/1.1",
  status: 200,
  route: "cart",
  service: "cart",
  upstream: "127.0.0.1:9001",
  bytesIn: 5,
  bytesOut: 42,
  requestId: "7f1c",
  traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
  spanId: "00f067aa0ba902b7",
  sourcePrincipal: "spiffe://cluster.local/ns/default/sa/web",
  clientIp: "203.0.113.7",
  userAgent: "curl/8",
  attempts: 2,
};

test("a JSON line carries every field in order, absent ones as null, and parses back", () => {
  const line = formatJsonLine(base);
  const parsed = JSON.parse(line) as Record<string, unknown>;
  assert.deepEqual(Object.keys(parsed), [...ACCESS_LOG_FIELDS]);
  assert.deepEqual(parsed, {
    start_time: "2025-01-02T03:04:05.067Z",
    method: "GET",
    authority: "shop.example",
    path: "/cart",
    protocol: "HTTP/1.1",
    status: 200,
    reason: null,
    route: "cart",
    upstream_service: "cart",
    upstream_host: "127.0.0.1:9001",
    bytes_received: 5,
    bytes_sent: 42,
    duration_ms: 12,
    upstream_duration_ms: 9,
    attempts: 2,
    request_id: "7f1c",
    trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
    span_id: "00f067aa0ba902b7",
    source_principal: "spiffe://cluster.local/ns/default/sa/web",
    request_principal: null,
    client_ip: "203.0.113.7",
    user_agent: "curl/8",
    grpc_status: null,
  });
  const local = JSON.parse(formatJsonLine({ ...base, route: undefined, service: undefined, upstream: undefined, upstreamDurationMs: undefined, status: 404, reason: "no_route" }));
  assert.equal(local.reason, "no_route");
  assert.equal(local.route, null);
  assert.equal(local.upstream_duration_ms, null);
  const grpcCall = JSON.parse(formatJsonLine({ ...base, protocol: "HTTP/2", grpcStatus: 5 }));
  assert.equal(grpcCall.grpc_status, 5);
});

test("start_time stays right across seconds and for every millisecond width", () => {
  for (const ms of [0, 7, 45, 999, 1000, 1001, 59_999, 86_400_000 + 123]) {
    const t = Date.UTC(2025, 5, 30, 23, 59, 0, 0) + ms;
    assert.equal(JSON.parse(formatJsonLine({ ...base, startTimeMs: t })).start_time, new Date(t).toISOString());
  }
});

test("hostile values (quotes, newlines, control characters, lone surrogates) cannot break or forge a line", () => {
  const nasty = 'x"\n{"status":999}\\\u0000\ud800';
  const line = formatJsonLine({ ...base, path: `/${nasty}`, userAgent: nasty, authority: nasty });
  assert.ok(!line.includes("\n"));
  const parsed = JSON.parse(line);
  assert.equal(parsed.user_agent, nasty);
  assert.equal(parsed.status, 200);
  const text = compileTextFormat("%USER_AGENT% %STATUS%");
  assert.ok(text.ok);
  const out = text.format({ ...base, userAgent: "a\nb\r\u0007c" });
  assert.equal(out, "a\\x0ab\\x0d\\x07c 200");
});

test("secret-looking query parameters are redacted and everything else is kept", () => {
  assert.equal(redactQuery("/a"), "/a");
  assert.equal(redactQuery("/a?x=1&y=2"), "/a?x=1&y=2");
  assert.equal(redactQuery("/cb?code=abc&state=xyz"), "/cb?code=[redacted]&state=xyz");
  assert.equal(
    redactQuery("/a?access_token=t&API_KEY=k&password=p&X-Amz-Signature=s&sig=1&session_id=2&key=3&page=4"),
    "/a?access_token=[redacted]&API_KEY=[redacted]&password=[redacted]&X-Amz-Signature=[redacted]&sig=[redacted]&session_id=[redacted]&key=[redacted]&page=4",
  );
  assert.equal(redactQuery("/a?access%5Ftoken=t&flag"), "/a?access%5Ftoken=[redacted]&flag");
  assert.equal(JSON.parse(formatJsonLine({ ...base, path: "/x?token=secret&q=1" })).path, "/x?token=[redacted]&q=1");
});

test("a text template fills %FIELD% slots, writes - for absent values and %% as a percent sign", () => {
  const r = compileTextFormat("[%START_TIME%] \"%METHOD% %PATH% %PROTOCOL%\" %STATUS% %REASON% %ROUTE% %DURATION_MS%ms 100%%");
  assert.ok(r.ok);
  assert.equal(r.format({ ...base, path: "/p?token=x" }), '[2025-01-02T03:04:05.067Z] "GET /p?token=[redacted] HTTP/1.1" 200 - cart 12ms 100%');
  assert.deepEqual(compileTextFormat("%METHOD% %NOPE%"), { ok: false, reason: "unknown_field", field: "NOPE" });
  const plain = compileTextFormat("no fields");
  assert.ok(plain.ok);
  assert.equal(plain.format(base), "no fields");
});

test("the access log follows its format: json, text, off; a bad template is refused and the old format kept", () => {
  const lines: string[] = [];
  const log = createAccessLog({ write: (l) => lines.push(l), format: "json" });
  log.log(base);
  assert.equal(JSON.parse(lines[0]!).status, 200);
  assert.deepEqual(log.setFormat({ text: "%STATUS% %ROUTE%" }), { ok: true });
  log.log(base);
  assert.equal(lines[1], "200 cart");
  assert.deepEqual(log.setFormat({ text: "%BOGUS%" }), { ok: false, reason: "unknown_field", field: "BOGUS" });
  log.log(base);
  assert.equal(lines[2], "200 cart");
  log.setFormat("off");
  log.log(base);
  assert.equal(lines.length, 3);
  assert.throws(() => createAccessLog({ write: () => {}, format: { text: "%BOGUS%" } }), TypeError);
});

test("the buffered sink writes once per scheduled turn, flushes early when full, and on demand", () => {
  const chunks: string[] = [];
  const turns: (() => void)[] = [];
  const sink = createBufferedSink({ write: (c) => chunks.push(c), schedule: (fn) => turns.push(fn), maxBufferChars: 20 });
  sink.write("a");
  sink.write("b");
  assert.equal(chunks.length, 0);
  assert.equal(turns.length, 1, "one flush scheduled for many lines");
  turns.shift()!();
  assert.deepEqual(chunks, ["a\nb\n"]);
  sink.write("0123456789");
  sink.write("0123456789");
  assert.deepEqual(chunks.at(-1), "0123456789\n0123456789\n", "a full buffer flushes at once");
  sink.write("tail");
  sink.flush();
  assert.equal(chunks.at(-1), "tail\n");
  for (const fn of turns.splice(0)) fn();
  assert.equal(chunks.length, 3, "a scheduled flush with nothing queued writes nothing");
});

test("the buffered sink drops and counts lines while the output is backed up", () => {
  const chunks: string[] = [];
  let pending = 0;
  let dropped = 0;
  const sink = createBufferedSink({
    write: (c) => chunks.push(c),
    schedule: () => {},
    pendingBytes: () => pending,
    maxPendingBytes: 100,
    onDrop: (n) => (dropped += n),
  });
  pending = 1000;
  sink.write("x");
  sink.write("y");
  sink.flush();
  assert.equal(dropped, 2);
  assert.equal(chunks.length, 0);
  pending = 0;
  sink.write("z");
  sink.flush();
  assert.deepEqual(chunks, ["z\n"]);
});
