import { readFile } from "node:fs/promises";
import type { GatewaySnapshot, Snapshot } from "../shared/config/index.ts";
import { compileConnectionAuthz } from "../shared/policy/index.ts";
import {
  createEgressTcpView,
  createEngine,
  logHealthChange,
  type ClusterHealthReport,
  createGatewayView,
  createTcpGatewayView,
  createTcpProxy,
  type TcpRecord,
  type TcpView,
  type EngineOptions,
  type ExternalTcpView,
  type Listener,
  type ServeTarget,
  type MeshIdentity,
  type ProxyRuntime,
  type RequestRecord,
  type RouteView,
  type ViewDeps,
} from "../shared/proxy/index.ts";
import type { Logger } from "../shared/telemetry/index.ts";

export interface IngressOptions {
  readonly runtime: ProxyRuntime;
  /** Which gateway of the config this process is. */
  readonly name: string;
  readonly log: Logger;
  readonly onRequestDone?: (record: RequestRecord) => void;
  /** Telemetry's start hook: trace ids for the record, traceparent for the upstream request. */
  readonly onRequestStart?: EngineOptions["onRequestStart"];
  /** Told when client connections open and close (telemetry's active-connections gauge). */
  readonly connections?: ServeTarget["connections"];
  /** Telemetry's mirror hook: each shadow copy's outcome. */
  readonly onMirrorDone?: EngineOptions["onMirrorDone"];
  readonly viewDeps?: ViewDeps;
  /** The gateway's mesh identity: calls to mesh workloads go over mTLS with it. */
  readonly meshIdentity?: MeshIdentity;
  /** Told about every connection of a tcp or tls listener once it ends (access log, metrics). */
  readonly onConnectionDone?: (record: TcpRecord) => void;
}

export interface Ingress {
  /** Applies a new snapshot: routes swap atomically, listeners are opened/closed to match. */
  apply(snapshot: Snapshot): Promise<void>;
  /** Opens listeners that were waiting (an egress gateway's wait for its certificate); call once it is held. */
  reconcile(): Promise<void>;
  /** Ports actually bound, by listener key (address:port as configured; address:0#index for port 0). */
  readonly ports: ReadonlyMap<string, number>;
  readonly current: RouteView | undefined;
  readonly snapshot: Snapshot | undefined;
  /** Outlier ejections and pool load per upstream service. */
  health(): readonly ClusterHealthReport[];
  /** Stops accepting, lets in-flight requests finish (up to graceMs), closes upstream pools. */
  stop(graceMs?: number): Promise<void>;
}

interface OpenListener {
  readonly listener: Listener;
  readonly signature: string;
  /** A tcp or tls listener: its connections outlive a config change (closing it stops accepting only). */
  readonly l4: boolean;
}

/**
 * createIngress runs a gateway's listeners over the shared engine; a new snapshot replaces the
 * routes for the next request while requests in flight finish on the old ones.
 * @example
 * const ingress = createIngress({ runtime: nodeRuntime, name: "ingress", log });
 * await ingress.apply(compileMesh(config));
 */
