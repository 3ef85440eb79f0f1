import { watch, type FSWatcher } from "node:fs";
import { resolve } from "node:path";
import process from "node:process";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { hostname } from "node:os";
import { connectNatsBus, toBusToken, type Bus } from "../shared/bus/index.ts";
import { createAnnouncer, createIdentityAgent, createIdentitySlot, followBus, type Announcer, type LastGoodStore } from "../shared/discovery/index.ts";
import { compileMesh, readEnv, TLS_MODE_LABEL, type ConfigIssue, type Snapshot, type WeftEnv } from "../shared/config/index.ts";
import { activeGate, createPolicyGate, createPolicyShared } from "../shared/policy/index.ts";
import type { Attestation } from "../shared/identity/index.ts";
import type { ProxyRuntime, ViewDeps } from "../shared/proxy/index.ts";
import {
  attestationSource,
  createAdminApp,
  createProxyTelemetry,
  detectRuntime,
  fileStore,
  isEntryModule,
  loadMeshModule,
  registrationHost,
  splitAddress,
  type ProxyTelemetry,
} from "../shared/runtime/index.ts";
import { createLogger, type Logger } from "../shared/telemetry/index.ts";
import { createIngress, type Ingress } from "./ingress.ts";

const USAGE = `usage: weft gateway --nats URL [--name ingress] [--admin 127.0.0.1:15000]
       weft gateway --config weft.config.ts [--name ingress] [--admin 127.0.0.1:15000]

Serves a gateway. With --nats it follows the control plane (watching only what its routes reach),
serves its last good config from WEFT_STATE_DIR while the bus is away, and reports ACK/NACK. With
--config it serves a config file and reloads it when the file changes.
  --nats URL      NATS server(s), comma-separated; env WEFT_NATS_URL
  --config FILE   the mesh config (weft.config.ts, .js or .json); env WEFT_CONFIG
  --name NAME     which gateway to run (default: the only one in the file, or "ingress")
  --proxy-id ID   this proxy's id on the bus (env WEFT_PROXY_ID; default gateway-<name>-<host>-<pid>)
  --admin ADDR    admin API address (default 127.0.0.1:15000; env WEFT_ADMIN_ADDRESS; port 0 = any)
  --join-token T  with --nats: proves the gateway's identity to the mesh CA, for mTLS to sidecars
                  (env WEFT_JOIN_TOKEN; also --join-token-file, --sa-token-file as for weft sidecar)
  --grace-ms N    how long in-flight requests may take to finish on SIGTERM (default 10000)
  --address H:P   an egress gateway: the mesh endpoint it registers for sidecars (default: the
                  listener's address, or this host's first non-loopback IPv4, and its port)

An egress gateway (kind: "egress") needs --nats and an attestation: its listeners speak mesh mTLS
and open once it holds its certificate; then it registers its endpoint under its name.`;

/**
 * main runs `weft gateway`; it resolves once the gateway is listening and returns a stop function.
 * @example
 * const stop = await main(["--config", "weft.config.ts"]);
 */
