import type { ExternalServiceConfig, MeshConfig, RouteConfig, ServiceConfig } from "./schema.ts";
import type { EgressGatewaySnapshot, Endpoint, ExternalServiceSnapshot, GatewaySnapshot, ServiceSnapshot, Snapshot } from "./snapshot.ts";

export interface CompileOptions {
  /**
   * SPIFFE IDs of egress gateways by name, for a proxy that holds only part of the config (a
   * sidecar does not watch gateway keys); gateways present in the config take theirs from it.
   */
  readonly egressIdentities?: Readonly<Record<string, string>>;
}

/**
 * compileMesh turns a validated config into the frozen Snapshot a proxy runs.
 * @example
 * const r = validateMesh(input);
 * if (r.ok) store.swap(compileMesh(r.value, 7));
 */
export function compileMesh(mesh: MeshConfig, revision = 0, options: CompileOptions = {}): Snapshot {
  const services = new Map<string, ServiceSnapshot>();
  for (const [name, svc] of Object.entries(mesh.services)) {
    services.set(name, compileService(name, svc, mesh.trustDomain));
  }
  const gateways = new Map<string, GatewaySnapshot>();
  for (const [name, gw] of Object.entries(mesh.gateways)) {
    const spiffeId = spiffeIdOf(mesh.trustDomain, gw.namespace, gw.serviceAccount ?? name);
    gateways.set(name, deepFreeze({ ...gw, name, spiffeId }));
  }
  const identities = { ...options.egressIdentities, ...egressIdentities(mesh) };
  const externalServices = new Map<string, ExternalServiceSnapshot>();
  const egressGateways = new Map<string, EgressGatewaySnapshot>();
  for (const [name, ext] of Object.entries(mesh.externalServices ?? {})) {
    const gateway = ext.egress?.gateway;
    const spiffeId = gateway === undefined ? undefined : identities[gateway];
    // Without the gateway's identity the calls still go nowhere but through it (they fail there).
    externalServices.set(name, compileExternal(name, ext, gateway !== undefined ? { gateway, spiffeId } : undefined));
    if (gateway !== undefined && spiffeId !== undefined && !egressGateways.has(gateway)) {
      egressGateways.set(gateway, deepFreeze({ name: gateway, spiffeId, endpoints: [] }));
    }
  }
  return Object.freeze({
    revision,
    trustDomain: mesh.trustDomain,
    outboundTrafficPolicy: mesh.outboundTrafficPolicy,
    accessLog: deepFreeze(mesh.accessLog),
    tracing: deepFreeze(mesh.tracing),
    services,
    gateways,
    externalServices,
    egressGateways,
  });
}

/**
 * egressIdentities gives the SPIFFE ID of every egress gateway declared in a config, by name.
 * @example
 * egressIdentities(config) // { egress: "spiffe://cluster.local/ns/default/sa/egress" }
 */
export function egressIdentities(mesh: MeshConfig): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, gw] of Object.entries(mesh.gateways)) {
    if (gw.kind === "egress") out[name] = spiffeIdOf(mesh.trustDomain, gw.namespace, gw.serviceAccount ?? name);
  }
  return out;
}

function compileExternal(name: string, ext: ExternalServiceConfig, egress: ExternalServiceSnapshot["egress"]): ExternalServiceSnapshot {
  const endpoints = (ext.endpoints ?? []).map((ep) => {
    const withPort = /(^[^:]+|\])(:\d+)$/.test(ep.address);
    return withPort ? parseEndpoint(ep.address) : { ...parseEndpoint(`${ep.address}:0`), address: ep.address };
  });
  return deepFreeze({
    name,
    hosts: ext.hosts,
    ports: ext.ports,
    resolution: ext.resolution,
    endpoints,
    tls: ext.tls,
    ...(egress ? { egress } : {}),
    traffic: ext.traffic,
  });
}

/** spiffeIdOf names the identity of a workload running as a service account. */
export function spiffeIdOf(trustDomain: string, namespace: string, serviceAccount: string): string {
  return `spiffe://${trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
}

function compileService(name: string, svc: ServiceConfig, trustDomain: string): ServiceSnapshot {
  const serviceAccount = svc.serviceAccount ?? name;
  const subsets = svc.versions ?? {};
  const endpoints = (svc.endpoints ?? []).map((ep) =>
    parseEndpoint(ep.address, ep.version ? { version: ep.version, ...subsets[ep.version] } : {}, ep.weight),
  );
  const routes: RouteConfig[] = svc.routes ?? [{ forward: { to: [{ service: name, weight: 1 }] } }];
  return deepFreeze({
    name,
    namespace: svc.namespace,
    serviceAccount,
    spiffeId: spiffeIdOf(trustDomain, svc.namespace, serviceAccount),
    hostnames: [name, `${name}.${svc.namespace}`, `${name}.${svc.namespace}.svc`, `${name}.${svc.namespace}.svc.cluster.local`],
    ports: svc.ports,
    subsets,
    endpoints,
    traffic: svc.traffic,
    routes,
    inbound: svc.inbound,
    mtlsMode: svc.mtls.mode,
  });
}

/**
 * parseEndpoint reads `host:port`, `[v6]:port` or `unix:/path` into an Endpoint.
 * @example
 * parseEndpoint("127.0.0.1:9001", { version: "v1" }).port // 9001
 */
export function parseEndpoint(address: string, labels: Record<string, string> = {}, weight = 1, draining = false): Endpoint {
  if (address.startsWith("unix:")) {
    return { address, host: "localhost", port: 0, socketPath: address.slice(5), labels, weight, draining };
  }
  const colon = address.lastIndexOf(":");
  let host = address.slice(0, colon);
  if (host.startsWith("[")) host = host.slice(1, -1);
  return { address, host, port: Number(address.slice(colon + 1)), labels, weight, draining };
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) deepFreeze(inner);
  }
  return value;
}
