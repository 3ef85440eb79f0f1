import { serve } from "@hono/node-server";
import type { AddressInfo } from "node:net";
import type { ProxyRuntime } from "../../proxy/index.ts";
import { listenNode } from "./server.ts";
import { withHttp2Upstreams } from "./h2-upstream.ts";
import { createNodeUpstreamClient } from "./upstream.ts";
import { createIdleGc } from "./idle-gc.ts";
import { listenTcpNode } from "./tcp-proxy.ts";

export * from "./body.ts";
export * from "./upstream.ts";
export * from "./server.ts";
export * from "./tcp-proxy.ts";

/** The Node.js runtime: node:http listeners and upstreams on the hot path, @hono/node-server for small apps. */
export const nodeRuntime: ProxyRuntime = {
  name: "node",
  createUpstreamClient: () => withHttp2Upstreams(createNodeUpstreamClient()),
  requestLoad: createIdleGc(),
  listen: listenNode,
  listenTcp: listenTcpNode,
  serveFetch(handler, { port, address }) {
    return new Promise((resolve, reject) => {
      const server = serve({ fetch: handler, port, hostname: address, overrideGlobalObjects: false }, (info: AddressInfo) => {
        resolve({
          port: info.port,
          close: () => new Promise<void>((done) => server.close(() => done())),
        });
      });
      server.once("error", reject);
    });
  },
};