export async function main(argv: string[]): Promise<() => Promise<void>> {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: "string" },
      nats: { type: "string" },
      name: { type: "string" },
      "proxy-id": { type: "string" },
      admin: { type: "string" },
      "join-token": { type: "string" },
      "join-token-file": { type: "string" },
      "sa-token-file": { type: "string" },
      "grace-ms": { type: "string" },
      address: { type: "string" },
      help: { type: "boolean" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const env = readEnv(process.env);
  const log = createLogger({ component: "gateway", level: env.logLevel, write: (line) => process.stderr.write(`${line}\n`) });
  const configPath = values.config ?? env.configFile;
  const natsUrl = values.nats ?? env.natsUrl;
  if (!configPath && natsUrl) return serveFromBus(natsUrl, values, env, log);
  if (!configPath) {
    console.error(USAGE);
    process.exit(2);
  }
  const file = resolve(configPath);
  const url = pathToFileURL(file);
  const reportIssues = (issues: readonly ConfigIssue[]) => {
    for (const issue of issues) log.error("invalid config", { file, path: issue.path, reason: issue.message });
  };

  const first = await loadMeshModule(url);
  if (!first.ok) {
    reportIssues(first.issues);
    process.exit(1);
  }
  const gatewayNames = Object.keys(first.value.gateways);
  const name = values.name ?? (gatewayNames.length === 1 ? gatewayNames[0]! : "ingress");
  if (!first.value.gateways[name]) {
    log.error("gateway not in config", { file, gateway: name, gateways: gatewayNames });
    process.exit(1);
  }

  const runtime = await detectRuntime();
  const telemetry = createProxyTelemetry(log, `weft-gateway-${name}`, { proxyId: `gateway-${name}`, role: "gateway", workload: name });
  const ingress = createIngress({ runtime, name, log, ...ingressTelemetry(telemetry), viewDeps: policyDeps() });
  telemetry.observeClusters({ snapshot: () => ingress.snapshot, health: () => ingress.health() });
  let revision = 0;
  await applyWithTelemetry(ingress, telemetry, compileMesh(first.value, revision));

  const [adminHost, adminPort] = splitAddress(values.admin ?? env.adminAddress);
  const admin = await runtime.serveFetch(
    createAdminApp({ log, waiting: () => (ingress.current ? [] : ["config"]), snapshot: () => ingress.snapshot, ...telemetry.admin }).fetch,
    { port: adminPort, address: adminHost },
  );
  log.info("admin listening", { address: adminHost, port: admin.port });

  // The file itself is watched, re-armed when an editor replaces it (see watchConfigFile). A load
  // starts RELOAD_DELAY_MS after the first change (a fixed delay: edits every few ms still reload). A
  // load that fails may have read a save between its truncate and its write, whose change event can
  // come after the load is done: the refusal is reported only when no newer change comes within
  // another RELOAD_DELAY_MS (a newer change brings its own load).
  let reloadTimer: ReturnType<typeof setTimeout> | undefined;
  let changes = 0;
  let reloading = Promise.resolve();
  const settled = async (seen: number) => {
    await new Promise((r) => setTimeout(r, RELOAD_DELAY_MS));
    return changes === seen;
  };
  const reload = async (seen: number) => {
    const next = await loadMeshModule(url);
    if (!next.ok) {
      if (!(await settled(seen))) return;
      telemetry.rejected();
      log.error("config refused, still serving the last good one", { file, revision });
      reportIssues(next.issues);
      return;
    }
    if (!next.value.gateways[name]) {
      if (!(await settled(seen))) return;
      telemetry.rejected();
      log.error("config refused: gateway missing, still serving the last good one", { file, gateway: name });
      return;
    }
    revision += 1;
    await applyWithTelemetry(ingress, telemetry, compileMesh(next.value, revision));
    log.info("config reloaded", { file, revision });
  };
  const watcher = watchConfigFile(file, () => {
    changes += 1;
    if (reloadTimer !== undefined) return;
    reloadTimer = setTimeout(() => {
      reloadTimer = undefined;
      const seen = changes;
      reloading = reloading.then(() => reload(seen));
    }, RELOAD_DELAY_MS);
  });

  const graceMs = Number(values["grace-ms"] ?? 10_000);
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      watcher.close();
      clearTimeout(reloadTimer);
      await ingress.stop(graceMs);
      await admin.close();
      await telemetry.stop();
      log.info("stopped");
    })());
  return stop;
}

/** How long after a change to the config file it is loaded, and how long a refusal waits for a newer change. */
const RELOAD_DELAY_MS = 100;

/** How often a config file that was removed is looked for again. */
const REARM_MS = 100;

/**
 * watchConfigFile calls onChange when the file is written or replaced. It watches the file, not its
 * folder: a folder watch wakes the process for every write to any file there, such as an access log
 * the gateway's stdout is sent to beside its config (on Bun that cost ~7 µs per proxied request).
 * When an editor replaces the file (rename over it, or remove and create) the watch moves to the new
 * file at the same path, looking for it every REARM_MS while it is missing.
 * @example
 * const watcher = watchConfigFile("/etc/weft/weft.json", () => scheduleReload());
 */
function watchConfigFile(file: string, onChange: () => void): { close(): void } {
  let watcher: FSWatcher | undefined;
  let retry: ReturnType<typeof setTimeout> | undefined;
  let closed = false;
  const onEvent = (event: string) => {
    onChange();
    // "rename": the path no longer names the watched file; watch what it names now.
    if (event === "rename") rearm();
  };
  const arm = (): boolean => {
    try {
      watcher = watch(file, onEvent);
      watcher.on("error", rearm);
      return true;
    } catch {
      return false;
    }
  };
  const rearm = () => {
    watcher?.close();
    watcher = undefined;
    if (closed || retry !== undefined) return;
    if (arm()) return;
    const again = () => {
      retry = undefined;
      if (closed) return;
      if (arm()) onChange();
      else retry = setTimeout(again, REARM_MS);
    };
    retry = setTimeout(again, REARM_MS);
  };
  if (!arm()) rearm();
  return {
    close() {
      closed = true;
      clearTimeout(retry);
      watcher?.close();
    },
  };
}

