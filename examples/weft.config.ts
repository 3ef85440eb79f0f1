import { defineMesh } from "../shared/config/index.ts";

// The demo mesh `npm start` (weft dev) runs: an ingress gateway in front of two sample services,
// each behind its sidecar, which registers the service's endpoint (so none are listed here).
// Edit it while `weft dev` runs and the mesh applies it; an invalid edit is refused with every
// problem listed, and the last good config keeps serving.
export default defineMesh({
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
      listeners: [{ port: 8080, address: "127.0.0.1" }],
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
});
