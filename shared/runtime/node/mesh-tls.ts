import net from "node:net";
import tls from "node:tls";
import type { EventEmitter } from "node:events";
import { checkSvidLeaf, type SvidFailure } from "../../identity/index.ts";
import { MESH_TCP_ALPN, type MeshIdentity, type MeshListen, type MeshTlsMaterial, type PeerIdentity } from "../../proxy/index.ts";
import { sniffPreface } from "./h2-preface.ts";

/** The first byte of a TLS record carrying a handshake (ClientHello). */
const TLS_HANDSHAKE = 0x16;

/** Why a peer was turned away at the mesh port. */
export type MeshRefusal = SvidFailure | "no_certificate" | "tls_handshake_failed" | "plaintext_in_strict";

/** Takes a verified mesh connection that negotiated MESH_TCP_ALPN (raw TCP after a transport header). */
export type MeshTcpHandler = (socket: tls.TLSSocket, peer: PeerIdentity | undefined) => void;

/** Takes an HTTP/2 connection from the front, with the peer's verified identity (none for plaintext or no certificate). */
export type MeshH2Accept = (socket: net.Socket, peer: PeerIdentity | undefined) => void;

/** The TCP front of a mesh mTLS port: accepts, terminates mTLS (or passes plaintext in PERMISSIVE), hands HTTP on. */
export interface MeshFront {
  /** The socket server to listen on. */
  readonly server: net.Server;
  /** The verified SPIFFE ID behind an HTTP request's socket; undefined for plaintext. */
  peerOf(socket: object): PeerIdentity | undefined;
  /** Stops following certificate rotation (call after the server closed). */
  dispose(): void;
}

/**
 * meshTlsOptions gives the node:tls secure-context options for a proxy's SVID and bundle.
 * @example tls.createSecureContext(meshTlsOptions(identity.current()!))
 */
export function meshTlsOptions(material: MeshTlsMaterial): { key: string; cert: string; ca: string[] } {
  return { key: material.keyPem, cert: material.chainPem.join(""), ca: [...material.bundlePem] };
}

/**
 * meshClientTlsOptions gives the node:tls client options of a mesh call: this proxy's SVID, its trust
 * bundle, and a server that must be the expected workload (`expectedId`), with the ALPN protocols offered.
 * @example tls.connect({ host, port, ...meshClientTlsOptions(identity, "spiffe://td/ns/default/sa/api", ["h2", "http/1.1"]) })
 */
export function meshClientTlsOptions(identity: MeshIdentity, expectedId: string, alpn: string[]): tls.ConnectionOptions {
  const trustDomain = identity.trustDomain;
  return {
    ...meshTlsOptions(identity.current()!),
    minVersion: "TLSv1.2",
    ALPNProtocols: alpn,
    // node:tls has verified the chain against the bundle; the peer must also be the expected workload.
    checkServerIdentity: (_host: string, cert: tls.PeerCertificate) => {
      const r = checkSvidLeaf(new Uint8Array(cert.raw), { trustDomain, expectedId });
      return r.ok ? undefined : Object.assign(new Error(`peer certificate refused: ${r.reason}`), { code: `svid_${r.reason}` });
    },
  };
}

/**
 * createMeshFront terminates mesh mTLS in front of an HTTP server (one of node:http's, which then sees
 * the decrypted socket): the client chain must lead to the trust bundle and its leaf must be an
 * X.509-SVID of the trust domain. New connections get the newest certificate after a rotation. In
 * PERMISSIVE mode plaintext, and TLS without a client certificate, also reach `http` (with no peer).
 * With `h2`, ALPN also offers h2 and such connections (and h2c prior knowledge on PERMISSIVE
 * plaintext) go to `h2` with the same peer identity.
 * With `tcp`, ALPN also offers MESH_TCP_ALPN and such connections (raw TCP) go to `tcp`.
 * @example
 * const front = createMeshFront(mesh, httpServer, h2Sessions.accept);
 * front.server.listen(15006);
 */
