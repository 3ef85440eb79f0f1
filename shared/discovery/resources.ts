import * as v from "valibot";
import {
  compileMesh,
  egressIdentities,
  parseEndpoint,
  validateMesh,
  TLS_MODE_LABEL,
  type ConfigIssue,
  type EgressGatewaySnapshot,
  type GatewayConfig,
  type MeshConfig,
  type ServiceConfig,
  type ServiceSnapshot,
  type Snapshot,
} from "../config/index.ts";
import { endpointsKey, gatewayKey, MESH_KEY, serviceKey } from "../bus/index.ts";

/**
 * The resources the control plane writes to the `weft-config` bucket. Each carries the generation
 * of the apply that last changed it; a proxy's revision is the highest generation it runs.
 * Service and gateway resources hold the validated config section (defaults filled in), so a proxy
 * checks them with the same schema the control plane used: the wire is untrusted.
 */
export interface MeshResource {
  readonly generation: number;
  readonly trustDomain: string;
  readonly outboundTrafficPolicy: MeshConfig["outboundTrafficPolicy"];
  readonly accessLog: MeshConfig["accessLog"];
  /** Absent in resources written before tracing settings travelled (then: the defaults). */
  readonly tracing?: MeshConfig["tracing"];
  /** External services, for every proxy (absent: none). */
  readonly externalServices?: MeshConfig["externalServices"];
  /** SPIFFE ID of each egress gateway by name: sidecars check it but do not watch gateway keys (absent: none). */
  readonly egressGateways?: Readonly<Record<string, string>>;
}

/**
 * The `applied` key: written last by every apply that changed something. Proxies do not watch it,
 * so an apply reaches only the proxies whose keys it changed.
 */
export interface AppliedRecord {
  readonly generation: number;
  readonly appliedAt: string;
  readonly services: readonly string[];
  readonly gateways: readonly string[];
}

export interface ServiceResource {
  readonly generation: number;
  readonly name: string;
  readonly config: ServiceConfig;
}

export interface GatewayResource {
  readonly generation: number;
  readonly name: string;
  readonly config: GatewayConfig;
}

/** An endpoint announced by a proxy through the registry. */
export interface RegisteredEndpoint {
  readonly address: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly weight: number;
  readonly draining: boolean;
  readonly proxyId: string;
}

export interface EndpointsResource {
  readonly service: string;
  readonly endpoints: readonly RegisteredEndpoint[];
}

const Token = v.pipe(v.string(), v.regex(/^[-\w]+$/));

export const MeshResourceSchema = v.object({
  generation: v.pipe(v.number(), v.integer(), v.minValue(0)),
  trustDomain: v.string(),
  outboundTrafficPolicy: v.picklist(["REGISTRY_ONLY", "ALLOW_ANY"]),
  accessLog: v.unknown(),
  tracing: v.optional(v.unknown()),
  externalServices: v.optional(v.unknown()),
  egressGateways: v.optional(v.record(Token, v.pipe(v.string(), v.startsWith("spiffe://")))),
});

const SectionResourceSchema = v.object({
  generation: v.pipe(v.number(), v.integer(), v.minValue(0)),
  name: Token,
  config: v.record(v.string(), v.unknown()),
});

export const RegisteredEndpointSchema = v.object({
  address: v.pipe(v.string(), v.regex(/^(unix:\/.+|\[[0-9a-f:.]+\]:\d{1,5}|[a-z0-9.-]+:\d{1,5})$/i, "must be host:port or unix:/path")),
  labels: v.record(v.string(), v.string()),
  weight: v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(1_000_000)),
  draining: v.boolean(),
  proxyId: Token,
});

const EndpointsResourceSchema = v.object({
  service: Token,
  endpoints: v.array(RegisteredEndpointSchema),
});

/**
 * splitMesh turns a validated config into the keys proxies watch (mesh, svc.*, gw.*), for one generation.
 * @example
 * for (const [key, value] of splitMesh(config, 7)) await kv.put(key, encodeJson(value));
 */
export function splitMesh(config: MeshConfig, generation: number): Map<string, unknown> {
  const out = new Map<string, unknown>();
  const egress = egressIdentities(config);
  const mesh: MeshResource = {
    generation,
    trustDomain: config.trustDomain,
    outboundTrafficPolicy: config.outboundTrafficPolicy,
    accessLog: config.accessLog,
    tracing: config.tracing,
    // Only when there are some: a mesh without external services keeps the record it always had.
    ...(Object.keys(config.externalServices).length > 0 ? { externalServices: config.externalServices } : {}),
    ...(Object.keys(egress).length > 0 ? { egressGateways: egress } : {}),
  };
  out.set(MESH_KEY, mesh);
  for (const [name, svc] of Object.entries(config.services)) out.set(serviceKey(name), { generation, name, config: svc } satisfies ServiceResource);
  for (const [name, gw] of Object.entries(config.gateways)) out.set(gatewayKey(name), { generation, name, config: gw } satisfies GatewayResource);
  return out;
}

/** Everything one proxy holds: the mesh resource, the sections it needs, and their endpoints. */
export interface ProxyResources {
  readonly mesh: MeshResource;
  readonly gateways: ReadonlyMap<string, GatewayResource>;
  readonly services: ReadonlyMap<string, ServiceResource>;
  readonly endpoints: ReadonlyMap<string, EndpointsResource>;
}

