import http from "node:http";
import type { AddressInfo } from "node:net";
import { parseArgs } from "node:util";

/**
 * startSampleApp runs a small HTTP service that answers with who it is and what it received;
 * the demo mesh and the tests use it as an unmodified application.
 * @example
 * const app = await startSampleApp({ name: "orders", version: "v1", port: 0 });
 */
export async function startSampleApp(options: { name: string; version?: string; port: number; host?: string; socketPath?: string }) {
  const server = http.createServer((req, res) => {
    let bytes = 0;
    req.on("data", (chunk: Buffer) => (bytes += chunk.length));
    req.on("end", () => {
      const body = JSON.stringify({
        service: options.name,
        version: options.version ?? "v1",
        method: req.method,
        path: req.url,
        host: req.headers.host,
        bodyBytes: bytes,
        headers: req.headers,
      });
      res.writeHead(200, { "content-type": "application/json", "x-served-by": `${options.name}-${options.version ?? "v1"}` });
      res.end(body + "\n");
    });
  });
  await new Promise<void>((resolve) => {
    if (options.socketPath) server.listen(options.socketPath, resolve);
    else server.listen(options.port, options.host ?? "127.0.0.1", resolve);
  });
  const port = options.socketPath ? 0 : (server.address() as AddressInfo).port;
  return {
    port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split("/").pop()!)) {
  const { values } = parseArgs({ options: { name: { type: "string" }, version: { type: "string" }, port: { type: "string" }, host: { type: "string" }, socket: { type: "string" } } });
  const app = await startSampleApp({ name: values.name ?? "sample", version: values.version, port: Number(values.port ?? 8080), host: values.host, socketPath: values.socket });
  console.log(JSON.stringify({ msg: "sample app listening", name: values.name, port: app.port }));
}
