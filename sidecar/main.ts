import { hostname } from "node:os";
import { resolve } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { connectNatsBus, toBusToken, type Bus } from "../shared/bus/index.ts";
import type { Attestation } from "../shared/identity/index.ts";
import { parseEndpoint, readEnv, TLS_MODE_LABEL, type Endpoint, type Snapshot } from "../shared/config/index.ts";
import { createAnnouncer, createIdentityAgent, createIdentitySlot, followBus, type Announcer, type LastGoodStore } from "../shared/discovery/index.ts";
import { activeGate, createPolicyGate, createPolicyShared } from "../shared/policy/index.ts";
import {
  createEngine,
  logHealthChange,
  createExternalTcpForwardView,
  createSidecarViews,
  createTcpForwardView,
  createTcpProxy,
  INBOUND_CLUSTER,
  type ExternalTcpView,
  type InboundTcpView,
  type Listener,
  type ProxyRuntime,
  type SidecarViews,
  type TcpView,
} from "../shared/proxy/index.ts";
import { attestationSource, createAdminApp, createProxyTelemetry, detectRuntime, fileStore, isEntryModule, registrationHost, splitAddress } from "../shared/runtime/index.ts";
import { createLogger, type Logger } from "../shared/telemetry/index.ts";
import { bridgeUnixSocket, type UnixSocketBridge } from "./capture/uds.ts";
import { createInbound, createInboundTcpView, inboundListenOptions } from "./inbound.ts";
import { createReadiness, superviseApp, type Readiness, type SupervisedApp } from "./lifecycle.ts";
import { createOutbound } from "./outbound.ts";

const USAGE = `usage: weft sidecar --service NAME (--app-port PORT | --app-socket PATH) --nats URL [options] [--run -- cmd args...]

Runs beside one workload: inbound (port 15006: mTLS from other proxies, STRICT or PERMISSIVE as the
service says, the service's inbound policy, then the app),
outbound (port 15001 and/or a Unix socket: the app's plain HTTP, routed by Host and sent over
mTLS to the destination's sidecar; also an HTTP_PROXY), the workload's certificate (issued by
the control plane's CA, renewed at half-life), registration of the workload's endpoint, and the admin API.
  --service NAME          the mesh service this workload is
  --app-port PORT         the app listens on 127.0.0.1:PORT
  --app-socket PATH       the app listens on this Unix socket
  --nats URL              NATS server(s), comma-separated; env WEFT_NATS_URL
  --inbound-port N        inbound listener port (default 15006; 0 = any free port)
  --inbound-address A     inbound bind address (default 0.0.0.0)
  --outbound-port N       outbound listener port on 127.0.0.1 (default 15001; 0 = any free port)
  --outbound-socket PATH  also accept outbound requests on this Unix socket
  --admin ADDR            admin API (default 127.0.0.1:15000; env WEFT_ADMIN_ADDRESS; port 0 = any)
  --address HOST:PORT     endpoint to register (default: this host's address and the inbound port)
  --version V             version label of the registered endpoint (selects subsets)
  --join-token TOKEN      proves this workload's identity to the mesh CA (env WEFT_JOIN_TOKEN; see weft token)
  --join-token-file PATH  the same, read from a file (env WEFT_JOIN_TOKEN_FILE)
  --sa-token-file PATH    a Kubernetes service-account token instead (default: the pod's projected token)
  --proxy-id ID           this proxy's id on the bus (env WEFT_PROXY_ID)
  --grace-ms N            on SIGTERM, how long in-flight requests may take (default 10000)
  --drain-ms N            on SIGTERM, how long to keep serving after announcing draining (default 0)
  --discovery-wait-ms N   how long a request for an unknown Host waits for discovery (default 1500)
  --tcp-outbound S:P[=L]  the app's TCP to port P (declared tcp/tls) of service S: listen on 127.0.0.1:L
                          (default L = P; 0 = any free port) and send it over mTLS; repeatable.
                          S with a dot is a host of an external service (its tcp or tls port P):
                          through its egress gateway over mTLS, or straight out; TLS is never terminated
  --hold-app              start the --run app only once the sidecar is ready (startup ordering)
  --run -- cmd args...    run the app under the sidecar; the sidecar exits with its exit code`;

/**
 * main runs `weft sidecar`; it resolves once the admin API listens and returns a stop function
 * (drain, finish in flight, deregister). With --run it exits with the app's code when the app ends.
 * @example
 * const stop = await main(["--service", "orders", "--app-port", "8080", "--nats", "nats://127.0.0.1:4222"]);
 */
