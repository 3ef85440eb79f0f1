/**
 * The bus layout in one place: bucket names, KV keys, subjects, and the JSON wire encoding.
 *
 * | name | kind | content |
 * |---|---|---|
 * | `weft-config` | KV bucket | `mesh`, `svc.<service>`, `gw.<gateway>`, `eps.<service>` |
 * | `weft-trust` | KV bucket | `bundle.<trust-domain>`: every root the domain currently trusts |
 * | `weft.registry.<service>` | subject | sidecar heartbeats |
 * | `weft.ca.sign` | request/reply | CSR + attestation → SVID chain |
 * | `weft.rls.check` | request/reply | global rate-limit decision |
 * | `weft.status.<proxy-id>` | subject | applied revisions (ACK) and rejections (NACK) |
 * | `weft.telemetry.<proxy-id>` | subject | a proxy's periodic stats |
 * | `weft.control.apply` / `.status` / `.get` | request/reply | the control plane's API for the CLI |
 * | `applied` in `weft-config` | KV key | the last apply: generation, time, every service and gateway (written last: the commit record) |
 * | `lock.apply` in `weft-config` | KV key | the apply lock (compare-and-set) that serialises control-plane replicas |
 *
 * Names that go into a key or subject must be one bus token (`[A-Za-z0-9_-]+`): a `.` would split it
 * into two tokens and break `*` filters. Use `toBusToken` for free-form ids such as host names.
 */

/** The KV bucket with the compiled mesh config. */
export const CONFIG_BUCKET = "weft-config";
/** The KV bucket with the trust bundles. */
export const TRUST_BUCKET = "weft-trust";
/** Values kept per key in weft's buckets (the control plane and the proxies open them with the same value). */
export const BUCKET_HISTORY = 5;

/** The global mesh settings key in `weft-config`. */
export const MESH_KEY = "mesh";
/** Filter over every service key. */
export const SERVICE_KEYS = "svc.*";
/** Filter over every gateway key. */
export const GATEWAY_KEYS = "gw.*";
/** Filter over every endpoints key. */
export const ENDPOINTS_KEYS = "eps.*";
/** Filter over every trust bundle key. */
export const TRUST_BUNDLE_KEYS = "bundle.>";

/** The apply record in `weft-config`: latest generation, when, and every service and gateway (proxies do not watch it). */
export const APPLIED_KEY = "applied";

/** The key whose compare-and-set serialises applies from several control-plane replicas. */
export const APPLY_LOCK_KEY = "lock.apply";

/** Request/reply subjects of the control plane's API (used by `weft apply`, `weft status`, `weft get`). */
export const CONTROL_APPLY_SUBJECT = "weft.control.apply";
export const CONTROL_STATUS_SUBJECT = "weft.control.status";
export const CONTROL_GET_SUBJECT = "weft.control.get";

/** Request/reply subject of the certificate authority. */
export const CA_SIGN_SUBJECT = "weft.ca.sign";
/** Request/reply subject of the global rate-limit service. */
export const RLS_CHECK_SUBJECT = "weft.rls.check";
/** Every service's registry heartbeats. */
export const REGISTRY_SUBJECTS = "weft.registry.*";
/** Every proxy's status reports. */
export const STATUS_SUBJECTS = "weft.status.*";
/** Every proxy's telemetry. */
export const TELEMETRY_SUBJECTS = "weft.telemetry.*";

const TOKEN_RE = /^[-\w]+$/;
const TRUST_DOMAIN_RE = /^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/;

/**
 * isBusToken tells whether a name can be one token of a key or subject.
 * @example
 * isBusToken("web"); // true
 */
export function isBusToken(name: string): boolean {
  return TOKEN_RE.test(name);
}

/**
 * toBusToken turns a free-form id (a host name, a pod name) into one bus token by replacing other characters with `-`.
 * @example
 * toBusToken("gateway-ip-10-0-0-1.ec2.internal-42"); // "gateway-ip-10-0-0-1-ec2-internal-42"
 */
export function toBusToken(raw: string): string {
  const token = raw.replace(/[^-\w]/g, "-");
  if (token === "") throw new TypeError("toBusToken: empty id");
  return token;
}

function token(kind: string, name: string): string {
  if (!isBusToken(name)) throw new TypeError(`${kind} must be one bus token ([A-Za-z0-9_-]+), got ${JSON.stringify(name)}`);
  return name;
}

/**
 * serviceKey is the `weft-config` key of one service's routes and policies.
 * @example
 * serviceKey("web"); // "svc.web"
 */
export function serviceKey(service: string): string {
  return `svc.${token("service name", service)}`;
}

/**
 * gatewayKey is the `weft-config` key of one gateway's listeners and routes.
 * @example
 * gatewayKey("edge"); // "gw.edge"
 */
export function gatewayKey(gateway: string): string {
  return `gw.${token("gateway name", gateway)}`;
}

