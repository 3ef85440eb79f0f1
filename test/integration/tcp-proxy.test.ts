// TCP proxying and TLS passthrough through a gateway's tcp and tls listeners (Node runtime), with
// real sockets and real certificates: backends with their own certificates behind one tls listener
// (the client must see the backend's certificate: the gateway never terminates), unknown and
// missing SNI refused, and bytes both ways through a tcp listener.
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import tls from "node:tls";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compileMesh, validateMesh, type MeshInput } from "../../shared/config/index.ts";
import type { TcpRecord } from "../../shared/proxy/index.ts";
import { nodeRuntime } from "../../shared/runtime/node/index.ts";
import { createLogger } from "../../shared/telemetry/index.ts";
import { createIngress } from "../../gateway/ingress.ts";
import { cleanupsAfterAll } from "../harness/cleanup.ts";
import { selfSignedCertificate } from "../harness/external-tls.ts";
import { echoThrough, startTcpEcho } from "../harness/tcp-echo.ts";

const dir = mkdtempSync(join(tmpdir(), "weft-tcp-"));
const cleanups = cleanupsAfterAll();
cleanups.push(() => rmSync(dir, { recursive: true, force: true }));

/** A TLS server that answers every line with its own name, so a client knows whom it reached. */
async function startTlsBackend(name: string, material: { cert: string; key: string }) {
  const server = tls.createServer(material, (socket) => {
    socket.on("data", (d) => socket.write(`${name}:${d.toString()}`));
    socket.on("error", () => {});
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
  return port;
}

/** A plain TCP echo server, closed when the file's tests end. */
async function startEcho() {
  const echo = await startTcpEcho();
  cleanups.push(echo.close);
  return echo.port;
}

/** Runs a gateway from a config over the Node runtime; returns its listener ports and the connection records. */
async function startGateway(input: MeshInput) {
  const valid = validateMesh(input);
  if (!valid.ok) throw new Error(JSON.stringify(valid.issues));
  const records: TcpRecord[] = [];
  const waiters: (() => void)[] = [];
  const log = createLogger({ component: "test", level: "error", write: () => {} });
  const ingress = createIngress({
    runtime: nodeRuntime,
    name: "edge",
    log,
    onConnectionDone: (r) => {
      records.push({ ...r });
      for (const w of waiters.splice(0)) w();
    },
  });
  await ingress.apply(compileMesh(valid.value));
  cleanups.push(() => ingress.stop(1000));
  const until = async (n: number) => {
    while (records.length < n) await new Promise<void>((r) => waiters.push(r));
  };
  return { ports: [...ingress.ports.values()], records, until };
}

/** Connects with TLS and a server name; resolves with the server's certificate fingerprint and its first answer, or "refused". */
function tlsCall(port: number, servername: string | undefined, ca: string[]): Promise<{ fingerprint: string; answer: string } | "refused"> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: "127.0.0.1", port, servername, ca, checkServerIdentity: () => undefined });
    let fingerprint = "";
    socket.once("secureConnect", () => {
      fingerprint = socket.getPeerCertificate().fingerprint256;
      socket.write("hello");
    });
    socket.once("data", (d) => {
      resolve({ fingerprint, answer: d.toString() });
      socket.destroy();
    });
    socket.once("error", () => resolve("refused"));
    socket.once("close", () => resolve("refused"));
  });
}

function fingerprintOf(pem: string): string {
  return new X509Certificate(pem).fingerprint256;
}

const alpha = selfSignedCertificate(dir, "db.alpha.test");
const beta = selfSignedCertificate(dir, "api.beta.test");
const alphaPort = await startTlsBackend("alpha", alpha);
const betaPort = await startTlsBackend("beta", beta);

test("a tls listener routes by SNI without terminating: each client sees its backend's own certificate; unknown or missing SNI is refused", async () => {
  const gw = await startGateway({
    services: {
      alpha: { ports: [{ port: 443, protocol: "tls" }], endpoints: [{ address: `127.0.0.1:${alphaPort}` }] },
      beta: { ports: [{ port: 443, protocol: "tls" }], endpoints: [{ address: `127.0.0.1:${betaPort}` }] },
    },
    gateways: {
      edge: {
        listeners: [{ port: 0, address: "127.0.0.1", protocol: "tls" }],
        routes: [],
        tlsRoutes: [
          { name: "alpha", match: { sniHosts: ["db.alpha.test"] }, to: [{ service: "alpha" }] },
          { name: "beta", match: { sniHosts: ["*.beta.test"] }, to: [{ service: "beta" }] },
        ],
      },
    },
  });
  const port = gw.ports[0]!;
  const ca = [alpha.cert, beta.cert];
  const a = await tlsCall(port, "db.alpha.test", ca);
  const b = await tlsCall(port, "api.beta.test", ca);
  assert.deepEqual(a, { fingerprint: fingerprintOf(alpha.cert), answer: "alpha:hello" });
  assert.deepEqual(b, { fingerprint: fingerprintOf(beta.cert), answer: "beta:hello" });
  assert.equal(await tlsCall(port, "unknown.test", ca), "refused");
  assert.equal(await tlsCall(port, undefined, ca), "refused");
  await gw.until(4);
  const byName = (sni: string | undefined) => gw.records.find((r) => r.sni === sni);
  assert.deepEqual([byName("db.alpha.test")?.route, byName("db.alpha.test")?.upstream], ["alpha", `127.0.0.1:${alphaPort}`]);
  assert.deepEqual([byName("api.beta.test")?.route, byName("api.beta.test")?.service], ["beta", "beta"]);
  assert.equal(byName("unknown.test")?.reason, "no_route");
  assert.equal(gw.records.find((r) => r.sni === undefined)?.reason, "no_sni");
  for (const r of gw.records) assert.equal(r.protocol, "tls");
});

