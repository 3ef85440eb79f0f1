import type { ReviewServiceAccountToken } from "../shared/identity/index.ts";
import {
  APPLIED_KEY,
  BUCKET_HISTORY,
  CONFIG_BUCKET,
  CONTROL_APPLY_SUBJECT,
  CONTROL_GET_SUBJECT,
  CONTROL_STATUS_SUBJECT,
  decodeJson,
  encodeJson,
  type Bus,
  type BusMessage,
  type Subscription,
} from "../shared/bus/index.ts";
import { validateMesh, type ConfigIssue, type RouteConfig } from "../shared/config/index.ts";
import type { AppliedRecord, EndpointsResource, GatewayResource, ServiceResource } from "../shared/discovery/index.ts";
import { applyMesh, type ApplyResult } from "./apply.ts";
import { startCaService, type CaService } from "./ca.ts";
import { createConfigMirror, type ConfigMirror } from "./mirror.ts";
import { startLeasedRateLimitService, type LeasedRateLimitServiceOptions } from "./ratelimit.ts";
import { createRegistry, type Registry } from "./registry.ts";
import { createStatusTracker, type ProxyStatusRow, type StatusTracker } from "./status.ts";

export type ApplyReply = ApplyResult | { readonly ok: false; readonly reason: "invalid_config"; readonly issues: readonly ConfigIssue[] };
export type GetKind = "routes" | "services" | "endpoints" | "gateways";
export const GET_KINDS: readonly GetKind[] = ["routes", "services", "endpoints", "gateways"];

export interface ControlPlaneOptions {
  readonly bus: Bus;
  /** This replica's id (lock holder name). */
  readonly id: string;
  readonly log?: { info(msg: string, fields?: Record<string, unknown>): void; warn(msg: string, fields?: Record<string, unknown>): void };
  /** Registry sweep period (default 500 ms). */
  readonly sweepMs?: number;
  /** Run the mesh CA for this trust domain, keeping its state in stateDir (omit: no CA in this process). */
  readonly ca?: { readonly trustDomain: string; readonly stateDir: string; readonly leafTtlMs?: number; readonly reviewServiceAccountToken?: ReviewServiceAccountToken };
  /** The global rate limiter's lease timing (one replica answers `weft.rls.check`; see control/ratelimit.ts). */
  readonly rateLimit?: Pick<LeasedRateLimitServiceOptions, "leaseTtlMs" | "renewMs">;
}

export interface ControlPlane {
  /** Validates (same schemas as the CLI and the proxies), compiles into per-section keys, and writes the changes. */
  apply(input: unknown): Promise<ApplyReply>;
  status(): ProxyStatusRow[];
  /** The certificate authority, when this replica runs one. */
  readonly ca: CaService | undefined;
  get(kind: GetKind): unknown[];
  stop(): Promise<void>;
}

/**
 * startControlPlane opens the config bucket, mirrors it, runs the registry and the status tracker,
 * and answers the CLI on `weft.control.*`. Several replicas may run against one bus.
 * @example
 * const control = await startControlPlane({ bus, id: "control-1" });
 */
