import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { readFileSync } from "node:fs";
import { watchProcess } from "./weft-process.ts";

const ROOT = resolve(import.meta.dirname, "../..");

export type RuntimeName = "node" | "bun" | "deno";

/** The command that runs a weft TypeScript entry on a runtime, as the README documents it. */
export function runtimeCommand(runtime: RuntimeName, entry: string): [string, string[]] {
  if (runtime === "bun") return [join(ROOT, "node_modules/.bin/bun"), [entry]];
  if (runtime === "deno") return [join(ROOT, "node_modules/.bin/deno"), ["run", "-A", "--unstable-no-legacy-abort", entry]];
  return [process.execPath, ["--import", "tsx", entry]];
}

/** The runtime a test gets when it names none: WEFT_TEST_RUNTIME (node, bun or deno), else node. */
export function defaultRuntime(): RuntimeName {
  const wanted = process.env.WEFT_TEST_RUNTIME;
  if (wanted === undefined || wanted === "") return "node";
  if (wanted === "node" || wanted === "bun" || wanted === "deno") return wanted;
  throw new Error(`WEFT_TEST_RUNTIME must be node, bun or deno, not "${wanted}"`);
}

export interface GatewayProcess {
  readonly pid: number;
  /** Bound port of each listener, in config order. */
  readonly ports: number[];
  readonly adminPort: number;
  readonly configFile: string;
  /** Rewrites the config file (the gateway reloads it). */
  writeConfig(config: unknown): Promise<void>;
  /** Resident set size of the gateway process, in bytes. */
  rss(): number;
  /** Lines the gateway logged (stderr) so far, parsed. */
  logs(): Record<string, unknown>[];
  /** Access-log lines (stdout) so far, parsed. */
  accessLog(): Record<string, unknown>[];
  stop(): Promise<void>;
}

/**
 * startGateway writes a config to a temp file and runs `weft gateway` on it in its own process,
 * resolving once every listener is bound.
 * @example
 * const gw = await startGateway({ services, gateways: { edge: { listeners: [{ port: 0, address: "127.0.0.1" }], routes } } });
 * const r = await request(gw.ports[0]!, { path: "/a" });
 */
export async function startGateway(config: unknown, options: { runtime?: RuntimeName; args?: string[]; env?: Record<string, string> } = {}): Promise<GatewayProcess> {
  const dir = await mkdtemp(join(tmpdir(), "weft-gw-"));
  const configFile = join(dir, "weft.config.ts");
  const write = (c: unknown) => writeFile(configFile, `export default ${JSON.stringify(c, null, 2)};\n`);
  await write(config);
  const listenerCount = (Object.values((config as { gateways: Record<string, { listeners: unknown[] }> }).gateways)[0]!).listeners.length;
  const [cmd, args] = runtimeCommand(options.runtime ?? defaultRuntime(), join(ROOT, "gateway/main.ts"));
  const child = spawn(cmd, [...args, "--config", configFile, "--admin", "127.0.0.1:0", ...(options.args ?? [])], {
    cwd: ROOT,
    env: { ...process.env, ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const ports: number[] = [];
  let adminPort = 0;
  const proc = watchProcess(child, "gateway", {
    onLog(entry) {
      if (entry.msg === "listening") ports.push(entry.port as number);
      if (entry.msg === "admin listening") adminPort = entry.port as number;
    },
  });

  const deadline = Date.now() + 20_000;
  while (ports.length < listenerCount || adminPort === 0) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill("SIGKILL");
      await rm(dir, { recursive: true, force: true });
      throw new Error(`gateway did not start (exit ${child.exitCode}):\n${proc.output()}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }

  return {
    pid: child.pid!,
    ports,
    adminPort,
    configFile,
    writeConfig: write,
    rss() {
      const status = readFileSync(`/proc/${child.pid}/status`, "utf8");
      const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
      return kb * 1024;
    },
    logs: proc.logs,
    accessLog: proc.accessLog,
    async stop() {
      await proc.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
