export * from "./authz.ts";
export * from "./jwt.ts";
export * from "./ratelimit.ts";
export * from "./gate.ts";
export * from "./normalize.ts";
export * from "./ip-block.ts";