test("a tls listener closes a connection that does not start with a TLS handshake", async () => {
  const gw = await startGateway({
    services: { alpha: { ports: [{ port: 443, protocol: "tls" }], endpoints: [{ address: `127.0.0.1:${alphaPort}` }] } },
    gateways: { edge: { listeners: [{ port: 0, address: "127.0.0.1", protocol: "tls" }], routes: [], tlsRoutes: [{ match: { sniHosts: ["*"] }, to: [{ service: "alpha" }] }] } },
  });
  const answer = await new Promise<string>((resolve) => {
    const s = net.connect(gw.ports[0]!, "127.0.0.1", () => s.write("GET / HTTP/1.1\r\nhost: x\r\n\r\n"));
    let got = "";
    s.on("data", (d) => (got += d.toString()));
    s.on("close", () => resolve(got));
    s.on("error", () => {});
  });
  assert.equal(answer, "");
  await gw.until(1);
  assert.equal(gw.records[0]!.reason, "not_tls");
});

test("a tcp listener proxies bytes both ways to the route's destination, and logs one record per connection", async () => {
  const echoPort = await startEcho();
  const gw = await startGateway({
    services: { echo: { ports: [{ port: 7000, protocol: "tcp" }], endpoints: [{ address: `127.0.0.1:${echoPort}` }] } },
    gateways: { edge: { listeners: [{ port: 0, address: "127.0.0.1", protocol: "tcp" }], routes: [], tcpRoutes: [{ name: "echo", to: [{ service: "echo" }] }] } },
  });
  const payload = Buffer.alloc(3 * 1024 * 1024);
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 31 + 7) & 0xff;
  const back = await echoThrough(gw.ports[0]!, payload);
  assert.ok(back !== "closed" && back.equals(payload));
  await gw.until(1);
  const r = gw.records[0]!;
  assert.deepEqual([r.protocol, r.route, r.service, r.upstream, r.bytesIn, r.bytesOut, r.reason], ["tcp", "echo", "echo", `127.0.0.1:${echoPort}`, payload.length, payload.length, undefined]);
});

/** Opens a connection through the gateway and resolves once it is established and has echoed one byte. */
function openEcho(port: number): Promise<{ socket: net.Socket; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    const closed = new Promise<void>((r) => socket.once("close", () => r()));
    socket.on("error", () => {});
    socket.once("data", () => resolve({ socket, closed }));
    socket.once("close", () => reject(new Error("closed before the echo")));
    socket.write("x");
  });
}

test("limits: maxConnections closes the connection beyond it (overflow), an idle connection is closed after tcpIdleTimeoutMs, a dead endpoint is upstream_connect_failure", async () => {
  const echoPort = await startEcho();
  const gone = net.createServer();
  await new Promise<void>((r) => gone.listen(0, "127.0.0.1", r));
  const deadPort = (gone.address() as net.AddressInfo).port;
  await new Promise<void>((r) => gone.close(() => r()));
  const gw = await startGateway({
    services: {
      echo: { ports: [{ port: 7000, protocol: "tcp" }], endpoints: [{ address: `127.0.0.1:${echoPort}` }], traffic: { tcpIdleTimeoutMs: 300, connectionPool: { maxConnections: 1 } } },
    },
    gateways: {
      edge: {
        listeners: [{ port: 0, address: "127.0.0.1", protocol: "tcp" }],
        routes: [],
        tcpRoutes: [{ name: "echo", to: [{ service: "echo" }] }],
      },
    },
  });
  const first = await openEcho(gw.ports[0]!);
  await assert.rejects(openEcho(gw.ports[0]!), /closed before the echo/);
  await gw.until(1);
  assert.equal(gw.records[0]!.reason, "overflow");
  // Nothing either way: the first connection is closed by the idle timeout, freeing its slot.
  await first.closed;
  await gw.until(2);
  assert.equal(gw.records[1]!.reason, "idle_timeout");
  const third = await openEcho(gw.ports[0]!);
  third.socket.destroy();
  await gw.until(3);

  const dead = await startGateway({
    services: { dead: { ports: [{ port: 7000, protocol: "tcp" }], endpoints: [{ address: `127.0.0.1:${deadPort}` }] } },
    gateways: { edge: { listeners: [{ port: 0, address: "127.0.0.1", protocol: "tcp" }], routes: [], tcpRoutes: [{ to: [{ service: "dead" }] }] } },
  });
  await assert.rejects(openEcho(dead.ports[0]!), /closed before the echo/);
  await dead.until(1);
  assert.equal(dead.records[0]!.reason, "upstream_connect_failure");
});

test("a drain closes the tcp connections still open at the end of the grace period", async () => {
  const echoPort = await startEcho();
  const valid = validateMesh({
    services: { echo: { ports: [{ port: 7000, protocol: "tcp" }], endpoints: [{ address: `127.0.0.1:${echoPort}` }] } },
    gateways: { edge: { listeners: [{ port: 0, address: "127.0.0.1", protocol: "tcp" }], routes: [], tcpRoutes: [{ to: [{ service: "echo" }] }] } },
  });
  assert.ok(valid.ok);
  const records: TcpRecord[] = [];
  const ingress = createIngress({ runtime: nodeRuntime, name: "edge", log: createLogger({ component: "test", level: "error", write: () => {} }), onConnectionDone: (r) => records.push({ ...r }) });
  await ingress.apply(compileMesh(valid.value));
  const open = await openEcho([...ingress.ports.values()][0]!);
  await ingress.stop(200);
  await open.closed;
  for (let i = 0; i < 100 && records.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(records[0]?.reason, "drained");
});
