import * as v from "valibot";
import { MeshSchema, type MeshConfig, type RouteConfig } from "./schema.ts";

export interface ValidateOptions {
  /**
   * The config holds only some of the mesh's gateways (a proxy's scoped view): references to
   * gateways it lacks are not checked. Default false: every gateway is there (apply, config files).
   */
  readonly partialGateways?: boolean;
}

/** One problem found in a config: where (dot path) and why. */
export interface ConfigIssue {
  readonly path: string;
  readonly message: string;
}

export type Validated<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly issues: readonly ConfigIssue[] };

/**
 * validateMesh checks a whole config and returns every problem at once, never just the first.
 * @example
 * const r = validateMesh(JSON.parse(text));
 * if (!r.ok) for (const i of r.issues) console.error(`${i.path}: ${i.message}`);
 */
export function validateMesh(input: unknown, options: ValidateOptions = {}): Validated<MeshConfig> {
  const parsed = v.safeParse(MeshSchema, input, { abortEarly: false });
  if (!parsed.success) {
    // Cross-references are checked on the raw input too, so one pass lists every problem.
    const issues = parsed.issues.flatMap((issue) => toIssues(issue));
    const seen = new Set(issues.map((i) => i.path));
    for (const extra of safeCrossCheck(input, options)) if (!seen.has(extra.path)) issues.push(extra);
    return { ok: false, issues };
  }
  const issues = crossCheck(parsed.output, options);
  return issues.length > 0 ? { ok: false, issues } : { ok: true, value: parsed.output };
}

function toIssues(issue: v.BaseIssue<unknown>, base?: string): ConfigIssue[] {
  const path = [base, v.getDotPath(issue)].filter((p) => p).join(".") || "(root)";
  // A union reports its own message plus the branch issues (paths relative to the union). When the
  // other branches refused the value's kind outright (an object where a string was also allowed),
  // the problems inside the branch that fits are the useful ones; otherwise the union's own message
  // (often written for it: "must be one of ...") says it best.
  const branches = issue.type === "union" ? (issue.issues ?? []) : [];
  const inside = branches.filter((b) => v.getDotPath(b) !== null);
  const refused = branches.filter((b) => v.getDotPath(b) === null);
  if (inside.length > 0 && refused.length > 0 && refused.every((b) => b.type !== "union")) {
    return inside.flatMap((b) => toIssues(b, path));
  }
  return [{ path, message: issue.message }];
}

function safeCrossCheck(input: unknown, options: ValidateOptions): ConfigIssue[] {
  if (!input || typeof input !== "object") return [];
  const raw = input as Partial<MeshConfig>;
  const services = raw.services && typeof raw.services === "object" ? raw.services : {};
  const gateways = raw.gateways && typeof raw.gateways === "object" ? raw.gateways : {};
  const externalServices = raw.externalServices && typeof raw.externalServices === "object" ? raw.externalServices : {};
  try {
    return crossCheck({ ...(raw as MeshConfig), services, gateways, externalServices }, options);
  } catch {
    return []; // shapes the schema already rejected
  }
}

