import net from "node:net";
import tls from "node:tls";
import type { EventEmitter } from "node:events";
import { checkSvidLeaf, type SvidFailure } from "../../identity/index.ts";
import type { MeshListen, MeshTlsMaterial, PeerIdentity } from "../../proxy/index.ts";

/** The first byte of a TLS record carrying a handshake (ClientHello). */
const TLS_HANDSHAKE = 0x16;

/** Why a peer was turned away at the mesh port. */
export type MeshRefusal = SvidFailure | "no_certificate" | "tls_handshake_failed" | "plaintext_in_strict";

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
 * createMeshFront terminates mesh mTLS in front of an HTTP server (one of node:http's, which then sees
 * the decrypted socket): the client chain must lead to the trust bundle and its leaf must be an
 * X.509-SVID of the trust domain. New connections get the newest certificate after a rotation. In
 * PERMISSIVE mode plaintext, and TLS without a client certificate, also reach `http` (with no peer).
 * @example
 * const front = createMeshFront(mesh, httpServer);
 * front.server.listen(15006);
 */
export function createMeshFront(mesh: MeshListen, http: EventEmitter): MeshFront {
  const onRefused = (reason: MeshRefusal, remote: string) => mesh.onRefused?.(reason, remote);
  const material = mesh.identity.current();
  if (!material) throw new TypeError("a mesh listener needs the proxy's certificate first");
  const peers = new WeakMap<object, PeerIdentity>();
  const trustDomain = mesh.identity.trustDomain;

  // Client certificates are requested but checked here rather than by the handshake, so that
  // PERMISSIVE can also take TLS without one: a presented certificate must still verify.
  const secure = tls.createServer(
    { ...meshTlsOptions(material), requestCert: true, rejectUnauthorized: false, minVersion: "TLSv1.2", ALPNProtocols: ["http/1.1"] },
    (socket) => {
      const cert = socket.getPeerCertificate();
      const presented = cert !== null && cert !== undefined && cert.raw !== undefined;
      if (!presented) {
        if (mesh.mode() === "PERMISSIVE") http.emit("connection", socket);
        else refuse(socket, "no_certificate");
        return;
      }
      if (!socket.authorized) return refuse(socket, "untrusted");
      const check = checkSvidLeaf(new Uint8Array(cert.raw), { trustDomain });
      if (!check.ok) return refuse(socket, check.reason);
      peers.set(socket, { spiffeId: check.spiffeId });
      http.emit("connection", socket);
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
      else if (mesh.mode() === "PERMISSIVE") http.emit("connection", socket);
      else {
        refuse(socket, "plaintext_in_strict");
        return;
      }
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
