import { rmSync } from "node:fs";
import net from "node:net";

export interface UnixSocketBridge {
  readonly path: string;
  /** Stops accepting, waits for open connections (up to `graceMs`), removes the socket file. */
  close(graceMs?: number): Promise<void>;
}

/**
 * bridgeUnixSocket accepts connections on a Unix socket and splices each one to a loopback TCP
 * listener, so the outbound side can be reached as a socket (capture without iptables). The
 * runtime adapters listen on TCP only; this keeps socket mode runtime-neutral (node:net exists on
 * Node, Bun and Deno) at the cost of one loopback hop.
 * @example
 * const bridge = await bridgeUnixSocket("/run/weft/outbound.sock", outboundListener.port);
 */
export async function bridgeUnixSocket(path: string, tcpPort: number): Promise<UnixSocketBridge> {
  // A socket file left by a process that died would make listen fail with EADDRINUSE.
  rmSync(path, { force: true });
  const open = new Set<net.Socket>();
  const server = net.createServer((downstream) => {
    open.add(downstream);
    const upstream = net.connect({ host: "127.0.0.1", port: tcpPort });
    upstream.setNoDelay(true);
    downstream.pipe(upstream);
    upstream.pipe(downstream);
    const done = () => {
      open.delete(downstream);
      downstream.destroy();
      upstream.destroy();
    };
    downstream.once("close", done);
    upstream.once("close", done);
    downstream.once("error", done);
    upstream.once("error", done);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(path, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return {
    path,
    async close(graceMs = 5000) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([closed, new Promise((r) => (timer = setTimeout(r, graceMs)))]);
      clearTimeout(timer);
      for (const socket of open) socket.destroy();
      rmSync(path, { force: true });
    },
  };
}
