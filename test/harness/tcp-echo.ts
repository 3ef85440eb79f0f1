import net from "node:net";

export interface TcpEcho {
  readonly port: number;
  readonly address: string;
  /** How many connections the server ever accepted. */
  accepted(): number;
  /** Destroys open connections and closes the server. */
  close(): Promise<void>;
}

/**
 * startTcpEcho runs a TCP server on 127.0.0.1 that echoes every byte back and counts the connections it accepted.
 * @example
 * const echo = await startTcpEcho();
 * assert.deepEqual(await echoThrough(echo.port, Buffer.from("hi")), Buffer.from("hi"));
 */
export async function startTcpEcho(): Promise<TcpEcho> {
  const sockets = new Set<net.Socket>();
  let accepted = 0;
  const server = net.createServer((socket) => {
    accepted++;
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    socket.pipe(socket);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    address: `127.0.0.1:${port}`,
    accepted: () => accepted,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/**
 * echoThrough writes the payload on a new connection and reads until every byte is back; "closed" if the connection ends first.
 * @example
 * const back = await echoThrough(gatewayPort, payload);
 * assert.ok(back !== "closed" && back.equals(payload));
 */
export function echoThrough(port: number, payload: Buffer): Promise<Buffer | "closed"> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    let length = 0;
    socket.on("data", (d: Buffer) => {
      chunks.push(d);
      length += d.length;
      if (length >= payload.length) {
        socket.end();
        resolve(Buffer.concat(chunks));
      }
    });
    socket.on("error", () => {});
    socket.on("close", () => resolve("closed"));
    socket.write(payload);
  });
}
