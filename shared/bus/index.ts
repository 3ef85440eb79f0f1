export * from "./bus.ts";
export * from "./keys.ts";
export { subjectMatches } from "./subject.ts";
export { createMemoryBus, createMemoryNetwork, type MemoryNetwork } from "./memory.ts";
export { connectNatsBus, type NatsBusOptions } from "./nats.ts";
