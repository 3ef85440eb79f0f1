import type { DestinationPolicyConfig, Endpoint, ExternalServiceSnapshot, Snapshot } from "../config/index.ts";
import { createExternalHosts, type ExternalTarget } from "./external.ts";
import type { ConnectionHead, TcpReason } from "./tcp.ts";

/** Where an external service's tcp or tls connection goes from this proxy. */
export interface ExternalTcpTarget {
  readonly ok: true;
  /** The external service's name (the access log's `route`). */
  readonly route: string;
  /** The cluster key (the access log's `service`, and what maxConnections counts): `<name>|egress` or `<name>|<host>:<port>`. */
  readonly cluster: string;
  readonly traffic: DestinationPolicyConfig;
  readonly endpoint: Endpoint;
  /** Through the egress gateway: mesh mTLS to it, its SPIFFE ID checked, the declared port in the transport header. */
  readonly mesh?: { readonly expectedId: string; readonly port: number };
}

/** Why an external connection is refused, with what was learnt of it for the record. */
export interface ExternalTcpRefusal {
  readonly ok: false;
  readonly reason: TcpReason;
  readonly route?: string;
}

/** Routes connections to external services' `tcp` and `tls` ports; built once per config swap. */
export interface ExternalTcpView {
  readonly revision: number;
  /** Whether a connection for `port` is TLS (its SNI is read first) or TCP; undefined: no such port here. */
  protocolOf(port: number): "tcp" | "tls" | undefined;
  /** Where the connection goes, or why it is refused. `head.localPort` is the declared port, `head.sni` the ClientHello's name. */
  resolve(head: ConnectionHead, random: () => number): ExternalTcpTarget | ExternalTcpRefusal;
}

/**
 * createExternalTcpForwardView routes a sidecar's `--tcp-outbound HOST:PORT` listener: every
 * connection goes to that external service port, through its egress gateway (mesh mTLS) when it
 * names one (which checks the SNI), else straight to its endpoints (STATIC) or the called name (DNS:
 * the SNI on a tls port), the ClientHello's SNI then being one of the service's hosts (`sni_mismatch`).
 * @example
 * const view = createExternalTcpForwardView(snapshot, "api.external.test", 443);
 */
export function createExternalTcpForwardView(snapshot: Snapshot, host: string, port: number): ExternalTcpView {
  const target = createExternalHosts(snapshot.externalServices?.values() ?? []).match(`${host}:${port}`);
  const protocol = l4Protocol(target);
  const service = target?.service;
  return {
    revision: snapshot.revision,
    protocolOf: () => protocol,
    resolve(head, random) {
      if (service === undefined || protocol === undefined) return { ok: false, reason: "no_route" };
      const route = service.name;
      const egress = service.egress;
      if (egress === undefined) {
        let called = target!.host;
        if (protocol === "tls") {
          const sni = checkSni(service, head.sni);
          if (sni === undefined) return { ok: false, reason: "sni_mismatch", route };
          called = sni;
        }
        return direct(service, called, target!.declared!, random);
      }
      // Through the egress gateway the SNI is checked there, where it also picks the external service.
      const gateway = snapshot.egressGateways?.get(egress.gateway);
      const live = gateway?.endpoints.filter((e) => !e.draining) ?? [];
      // No identity or no endpoint: refused, never sent out directly instead.
      if (egress.spiffeId === undefined || live.length === 0) return { ok: false, reason: "no_healthy_upstream", route };
      return {
        ok: true,
        route,
        cluster: `${route}|egress`,
        traffic: service.traffic,
        endpoint: live[Math.floor(random() * live.length)]!,
        mesh: { expectedId: egress.spiffeId, port },
      };
    },
  };
}

/**
 * createEgressTcpView routes the raw TCP an egress gateway receives over mesh mTLS: the transport
 * header names the declared port; on a `tls` port the SNI picks the external service (one routed
 * through this gateway, declaring that port `tls`), on a `tcp` port the port alone does. The caller
 * is authorized (by its SPIFFE ID) before anything else.
 * @example
 * const view = createEgressTcpView(snapshot, "egress", (head) => authz(head));
 */
export function createEgressTcpView(snapshot: Snapshot, gateway: string, authorize: (head: ConnectionHead) => boolean): ExternalTcpView {
  const services = [...(snapshot.externalServices?.values() ?? [])].filter((s) => s.egress?.gateway === gateway);
  const hosts = createExternalHosts(services);
  const ports = new Map<number, { protocol: "tcp" | "tls"; service: ExternalServiceSnapshot }>();
  for (const service of services) {
    for (const p of service.ports) {
      // Validation refuses two services sharing a tcp port through one gateway: first one wins here.
      if ((p.protocol === "tcp" || p.protocol === "tls") && !ports.has(p.port)) ports.set(p.port, { protocol: p.protocol, service });
    }
  }
  return {
    revision: snapshot.revision,
    protocolOf: (port) => ports.get(port)?.protocol,
    resolve(head, random) {
      const declared = ports.get(head.localPort);
      if (declared === undefined) return { ok: false, reason: "unknown_port" };
      if (!authorize(head)) return { ok: false, reason: "denied" };
      if (declared.protocol === "tcp") {
        const service = declared.service;
        const port = service.ports.find((p) => p.port === head.localPort)!;
        return direct(service, service.hosts.find((h) => !h.startsWith("*.")) ?? "", port, random);
      }
      const target = head.sni === undefined ? undefined : hosts.match(`${head.sni}:${head.localPort}`);
      if (target === undefined || target.declared?.protocol !== "tls") return { ok: false, reason: "sni_mismatch" };
      return direct(target.service, target.host, target.declared, random);
    },
  };
}

function l4Protocol(target: ExternalTarget | undefined): "tcp" | "tls" | undefined {
  const protocol = target?.declared?.protocol;
  return protocol === "tcp" || protocol === "tls" ? protocol : undefined;
}

/** The SNI when it names one of the service's hosts (exact, or under a `*.suffix`), lower case. */
function checkSni(service: ExternalServiceSnapshot, sni: string | undefined): string | undefined {
  if (sni === undefined) return undefined;
  const name = sni.toLowerCase();
  for (const host of service.hosts) {
    if (host.startsWith("*.") ? name.length > host.length - 1 && name.endsWith(host.slice(1)) : name === host) return name;
  }
  return undefined;
}

/** Straight to the external host: a declared endpoint (STATIC), or the called name on the target port (DNS). */
function direct(
  service: ExternalServiceSnapshot,
  host: string,
  declared: ExternalServiceSnapshot["ports"][number],
  random: () => number,
): ExternalTcpTarget | ExternalTcpRefusal {
  const targetPort = declared.targetPort ?? declared.port;
  const route = service.name;
  let endpoint: Endpoint;
  if (service.endpoints.length > 0) {
    const ep = service.endpoints[Math.floor(random() * service.endpoints.length)]!;
    endpoint = endpointOf(ep.host, ep.port === 0 ? targetPort : ep.port);
  } else if (host === "") {
    // A tcp port of a service with only wildcard hosts and no endpoints: no name to resolve.
    return { ok: false, reason: "no_healthy_upstream", route };
  } else endpoint = endpointOf(host, targetPort);
  return { ok: true, route, cluster: `${route}|${host}:${declared.port}`, traffic: service.traffic, endpoint };
}

function endpointOf(host: string, port: number): Endpoint {
  const address = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
  return { address, host, port, labels: {}, weight: 1, draining: false };
}
