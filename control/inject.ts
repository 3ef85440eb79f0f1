// Sidecar injection: what the control plane's admission webhook (`/inject`) and `weft inject` add to a
// pod. Pure functions over plain Kubernetes JSON; the result is an RFC 6902 JSON Patch.

/** Annotations a workload uses to steer injection (all optional). */
export const ANNOTATIONS = {
  /** "false" leaves the pod alone. */
  inject: "weft.dev/inject",
  /** Set by the injector; a pod carrying it is never injected twice. */
  status: "weft.dev/status",
  /** The mesh service the pod is (default: label app.kubernetes.io/name, then app, then the service account). */
  service: "weft.dev/service",
  /** The app's port (default: the first container's first containerPort). */
  appPort: "weft.dev/app-port",
  /** "iptables" (default) captures traffic transparently; "uds" adds no init container and sets HTTP_PROXY. */
  mode: "weft.dev/capture",
  excludeInboundPorts: "weft.dev/exclude-inbound-ports",
  excludeOutboundPorts: "weft.dev/exclude-outbound-ports",
  excludeOutboundCidrs: "weft.dev/exclude-outbound-cidrs",
} as const;

/** Where the projected service-account token for attestation is mounted in the sidecar. */
export const SA_TOKEN_DIR = "/var/run/secrets/weft";
/** Audience of that token: the mesh CA, so the token is good for nothing else. */
export const SA_TOKEN_AUDIENCE = "weft-ca";
const PROXY_UID = 1337;

export interface InjectOptions {
  /** The weft image for the init and sidecar containers. */
  readonly image: string;
  /** The config bus the sidecar follows. */
  readonly natsUrl: string;
  readonly imagePullPolicy?: "Always" | "IfNotPresent" | "Never";
}

export type JsonPatchOp = { readonly op: "add" | "replace"; readonly path: string; readonly value: unknown };

export type InjectResult =
  | { readonly injected: true; readonly patch: readonly JsonPatchOp[]; readonly service: string }
  | { readonly injected: false; readonly reason: "opted_out" | "already_injected" | "host_network" | "no_app_port" | "no_service" };

type Json = Record<string, unknown>;

/**
 * injectPod works out the JSON Patch that gives a pod its sidecar: an init container that runs
 * `weft iptables` (NET_ADMIN, as root, then exits), the sidecar container (uid 1337, readiness on its
 * /ready, a projected service-account token for attestation), and the status annotation. A pod that
 * opted out, runs on the host network, or is already injected is left alone.
 * @example
 * const r = injectPod(pod, { image: "weft:0.1.0", natsUrl: "nats://nats.weft-system.svc:4222" });
 * if (r.injected) applyPatch(pod, r.patch);
 */
export function injectPod(pod: Json, options: InjectOptions): InjectResult {
  const metadata = (pod.metadata ?? {}) as Json;
  const annotations = (metadata.annotations ?? {}) as Record<string, string>;
  const labels = (metadata.labels ?? {}) as Record<string, string>;
  const spec = (pod.spec ?? {}) as Json;
  const containers = (spec.containers ?? []) as Json[];
  if (annotations[ANNOTATIONS.inject] === "false") return { injected: false, reason: "opted_out" };
  if (annotations[ANNOTATIONS.status] !== undefined || containers.some((c) => c.name === "weft-sidecar")) {
    return { injected: false, reason: "already_injected" };
  }
  if (spec.hostNetwork === true) return { injected: false, reason: "host_network" };

  const service = annotations[ANNOTATIONS.service] ?? labels["app.kubernetes.io/name"] ?? labels.app ?? (spec.serviceAccountName as string | undefined);
  if (!service) return { injected: false, reason: "no_service" };
  const appPort = annotations[ANNOTATIONS.appPort] ?? firstContainerPort(containers);
  if (!appPort) return { injected: false, reason: "no_app_port" };
  const uds = annotations[ANNOTATIONS.mode] === "uds";

  const patch: JsonPatchOp[] = [];
  const add = (path: string, value: unknown) => patch.push({ op: "add", path, value });
  if (metadata.annotations === undefined) add("/metadata/annotations", {});
  add(`/metadata/annotations/${escape(ANNOTATIONS.status)}`, "injected");

  if (!uds) {
    const iptablesArgs = ["iptables", "--proxy-uid", String(PROXY_UID)];
    const flag = (name: string, annotation: string) => {
      const value = annotations[annotation];
      if (value) iptablesArgs.push(name, value);
    };
    flag("--exclude-inbound-ports", ANNOTATIONS.excludeInboundPorts);
    flag("--exclude-outbound-ports", ANNOTATIONS.excludeOutboundPorts);
    flag("--exclude-outbound-cidrs", ANNOTATIONS.excludeOutboundCidrs);
    const init = {
      name: "weft-init",
      image: options.image,
      imagePullPolicy: options.imagePullPolicy ?? "IfNotPresent",
      args: iptablesArgs,
      securityContext: {
        runAsUser: 0,
        runAsGroup: 0,
        runAsNonRoot: false,
        allowPrivilegeEscalation: false,
        readOnlyRootFilesystem: true,
        capabilities: { add: ["NET_ADMIN", "NET_RAW"], drop: ["ALL"] },
      },
      resources: { requests: { cpu: "10m", memory: "32Mi" }, limits: { cpu: "100m", memory: "64Mi" } },
    };
    // The capture must be in place before any app container starts: first in line.
    if (spec.initContainers === undefined) add("/spec/initContainers", [init]);
    else add("/spec/initContainers/0", init);
  } else {
    // Without iptables the app reaches the mesh through its sidecar as an HTTP proxy.
    containers.forEach((c, i) => {
      const env = [{ name: "HTTP_PROXY", value: "http://127.0.0.1:15001" }, { name: "http_proxy", value: "http://127.0.0.1:15001" }];
      if (c.env === undefined) add(`/spec/containers/${i}/env`, env);
      else for (const e of env) add(`/spec/containers/${i}/env/-`, e);
    });
  }

  const sidecar = {
    name: "weft-sidecar",
    image: options.image,
    imagePullPolicy: options.imagePullPolicy ?? "IfNotPresent",
    args: [
      "sidecar",
      "--service",
      service,
      "--app-port",
      String(appPort),
      "--nats",
      options.natsUrl,
      "--sa-token-file",
      `${SA_TOKEN_DIR}/token`,
      "--proxy-id",
      "$(POD_NAME).$(POD_NAMESPACE)",
    ],
    env: [
      { name: "POD_NAME", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } },
      { name: "POD_NAMESPACE", valueFrom: { fieldRef: { fieldPath: "metadata.namespace" } } },
      { name: "WEFT_STATE_DIR", value: "/var/lib/weft" },
    ],
    ports: [{ name: "weft-inbound", containerPort: 15006 }],
    // The admin API stays on loopback; the probe runs inside the container.
    readinessProbe: { exec: { command: ["weft-probe", "http://127.0.0.1:15000/ready"] }, periodSeconds: 2, failureThreshold: 30 },
    securityContext: {
      runAsUser: PROXY_UID,
      runAsGroup: PROXY_UID,
      runAsNonRoot: true,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ["ALL"] },
    },
    resources: { requests: { cpu: "50m", memory: "96Mi" }, limits: { cpu: "1", memory: "256Mi" } },
    volumeMounts: [
      { name: "weft-token", mountPath: SA_TOKEN_DIR, readOnly: true },
      { name: "weft-state", mountPath: "/var/lib/weft" },
    ],
  };
  // Second in the list (after the app) keeps `kubectl exec`/`logs` defaulting to the app.
  add(`/spec/containers/-`, sidecar);
  const volumes = [
    {
      name: "weft-token",
      projected: { sources: [{ serviceAccountToken: { path: "token", audience: SA_TOKEN_AUDIENCE, expirationSeconds: 3600 } }] },
    },
    { name: "weft-state", emptyDir: {} },
  ];
  if (spec.volumes === undefined) add("/spec/volumes", volumes);
  else for (const v of volumes) add("/spec/volumes/-", v);
  return { injected: true, patch, service };
}