export async function startControlPlane(options: ControlPlaneOptions): Promise<ControlPlane> {
  const { bus, id, log } = options;
  const kv = await bus.kv(CONFIG_BUCKET, { history: BUCKET_HISTORY });
  const mirror: ConfigMirror = createConfigMirror(kv);
  await mirror.ready();
  const registry: Registry = createRegistry({ bus, kv, mirror, sweepMs: options.sweepMs, log });
  const tracker: StatusTracker = createStatusTracker({ bus, mirror });
  const ca = options.ca
    ? await startCaService({ bus, trustDomain: options.ca.trustDomain, stateDir: options.ca.stateDir, leafTtlMs: options.ca.leafTtlMs, reviewServiceAccountToken: options.ca.reviewServiceAccountToken, log: { info: (m, f) => log?.info(m, f), error: (m, f) => log?.warn(m, f) } })
    : undefined;
  const rls = await startLeasedRateLimitService({ bus, kv, holder: id, log, ...options.rateLimit });

  async function apply(input: unknown): Promise<ApplyReply> {
    const validated = validateMesh(input);
    if (!validated.ok) return { ok: false, reason: "invalid_config", issues: validated.issues };
    if (ca && validated.value.trustDomain !== ca.ca.trustDomain) {
      return { ok: false, reason: "invalid_config", issues: [{ path: "trustDomain", message: `must be "${ca.ca.trustDomain}", the trust domain of the mesh CA` }] };
    }
    const r = await applyMesh(validated.value, { kv, mirror, holder: id });
    if (r.ok && r.changes.length > 0) log?.info("config applied", { generation: r.generation, changes: r.changes.length });
    if (!r.ok) log?.warn("apply failed", { reason: r.reason, message: r.message });
    return r;
  }

  function get(kind: GetKind): unknown[] {
    const entries = [...mirror.entries()].sort(([a], [b]) => (a < b ? -1 : 1));
    const of = <T>(prefix: string) => entries.filter(([k]) => k.startsWith(prefix)).map(([, v]) => v as T);
    if (kind === "services") {
      const registered = new Map(of<EndpointsResource>("eps.").map((e) => [e.service, e.endpoints.length]));
      return of<ServiceResource>("svc.").map((s) => ({
        name: s.name,
        namespace: s.config.namespace,
        ports: s.config.ports.map((p) => `${p.port}/${p.protocol}`).join(","),
        versions: Object.keys(s.config.versions ?? {}).join(","),
        endpoints: (s.config.endpoints?.length ?? 0) + (registered.get(s.name) ?? 0),
        generation: s.generation,
      }));
    }
    if (kind === "gateways") {
      return of<GatewayResource>("gw.").map((g) => ({
        name: g.name,
        listeners: g.config.listeners.map((l) => `${l.address}:${l.port}/${l.protocol}`).join(","),
        routes: g.config.routes.length,
        generation: g.generation,
      }));
    }
    if (kind === "endpoints") {
      const rows: unknown[] = [];
      for (const s of of<ServiceResource>("svc.")) {
        for (const e of s.config.endpoints ?? []) rows.push({ service: s.name, address: e.address, labels: e.version ? `version=${e.version}` : "", weight: e.weight, draining: false, source: "config" });
      }
      for (const e of of<EndpointsResource>("eps.")) {
        for (const ep of e.endpoints) {
          rows.push({ service: e.service, address: ep.address, labels: Object.entries(ep.labels).map(([k, v]) => `${k}=${v}`).join(","), weight: ep.weight, draining: ep.draining, source: ep.proxyId });
        }
      }
      return rows;
    }
    const rows: unknown[] = [];
    const describe = (owner: string, routes: readonly RouteConfig[]) => {
      routes.forEach((r, i) => rows.push({ owner, route: r.name ?? `#${i}`, match: summarizeMatch(r), action: summarizeAction(r) }));
    };
    for (const g of of<GatewayResource>("gw.")) describe(`gw.${g.name}`, g.config.routes);
    for (const s of of<ServiceResource>("svc.")) if (s.config.routes) describe(`svc.${s.name}`, s.config.routes);
    return rows;
  }

  const serve = (subject: string, handle: (body: unknown) => Promise<unknown> | unknown): Subscription =>
    bus.subscribe(subject, (msg: BusMessage) => {
      const decoded = decodeJson(msg.data);
      void Promise.resolve(decoded.ok ? handle(decoded.value) : { ok: false, reason: "bad_request", message: decoded.message })
        .catch((err: unknown) => ({ ok: false, reason: "internal", message: String(err) }))
        .then((reply) => msg.respond?.(encodeJson(reply)));
    });
  const subs = [
    serve(CONTROL_APPLY_SUBJECT, (body) => apply((body as { config?: unknown })?.config)),
    serve(CONTROL_STATUS_SUBJECT, () => ({ ok: true, rows: tracker.rows(), generation: (mirror.get(APPLIED_KEY) as AppliedRecord | undefined)?.generation ?? 0 })),
    serve(CONTROL_GET_SUBJECT, (body) => {
      const kind = (body as { kind?: string })?.kind as GetKind;
      return GET_KINDS.includes(kind) ? { ok: true, items: get(kind) } : { ok: false, reason: "bad_request", message: `kind must be one of ${GET_KINDS.join(", ")}` };
    }),
  ];
  await bus.flush();
  log?.info("control plane ready", { id, generation: (mirror.get(APPLIED_KEY) as AppliedRecord | undefined)?.generation ?? 0 });

  return {
    apply,
    status: () => tracker.rows(),
    ca,
    get,
    async stop() {
      for (const s of subs) s.unsubscribe();
      await rls.stop();
      ca?.stop();
      registry.stop();
      tracker.stop();
      mirror.stop();
    },
  };
}

function summarizeMatch(r: RouteConfig): string {
  const ms = r.match === undefined ? [] : Array.isArray(r.match) ? r.match : [r.match];
  if (ms.length === 0) return "*";
  return ms
    .map((m) => {
      const parts: string[] = [];
      if (m.hosts) parts.push(`host=${m.hosts.join("|")}`);
      if (m.path) parts.push("exact" in m.path ? `path=${m.path.exact}` : "prefix" in m.path ? `prefix=${m.path.prefix}` : `regex=${m.path.regex}`);
      if (m.methods) parts.push(`methods=${m.methods.join("|")}`);
      if (m.headers) parts.push(`headers=${Object.keys(m.headers).join(",")}`);
      if (m.query) parts.push(`query=${Object.keys(m.query).join(",")}`);
      return parts.join(" ") || "*";
    })
    .join(" OR ");
}

function summarizeAction(r: RouteConfig): string {
  if (r.forward) return `forward ${r.forward.to.map((d) => `${d.service}${d.subset ? `/${d.subset}` : ""}${r.forward!.to.length > 1 ? `:${d.weight}` : ""}`).join(" ")}`;
  if (r.redirect) return `redirect ${r.redirect.status}`;
  return `direct ${r.directResponse?.status}`;
}
