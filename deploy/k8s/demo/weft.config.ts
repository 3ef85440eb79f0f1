import type { MeshDefinition } from "../../../shared/config/index.ts";

// The Kubernetes demo mesh: examples/weft.config.ts with the endpoints at the demo Services.
// It becomes the weft-mesh-config ConfigMap (kustomization.yaml) that the weft-apply Job applies;
// the import is types only (erased at load), so the file loads on its own inside the Job.
export default {
  trustDomain: "cluster.local",
  services: {
    web: {
      ports: [{ port: 9001, protocol: "http" }],
      endpoints: [{ address: "web.weft-demo.svc:9001" }],
      traffic: { loadBalancer: "least_request", timeoutMs: 5000, retries: { attempts: 2, retryOn: ["connect-failure", "gateway-error"] } },
    },
    api: {
      ports: [{ port: 9002, protocol: "http" }],
      endpoints: [{ address: "api.weft-demo.svc:9002" }],
      traffic: { timeoutMs: 3000 },
    },
  },
  gateways: {
    ingress: {
      // The weft-gateway Service (LoadBalancer, port 80) targets this listener.
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