function firstContainerPort(containers: readonly Json[]): string | undefined {
  const ports = (containers[0]?.ports ?? []) as Json[];
  const port = ports.find((p) => (p.protocol ?? "TCP") === "TCP")?.containerPort;
  return typeof port === "number" ? String(port) : undefined;
}

/** JSON Pointer escaping (RFC 6901) for one path segment. */
function escape(segment: string): string {
  return segment.replace(/~/g, "~0").replace(/\//g, "~1");
}

/** Kinds whose pods come from `spec.template`; `weft inject` patches the template. */
const WORKLOAD_KINDS = new Set(["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"]);

/**
 * injectManifest applies injection to one Kubernetes object offline (`weft inject`, like
 * `istioctl kube-inject`): a Pod, or the pod template of a Deployment, StatefulSet, DaemonSet,
 * ReplicaSet or Job; a CronJob's job template too. Other objects come back unchanged.
 * @example
 * const out = injectManifest(deployment, { image: "weft:0.1.0", natsUrl });
 */
export function injectManifest(object: Json, options: InjectOptions): { object: Json; result: InjectResult | undefined } {
  const kind = object.kind as string | undefined;
  const target =
    kind === "Pod"
      ? object
      : kind !== undefined && WORKLOAD_KINDS.has(kind)
        ? ((object.spec as Json | undefined)?.template as Json | undefined)
        : kind === "CronJob"
          ? ((((object.spec as Json | undefined)?.jobTemplate as Json | undefined)?.spec as Json | undefined)?.template as Json | undefined)
          : undefined;
  if (!target) return { object, result: undefined };
  // A template carries no namespace or name of its own; injection only reads labels and annotations.
  const result = injectPod(target, options);
  if (!result.injected) return { object, result };
  const copy = structuredClone(object);
  const copyTarget = kind === "Pod" ? copy : kind === "CronJob" ? (((copy.spec as Json).jobTemplate as Json).spec as Json).template as Json : (copy.spec as Json).template as Json;
  applyPatch(copyTarget, result.patch);
  return { object: copy, result };
}

/**
 * applyPatch applies the `add` and `replace` operations injection produces, in place.
 * @example applyPatch(pod, injectPod(pod, options).patch)
 */
export function applyPatch(document: Json, patch: readonly JsonPatchOp[]): void {
  for (const op of patch) {
    const parts = op.path.split("/").slice(1).map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
    const last = parts.pop()!;
    let node: unknown = document;
    for (const p of parts) node = Array.isArray(node) ? node[Number(p)] : (node as Json)[p];
    if (Array.isArray(node)) {
      if (last === "-") node.push(op.value);
      else if (op.op === "add") node.splice(Number(last), 0, op.value);
      else node[Number(last)] = op.value;
    } else {
      (node as Json)[last] = op.value;
    }
  }
}
