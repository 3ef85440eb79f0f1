import { createServer } from "node:net";

/**
 * freePort asks the kernel for a TCP port that is free on 127.0.0.1 right now (bind to 0, read, close).
 * @example
 * const port = await freePort();
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once("error", reject);
    server.listen({ host: "127.0.0.1", port: 0, exclusive: true }, () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close((err) => (err || port === 0 ? reject(err ?? new Error("no port assigned")) : resolve(port)));
    });
  });
}
