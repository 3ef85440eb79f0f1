export * from "./resources.ts";
export * from "./watcher.ts";
export * from "./announce.ts";
export * from "./follow-bus.ts";
export * from "./identity-agent.ts";
