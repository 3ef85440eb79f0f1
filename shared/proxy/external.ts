import type { Endpoint, ExternalServiceSnapshot, PolicySetConfig, RouteConfig, ServiceSnapshot, Snapshot } from "../config/index.ts";
import { createCluster, type Cluster } from "./cluster.ts";
import type { PolicyGate, RouteView } from "./engine.ts";
import { createRouter, type RouteMatch, type Router } from "./router.ts";
import type { RequestHead } from "./types.ts";

/** What a Host names among the external services: the service, the host as called, and the port. */
export interface ExternalTarget {
  readonly service: ExternalServiceSnapshot;
  /** Lower-case host name without port or trailing dot. */
  readonly host: string;
  /** The port the caller named (80 when none). */
  readonly port: number;
  /** The declared port it matched; undefined when the service does not declare it. */
  readonly declared: ExternalServiceSnapshot["ports"][number] | undefined;
}

export interface ExternalHosts {
  /** The external service a Host names (exact host first, then the longest `*.suffix`); undefined if none. */
  match(authority: string): ExternalTarget | undefined;
}

/**
 * createExternalHosts indexes external services by host: an exact name wins over any wildcard, and
 * a longer `*.suffix` over a shorter one; `*.example.com` matches `a.example.com` and
 * `a.b.example.com`, never `example.com` itself.
 * @example
 * createExternalHosts(snapshot.externalServices.values()).match("api.example.com:443")?.service.name
 */
export function createExternalHosts(services: Iterable<ExternalServiceSnapshot>): ExternalHosts {
  const exact = new Map<string, ExternalServiceSnapshot>();
  const wildcard = new Map<string, ExternalServiceSnapshot>();
  for (const service of services) {
    for (const host of service.hosts) {
      if (host.startsWith("*.")) wildcard.set(host.slice(2), service);
      else exact.set(host, service);
    }
  }
  return {
    match(authority) {
      const parsed = parseAuthority(authority);
      if (parsed === undefined) return undefined;
      const { host, port } = parsed;
      let service = exact.get(host);
      if (service === undefined && wildcard.size > 0) {
        for (let dot = host.indexOf("."); dot >= 0 && service === undefined; dot = host.indexOf(".", dot + 1)) {
          service = wildcard.get(host.slice(dot + 1));
        }
      }
      if (service === undefined) return undefined;
      return { service, host, port, declared: service.ports.find((p) => p.port === port) };
    },
  };
}

/** Host and port of an authority: `api.example.com`, `api.example.com:8443`, `API.example.com.` (port 80 when absent). */
function parseAuthority(authority: string): { host: string; port: number } | undefined {
  const lower = authority.toLowerCase();
  if (lower.startsWith("[")) return undefined; // external services are named, never IP literals
  const colon = lower.lastIndexOf(":");
  let host = colon < 0 ? lower : lower.slice(0, colon);
  const port = colon < 0 ? 80 : Number(lower.slice(colon + 1));
  if (!Number.isInteger(port) || port < 1 || port > 65535) return undefined;
  if (host.endsWith(".")) host = host.slice(0, -1);
  return host === "" ? undefined : { host, port };
}

export interface ExternalViewOptions {
  /**
   * Which side this view serves: a sidecar's outbound (undefined: every external service, sent
   * through its egress gateway when it names one, else directly), or the egress gateway of this
   * name (only the external services routed through it, always directly to the external host).
   */
  readonly gateway?: string;
  readonly policy?: PolicyGate;
  readonly xffTrustedHops?: number;
}

/** A RouteView over external services, with a quick test a sidecar uses before routing. */
export interface ExternalView extends RouteView {
  /** True when the Host names an external service this side serves, on a declared http or https port. */
  accepts(authority: string): boolean;
}

interface ExternalEntry {
  readonly router: Router;
  readonly cluster: Cluster;
}

/** Entries kept per view: each (service, host, port) the callers named, bounded so wildcards cannot grow a proxy without limit. */
const MAX_ENTRIES = 1024;
// Upstream of the egress side is a third party: the caller's mesh identity is not passed on to it.
const EXTERNAL_HEADERS: RouteConfig["headers"] = { request: { remove: ["x-forwarded-client-cert"] } };

