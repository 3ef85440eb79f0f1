import * as v from "valibot";
import { decodeJson, encodeJson, registrySubject, type Bus } from "../bus/index.ts";
import { RegisteredEndpointSchema, type RegisteredEndpoint } from "./resources.ts";

/** A heartbeat on `weft.registry.<service>`: the endpoint, and how often the next one will come. */
export interface Heartbeat extends RegisteredEndpoint {
  readonly intervalMs: number;
  /** Sent once on shutdown: remove the endpoint now instead of waiting for missed heartbeats. */
  readonly leaving?: boolean;
}

const HeartbeatSchema = v.object({
  ...RegisteredEndpointSchema.entries,
  intervalMs: v.pipe(v.number(), v.integer(), v.minValue(10), v.maxValue(3_600_000)),
  leaving: v.optional(v.boolean()),
});

/**
 * parseHeartbeat reads a registry message; undefined for anything malformed (the wire is untrusted).
 * @example
 * const hb = parseHeartbeat(msg.data);
 */
export function parseHeartbeat(data: Uint8Array): Heartbeat | undefined {
  const decoded = decodeJson(data);
  if (!decoded.ok) return undefined;
  const r = v.safeParse(HeartbeatSchema, decoded.value);
  return r.success ? r.output : undefined;
}

export interface AnnouncerOptions {
  readonly bus: Bus;
  readonly service: string;
  readonly endpoint: Omit<RegisteredEndpoint, "draining">;
  /** Heartbeat period (default 5000 ms); the endpoint is dropped after 3 missed ones. */
  readonly intervalMs?: number;
}

export interface Announcer {
  start(): void;
  /** Marks the endpoint draining: callers stop sending new requests to it. */
  drain(): void;
  /** Stops heartbeats and tells the registry the endpoint is gone. */
  stop(): void;
}

/**
 * createAnnouncer keeps a workload's endpoint registered while the proxy runs.
 * @example
 * const a = createAnnouncer({ bus, service: "web", endpoint: { address: "10.0.0.5:8080", labels: { version: "v1" }, weight: 1, proxyId } });
 * a.start();
 */
export function createAnnouncer(options: AnnouncerOptions): Announcer {
  const { bus, service } = options;
  const intervalMs = options.intervalMs ?? 5000;
  const subject = registrySubject(service);
  let draining = false;
  let timer: ReturnType<typeof setInterval> | undefined;
  const send = (leaving = false) => {
    const hb: Heartbeat = { ...options.endpoint, draining, intervalMs, ...(leaving ? { leaving } : {}) };
    bus.publish(subject, encodeJson(hb));
  };
  return {
    start() {
      if (timer) return;
      send();
      timer = setInterval(() => send(), intervalMs);
      (timer as { unref?: () => void }).unref?.();
    },
    drain() {
      draining = true;
      if (timer) send();
    },
    stop() {
      clearInterval(timer);
      if (timer) send(true);
      timer = undefined;
    },
  };
}
