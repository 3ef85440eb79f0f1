import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants, rmSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { freePort } from "./ports.ts";

export interface NatsServerOptions {
  /** Port on 127.0.0.1 (default: a free one). */
  port?: number;
  /** Extra command-line arguments for nats-server. */
  args?: string[];
  /** How long to wait for the server to accept connections (default 10000). */
  startTimeoutMs?: number;
}

export interface NatsServer {
  /** `nats://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
  /** JetStream store directory (kept across restart and kill, removed by stop). */
  readonly storeDir: string;
  /** PID of the running server process (0 while it is down). */
  readonly pid: number;
  /** Stops the server process and removes the store directory. */
  stop(): Promise<void>;
  /** Stops the server process but keeps port and store, so `restart` brings the same server back. */
  kill(): Promise<void>;
  /** Stops the server process (if running) and starts it again on the same port and store. */
  restart(): Promise<void>;
}

const SEARCH_DIRS = ["/usr/sbin", "/usr/local/sbin", "/usr/local/bin", "/usr/bin"];

function findNatsServer(): string {
  const dirs = [...(process.env.PATH ?? "").split(delimiter).filter(Boolean), ...SEARCH_DIRS];
  for (const dir of dirs) {
    const candidate = join(dir, "nats-server");
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  throw new Error("nats-server is not installed (not on PATH nor in /usr/sbin); install it with: apt-get install -y nats-server");
}

function acceptsClients(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    let text = "";
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once("error", () => done(false));
    // A NATS server greets every client with an INFO line.
    socket.on("data", (chunk) => {
      text += chunk.toString();
      if (text.startsWith("INFO ")) done(true);
    });
  });
}

/**
 * startNatsServer runs a real `nats-server` with JetStream on 127.0.0.1 and resolves once it accepts clients.
 * @example
 * const nats = await startNatsServer();
 * const bus = await connectNatsBus({ servers: nats.url });
 * await nats.stop();
 */
export async function startNatsServer(options: NatsServerOptions = {}): Promise<NatsServer> {
  const binary = findNatsServer();
  const port = options.port ?? (await freePort());
  const storeDir = await mkdtemp(join(tmpdir(), "weft-nats-"));
  const startTimeoutMs = options.startTimeoutMs ?? 10_000;
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();

  // If the test process dies without calling stop, do not leave the server (or its store) behind.
  const onExit = () => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    rmSync(storeDir, { recursive: true, force: true });
  };
  process.once("exit", onExit);

  const launch = async () => {
    const proc = spawn(binary, ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", storeDir, ...(options.args ?? [])], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    child = proc;
    let log = "";
    proc.stderr!.on("data", (chunk: Buffer) => {
      if (log.length < 20_000) log += chunk.toString();
    });
    exited = new Promise((resolve) => proc.once("exit", () => resolve()));
    const deadline = Date.now() + startTimeoutMs;
    for (;;) {
      if (proc.exitCode !== null || proc.signalCode !== null) {
        throw new Error(`nats-server exited during start (code ${proc.exitCode}, signal ${proc.signalCode}):\n${log}`);
      }
      if (log.includes("Server is ready") && (await acceptsClients(port))) return;
      if (Date.now() > deadline) {
        await terminate();
        throw new Error(`nats-server did not accept connections on 127.0.0.1:${port} within ${startTimeoutMs} ms:\n${log}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  const terminate = async () => {
    const proc = child;
    if (!proc) return;
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    }
    child = undefined;
  };

  try {
    await launch();
  } catch (err) {
    process.removeListener("exit", onExit);
    await rm(storeDir, { recursive: true, force: true });
    throw err;
  }

  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    storeDir,
    get pid() {
      return child?.pid ?? 0;
    },
    async stop() {
      await terminate();
      process.removeListener("exit", onExit);
      await rm(storeDir, { recursive: true, force: true });
    },
    kill: terminate,
    async restart() {
      await terminate();
      await launch();
    },
  };
}
