import { execFile, execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import https from "node:https";
import type { AddressInfo, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TLSSocket } from "node:tls";
import { promisify } from "node:util";

const run = promisify(execFile);

export interface SelfSigned {
  readonly certFile: string;
  readonly keyFile: string;
  /** The certificate (PEM), for a client's `ca`. */
  readonly cert: string;
  readonly key: string;
}

/**
 * selfSignedCertificate makes a self-signed P-256 certificate for one DNS name with openssl (localhost also gets IP 127.0.0.1), as <name>.crt and <name>.key in `dir`.
 * @example
 * const tls = selfSignedCertificate(dir);
 * const listener = { port: 0, address: "127.0.0.1", protocol: "https", tls: { certFile: tls.certFile, keyFile: tls.keyFile } };
 */
export function selfSignedCertificate(dir: string, name = "localhost"): SelfSigned {
  const keyFile = join(dir, `${name}.key`);
  const certFile = join(dir, `${name}.crt`);
  const altNames = name === "localhost" ? "DNS:localhost,IP:127.0.0.1" : `DNS:${name}`;
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
    "-subj", `/CN=${name}`, "-addext", `subjectAltName=${altNames}`, "-keyout", keyFile, "-out", certFile,
  ], { stdio: "ignore" });
  return { certFile, keyFile, cert: readFileSync(certFile, "utf8"), key: readFileSync(keyFile, "utf8") };
}

export interface ExternalCa {
  /** Folder holding ca.pem (the CA certificate) and the leaves made with `leaf`. */
  readonly dir: string;
  /** Path of the CA certificate (PEM), for a config's tls.caFile. */
  readonly caFile: string;
  /** Issues a server certificate for `host` (DNS SAN); returns its PEM certificate and key. */
  leaf(host: string): Promise<{ cert: string; key: string }>;
  /** Removes the folder. */
  remove(): Promise<void>;
}

/**
 * createExternalCa makes a CA of its own with openssl (nothing to do with the mesh CA), standing in
 * for the public PKI an external API uses.
 * @example
 * const ca = await createExternalCa("acme");
 * const server = await startExternalHttps(await ca.leaf("api.external.test"));
 */
export async function createExternalCa(name: string): Promise<ExternalCa> {
  const dir = await mkdtemp(join(tmpdir(), `weft-ext-ca-${name}-`));
  const caKey = join(dir, "ca.key");
  const caFile = join(dir, "ca.pem");
  await run("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", caKey, "-out", caFile, "-days", "2", "-subj", `/CN=${name} test root`]);
  let serial = 0;
  return {
    dir,
    caFile,
    async leaf(host) {
      serial += 1;
      const key = join(dir, `leaf${serial}.key`);
      const csr = join(dir, `leaf${serial}.csr`);
      const cert = join(dir, `leaf${serial}.pem`);
      const ext = join(dir, `leaf${serial}.ext`);
      await run("openssl", ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", csr, "-subj", `/CN=${host}`]);
      await writeFile(ext, `subjectAltName=DNS:${host}\nextendedKeyUsage=serverAuth\n`);
      await run("openssl", ["x509", "-req", "-in", csr, "-CA", caFile, "-CAkey", caKey, "-CAcreateserial", "-out", cert, "-days", "1", "-extfile", ext]);
      return { cert: await readFile(cert, "utf8"), key: await readFile(key, "utf8") };
    },
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}

/** One TLS connection the external server accepted. */
export interface ExternalConnection {
  /** The SNI the client sent (undefined: none). */
  readonly servername: string | undefined;
  readonly remoteAddress: string;
  readonly remotePort: number;
}

export interface ExternalHttps {
  readonly port: number;
  readonly connections: ExternalConnection[];
  /** Requests served: method, path, headers, and the connection each came on. */
  readonly requests: { method: string; url: string; headers: Record<string, unknown>; connection: ExternalConnection }[];
  close(): Promise<void>;
}

/**
 * startExternalHttps runs an HTTPS server on 127.0.0.1 with the given certificate; it records every
 * TLS connection (SNI, peer address) and request, and answers with JSON naming what it saw.
 * @example
 * const ext = await startExternalHttps(await ca.leaf("api.external.test"));
 */
export async function startExternalHttps(tls: { cert: string; key: string }): Promise<ExternalHttps> {
  const connections: ExternalConnection[] = [];
  const requests: ExternalHttps["requests"] = [];
  const bySocket = new WeakMap<object, ExternalConnection>();
  const sockets = new Set<Socket>();
  const server = https.createServer({ cert: tls.cert, key: tls.key }, (req, res) => {
    const connection = bySocket.get(req.socket)!;
    requests.push({ method: req.method!, url: req.url!, headers: req.headers, connection });
    req.resume();
    req.on("end", () => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ external: true, url: req.url, servername: connection.servername, host: req.headers.host }));
    });
  });
  server.on("secureConnection", (socket: TLSSocket) => {
    const servername = (socket as TLSSocket & { servername?: string | false }).servername;
    const c = { servername: servername || undefined, remoteAddress: socket.remoteAddress ?? "", remotePort: socket.remotePort ?? 0 };
    connections.push(c);
    bySocket.set(socket, c);
  });
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as AddressInfo).port,
    connections,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
