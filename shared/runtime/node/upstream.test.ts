import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import { Readable } from "node:stream";
import { requestTo } from "../../../test/harness/mesh-request.ts";
import { createNodeBody } from "./body.ts";
import { createNodeUpstreamClient, readWhole, type NodeUpstreamResponse } from "./upstream.ts";

async function listening(server: net.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as AddressInfo).port;
}

function closed(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

test("a body and trailers that arrive before anyone reads them are delivered whole and in order", async () => {
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/plain", trailer: "grpc-status" });
    res.write("one,");
    res.write("two,");
    res.addTrailers({ "grpc-status": "0" });
    res.end("three");
  });
  const port = await listening(server);
  const client = createNodeUpstreamClient();
  try {
    const result = await client.forward(requestTo(port));
    assert.ok(result.ok);
    // Let the whole answer arrive before a reader is attached.
    await new Promise((resolve) => setTimeout(resolve, 50));
    const whole = await readWhole(result.response as NodeUpstreamResponse);
    assert.deepEqual([result.response.status, whole.body.toString(), whole.trailers?.["grpc-status"], whole.aborted], [200, "one,two,three", "0", false]);
  } finally {
    await client.close();
    await closed(server);
  }
});

test("a reader that asks for a pause gets the rest only after resume, never an empty chunk, and nothing is lost", async () => {
  const size = 4 * 1024 * 1024;
  const server = http.createServer((_req, res) => res.end(Buffer.alloc(size, 7)));
  const port = await listening(server);
  const client = createNodeUpstreamClient();
  try {
    const result = await client.forward(requestTo(port));
    assert.ok(result.ok);
    const response = result.response as NodeUpstreamResponse;
    let received = 0;
    let pauses = 0;
    let paused = false;
    await new Promise<void>((resolve, reject) => {
      response.read({
        data(chunk) {
          if (paused) reject(new Error("a chunk came while paused"));
          // undici's parser flush on resume reads nothing at first on Bun: a Web stream reader would spin on it.
          if (chunk.length === 0) reject(new Error("an empty chunk"));
          received += chunk.length;
          pauses++;
          paused = true;
          setImmediate(() => {
            paused = false;
            response.resume();
          });
          return false;
        },
        end: () => resolve(),
        abort: () => reject(new Error("aborted")),
      });
    });
    assert.equal(received, size);
    assert.ok(pauses > 1);
  } finally {
    await client.close();
    await closed(server);
  }
});

/** A keep-alive server that answers the first request of each connection and drops the connection at the second, unanswered. */
async function closingOnReuse(): Promise<{ port: number; requests: string[]; server: net.Server }> {
  const requests: string[] = [];
  const server = net.createServer((socket) => {
    let seen = 0;
    socket.on("data", (data) => {
      const text = data.toString("latin1");
      if (!text.includes("\r\n\r\n")) return;
      seen++;
      if (seen > 1) {
        socket.destroy();
        return;
      }
      requests.push(text.split(" ", 2).join(" "));
      socket.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nkeep-alive: timeout=60\r\n\r\nok");
    });
    socket.on("error", () => {});
  });
  return { port: await listening(server), requests, server };
}

test("an idempotent request whose pooled connection closes under it is sent once more on a new connection", async () => {
  const { port, requests, server } = await closingOnReuse();
  const client = createNodeUpstreamClient();
  try {
    for (const path of ["/a", "/b"]) {
      const result = await client.forward(requestTo(port, { path, maxConnections: 1 }));
      assert.ok(result.ok, result.ok ? undefined : result.reason);
      assert.equal((await readWhole(result.response as NodeUpstreamResponse)).body.toString(), "ok");
    }
    assert.deepEqual(requests, ["GET /a", "GET /b"]);
  } finally {
    await client.close();
    await closed(server);
  }
});

test("a POST whose pooled connection closes under it is not sent again: upstream_reset goes to the retry policy", async () => {
  const { port, requests, server } = await closingOnReuse();
  const client = createNodeUpstreamClient();
  try {
    const first = await client.forward(requestTo(port, { maxConnections: 1 }));
    assert.ok(first.ok);
    await readWhole(first.response as NodeUpstreamResponse);
    const body = createNodeBody(Object.assign(Readable.from([Buffer.from("x=1")]), { headers: { "content-length": "3" } }));
    const second = await client.forward(requestTo(port, { method: "POST", path: "/pay", headers: { host: "svc.test", "content-length": "3" }, body, maxConnections: 1 }));
    assert.deepEqual(second.ok ? "ok" : second.reason, "upstream_reset");
    assert.deepEqual(requests, ["GET /"]);
  } finally {
    await client.close();
    await closed(server);
  }
});