/** The gateway following the control plane over NATS. */
async function serveFromBus(
  servers: string,
  values: { name?: string; admin?: string; "grace-ms"?: string; "proxy-id"?: string; "join-token"?: string; "join-token-file"?: string; "sa-token-file"?: string; address?: string },
  env: WeftEnv,
  log: Logger,
): Promise<() => Promise<void>> {
  const name = values.name ?? "ingress";
  const proxyId = toBusToken(values["proxy-id"] ?? env.proxyId ?? `gateway-${name}-${hostname()}-${process.pid}`);
  const attestation = attestationSource(
    { joinToken: values["join-token"], joinTokenFile: values["join-token-file"], saTokenFile: values["sa-token-file"] },
    process.env,
  );
  const gateway = await startBusGateway({
    name,
    proxyId,
    connect: () => connectNatsBus({ servers: servers.split(","), name: proxyId, waitOnFirstConnect: true }),
    store: fileStore(env.stateDir, proxyId),
    attestation,
    log,
    runtime: await detectRuntime(),
    admin: values.admin ?? env.adminAddress,
    graceMs: Number(values["grace-ms"] ?? 10_000),
    address: values.address,
  });
  return gateway.stop;
}

export interface BusGatewayOptions {
  /** Which gateway of the mesh config this is. */
  readonly name: string;
  readonly proxyId: string;
  /** Connects to the config bus (NATS for `weft gateway --nats`; an in-memory bus in `weft dev`). */
  connect(): Promise<Bus>;
  readonly store: LastGoodStore;
  /** Proves the gateway's identity to the mesh CA; without it, calls to mesh workloads fail `mtls_unavailable`. */
  readonly attestation: (() => Promise<Attestation>) | undefined;
  readonly log: Logger;
  readonly runtime: ProxyRuntime;
  /** Admin API address host:port (port 0 = any). */
  readonly admin: string;
  readonly graceMs: number;
  /** An egress gateway's registered mesh endpoint, host:port (default: its first listener's address and port). */
  readonly address?: string;
}

export interface BusGateway {
  readonly ingress: Ingress;
  readonly adminPort: number;
  /** A config is applied and, when the gateway has an attestation, its certificate is held. */
  ready(): boolean;
  stop(): Promise<void>;
}

/**
 * startBusGateway runs a gateway that follows the control plane: its last good config from the
 * store at once, then the bus (watching only what its routes reach), its SVID from the mesh CA for
 * mTLS into the mesh, its policy, telemetry and admin API.
 * @example
 * const gw = await startBusGateway({ name: "ingress", proxyId, connect, store, attestation, log, runtime, admin: "127.0.0.1:15000", graceMs: 10_000 });
 */
