import type { DestinationPolicyConfig, ExternalServiceConfig, GatewayConfig, RouteConfig, TracingConfig } from "./schema.ts";
import type { PolicySetConfig } from "./policy-schema.ts";

/**
 * Endpoint label set on endpoints whose proxy terminates mesh mTLS (a sidecar's inbound port), value
 * `mesh` (Istio's `security.istio.io/tlsMode: istio`). Callers originate mTLS only to such endpoints.
 */
export const TLS_MODE_LABEL = "security.weft.dev/tlsMode";

/** One instance of a service that a proxy can send requests to. */
export interface Endpoint {
  /** host:port or unix:/path, as declared or registered. */
  readonly address: string;
  readonly host: string;
  readonly port: number;
  /** Set for a Unix-socket endpoint. */
  readonly socketPath?: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly weight: number;
  /** A draining endpoint finishes what it has and gets no new requests. */
  readonly draining: boolean;
}

/** A service as every proxy sees it after compilation. */
export interface ServiceSnapshot {
  readonly name: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  /** SPIFFE ID its workloads hold: spiffe://<trust-domain>/ns/<ns>/sa/<sa>. */
  readonly spiffeId: string;
  /** Names a caller may use as Host: name, name.ns, name.ns.svc, name.ns.svc.<trust-domain-cluster-suffix>. */
  readonly hostnames: readonly string[];
  readonly ports: readonly { readonly port: number; readonly protocol: string; readonly name?: string }[];
  /** Version subset name → labels. */
  readonly subsets: Readonly<Record<string, Readonly<Record<string, string>>>>;
  readonly endpoints: readonly Endpoint[];
  readonly traffic: DestinationPolicyConfig;
  /** Routes for calls to this service; always at least one (the default route to the service). */
  readonly routes: readonly RouteConfig[];
  readonly inbound: PolicySetConfig;
  /** STRICT (mTLS only) or PERMISSIVE (mTLS or plaintext) on the inbound port. */
  readonly mtlsMode: "STRICT" | "PERMISSIVE";
  /** Set on an external service's cluster whose port is `https`: callers originate TLS (see UpstreamTls). */
  readonly originateTls?: { readonly servername: string; readonly caFile?: string };
}

/** An external service (ServiceEntry) as every proxy sees it after compilation. */
export interface ExternalServiceSnapshot {
  readonly name: string;
  readonly hosts: readonly string[];
  readonly ports: ExternalServiceConfig["ports"];
  readonly resolution: "DNS" | "STATIC";
  /** Declared endpoints; port 0 where the address named none (the called port's targetPort then). */
  readonly endpoints: readonly Endpoint[];
  readonly tls: { readonly caFile?: string };
  /** The egress gateway calls go through, and the SPIFFE ID it must prove; absent: direct from the sidecar. */
  readonly egress?: { readonly gateway: string; readonly spiffeId: string | undefined };
  readonly traffic: DestinationPolicyConfig;
}

/** An egress gateway as sidecars reach it: its identity and the mesh endpoints it registered. */
export interface EgressGatewaySnapshot {
  readonly name: string;
  readonly spiffeId: string;
  readonly endpoints: readonly Endpoint[];
}

export interface GatewaySnapshot extends GatewayConfig {
  readonly name: string;
  /** SPIFFE ID the gateway holds when it speaks mTLS into the mesh. */
  readonly spiffeId: string;
}

/** The whole compiled, frozen configuration one proxy runs. */
export interface Snapshot {
  /** Monotonic revision of the config this was built from (0 for a file loaded locally). */
  readonly revision: number;
  readonly trustDomain: string;
  readonly outboundTrafficPolicy: "REGISTRY_ONLY" | "ALLOW_ANY";
  readonly accessLog: "off" | "json" | { readonly text: string };
  /** Tracing settings; absent in snapshots built before the field existed (then: 1%, no export). */
  readonly tracing?: Readonly<TracingConfig>;
  readonly services: ReadonlyMap<string, ServiceSnapshot>;
  readonly gateways: ReadonlyMap<string, GatewaySnapshot>;
  /** External services (absent in snapshots built before the field existed: none). */
  readonly externalServices?: ReadonlyMap<string, ExternalServiceSnapshot>;
  /** Egress gateways that external services route through (absent: none). */
  readonly egressGateways?: ReadonlyMap<string, EgressGatewaySnapshot>;
}