/** References between parts of the config that a schema cannot see. */
function crossCheck(mesh: MeshConfig, options: ValidateOptions): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const checkRoutes = (routes: readonly RouteConfig[], base: string) => {
    routes.forEach((route, i) => {
      if (!isObject(route)) return; // the schema reports the shape
      const at = `${base}.${i}`;
      if (Array.isArray(route.forward?.to)) route.forward.to.forEach((dest, j) => {
        if (!isObject(dest)) return;
        const svc = own(mesh.services, dest.service);
        if (!svc) {
          issues.push({ path: `${at}.forward.to.${j}.service`, message: `service "${dest.service}" is not declared` });
          return;
        }
        if (dest.subset && !own(svc.versions, dest.subset)) {
          issues.push({ path: `${at}.forward.to.${j}.subset`, message: `service "${dest.service}" has no version "${dest.subset}"` });
        }
        if (dest.port !== undefined && Array.isArray(svc.ports) && !svc.ports.some((p) => p.port === dest.port)) {
          issues.push({ path: `${at}.forward.to.${j}.port`, message: `service "${dest.service}" has no port ${dest.port}` });
        }
      });
      const mirror = route.forward?.mirror;
      if (isObject(mirror) && typeof mirror.service === "string") {
        const svc = own(mesh.services, mirror.service);
        if (!svc) issues.push({ path: `${at}.forward.mirror.service`, message: `service "${mirror.service}" is not declared` });
        else if (mirror.subset && !own(svc.versions, mirror.subset)) {
          issues.push({ path: `${at}.forward.mirror.subset`, message: `service "${mirror.service}" has no version "${mirror.subset}"` });
        }
      }
      const matches = route.match === undefined ? [] : Array.isArray(route.match) ? route.match : [route.match];
      if (route.forward?.rewrite?.pathPrefix !== undefined || route.redirect?.prefixRewrite !== undefined) {
        if (matches.length === 0 || matches.some((m) => !isObject(m) || !isObject(m.path) || !("prefix" in m.path))) {
          issues.push({ path: `${at}`, message: "a prefix rewrite needs every match to use path.prefix" });
        }
      }
    });
  };
  for (const [name, svc] of Object.entries(mesh.services)) {
    if (!isObject(svc)) continue;
    if (Array.isArray(svc.routes)) checkRoutes(svc.routes, `services.${name}.routes`);
    if (Array.isArray(svc.endpoints)) svc.endpoints.forEach((ep, i) => {
      if (isObject(ep) && ep.version && !own(svc.versions, ep.version)) {
        issues.push({ path: `services.${name}.endpoints.${i}.version`, message: `version "${ep.version}" is not declared in services.${name}.versions` });
      }
    });
  }
  // tcp and tls routes carry bytes the proxy cannot read: their destination port must speak tcp or tls.
  const checkL4Routes = (routes: unknown, base: string) => {
    if (!Array.isArray(routes)) return;
    routes.forEach((route: unknown, i) => {
      if (!isObject(route) || !Array.isArray((route as { to?: unknown }).to)) return;
      (route as { to: unknown[] }).to.forEach((dest, j) => {
        if (!isObject(dest)) return;
        const { service, subset, port } = dest as { service?: string; subset?: string; port?: number };
        const at = `${base}.${i}.to.${j}`;
        const svc = typeof service === "string" ? own(mesh.services, service) : undefined;
        if (!svc) {
          if (typeof service === "string") issues.push({ path: `${at}.service`, message: `service "${service}" is not declared` });
          return;
        }
        if (subset && !own(svc.versions, subset)) issues.push({ path: `${at}.subset`, message: `service "${service}" has no version "${subset}"` });
        const ports = Array.isArray(svc.ports) ? svc.ports : [{ port: 80, protocol: "http" }];
        if (port === undefined) {
          if (!ports.some((p) => isObject(p) && (p.protocol === "tcp" || p.protocol === "tls"))) {
            issues.push({ path: `${at}.port`, message: `service "${service}" declares no tcp or tls port: name one` });
          }
          return;
        }
        const declared = ports.find((p) => isObject(p) && p.port === port);
        if (!declared) issues.push({ path: `${at}.port`, message: `service "${service}" has no port ${port}` });
        else if (declared.protocol !== "tcp" && declared.protocol !== "tls") {
          issues.push({ path: `${at}.port`, message: `port ${port} of service "${service}" speaks ${declared.protocol ?? "http"}, not tcp or tls` });
        }
      });
    });
  };
  for (const [name, gw] of Object.entries(mesh.gateways)) {
    if (!isObject(gw)) continue;
    if (Array.isArray(gw.routes)) checkRoutes(gw.routes, `gateways.${name}.routes`);
    checkL4Routes(gw.tcpRoutes, `gateways.${name}.tcpRoutes`);
    checkL4Routes(gw.tlsRoutes, `gateways.${name}.tlsRoutes`);
    const seen = new Map<string, number>();
    if (Array.isArray(gw.listeners)) gw.listeners.forEach((l, i) => {
      if (!isObject(l)) return;
      const key = `${l.address ?? "0.0.0.0"}:${l.port}`;
      if (l.port !== 0 && seen.has(key)) {
        issues.push({ path: `gateways.${name}.listeners.${i}.port`, message: `${key} is already used by listener ${seen.get(key)}` });
      }
      seen.set(key, i);
      if (gw.kind === "egress" && ((l.protocol ?? "http") !== "http" || l.tls !== undefined || l.http2 === true)) {
        issues.push({ path: `gateways.${name}.listeners.${i}`, message: "an egress gateway's listeners speak mesh mTLS: protocol http, without tls or http2" });
      }
    });
    if (gw.kind === "egress" && own(mesh.services, name)) {
      // The gateway registers its mesh endpoints under its name, in the services' key space.
      issues.push({ path: `gateways.${name}`, message: `an egress gateway cannot share its name with service "${name}"` });
    }
  }
  issues.push(...checkExternalServices(mesh, options));
  return issues;
}

