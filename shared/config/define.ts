import type * as v from "valibot";
import type { GatewaySchema, MeshSchema, RouteSchema, ServiceSchema } from "./schema.ts";

type RouteInput = v.InferInput<typeof RouteSchema>;
type ForwardInput = NonNullable<RouteInput["forward"]>;
type DestinationInput = ForwardInput["to"][number];

/** A route whose destinations may only name declared services. */
export type RouteDefinition<S extends string> = Omit<RouteInput, "forward"> & {
  forward?: Omit<ForwardInput, "to"> & { to: (Omit<DestinationInput, "service"> & { service: S })[] };
};
export type ServiceDefinition<S extends string> = Omit<v.InferInput<typeof ServiceSchema>, "routes"> & {
  routes?: RouteDefinition<S>[];
};
export type GatewayDefinition<S extends string> = Omit<v.InferInput<typeof GatewaySchema>, "routes"> & {
  routes: RouteDefinition<S>[];
};
export type MeshDefinition<S extends string> = Omit<v.InferInput<typeof MeshSchema>, "services" | "gateways"> & {
  services: Record<S, ServiceDefinition<NoInfer<S>>>;
  gateways?: Record<string, GatewayDefinition<NoInfer<S>>>;
};

/**
 * defineMesh declares a mesh in TypeScript; a route to an undeclared service is a type error.
 * Validation (every rule the types cannot express) runs when the config is loaded or applied.
 * @example
 * export default defineMesh({
 *   services: { web: { endpoints: [{ address: "127.0.0.1:9001" }] } },
 *   gateways: { ingress: { listeners: [{ port: 8080 }], routes: [{ forward: { to: [{ service: "web" }] } }] } },
 * });
 */
export function defineMesh<const S extends string>(mesh: MeshDefinition<S>): MeshDefinition<S> {
  return mesh;
}
