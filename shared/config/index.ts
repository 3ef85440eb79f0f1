export * from "./schema.ts";
export * from "./policy-schema.ts";
export * from "./snapshot.ts";
export * from "./validate.ts";
export * from "./compile.ts";
export * from "./define.ts";
export * from "./env.ts";