function checkExternalServices(mesh: MeshConfig, options: ValidateOptions): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const hostOwner = new Map<string, string>();
  // A mesh service's names are routed to the mesh first: an external host with one of them would never be reached.
  const meshNames = new Map<string, string>();
  for (const [name, svc] of Object.entries(mesh.services)) {
    const ns = isObject(svc) && typeof svc.namespace === "string" ? svc.namespace : "default";
    for (const host of [name, `${name}.${ns}`, `${name}.${ns}.svc`, `${name}.${ns}.svc.cluster.local`]) meshNames.set(host, name);
  }
  // Through one egress gateway a tcp port is routed by its number alone, so it must not be shared.
  const egressPorts = new Map<string, { service: string; protocol: string }>();
  for (const [name, ext] of Object.entries(mesh.externalServices ?? {})) {
    if (!isObject(ext)) continue;
    const at = `externalServices.${name}`;
    const via = isObject(ext.egress) && typeof ext.egress.gateway === "string" ? ext.egress.gateway : undefined;
    if (via !== undefined && Array.isArray(ext.ports)) ext.ports.forEach((p, i) => {
      if (!isObject(p) || (p.protocol !== "tcp" && p.protocol !== "tls")) return;
      const key = `${via}:${p.port}`;
      const other = egressPorts.get(key);
      if (other === undefined) egressPorts.set(key, { service: name, protocol: p.protocol });
      else if (other.service !== name && (other.protocol === "tcp" || p.protocol === "tcp")) {
        issues.push({ path: `${at}.ports.${i}.port`, message: `port ${p.port} is also a ${other.protocol} port of external service "${other.service}" through egress gateway "${via}": a tcp port is routed by its number alone` });
      }
    });
    if (Array.isArray(ext.hosts)) ext.hosts.forEach((host, i) => {
      if (typeof host !== "string") return;
      const other = hostOwner.get(host);
      const service = meshNames.get(host);
      if (service !== undefined) issues.push({ path: `${at}.hosts.${i}`, message: `host "${host}" is a name of mesh service "${service}"` });
      else if (other !== undefined && other !== name) issues.push({ path: `${at}.hosts.${i}`, message: `host "${host}" is already declared by external service "${other}"` });
      else if (other === name) issues.push({ path: `${at}.hosts.${i}`, message: `host "${host}" is listed twice` });
      hostOwner.set(host, name);
    });
    const ports = new Set<number>();
    if (Array.isArray(ext.ports)) ext.ports.forEach((p, i) => {
      if (!isObject(p)) return;
      if (ports.has(p.port)) issues.push({ path: `${at}.ports.${i}.port`, message: `port ${p.port} is declared twice` });
      ports.add(p.port);
    });
    if (ext.resolution === "STATIC" && ext.endpoints === undefined) issues.push({ path: `${at}.endpoints`, message: "resolution STATIC needs endpoints" });
    const gateway = isObject(ext.egress) ? ext.egress.gateway : undefined;
    if (typeof gateway === "string") {
      const gw = own(mesh.gateways, gateway);
      if (gw === undefined && !options.partialGateways) {
        issues.push({ path: `${at}.egress.gateway`, message: `gateway "${gateway}" is not declared` });
      } else if (gw !== undefined && isObject(gw) && gw.kind !== "egress") {
        issues.push({ path: `${at}.egress.gateway`, message: `gateway "${gateway}" is not an egress gateway (kind: "egress")` });
      }
    }
  }
  return issues;
}

// The cross-check also runs on raw input the schema refused, so every step tolerates a wrong shape
// (one bad part must not hide the problems elsewhere) and names are looked up as own keys only
// ("constructor" is a valid DNS label and an Object.prototype key).
function isObject(value: unknown): value is object {
  return typeof value === "object" && value !== null;
}

function own<T>(record: Readonly<Record<string, T>> | undefined, key: string): T | undefined {
  return isObject(record) && Object.hasOwn(record, key) ? record[key] : undefined;
}