export async function startBusGateway(o: BusGatewayOptions): Promise<BusGateway> {
  const { name, log, runtime, attestation } = o;
  const telemetry = createProxyTelemetry(log, `weft-gateway-${name}`, { proxyId: o.proxyId, role: "gateway", workload: name });
  let bus: Bus | undefined;
  let snapshot: Snapshot | undefined;
  if (!attestation) log.warn("no identity attestation (--join-token): requests to mesh workloads will fail with mtls_unavailable");
  // Known once the first config names the trust domain and the gateway's service account.
  const identity = createIdentitySlot();
  const startIdentity = () => {
    if (identity.agent || !attestation || !bus || !snapshot) return;
    const spiffeId = snapshot.gateways.get(name)!.spiffeId;
    const agent = createIdentityAgent({ bus, trustDomain: snapshot.trustDomain, spiffeId, attestation, log });
    identity.fill(agent);
    agent.onUpdate((m) => telemetry.certificate(m.svid.notAfter));
    agent.start().then(
      (m) => {
        log.info("certificate held", { spiffeId, notAfter: m.svid.notAfter.toISOString() });
        // An egress gateway's mesh listeners open only now.
        void ingress.reconcile().then(announceEgress, (err: unknown) => log.error("cannot listen", { error: String(err) }));
      },
      (err: unknown) => log.error("certificate refused", { spiffeId, error: String((err as Error).message) }),
    );
  };
  const ingress = createIngress({ runtime, name, log, ...ingressTelemetry(telemetry), viewDeps: policyDeps(() => bus), meshIdentity: identity });
  let announcer: Announcer | undefined;
  let stopping: Promise<void> | undefined;
  /** An egress gateway registers its mesh listener, as a workload does, so that sidecars find it. */
  const announceEgress = () => {
    const gateway = snapshot?.gateways.get(name);
    if (announcer || stopping || !bus || gateway?.kind !== "egress") return;
    const first = gateway.listeners[0]!;
    const port = ingress.ports.get(first.port === 0 ? `${first.address}:0#0` : `${first.address}:${first.port}`);
    if (port === undefined) return;
    const address = o.address ?? `${registrationHost(first.address)}:${port}`;
    announcer = createAnnouncer({ bus, service: name, endpoint: { address, labels: { [TLS_MODE_LABEL]: "mesh" }, weight: 1, proxyId: o.proxyId } });
    announcer.start();
    log.info("egress gateway registered", { address, proxyId: o.proxyId });
  };
  telemetry.observeClusters({ snapshot: () => ingress.snapshot, health: () => ingress.health() });
  const follow = await followBus({
    connect: async () => {
      bus = await o.connect();
      telemetry.publishTo(bus);
      return bus;
    },
    proxyId: o.proxyId,
    role: { kind: "gateway", name },
    store: o.store,
    apply: async (s) => {
      await applyWithTelemetry(ingress, telemetry, s);
      snapshot = s;
      startIdentity();
      announceEgress();
    },
    log: telemetry.countingRefusals(log),
  });
  follow.watcher.then(startIdentity, () => {});
  const [adminHost, adminPort] = splitAddress(o.admin);
  const admin = await runtime.serveFetch(
    createAdminApp({
      log,
      // With an attestation the gateway is ready once it can also call mesh workloads over mTLS.
      waiting: () => [
        ...(ingress.current ? [] : ["config"]),
        ...(attestation && identity.current() === undefined ? ["certificate"] : []),
        ...(snapshot?.gateways.get(name)?.kind === "egress" && announcer === undefined ? ["registration"] : []),
      ],
      snapshot: () => ingress.snapshot,
      ...telemetry.admin,
    }).fetch,
    { port: adminPort, address: adminHost },
  );
  log.info("admin listening", { address: adminHost, port: admin.port });
  return {
    ingress,
    adminPort: admin.port,
    ready: () => ingress.current !== undefined && (!attestation || identity.current() !== undefined) && (announcer !== undefined || snapshot?.gateways.get(name)?.kind !== "egress"),
    stop: () =>
      (stopping ??= (async () => {
        announcer?.drain();
        announcer?.stop();
        identity.agent?.stop();
        await follow.stop();
        await ingress.stop(o.graceMs);
        await admin.close();
        await telemetry.stop();
        log.info("stopped");
      })()),
  };
}

/**
 * The gateway's policy step: JWT, authorization and rate limits from its config, with global limits
 * counted over the bus when there is one (JWKS fetched once across config swaps).
 */
function policyDeps(bus: () => Bus | undefined = () => undefined): ViewDeps {
  const shared = createPolicyShared();
  return {
    createPolicy: (policy, scope) =>
      activeGate(createPolicyGate(policy, { shared, bus: bus(), domain: scope.name, xffTrustedHops: scope.xffTrustedHops })),
  };
}

/** What the ingress takes from the proxy's telemetry: the engine hooks, TCP connection records, the connections gauge. */
function ingressTelemetry(telemetry: ProxyTelemetry) {
  return { ...telemetry.hooks, onConnectionDone: telemetry.onConnectionDone, connections: telemetry.connections };
}

async function applyWithTelemetry(ingress: Ingress, telemetry: ProxyTelemetry, snapshot: Snapshot): Promise<void> {
  await ingress.apply(snapshot);
  telemetry.applied(snapshot);
}

/** The address sidecars reach a listener at: its bind address, or this host's first non-loopback IPv4. */

// import.meta.main as written: the bundle defines this expression (scripts/build.mjs).
if (isEntryModule(import.meta.url, (import.meta as ImportMeta & { main?: boolean }).main)) {
  const stop = await main(process.argv.slice(2));
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    process.once(signal, () => {
      stop().then(() => process.exit(0));
    });
  }
}
