import { readFileSync } from "node:fs";
import { createServer } from "node:net";

// Ports handed to another process are drawn below the kernel's ephemeral range. A port taken by
// binding to 0 comes from that range, and between our close and the other process's bind any
// outgoing connection on the machine (the tests make thousands) may take it as its local port.
const EPHEMERAL_LOW = ephemeralLow();
const LOWEST = 10_000;

/**
 * freePort finds a TCP port that is free on 127.0.0.1 right now, for a process that will bind it
 * itself: a random port below the ephemeral range that binds, so that no outgoing connection and no
 * other bind to port 0 can take it in the meantime.
 * @example
 * const port = await freePort();
 */
export async function freePort(): Promise<number> {
  for (let tries = 0; tries < 100; tries++) {
    const port = LOWEST + Math.floor(Math.random() * (EPHEMERAL_LOW - LOWEST));
    if (await bindable(port)) return port;
  }
  throw new Error(`no free port on 127.0.0.1 between ${LOWEST} and ${EPHEMERAL_LOW}`);
}

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once("error", () => resolve(false));
    server.listen({ host: "127.0.0.1", port, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

function ephemeralLow(): number {
  try {
    const low = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > LOWEST + 1000 ? low : 32_768;
  } catch {
    return 32_768; // Linux's default; not Linux: the same guess
  }
}
