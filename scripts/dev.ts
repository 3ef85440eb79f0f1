import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { startSampleApp } from "../examples/apps/sample-app.ts";
import { main as gateway } from "../gateway/main.ts";

const USAGE = `usage: weft dev [--config examples/weft.config.ts]

Runs a demo on loopback: the two sample services of examples/weft.config.ts
(web on 127.0.0.1:9001, api on 127.0.0.1:9002) behind an ingress gateway on 127.0.0.1:8080.`;

/**
 * main runs `weft dev`: sample services plus a gateway on the example config, in one process.
 * @example
 * const stop = await main([]);
 */
export async function main(argv: string[]): Promise<() => Promise<void>> {
  const { values } = parseArgs({ args: argv, options: { config: { type: "string" }, help: { type: "boolean" } } });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const config = resolve(values.config ?? new URL("../examples/weft.config.ts", import.meta.url).pathname);
  const web = await startSampleApp({ name: "web", port: 9001 });
  const api = await startSampleApp({ name: "api", port: 9002 });
  const stopGateway = await gateway(["--config", config, "--admin", "127.0.0.1:15000"]);
  console.log(`
weft dev is running (config: ${config})
  curl http://127.0.0.1:8080/          → web
  curl http://127.0.0.1:8080/api/items → api (prefix rewritten to /items)
  curl http://127.0.0.1:8080/ping      → answered by the gateway
  curl http://127.0.0.1:15000/config_dump
Ctrl-C stops everything.`);
  return async () => {
    await stopGateway();
    await web.close();
    await api.close();
  };
}
