import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import type { UpstreamRequest, UpstreamResult } from "../../proxy/index.ts";
import { requestTo } from "../../../test/harness/mesh-request.ts";
import { createNodeBody } from "./body.ts";
import { createNodeH2UpstreamClient } from "./h2-upstream.ts";
import { readWhole, type NodeUpstreamResponse } from "./upstream.ts";

/** The bodiless GET of test/harness, over HTTP/2. */
function h2RequestTo(port: number, overrides: Partial<UpstreamRequest> = {}): UpstreamRequest {
  return requestTo(port, { http2: true, ...overrides });
}

/** Reads a response body and its trailers the way the node relays do. */
function readAll(result: UpstreamResult): Promise<{ status: number; headers: Record<string, unknown>; body: string; trailers: unknown; aborted: boolean }> {
  assert.ok(result.ok, JSON.stringify(result));
  const response = result.response as NodeUpstreamResponse;
  return readWhole(response).then((whole) => ({ status: response.status, headers: { ...response.headers }, body: whole.body.toString(), trailers: whole.trailers, aborted: whole.aborted }));
}

describe("HTTP/2 upstream client (h2c)", () => {
  let server: http2.Http2Server;
  let port: number;
  let sessions = 0;
  const held: (() => void)[] = [];
  const seen: http2.IncomingHttpHeaders[] = [];

  before(async () => {
    server = http2.createServer();
    server.on("session", () => sessions++);
    server.on("stream", (stream, headers) => {
      seen.push(headers);
      const path = headers[":path"];
      if (path === "/hold") {
        held.push(() => stream.respond({ ":status": 200 }, { endStream: true }));
        return;
      }
      if (path === "/trailers") {
        stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
        stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0", "grpc-message": "fine" }));
        stream.end("payload");
        return;
      }
      if (path === "/refuse") {
        stream.on("error", () => {});
        stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
        return;
      }
      if (path === "/headers-only") {
        stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "14" }, { endStream: true });
        return;
      }
      if (path === "/reset-mid-body") {
        stream.respond({ ":status": 200 });
        // destroy with an error sends RST_STREAM(INTERNAL_ERROR); close(code) would end the body cleanly first.
        stream.on("error", () => {});
        stream.write("half", () => setTimeout(() => stream.destroy(new Error("cut")), 20));
        return;
      }
      if (path === "/never") return;
      let bytes = 0;
      stream.on("data", (c: Buffer) => (bytes += c.length));
      stream.on("end", () => {
        stream.respond({ ":status": 200, "x-bytes": String(bytes) });
        stream.end(`${headers[":method"]} ${path}`);
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    await new Promise<void>((r) => server.close(() => r()));
  });

  test("concurrent requests to one endpoint share one HTTP/2 connection", async () => {
    const client = createNodeH2UpstreamClient();
    const before = sessions;
    try {
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => client.forward(h2RequestTo(port, { path: `/r${i}` }))));
      const answers = await Promise.all(results.map(readAll));
      assert.deepEqual(answers.map((a) => a.body), Array.from({ length: 20 }, (_, i) => `GET /r${i}`));
      assert.equal(sessions - before, 1);
    } finally {
      await client.close();
    }
  });

  test("a second connection opens only once the first has its maximum of streams in flight", async () => {
    const client = createNodeH2UpstreamClient({ maxConcurrentStreams: 2 });
    const before = sessions;
    try {
      const pending = Array.from({ length: 4 }, () => client.forward(h2RequestTo(port, { path: "/hold" })));
      const deadline = Date.now() + 2000;
      while (held.length < 4 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      for (const release of held.splice(0)) release();
      const results = await Promise.all(pending);
      assert.ok(results.every((r) => r.ok));
      assert.equal(sessions - before, 2);
    } finally {
      await client.close();
    }
  });

  test("the request goes out with :authority from Host, no connection-specific fields, and te only as trailers", async () => {
    const client = createNodeH2UpstreamClient();
    try {
      const r = await client.forward(h2RequestTo(port, { path: "/fields", headers: { host: "svc.test", connection: "keep-alive", te: "trailers", "x-a": "1" } }));
      await readAll(r);
      const h = seen.findLast((s) => s[":path"] === "/fields")!;
      assert.equal(h[":authority"], "svc.test");
      assert.equal(h.host, undefined);
      assert.equal(h.connection, undefined);
      assert.equal(h.te, "trailers");
      assert.equal(h["x-a"], "1");
      const gzip = await client.forward(h2RequestTo(port, { path: "/fields2", headers: { host: "svc.test", te: "gzip" } }));
      await readAll(gzip);
      assert.equal(seen.findLast((s) => s[":path"] === "/fields2")!.te, undefined);
    } finally {
      await client.close();
    }
  });

  test("a streamed request body arrives whole", async () => {
    const client = createNodeH2UpstreamClient();
    try {
      const chunks = Array.from({ length: 8 }, () => Buffer.alloc(8192, 1));
      const source = Object.assign(Readable.from(chunks), { headers: {} });
      const body = createNodeBody(source, { length: undefined });
      const r = await readAll(await client.forward(h2RequestTo(port, { method: "POST", path: "/upload", body })));
      assert.equal(r.headers["x-bytes"], String(8 * 8192));
    } finally {
      await client.close();
    }
  });

  test("response trailers arrive on message.trailers; pseudo-headers never reach the response headers", async () => {
    const client = createNodeH2UpstreamClient();
    try {
      const r = await readAll(await client.forward(h2RequestTo(port, { path: "/trailers" })));
      assert.equal(r.body, "payload");
      assert.deepEqual(r.trailers, { "grpc-status": "0", "grpc-message": "fine" });
      assert.deepEqual(Object.keys(r.headers).filter((n) => n.startsWith(":")), []);
    } finally {
      await client.close();
    }
  });

  test("a HEADERS-only answer (gRPC trailers-only) is marked headersOnly with its grpc-status in the headers", async () => {
    const client = createNodeH2UpstreamClient();
    try {
      const result = await client.forward(h2RequestTo(port, { path: "/headers-only" }));
      assert.ok(result.ok);
      assert.equal(result.response.headers["grpc-status"], "14");
      assert.equal((result.response as NodeUpstreamResponse).headersOnly, true);
      result.response.discard();
    } finally {
      await client.close();
    }
  });

  test("a stream the server refuses (REFUSED_STREAM) is upstream_reset with detail refused_stream, which retries treat as unseen", async () => {
    const client = createNodeH2UpstreamClient();
    try {
      const r = await client.forward(h2RequestTo(port, { path: "/refuse" }));
      assert.deepEqual(r, { ok: false, reason: "upstream_reset", detail: "refused_stream" });
    } finally {
      await client.close();
    }
  });

  test("a stream reset mid-body is reported as aborted, as node:http reports a cut response", async () => {
    const client = createNodeH2UpstreamClient();
    try {
      const r = await readAll(await client.forward(h2RequestTo(port, { path: "/reset-mid-body" })));
      assert.equal(r.aborted, true);
      assert.equal(r.body, "half");
    } finally {
      await client.close();
    }
  });

  test("a refused connection is upstream_connect_failure; no response headers in time is timeout", async () => {
    const client = createNodeH2UpstreamClient();
    try {
      const closed = http2.createServer();
      await new Promise<void>((r) => closed.listen(0, "127.0.0.1", r));
      const deadPort = (closed.address() as AddressInfo).port;
      await new Promise<void>((r) => closed.close(() => r()));
      const refused = await client.forward(h2RequestTo(deadPort));
      assert.equal(refused.ok ? "ok" : refused.reason, "upstream_connect_failure");
      const slow = await client.forward(h2RequestTo(port, { path: "/never", timeoutMs: 100 }));
      assert.equal(slow.ok ? "ok" : slow.reason, "timeout");
    } finally {
      await client.close();
    }
  });
});