/**
 * endpointsKey is the `weft-config` key of one service's endpoints (written by the control plane from the registry).
 * @example
 * endpointsKey("web"); // "eps.web"
 */
export function endpointsKey(service: string): string {
  return `eps.${token("service name", service)}`;
}

/**
 * trustBundleKey is the `weft-trust` key of one trust domain's bundle.
 * @example
 * trustBundleKey("cluster.local"); // "bundle.cluster.local"
 */
export function trustBundleKey(trustDomain: string): string {
  if (!TRUST_DOMAIN_RE.test(trustDomain)) throw new TypeError(`invalid trust domain ${JSON.stringify(trustDomain)}`);
  return `bundle.${trustDomain}`;
}

const CONFIG_KINDS = new Map<string, "service" | "gateway" | "endpoints">([["svc", "service"], ["gw", "gateway"], ["eps", "endpoints"]]);

export type ConfigKey =
  | { readonly kind: "mesh" }
  | { readonly kind: "service" | "gateway" | "endpoints"; readonly name: string };

/**
 * parseConfigKey tells what a `weft-config` key holds; `undefined` for a key outside the layout.
 * @example
 * parseConfigKey("svc.web"); // { kind: "service", name: "web" }
 */
export function parseConfigKey(key: string): ConfigKey | undefined {
  if (key === MESH_KEY) return { kind: "mesh" };
  const dot = key.indexOf(".");
  const name = key.slice(dot + 1);
  if (dot < 0 || !isBusToken(name)) return undefined;
  const kind = CONFIG_KINDS.get(key.slice(0, dot));
  return kind ? { kind, name } : undefined;
}

/**
 * registrySubject is where a service's sidecars publish heartbeats.
 * @example
 * registrySubject("web"); // "weft.registry.web"
 */
export function registrySubject(service: string): string {
  return `weft.registry.${token("service name", service)}`;
}

/**
 * statusSubject is where a proxy reports the revision it applied or why it refused one.
 * @example
 * statusSubject("sidecar-web-1"); // "weft.status.sidecar-web-1"
 */
export function statusSubject(proxyId: string): string {
  return `weft.status.${token("proxy id", proxyId)}`;
}

/**
 * telemetrySubject is where a proxy publishes its stats.
 * @example
 * telemetrySubject("sidecar-web-1"); // "weft.telemetry.sidecar-web-1"
 */
export function telemetrySubject(proxyId: string): string {
  return `weft.telemetry.${token("proxy id", proxyId)}`;
}

export type WeftSubject =
  | { readonly kind: "registry"; readonly service: string }
  | { readonly kind: "status" | "telemetry"; readonly proxyId: string }
  | { readonly kind: "ca_sign" | "rls_check" };

/**
 * parseSubject tells what a weft subject carries and for whom; `undefined` for a subject outside the layout.
 * @example
 * parseSubject("weft.status.gw-1"); // { kind: "status", proxyId: "gw-1" }
 */
export function parseSubject(subject: string): WeftSubject | undefined {
  if (subject === CA_SIGN_SUBJECT) return { kind: "ca_sign" };
  if (subject === RLS_CHECK_SUBJECT) return { kind: "rls_check" };
  const [weft, kind, name, ...rest] = subject.split(".");
  if (weft !== "weft" || name === undefined || rest.length > 0 || !isBusToken(name)) return undefined;
  if (kind === "registry") return { kind, service: name };
  if (kind === "status" || kind === "telemetry") return { kind, proxyId: name };
  return undefined;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * encodeJson turns a JSON-serialisable value into the bytes weft puts on the bus; throws TypeError for anything else.
 * @example
 * await kv.put(serviceKey("web"), encodeJson(service));
 */
export function encodeJson(value: unknown): Uint8Array {
  const text = JSON.stringify(value);
  if (text === undefined) throw new TypeError("encodeJson: value is not JSON-serialisable");
  return encoder.encode(text);
}

export type DecodeResult =
  | { readonly ok: true; readonly value: unknown }
  | { readonly ok: false; readonly reason: "invalid_utf8" | "invalid_json"; readonly message: string };

/**
 * decodeJson reads bytes from the bus as JSON and never throws: corrupted input is refused as a value.
 * The result is `unknown`; validate it (valibot) before use, the wire is untrusted.
 * @example
 * const decoded = decodeJson(entry.value);
 * if (!decoded.ok) return nack(decoded.reason);
 */
export function decodeJson(bytes: Uint8Array): DecodeResult {
  let text: string;
  try {
    if (!(bytes instanceof Uint8Array)) return { ok: false, reason: "invalid_json", message: "not a byte array" };
    text = decoder.decode(bytes);
  } catch (err) {
    return { ok: false, reason: "invalid_utf8", message: err instanceof Error ? err.message : String(err) };
  }
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch (err) {
    return { ok: false, reason: "invalid_json", message: err instanceof Error ? err.message : String(err) };
  }
}
