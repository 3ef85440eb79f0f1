// A sidecar's --tcp-outbound listener for an external service without an egress gateway (Node
// runtime, real sockets and certificates): the app's TLS goes straight to the external server,
// unterminated (the client sees the server's own certificate), a ClientHello naming another host
// is refused (sni_mismatch) before anything is opened, and a tcp port pipes bytes.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import tls from "node:tls";
import { execFileSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compileMesh, validateMesh } from "../../shared/config/index.ts";
import { createExternalTcpForwardView, createTcpProxy, type TcpRecord } from "../../shared/proxy/index.ts";
import { listenTcpNode } from "../../shared/runtime/node/tcp-proxy.ts";

const dir = mkdtempSync(join(tmpdir(), "weft-ext-tcp-"));
const cleanups: (() => Promise<void> | void)[] = [() => rmSync(dir, { recursive: true, force: true })];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

function certificate(name: string): { cert: string; key: string } {
  const keyFile = join(dir, `${name}.key`);
  const certFile = join(dir, `${name}.crt`);
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
    "-subj", `/CN=${name}`, "-addext", `subjectAltName=DNS:${name}`, "-keyout", keyFile, "-out", certFile,
  ], { stdio: "ignore" });
  return { cert: readFileSync(certFile, "utf8"), key: readFileSync(keyFile, "utf8") };
}

/** A server (TLS with `material`, else plain) answering each chunk with "echo:" + chunk; counts TCP connections. */
async function startEcho(material?: { cert: string; key: string }) {
  const serve = (socket: net.Socket) => {
    socket.on("data", (d) => socket.write(`echo:${d.toString()}`));
    socket.on("error", () => {});
  };
  const server = material ? tls.createServer(material, serve) : net.createServer(serve);
  const sockets = new Set<net.Socket>();
  let connections = 0;
  server.on("connection", (s: net.Socket) => {
    connections += 1;
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  cleanups.push(() => new Promise<void>((r) => { for (const s of sockets) s.destroy(); server.close(() => r()); }));
  return { port: (server.address() as net.AddressInfo).port, connections: () => connections };
}

const material = certificate("api.external.test");
const api = await startEcho(material);
const raw = await startEcho();
const valid = validateMesh({
  externalServices: {
    api: { hosts: ["api.external.test"], ports: [{ port: 443, protocol: "tls" }], resolution: "STATIC", endpoints: [{ address: `127.0.0.1:${api.port}` }] },
    raw: { hosts: ["raw.external.test"], ports: [{ port: 7000, protocol: "tcp" }], resolution: "STATIC", endpoints: [{ address: `127.0.0.1:${raw.port}` }] },
  },
});
assert.ok(valid.ok, JSON.stringify(!valid.ok && valid.issues));
const snapshot = compileMesh(valid.value, 1);
const records: TcpRecord[] = [];
const proxy = createTcpProxy({ onConnectionDone: (r) => records.push(r) });

async function listen(host: string, port: number) {
  const view = createExternalTcpForwardView(snapshot, host, port);
  const listener = await listenTcpNode({ port: 0, address: "127.0.0.1", protocol: view.protocolOf(port)! }, { proxy, current: () => undefined, external: () => view });
  cleanups.push(async () => { await listener.close(); listener.destroy?.(); });
  return listener.port;
}

async function recordFor(match: (r: TcpRecord) => boolean): Promise<TcpRecord> {
  for (let i = 0; i < 100; i++) {
    const r = records.find(match);
    if (r) return r;
    await new Promise((res) => setTimeout(res, 20));
  }
  assert.fail("no record");
}

const tlsPort = await listen("api.external.test", 443);
const tcpPort = await listen("raw.external.test", 7000);

test("direct: the app's TLS reaches the external server unterminated: the handshake sees the server's own certificate, data both ways", async () => {
  const { reply, fingerprint } = await new Promise<{ reply: string; fingerprint: string }>((resolve, reject) => {
    const socket = tls.connect({ host: "127.0.0.1", port: tlsPort, servername: "api.external.test", ca: material.cert }, () => {
      const fingerprint = socket.getPeerCertificate().fingerprint256;
      socket.write("hi");
      socket.once("data", (d) => { socket.end(); resolve({ reply: d.toString(), fingerprint }); });
    });
    socket.on("error", reject);
  });
  assert.equal(reply, "echo:hi");
  assert.equal(fingerprint, new X509Certificate(material.cert).fingerprint256);
  const record = await recordFor((r) => r.sni === "api.external.test");
  assert.deepEqual([record.protocol, record.route, record.service, record.reason], ["tls", "api", "api|api.external.test:443", undefined]);
  assert.ok(record.bytesIn > 0 && record.bytesOut > 0);
});

test("direct: a ClientHello naming a host the service does not declare is refused (sni_mismatch) before any connection to the outside", async () => {
  const before = api.connections();
  await assert.rejects(new Promise((resolve, reject) => {
    const socket = tls.connect({ host: "127.0.0.1", port: tlsPort, servername: "evil.external.test", ca: material.cert }, () => resolve(undefined));
    socket.on("error", reject);
    socket.on("close", () => reject(new Error("closed")));
  }));
  const record = await recordFor((r) => r.sni === "evil.external.test");
  assert.equal(record.reason, "sni_mismatch");
  assert.equal(api.connections(), before);
});

test("direct: a tcp port pipes the app's bytes to the declared endpoint", async () => {
  const reply = await new Promise<string>((resolve, reject) => {
    const socket = net.connect(tcpPort, "127.0.0.1", () => socket.write("ping"));
    socket.once("data", (d) => { socket.end(); resolve(d.toString()); });
    socket.on("error", reject);
  });
  assert.equal(reply, "echo:ping");
  const record = await recordFor((r) => r.route === "raw");
  assert.deepEqual([record.protocol, record.service, record.upstream], ["tcp", "raw|raw.external.test:7000", `127.0.0.1:${raw.port}`]);
});