export async function main(argv: string[]): Promise<() => Promise<void>> {
  const split = argv.indexOf("--");
  const own = split < 0 ? argv : argv.slice(0, split);
  const command = split < 0 ? [] : argv.slice(split + 1);
  const { values } = parseArgs({
    args: own,
    options: {
      service: { type: "string" },
      "app-port": { type: "string" },
      "app-socket": { type: "string" },
      nats: { type: "string" },
      "inbound-port": { type: "string" },
      "inbound-address": { type: "string" },
      "outbound-port": { type: "string" },
      "outbound-socket": { type: "string" },
      admin: { type: "string" },
      address: { type: "string" },
      version: { type: "string" },
      "join-token": { type: "string" },
      "join-token-file": { type: "string" },
      "sa-token-file": { type: "string" },
      "proxy-id": { type: "string" },
      "grace-ms": { type: "string" },
      "drain-ms": { type: "string" },
      "discovery-wait-ms": { type: "string" },
      "tcp-outbound": { type: "string", multiple: true },
      "hold-app": { type: "boolean" },
      run: { type: "boolean" },
      help: { type: "boolean" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const env = readEnv(process.env);
  const log = createLogger({ component: "sidecar", level: env.logLevel, write: (line) => process.stderr.write(`${line}\n`) });
  const service = values.service;
  const servers = values.nats ?? env.natsUrl;
  const problems: string[] = [];
  if (!service) problems.push("--service is required");
  if (!servers) problems.push("--nats (or WEFT_NATS_URL) is required");
  if ((values["app-port"] === undefined) === (values["app-socket"] === undefined)) problems.push("exactly one of --app-port and --app-socket is required");
  if (values.run && command.length === 0) problems.push("--run needs a command after --");
  const attestation = attestationSource(
    { joinToken: values["join-token"], joinTokenFile: values["join-token-file"], saTokenFile: values["sa-token-file"] },
    process.env,
  );
  if (!attestation) problems.push("no identity attestation: pass --join-token (weft token --ns NS --sa SA) or run in Kubernetes");
  const ports = {
    app: numberOption(values["app-port"], 0, problems, "--app-port"),
    inbound: numberOption(values["inbound-port"], 15006, problems, "--inbound-port"),
    outbound: numberOption(values["outbound-port"], 15001, problems, "--outbound-port"),
    graceMs: numberOption(values["grace-ms"], 10_000, problems, "--grace-ms"),
    drainMs: numberOption(values["drain-ms"], 0, problems, "--drain-ms"),
    discoveryWaitMs: numberOption(values["discovery-wait-ms"], 1500, problems, "--discovery-wait-ms"),
  };
  const tcpOutbound = (values["tcp-outbound"] ?? []).map((spec) => {
    const m = /^((?=[^:]{1,253}:)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?):(\d{1,5})(=(\d{1,5}))?$/i.exec(spec);
    const port = Number(m?.[5]);
    const localPort = m?.[7] === undefined ? port : Number(m[7]);
    if (!m || port < 1 || port > 65535 || localPort > 65535) problems.push(`--tcp-outbound ${spec}: must be SERVICE:PORT, HOST:PORT, or either with =LOCALPORT`);
    const name = (m?.[1] ?? "").toLowerCase().replace(/\.$/, "");
    // A mesh service name has no dot; a name with one is an external service's host.
    return name.includes(".") ? { host: name, port, localPort } : { service: name, port, localPort };
  });
  if (problems.length > 0) {
    for (const p of problems) log.error("bad arguments", { problem: p });
    console.error(USAGE);
    process.exit(2);
  }
  const serviceName = service!;
  const proxyId = toBusToken(values["proxy-id"] ?? env.proxyId ?? `sidecar-${serviceName}-${hostname()}-${process.pid}`);
  const sidecar = await startSidecar({
    service: serviceName,
    app: values["app-socket"] ? parseEndpoint(`unix:${resolve(values["app-socket"])}`) : parseEndpoint(`127.0.0.1:${ports.app}`),
    connect: () => connectNatsBus({ servers: servers!.split(","), name: proxyId, waitOnFirstConnect: true }),
    attestation: attestation!,
    proxyId,
    store: fileStore(env.stateDir, proxyId),
    log,
    runtime: await detectRuntime(),
    inbound: { port: ports.inbound, address: values["inbound-address"] ?? "0.0.0.0" },
    outbound: { port: ports.outbound, socket: values["outbound-socket"] ? resolve(values["outbound-socket"]) : undefined },
    admin: values.admin ?? env.adminAddress,
    address: values.address,
    version: values.version,
    graceMs: ports.graceMs,
    drainMs: ports.drainMs,
    discoveryWaitMs: ports.discoveryWaitMs,
    tcpOutbound,
    run: command.length > 0 ? { command, holdApp: values["hold-app"] ?? false } : undefined,
    onExit: (code) => process.exit(code),
  });
  return sidecar.stop;
}

export interface SidecarOptions {
  /** The mesh service this workload is. */
  readonly service: string;
  /** Where the app listens: 127.0.0.1:<port> or a Unix socket. */
  readonly app: Endpoint;
  /** Connects to the config bus (NATS for `weft sidecar`; an in-memory bus in `weft dev`). */
  connect(): Promise<Bus>;
  /** Proves the workload's identity to the CA, read fresh for every certificate request. */
  attestation(): Promise<Attestation>;
  readonly proxyId: string;
  readonly store: LastGoodStore;
  readonly log: Logger;
  readonly runtime: ProxyRuntime;
  readonly inbound: { readonly port: number; readonly address: string };
  readonly outbound: { readonly port: number; readonly socket?: string };
  /** Admin API address host:port (port 0 = any). */
  readonly admin: string;
  /** Endpoint to register (default: this host's address and the inbound port). */
  readonly address?: string;
  readonly version?: string;
  readonly graceMs: number;
  readonly drainMs: number;
  readonly discoveryWaitMs: number;
  /**
   * Outbound TCP listeners on 127.0.0.1: each takes the app's connections for one service port, or
   * one tcp/tls port of an external service named by one of its hosts (default none).
   */
  readonly tcpOutbound?: readonly TcpOutboundSpec[];
  /** Supervise the app: run it, exit with its code when it ends; holdApp starts it once ready. */
  readonly run?: { readonly command: readonly string[]; readonly holdApp: boolean };
  /** The sidecar ended itself (quit, app exit, refused certificate, listen failure) after stopping. */
  onExit(code: number): void;
}

/** One `--tcp-outbound` listener: a mesh service's port, or an external service's port by host. */
export type TcpOutboundSpec =
  | { readonly service: string; readonly port: number; readonly localPort: number }
  | { readonly host: string; readonly port: number; readonly localPort: number };

export interface Sidecar {
  readonly readiness: Readiness;
  /** Inbound and outbound ports once open. */
  readonly listening: Promise<{ readonly inbound: number; readonly outbound: number }>;
  stop(): Promise<void>;
}

/**
 * startSidecar runs one workload's sidecar: its certificate from the mesh CA, the config it follows,
 * the inbound (mTLS, policy, app) and outbound (Host routing, mTLS) sides, registration and the admin API.
 * @example
 * const sc = await startSidecar({ service: "web", app: parseEndpoint("127.0.0.1:9001"), connect, attestation, ... });
 */
export async function startSidecar(o: SidecarOptions): Promise<Sidecar> {
  const { log, runtime, app, proxyId, attestation } = o;
  const serviceName = o.service;
  const client = runtime.createUpstreamClient();
  // The identity is known once the first config names this service's namespace and service account.
  const identity = createIdentitySlot();
  const telemetry = createProxyTelemetry(log, `weft-sidecar-${serviceName}`, { proxyId, role: "sidecar", workload: serviceName, inboundService: INBOUND_CLUSTER });
  const engine = createEngine({ client, edge: false, meshIdentity: identity, load: runtime.requestLoad, onHealthChange: (change) => logHealthChange(log, change), ...telemetry.hooks });
  telemetry.observeClusters({ snapshot: () => views?.snapshot, health: () => engine.health() });
  const policyShared = createPolicyShared();
  const onInternalError = (err: unknown) => log.error("request crashed", { error: String((err as Error)?.stack ?? err) });
  let views: SidecarViews | undefined;
  let inboundTcp: InboundTcpView | undefined;
  const tcpOutbound = o.tcpOutbound ?? [];
  let tcpOutboundViews: readonly (TcpView | undefined)[] = [];
  let externalTcpViews: readonly (ExternalTcpView | undefined)[] = [];
  const tcpProxy = createTcpProxy({ meshIdentity: identity, onConnectionDone: telemetry.onConnectionDone });
  let bus: Bus | undefined;
  let wantService: (name: string) => void = () => {};

  const outbound = createOutbound({
    engine,
    current: () => views,
    want: (name) => wantService(name),
    proxyId,
    discoveryWaitMs: o.discoveryWaitMs,
    onInternalError,
  });
  const inbound = createInbound({ engine, current: () => views, onInternalError });
  const readiness = createReadiness([
    { name: "certificate", ready: () => identity.current() !== undefined },
    { name: "config", ready: () => views !== undefined && listeners.length > 0 },
  ]);

  const listeners: Listener[] = [];
  let bridge: UnixSocketBridge | undefined;
  let listening: Promise<void> | undefined;
  let announcer: Announcer | undefined;
  let supervised: SupervisedApp | undefined;
  let stopping: Promise<void> | undefined;
  let opened!: (ports: { inbound: number; outbound: number }) => void;
  const listeningPorts = new Promise<{ inbound: number; outbound: number }>((r) => (opened = r));

  async function openListeners(): Promise<void> {
    const inboundListener = await runtime.listen(
      inboundListenOptions({
        port: o.inbound.port,
        address: o.inbound.address,
        mesh: {
          identity,
          mode: () => views?.snapshot.services.get(serviceName)?.mtlsMode ?? "STRICT",
          onRefused: (reason, remote) => log.warn("inbound peer refused", { reason, remote }),
          tcp: { proxy: tcpProxy, current: () => inboundTcp },
        },
      }),
      { ...inbound, connections: telemetry.connections },
    );
    const outboundListener = await runtime.listen(
      // The app's gRPC clients speak h2c (prior knowledge) to the outbound port, beside HTTP/1.1.
      { port: o.outbound.port, address: "127.0.0.1", http2: true, maxHeaderCount: 100, maxHeaderBytes: 16384 },
      { ...outbound, connections: telemetry.connections },
    );
    if (o.outbound.socket) bridge = await bridgeUnixSocket(o.outbound.socket, outboundListener.port);
    listeners.push(inboundListener, outboundListener);
    const tcpPorts: { service?: string; host?: string; port: number; local: number; protocol: "tcp" | "tls" }[] = [];
    for (const [i, t] of tcpOutbound.entries()) {
      const name = "host" in t ? { host: t.host } : { service: t.service };
      if (!runtime.listenTcp) {
        log.error("tcp outbound skipped: this runtime does not proxy tcp yet", { ...name, port: t.port, runtime: runtime.name });
        continue;
      }
      // An external tls port reads the ClientHello's SNI: the protocol is the one declared when the listener opens.
      let protocol: "tcp" | "tls" = "tcp";
      if ("host" in t) {
        const declared = externalTcpViews[i]?.protocolOf(t.port);
        if (declared === undefined) log.error("tcp outbound: not a tcp or tls port of an external service; its connections are refused (no_route)", { host: t.host, port: t.port });
        protocol = declared ?? "tcp";
      }
      const listener = await runtime.listenTcp(
        { port: t.localPort, address: "127.0.0.1", protocol },
        "host" in t
          ? { proxy: tcpProxy, current: () => undefined, external: () => externalTcpViews[i] }
          : { proxy: tcpProxy, current: () => tcpOutboundViews[i] },
      );
      listeners.push(listener);
      tcpPorts.push({ ...name, port: t.port, local: listener.port, protocol });
    }
    opened({ inbound: inboundListener.port, outbound: outboundListener.port });
    log.info("sidecar listening", {
      inbound: inboundListener.port,
      outbound: outboundListener.port,
      ...(bridge ? { outboundSocket: bridge.path } : {}),
      ...(tcpPorts.length > 0 ? { tcpOutbound: tcpPorts } : {}),
      app: app.address,
      runtime: runtime.name,
    });
  }

  function apply(snapshot: Snapshot): Promise<void> | void {
    // Build the whole view first, then swap: a request sees the old or the new config, never a mix.
    const nextInboundTcp = createInboundTcpView(snapshot, serviceName, app);
    engine.checkHealth(snapshot.services.values());
    views = createSidecarViews(snapshot, serviceName, {
      app,
      createPolicy: (p) => activeGate(createPolicyGate(p, { bus, domain: serviceName, shared: policyShared })),
    });
    inboundTcp = nextInboundTcp;
    tcpOutboundViews = tcpOutbound.map((t) => ("host" in t ? undefined : createTcpForwardView(snapshot, t.service, t.port)));
    externalTcpViews = tcpOutbound.map((t) => ("host" in t ? createExternalTcpForwardView(snapshot, t.host, t.port) : undefined));
    outbound.applied();
    telemetry.applied(snapshot);
    startIdentity();
    return openWhenReady();
  }

  /** Listeners open once the sidecar holds both a config and a certificate. */
  function openWhenReady(): Promise<void> | undefined {
    if (!listening && views && identity.current()) {
      listening = openListeners().catch((err: unknown) => {
        log.error("cannot listen", { error: String(err) });
        exitWith(1);
      });
    }
    return listening;
  }

  /** Asks the CA for this workload's certificate once both the bus and the config are there. */
  function startIdentity(): void {
    if (identity.agent || !bus || !views) return;
    const own = views.snapshot.services.get(serviceName)!;
    const agent = createIdentityAgent({ bus, trustDomain: views.snapshot.trustDomain, spiffeId: own.spiffeId, attestation: attestation!, log });
    identity.fill(agent);
    agent.onUpdate((m) => telemetry.certificate(m.svid.notAfter));
    agent.start().then(
      (m) => {
        log.info("certificate held", { spiffeId: m.svid.spiffeId, notAfter: m.svid.notAfter.toISOString() });
        void openWhenReady();
      },
      (err: unknown) => {
        // A refused attestation will not fix itself: say why and stop, like a failed start.
        log.error("certificate refused", { spiffeId: own.spiffeId, error: String((err as Error).message) });
        exitWith(1);
      },
    );
  }

  const follow = await followBus({
    connect: async () => {
      bus = await o.connect();
      telemetry.publishTo(bus);
      return bus;
    },
    proxyId,
    role: { kind: "sidecar", service: serviceName },
    store: o.store,
    apply,
    log: telemetry.countingRefusals(log),
  });
  follow.watcher.then(
    (w) => {
      wantService = (name) => w.want(name);
      // An app's TCP names no Host to discover on first use: the services of --tcp-outbound are watched from the start.
      for (const t of tcpOutbound) if ("service" in t) w.want(t.service);
      startIdentity();
    },
    () => {},
  );
  // Register once the listeners are open and the bus answers.
  void (async () => {
    await follow.watcher.catch(() => undefined);
    await readiness.until(Number.MAX_SAFE_INTEGER, 50);
    if (stopping || !bus) return;
    const address = o.address ?? `${registrationHost(o.inbound.address)}:${listeners[0]!.port}`;
    announcer = createAnnouncer({
      bus,
      service: serviceName,
      endpoint: { address, labels: { [TLS_MODE_LABEL]: "mesh", ...(o.version ? { version: o.version } : {}) }, weight: 1, proxyId },
    });
    announcer.start();
    log.info("sidecar ready", { address, proxyId });
  })();

  const stop = () =>
    (stopping ??= (async () => {
      log.info("draining", { graceMs: o.graceMs });
      engine.stop();
      announcer?.drain();
      if (o.drainMs > 0) await new Promise((r) => setTimeout(r, o.drainMs));
      // Stop accepting; in-flight requests finish within the grace period.
      const closing = Promise.all([...listeners.map((l) => l.close()), bridge?.close(o.graceMs)]);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([closing, new Promise((r) => (timer = setTimeout(r, o.graceMs)))]);
      clearTimeout(timer);
      // Upgraded and proxied TCP connections have no request to finish: the grace period is theirs too.
      for (const listener of listeners) listener.destroy?.();
      announcer?.stop();
      await bus?.flush().catch(() => undefined);
      identity.agent?.stop();
      await follow.stop();
      await client.close();
      await supervised?.stop(o.graceMs);
      await admin.close();
      await telemetry.stop();
      log.info("stopped");
    })());

  const exitWith = (code: number) => void stop().then(() => o.onExit(code));
  const [adminHost, adminPort] = splitAddress(o.admin);
  const admin = await runtime.serveFetch(
    createAdminApp({ log, waiting: () => readiness.waiting(), snapshot: () => views?.snapshot, quit: () => exitWith(0), ...telemetry.admin }).fetch,
    { port: adminPort, address: adminHost },
  );
  log.info("admin listening", { address: adminHost, port: admin.port });

  const run = o.run;
  if (run) {
    void (async () => {
      if (run.holdApp) await readiness.until(Number.MAX_SAFE_INTEGER);
      if (stopping) return;
      supervised = superviseApp(run.command);
      log.info("app started", { pid: supervised.pid, command: run.command[0] });
      const code = await supervised.exited;
      if (stopping) return;
      log.info("app exited, stopping", { code });
      exitWith(code);
    })();
  }
  return { readiness, listening: listeningPorts, stop };
}

function numberOption(raw: string | undefined, fallback: number, problems: string[], name: string): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) problems.push(`${name} must be a non-negative integer`);
  return n;
}

/** The address callers reach this workload at: the bind address, or this host's first non-loopback IPv4. */

// import.meta.main as written: the bundle defines this expression (scripts/build.mjs).
if (isEntryModule(import.meta.url, (import.meta as ImportMeta & { main?: boolean }).main)) {
  const stop = await main(process.argv.slice(2));
  for (const signal of ["SIGTERM", "SIGINT"] as const) process.once(signal, () => void stop().then(() => process.exit(0)));
}
