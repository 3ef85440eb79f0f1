import type { MeshDefinition } from "../../shared/config/index.ts";

// The compose demo mesh: examples/weft.config.ts with the gateway listening on every interface of its
// container. No endpoints are listed: each service's sidecar registers its own (web:15006, api:15006),
// and the gateway reaches them over mTLS.
// Edit it and run `docker compose -f deploy/compose/docker-compose.yml run --rm apply` to change
// routing live. The import is types only (erased at load), so the file also loads when it is mounted
// on its own at /config inside the container.
export default {
  trustDomain: "weft.local",
  services: {
    web: {
      ports: [{ port: 9001, protocol: "http" }],
      traffic: { loadBalancer: "least_request", timeoutMs: 5000, retries: { attempts: 2, retryOn: ["connect-failure", "gateway-error"] } },
    },
    api: {
      ports: [{ port: 9002, protocol: "http" }],
      traffic: { timeoutMs: 3000 },
    },
  },
  gateways: {
    ingress: {
      // 0.0.0.0 inside the gateway's container; docker publishes it on the host's 127.0.0.1:8080.
      listeners: [{ port: 8080, address: "0.0.0.0" }],
      routes: [
        { name: "ping", match: { path: { exact: "/ping" } }, directResponse: { status: 200, body: "pong\n" } },
        {
          name: "api",
          match: { path: { prefix: "/api" } },
          forward: { to: [{ service: "api" }], rewrite: { pathPrefix: "/" } },
          headers: { response: { set: { "x-weft-route": "api" } } },
        },
        { name: "web", match: { path: { prefix: "/" } }, forward: { to: [{ service: "web" }] } },
      ],
    },
  },
} satisfies MeshDefinition<"web" | "api">;