export function createIngress(options: IngressOptions): Ingress {
  const { runtime, name, log } = options;
  const client = runtime.createUpstreamClient();
  const engine = createEngine({
    client,
    edge: true,
    load: runtime.requestLoad,
    onRequestDone: options.onRequestDone,
    onRequestStart: options.onRequestStart,
    onMirrorDone: options.onMirrorDone,
    meshIdentity: options.meshIdentity,
    onHealthChange: (change) => logHealthChange(log, change),
  });
  const tcpProxy = createTcpProxy({ meshIdentity: options.meshIdentity, onConnectionDone: options.onConnectionDone });
  const listeners = new Map<string, OpenListener>();
  const ports = new Map<string, number>();
  let view: RouteView | undefined;
  let tcpView: TcpView | undefined;
  const tcpTarget = { proxy: tcpProxy, current: () => tcpView };
  // An egress gateway's mesh port also takes raw TCP (ALPN weft-tcp) for external tcp and tls ports.
  let egressTcpView: ExternalTcpView | undefined;
  const egressTcpTarget = { proxy: tcpProxy, current: () => undefined, external: () => egressTcpView };
  let snapshot: Snapshot | undefined;
  let waitingForCertificate = false;
  // Applies and reconciles open and close sockets one at a time, so none opens the same port twice.
  let turn: Promise<unknown> = Promise.resolve();
  const serially = (step: () => Promise<void>): Promise<void> => {
    const next = turn.then(step);
    turn = next.catch(() => undefined);
    return next;
  };
  const target = {
    engine,
    connections: options.connections,
    current: () => view!,
    onInternalError: (err: unknown) => log.error("request crashed", { error: String((err as Error)?.stack ?? err) }),
  };

  async function reconcileListeners(gateway: GatewaySnapshot) {
    const wanted = new Map<string, { signature: string; spec: GatewaySnapshot["listeners"][number] }>();
    for (const [index, spec] of gateway.listeners.entries()) {
      // Port 0 ("any free port") may repeat on one address: each such listener is its own socket.
      const key = spec.port === 0 ? `${spec.address}:0#${index}` : `${spec.address}:${spec.port}`;
      const signature = JSON.stringify([spec.protocol, spec.tls, spec.http2 === true, gateway.maxHeaderBytes, gateway.maxHeaderCount, gateway.kind]);
      wanted.set(key, { signature, spec });
    }
    for (const [key, open] of listeners) {
      const next = wanted.get(key);
      if (!next || next.signature !== open.signature) {
        const closed = open.listener.close();
        // A removed or changed listener takes its upgraded connections along, or the swap would wait on them.
        if (!open.l4) {
          open.listener.destroy?.();
          await closed;
        }
        listeners.delete(key);
        ports.delete(key);
        log.info("listener closed", { listener: key });
      }
    }
    for (const [key, { signature, spec }] of wanted) {
      if (listeners.has(key)) continue;
      const tls = spec.tls
        ? { cert: await readFile(spec.tls.certFile, "utf8"), key: await readFile(spec.tls.keyFile, "utf8") }
        : undefined;
      // An egress gateway's listeners take mesh mTLS only (STRICT): the caller's SPIFFE ID is what its policy authorizes.
      const identity = options.meshIdentity;
      const mesh =
        gateway.kind === "egress" && identity !== undefined && identity.current() !== undefined
          ? {
              identity,
              mode: () => "STRICT" as const,
              onRefused: (reason: string, remote: string) => log.warn("egress peer refused", { reason, remote }),
              tcp: egressTcpTarget,
            }
          : undefined;
      if (gateway.kind === "egress" && mesh === undefined) {
        if (!waitingForCertificate) log.warn("egress listeners wait for the gateway's mesh certificate", { listener: key });
        waitingForCertificate = true;
        continue;
      }
      const l4 = spec.protocol === "tcp" || spec.protocol === "tls" ? spec.protocol : undefined;
      if (l4 && !runtime.listenTcp) {
        log.error("listener skipped: this runtime does not proxy tcp or tls yet", { listener: key, protocol: l4, runtime: runtime.name });
        continue;
      }
      // Only node:http2 serves HTTP/2 here; Bun.serve and Deno.serve listeners answer HTTP/1.1.
      if (spec.http2 === true && runtime.name !== "node") log.warn("http2 not served on this runtime: HTTP/1.1 only", { listener: key, runtime: runtime.name });
      const listener = l4
        ? await runtime.listenTcp!({ port: spec.port, address: spec.address, protocol: l4 }, tcpTarget)
        : await runtime.listen(
            { port: spec.port, address: spec.address, tls, http2: spec.http2, mesh, maxHeaderCount: gateway.maxHeaderCount, maxHeaderBytes: gateway.maxHeaderBytes },
            target,
          );
      listeners.set(key, { listener, signature, l4: l4 !== undefined });
      ports.set(key, listener.port);
      log.info("listening", { listener: key, port: listener.port, protocol: spec.protocol, runtime: runtime.name });
    }
  }

  return {
    async apply(next) {
      const gateway = next.gateways.get(name);
      if (!gateway) throw new TypeError(`gateway "${name}" is not in the config`);
      // Build the whole view first, then swap: a request sees the old or the new config, never a mix.
      const nextView = createGatewayView(next, name, options.viewDeps);
      const nextTcpView = createTcpGatewayView(next, name);
      const nextEgressTcp = gateway.kind === "egress" ? createEgressTcpView(next, name, compileConnectionAuthz(gateway.policy)) : undefined;
      engine.checkHealth(next.services.values());
      view = nextView;
      tcpView = nextTcpView;
      egressTcpView = nextEgressTcp;
      snapshot = next;
      await serially(() => reconcileListeners(gateway));
    },
    async reconcile() {
      // The snapshot current when this turn comes, not when it was asked for.
      await serially(async () => {
        const gateway = snapshot?.gateways.get(name);
        if (gateway) await reconcileListeners(gateway);
      });
    },
    ports,
    get current() {
      return view;
    },
    get snapshot() {
      return snapshot;
    },
    health: () => engine.health(),
    async stop(graceMs = 10_000) {
      engine.stop();
      const closing = Promise.all([...listeners.values()].map((l) => l.listener.close()));
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([closing, new Promise((r) => (timer = setTimeout(r, graceMs)))]);
      clearTimeout(timer);
      // TCP connections have no request boundary to finish at: what is still open at the end of the grace period is closed.
      for (const l of listeners.values()) l.listener.destroy?.();
      listeners.clear();
      await client.close();
    },
  };
}

