export * from "./resources.ts";
export * from "./watcher.ts";
export * from "./announce.ts";