export type Assembled = { readonly ok: true; readonly snapshot: Snapshot } | { readonly ok: false; readonly issues: readonly ConfigIssue[] };

/**
 * assembleSnapshot validates what a proxy received (same schemas as the control plane), compiles
 * it, and adds the registered endpoints to the declared ones. Revision = highest generation held.
 * @example
 * const r = assembleSnapshot(resources);
 * if (r.ok) ingress.apply(r.snapshot); else nack(r.issues);
 */
export function assembleSnapshot(res: ProxyResources): Assembled {
  const issues: ConfigIssue[] = [];
  const check = <T>(schema: v.GenericSchema<unknown, T>, value: unknown, at: string): T | undefined => {
    const r = v.safeParse(schema, value, { abortEarly: false });
    if (!r.success) for (const i of r.issues) issues.push({ path: `${at}.${v.getDotPath(i) ?? "(root)"}`, message: i.message });
    return r.success ? r.output : undefined;
  };
  check(MeshResourceSchema, res.mesh, MESH_KEY);
  let revision = res.mesh.generation;
  const services: Record<string, unknown> = {};
  const gateways: Record<string, unknown> = {};
  for (const [name, r] of res.services) {
    const ok = check(SectionResourceSchema, r, serviceKey(name));
    if (ok) {
      services[name] = r.config;
      revision = Math.max(revision, r.generation);
    }
  }
  for (const [name, r] of res.gateways) {
    const ok = check(SectionResourceSchema, r, gatewayKey(name));
    if (ok) {
      gateways[name] = r.config;
      revision = Math.max(revision, r.generation);
    }
  }
  for (const [name, r] of res.endpoints) check(EndpointsResourceSchema, r, endpointsKey(name));
  if (issues.length > 0) return { ok: false, issues };

  const validated = validateMesh({
    trustDomain: res.mesh.trustDomain,
    outboundTrafficPolicy: res.mesh.outboundTrafficPolicy,
    accessLog: res.mesh.accessLog,
    ...(res.mesh.tracing !== undefined ? { tracing: res.mesh.tracing } : {}),
    ...(res.mesh.externalServices !== undefined ? { externalServices: res.mesh.externalServices } : {}),
    services,
    gateways,
  }, { partialGateways: true });
  if (!validated.ok) return validated;
  const compiled = compileMesh(validated.value, revision, { egressIdentities: res.mesh.egressGateways ?? {} });
  if (res.endpoints.size === 0) return { ok: true, snapshot: compiled };
  const egressGateways = new Map<string, EgressGatewaySnapshot>();
  for (const [name, gw] of compiled.egressGateways ?? []) {
    // An egress gateway registers its mesh listener like a workload; only mesh-labelled endpoints count.
    const registered = (res.endpoints.get(name)?.endpoints ?? []).filter((e) => e.labels[TLS_MODE_LABEL] === "mesh");
    egressGateways.set(name, Object.freeze({ ...gw, endpoints: Object.freeze(registered.map((e) => Object.freeze(parseEndpoint(e.address, Object.freeze({ ...e.labels }), e.weight, e.draining)))) }));
  }
  const withEndpoints = new Map<string, ServiceSnapshot>();
  for (const [name, svc] of compiled.services) {
    const registered = res.endpoints.get(name)?.endpoints ?? [];
    if (registered.length === 0) {
      withEndpoints.set(name, svc);
      continue;
    }
    const declared = new Set(svc.endpoints.map((e) => e.address));
    const extra = registered
      .filter((e) => !declared.has(e.address))
      .map((e) => {
        const version = e.labels.version;
        const labels = Object.freeze({ ...e.labels, ...(version !== undefined ? svc.subsets[version] : undefined) });
        return Object.freeze(parseEndpoint(e.address, labels, e.weight, e.draining));
      });
    withEndpoints.set(name, Object.freeze({ ...svc, endpoints: Object.freeze([...svc.endpoints, ...extra]) }));
  }
  return { ok: true, snapshot: Object.freeze({ ...compiled, services: withEndpoints, egressGateways }) };
}

/**
 * serviceDependencies lists the services a set of routes can send to, following each service's own
 * routes (a caller applies them), so a proxy knows every key it must watch.
 * @example
 * serviceDependencies(gw.config.routes, (name) => services.get(name)?.config)
 */
export function serviceDependencies(
  routes: readonly { readonly forward?: { readonly to: readonly { readonly service: string }[]; readonly mirror?: { readonly service: string } } }[],
  lookup: (service: string) => ServiceConfig | undefined,
): Set<string> {
  const seen = new Set<string>();
  const visit = (rs: typeof routes) => {
    for (const r of rs) {
      // A mirror's shadow service is sent to as well: its endpoints must be known too.
      const targets = r.forward?.mirror ? [...r.forward.to, r.forward.mirror] : (r.forward?.to ?? []);
      for (const d of targets) {
        if (seen.has(d.service)) continue;
        seen.add(d.service);
        const svc = lookup(d.service);
        if (svc?.routes) visit(svc.routes);
      }
    }
  };
  visit(routes);
  return seen;
}