export function createMeshFront(mesh: MeshListen, http: EventEmitter, h2?: MeshH2Accept, tcp?: MeshTcpHandler): MeshFront {
  const onRefused = (reason: MeshRefusal, remote: string) => mesh.onRefused?.(reason, remote);
  const material = mesh.identity.current();
  if (!material) throw new TypeError("a mesh listener needs the proxy's certificate first");
  const peers = new WeakMap<object, PeerIdentity>();
  const trustDomain = mesh.identity.trustDomain;

  /** Hands a TLS connection on by the protocol ALPN chose; a new protocol is one more case here and in `alpn`. */
  function dispatch(socket: tls.TLSSocket, peer: PeerIdentity | undefined): void {
    switch (socket.alpnProtocol) {
      case "h2":
        h2!(socket, peer);
        return;
      case MESH_TCP_ALPN:
        tcp!(socket, peer);
        return;
      default:
        if (peer) peers.set(socket, peer);
        http.emit("connection", socket);
    }
  }
  const alpn = [...(h2 ? ["h2", "http/1.1"] : ["http/1.1"]), ...(tcp ? [MESH_TCP_ALPN] : [])];

  // Client certificates are requested but checked here rather than by the handshake, so that
  // PERMISSIVE can also take TLS without one: a presented certificate must still verify.
  const secure = tls.createServer(
    { ...meshTlsOptions(material), requestCert: true, rejectUnauthorized: false, minVersion: "TLSv1.2", ALPNProtocols: alpn },
    (socket) => {
      const cert = socket.getPeerCertificate();
      const presented = cert !== null && cert !== undefined && cert.raw !== undefined;
      if (!presented) {
        if (mesh.mode() === "PERMISSIVE") dispatch(socket, undefined);
        else refuse(socket, "no_certificate");
        return;
      }
      if (!socket.authorized) return refuse(socket, "untrusted");
      const check = checkSvidLeaf(new Uint8Array(cert.raw), { trustDomain });
      if (!check.ok) return refuse(socket, check.reason);
      dispatch(socket, { spiffeId: check.spiffeId });
    },
  );
  function refuse(socket: net.Socket, reason: MeshRefusal) {
    onRefused(reason, socket.remoteAddress ?? "");
    socket.destroy();
  }
  secure.on("tlsClientError", (_err: Error, socket: tls.TLSSocket) => refuse(socket, "tls_handshake_failed"));
  const unsubscribe = mesh.identity.onUpdate((next) => secure.setSecureContext(meshTlsOptions(next)));

  // noDelay as node:http sets it on its own sockets: a streamed response must not wait on Nagle.
  const server = net.createServer({ noDelay: true }, (socket) => {
    socket.on("error", () => socket.destroy());
    // Look at the first byte, put it back, and hand the socket to TLS or (PERMISSIVE only) plain HTTP.
    socket.once("data", (chunk: Buffer) => {
      socket.pause();
      socket.unshift(chunk);
      if (chunk[0] === TLS_HANDSHAKE) secure.emit("connection", socket);
      else if (mesh.mode() !== "PERMISSIVE") {
        refuse(socket, "plaintext_in_strict");
        return;
      } else if (h2) {
        // PERMISSIVE plaintext may be HTTP/2 with prior knowledge (h2c) as well as HTTP/1.1.
        sniffPreface(socket, (s) => h2(s, undefined), http);
        return;
      } else http.emit("connection", socket);
      process.nextTick(() => socket.resume());
    });
  });

  // node:http tracks connections (for closeIdleConnections and its header timeouts) from its
  // 'listening' event on; this server never listens itself, the front does.
  server.once("listening", () => http.emit("listening"));

  return {
    server,
    peerOf: (socket) => peers.get(socket),
    dispose: unsubscribe,
  };
}