test("Expect: 100-continue is answered by the listener, never sent upstream; the request still goes through", async () => {
  let seen: http.IncomingHttpHeaders | undefined;
  const server = http.createServer((req, res) => {
    seen = req.headers;
    req.resume();
    req.on("end", () => res.end("done"));
  });
  const port = await listening(server);
  const client = createNodeUpstreamClient();
  try {
    const body = createNodeBody(Object.assign(Readable.from([Buffer.from("hello")]), { headers: { "content-length": "5" } }));
    const result = await client.forward(requestTo(port, { method: "PUT", headers: { host: "svc.test", expect: "100-continue", "content-length": "5" }, body }));
    assert.ok(result.ok, result.ok ? undefined : result.reason);
    assert.equal((await readWhole(result.response as NodeUpstreamResponse)).body.toString(), "done");
    assert.equal(seen?.expect, undefined);
    assert.equal(seen?.["content-length"], "5");
  } finally {
    await client.close();
    await closed(server);
  }
});

test("a request still waiting for a pooled connection when its time is up fails timeout and is never sent", async () => {
  const paths: string[] = [];
  let release: (() => void) | undefined;
  const server = http.createServer((req, res) => {
    paths.push(req.url!);
    if (req.url === "/hold") release = () => res.end("held");
    else res.end("ok");
  });
  const port = await listening(server);
  const client = createNodeUpstreamClient();
  try {
    const held = client.forward(requestTo(port, { path: "/hold", maxConnections: 1, timeoutMs: 5000 }));
    while (release === undefined) await new Promise((resolve) => setTimeout(resolve, 5));
    const queued = await client.forward(requestTo(port, { path: "/queued", maxConnections: 1, timeoutMs: 100 }));
    assert.deepEqual(queued.ok ? "ok" : queued.reason, "timeout");
    release();
    const first = await held;
    assert.ok(first.ok);
    await readWhole(first.response as NodeUpstreamResponse);
    const after = await client.forward(requestTo(port, { path: "/after", maxConnections: 1 }));
    assert.ok(after.ok);
    await readWhole(after.response as NodeUpstreamResponse);
    assert.deepEqual(paths, ["/hold", "/after"]);
  } finally {
    await client.close();
    await closed(server);
  }
});

test("a refused connection is upstream_connect_failure with the system's code", async () => {
  const server = net.createServer();
  const port = await listening(server);
  await closed(server);
  const client = createNodeUpstreamClient();
  try {
    const result = await client.forward(requestTo(port));
    assert.deepEqual(result.ok ? "ok" : [result.reason, result.detail], ["upstream_connect_failure", "ECONNREFUSED"]);
  } finally {
    await client.close();
  }
});

test("the pool of an endpoint that holds no connection and no request is let go, and a later request to it is served", async () => {
  const server = http.createServer((_req, res) => res.end("ok"));
  server.keepAliveTimeout = 100;
  const idle = await listening(server);
  // The busy endpoint answers only when told to.
  const held: http.ServerResponse[] = [];
  const busyServer = http.createServer((_req, res) => void held.push(res));
  const busy = await listening(busyServer);
  const client = createNodeUpstreamClient({ sweepMs: 50 });
  try {
    const first = await client.forward(requestTo(idle, { idleTimeoutMs: 100 }));
    assert.ok(first.ok);
    assert.equal((await readWhole(first.response as NodeUpstreamResponse)).body.toString(), "ok");
    const slow = client.forward(requestTo(busy, { timeoutMs: 10_000 }));
    assert.equal(client.poolCount, 2);
    // The idle endpoint's connection closes after 100 ms, and a sweep drops its pool; the pool
    // of the request still waiting for its answer stays.
    for (let i = 0; i < 100 && client.poolCount > 1; i++) await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(client.poolCount, 1);
    for (let i = 0; i < 100 && held.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    held[0]!.end("late");
    const late = await slow;
    assert.ok(late.ok);
    assert.equal((await readWhole(late.response as NodeUpstreamResponse)).body.toString(), "late");
    const again = await client.forward(requestTo(idle, { idleTimeoutMs: 100 }));
    assert.ok(again.ok);
    assert.equal((await readWhole(again.response as NodeUpstreamResponse)).body.toString(), "ok");
    assert.equal(client.poolCount, 2);
  } finally {
    await client.close();
    busyServer.closeAllConnections();
    await Promise.all([closed(server), closed(busyServer)]);
  }
});