/**
 * createExternalView routes calls to external services (ServiceEntry): on a sidecar, an external
 * service with `egress.gateway` goes to that gateway over mesh mTLS (its SPIFFE ID checked), other
 * ones directly; on an egress gateway, to the external host. `https` ports originate TLS there.
 * Built once per config swap; the clusters for each called host are made on first use.
 * @example
 * const view = createExternalView(snapshot, { gateway: "egress", policy });
 * if (view.accepts(head.authority)) await engine.handle(head, body, view);
 */
export function createExternalView(snapshot: Snapshot, options: ExternalViewOptions = {}): ExternalView {
  const gateway = options.gateway;
  const services = [...(snapshot.externalServices?.values() ?? [])].filter((s) => gateway === undefined || s.egress?.gateway === gateway);
  const hosts = createExternalHosts(services);
  const entries = new Map<string, ExternalEntry>();

  function entryFor(target: ExternalTarget): ExternalEntry | undefined {
    const { service, host, declared } = target;
    if (declared === undefined || (declared.protocol !== "http" && declared.protocol !== "https")) return undefined;
    const throughGateway = gateway === undefined && service.egress !== undefined;
    // Through a gateway the cluster is the gateway's, whatever the host; otherwise one per called host and port.
    const key = throughGateway ? `${service.name}|egress` : `${service.name}|${host}:${declared.port}`;
    let entry = entries.get(key);
    if (entry !== undefined) return entry;
    const cluster = createCluster(throughGateway ? gatewayService(snapshot, service, key) : directService(service, host, declared, key));
    const router = createRouter([{ name: service.name, forward: { to: [{ service: key, weight: 1 }] }, headers: EXTERNAL_HEADERS }]);
    entry = { router, cluster };
    if (entries.size >= MAX_ENTRIES) entries.delete(entries.keys().next().value!);
    entries.set(key, entry);
    return entry;
  }

  return {
    revision: snapshot.revision,
    route(head: RequestHead): RouteMatch | undefined {
      const target = hosts.match(head.authority);
      return target === undefined ? undefined : entryFor(target)?.router.match(head);
    },
    cluster: (name) => entries.get(name)?.cluster,
    policy: options.policy,
    xffTrustedHops: options.xffTrustedHops ?? 0,
    // On a sidecar these are its app's calls out; on an egress gateway, requests it serves.
    outbound: gateway === undefined,
    accepts(authority) {
      const protocol = hosts.match(authority)?.declared?.protocol;
      return protocol === "http" || protocol === "https";
    },
  };
}

function baseService(service: ExternalServiceSnapshot, key: string, endpoints: readonly Endpoint[], spiffeId: string): ServiceSnapshot {
  return {
    name: key,
    namespace: "",
    serviceAccount: "",
    spiffeId,
    hostnames: [],
    ports: [{ port: 80, protocol: "http" }],
    subsets: {},
    endpoints,
    traffic: service.traffic,
    routes: [],
    // Never read: an external cluster has no inbound side.
    inbound: {} as PolicySetConfig,
    mtlsMode: "STRICT",
  };
}

/** The egress gateway as a cluster: its registered mesh endpoints; the caller must find its SPIFFE ID. */
function gatewayService(snapshot: Snapshot, service: ExternalServiceSnapshot, key: string): ServiceSnapshot {
  const egress = service.egress!;
  const gw = snapshot.egressGateways?.get(egress.gateway);
  // No known identity or no endpoint: no endpoint to pick, so the call fails no_healthy_upstream (never goes direct).
  const endpoints = egress.spiffeId !== undefined && gw !== undefined ? gw.endpoints : [];
  return baseService(service, key, endpoints, egress.spiffeId ?? "");
}

/** The external host itself: declared endpoints or the called name, on the target port, TLS originated on https. */
function directService(
  service: ExternalServiceSnapshot,
  host: string,
  declared: ExternalServiceSnapshot["ports"][number],
  key: string,
): ServiceSnapshot {
  const targetPort = declared.targetPort ?? declared.port;
  const endpoints: Endpoint[] =
    service.endpoints.length > 0
      ? service.endpoints.map((ep) => endpointOf(ep.host, ep.port === 0 ? targetPort : ep.port))
      : [endpointOf(host, targetPort)];
  const tls = declared.protocol === "https" ? { servername: host, ...(service.tls.caFile !== undefined ? { caFile: service.tls.caFile } : {}) } : undefined;
  return { ...baseService(service, key, endpoints, ""), ...(tls ? { originateTls: tls } : {}) };
}

function endpointOf(host: string, port: number): Endpoint {
  const address = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
  return { address, host, port, labels: {}, weight: 1, draining: false };
}
