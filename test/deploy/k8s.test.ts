// The Kubernetes manifests: every object that `kubectl kustomize` renders for deploy/k8s, the base and
// each overlay validates against the Kubernetes API schemas (kubernetes-models, offline), and the
// objects agree with each other (selectors, ports, volumes, webhook target, RBAC, replicas).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { parseAllDocuments } from "yaml";
import { validateMesh } from "../../shared/config/index.ts";
import demoMesh from "../../deploy/k8s/demo/weft.config.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const TARGETS = ["deploy/k8s", "deploy/k8s/base", "deploy/k8s/overlays/dev", "deploy/k8s/overlays/ha"] as const;

type K8sObject = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> }; [k: string]: unknown };
// Loose views of the fields the cross-checks read; the schema validation above them checks the shapes.
type Container = { name: string; image?: string; command?: string[]; args?: string[]; ports?: { name?: string; containerPort: number }[]; volumeMounts?: { name: string; mountPath: string }[] };
type PodSpec = { containers: Container[]; initContainers?: Container[]; volumes?: { name: string; configMap?: { name: string }; secret?: { secretName: string } }[]; serviceAccountName?: string; securityContext?: { runAsUser?: number; runAsNonRoot?: boolean } };

function render(dir: string): K8sObject[] {
  let out: string;
  try {
    out = execFileSync("kubectl", ["kustomize", dir], { cwd: ROOT, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (err) {
    throw new Error(`kubectl kustomize ${dir} failed (kubectl is in Debian's base image here; otherwise install it): ${String((err as { stderr?: string }).stderr ?? err)}`);
  }
  return parseAllDocuments(out).map((d) => d.toJS() as K8sObject).filter((o) => o !== null);
}

async function validateObject(obj: K8sObject): Promise<void> {
  const [group, version] = obj.apiVersion.includes("/") ? obj.apiVersion.split("/") : ["", obj.apiVersion];
  const mod = (await import(group ? `kubernetes-models/${group}/${version}` : `kubernetes-models/${version}`)) as Record<string, new (o: unknown) => { validate(): void }>;
  const Model = mod[obj.kind];
  assert.ok(Model, `no schema for ${obj.apiVersion} ${obj.kind}`);
  new Model(obj).validate();
}

function podSpec(obj: K8sObject): PodSpec | undefined {
  const spec = obj.spec as { template?: { spec: PodSpec; metadata?: { labels?: Record<string, string> } } } | undefined;
  if (obj.kind === "Deployment" || obj.kind === "StatefulSet" || obj.kind === "Job") return spec?.template?.spec;
  return undefined;
}
function podLabels(obj: K8sObject): Record<string, string> {
  return (obj.spec as { template?: { metadata?: { labels?: Record<string, string> } } }).template?.metadata?.labels ?? {};
}
const find = (objs: K8sObject[], kind: string, name: string) => objs.find((o) => o.kind === kind && o.metadata.name === name);
const rendered = new Map(TARGETS.map((t) => [t, render(t)]));

for (const target of TARGETS) {
  test(`every object kustomize renders for ${target} validates against the Kubernetes API schema`, async () => {
    const objs = rendered.get(target)!;
    assert.ok(objs.length >= 10, `only ${objs.length} objects rendered`);
    for (const obj of objs) {
      await assert.doesNotReject(validateObject(obj), `${obj.kind}/${obj.metadata.name}`);
    }
  });

  test(`${target}: every Service selects pods that declare the ports it targets`, () => {
    const objs = rendered.get(target)!;
    for (const svc of objs.filter((o) => o.kind === "Service")) {
      const spec = svc.spec as { selector: Record<string, string>; ports: { name: string; targetPort: string | number }[] };
      const pods = objs.filter((o) => podSpec(o) && o.metadata.namespace === svc.metadata.namespace && Object.entries(spec.selector).every(([k, v]) => podLabels(o)[k] === v));
      assert.ok(pods.length > 0, `Service ${svc.metadata.name} selects no workload`);
      for (const port of spec.ports) {
        for (const pod of pods) {
          const declared = podSpec(pod)!.containers.flatMap((c) => c.ports ?? []);
          assert.ok(declared.some((p) => p.name === port.targetPort || p.containerPort === port.targetPort), `${svc.metadata.name}:${port.name} targets ${port.targetPort}, not declared by ${pod.metadata.name}`);
        }
      }
    }
  });

  test(`${target}: every mounted volume is declared, and every ConfigMap it names is rendered`, () => {
    const objs = rendered.get(target)!;
    for (const obj of objs) {
      const spec = podSpec(obj);
      if (!spec) continue;
      const claims = ((obj.spec as { volumeClaimTemplates?: { metadata: { name: string } }[] }).volumeClaimTemplates ?? []).map((t) => t.metadata.name);
      const volumes = new Set([...(spec.volumes ?? []).map((v) => v.name), ...claims]);
      for (const c of [...spec.containers, ...(spec.initContainers ?? [])]) {
        for (const m of c.volumeMounts ?? []) assert.ok(volumes.has(m.name), `${obj.metadata.name}/${c.name} mounts undeclared volume ${m.name}`);
      }
      for (const v of spec.volumes ?? []) {
        if (v.configMap) assert.ok(find(objs, "ConfigMap", v.configMap.name), `${obj.metadata.name} mounts missing ConfigMap ${v.configMap.name}`);
        // The CA Secret is the one object made by hand (docs/deploy.md); it is never rendered.
        if (v.secret) assert.equal(v.secret.secretName, "weft-control-ca");
      }
      if (spec.serviceAccountName) assert.ok(find(objs, "ServiceAccount", spec.serviceAccountName), `${obj.metadata.name} runs as missing ServiceAccount ${spec.serviceAccountName}`);
    }
  });

  test(`${target}: weft containers run a weft subcommand as a non-root user`, () => {
    const objs = rendered.get(target)!;
    const commands = ["control", "gateway", "apply", "sidecar", "iptables", "status", "get"];
    for (const obj of objs) {
      const spec = podSpec(obj);
      if (!spec) continue;
      for (const c of [...spec.containers, ...(spec.initContainers ?? [])].filter((c) => c.image?.includes("weft"))) {
        if (c.command) assert.ok(["node", "cp"].includes(c.command[0]!), `${obj.metadata.name}/${c.name}: unexpected command ${c.command[0]}`);
        else assert.ok(commands.includes(c.args?.[0] ?? ""), `${obj.metadata.name}/${c.name}: runs weft ${c.args?.[0]}`);
      }
      assert.equal(spec.securityContext?.runAsNonRoot, true, `${obj.metadata.name} may run as root`);
    }
  });
}

test("the injection webhook targets the control plane's /inject on 15017 for namespaces labelled weft-injection=enabled", () => {
  const objs = rendered.get("deploy/k8s/base")!;
  const hook = find(objs, "MutatingWebhookConfiguration", "weft-sidecar-injector")!;
  const [webhook] = hook.webhooks as { clientConfig: { service: { name: string; namespace: string; path: string; port: number } }; namespaceSelector: { matchLabels: Record<string, string> }; rules: { resources: string[]; operations: string[] }[] }[];
  assert.deepEqual(webhook!.clientConfig.service, { name: "weft-control", namespace: "weft-system", path: "/inject", port: 15017 });
  assert.deepEqual(webhook!.namespaceSelector.matchLabels, { "weft-injection": "enabled" });
  assert.deepEqual(webhook!.rules.map((r) => [r.resources, r.operations]), [[["pods"], ["CREATE"]]]);
  const svc = find(objs, "Service", "weft-control")!;
  assert.ok((svc.spec as { ports: { port: number }[] }).ports.some((p) => p.port === 15017));
  const demoNs = find(rendered.get("deploy/k8s/overlays/dev")!, "Namespace", "weft-demo")!;
  assert.equal(demoNs.metadata.labels?.["weft-injection"], "enabled");
});

test("the control plane's ClusterRole grants exactly pods/services read, tokenreviews create and its own webhook's get/patch", () => {
  const role = find(rendered.get("deploy/k8s/base")!, "ClusterRole", "weft-control")!;
  const grants = (role.rules as { apiGroups: string[]; resources: string[]; verbs: string[]; resourceNames?: string[] }[]).flatMap((r) =>
    r.apiGroups.flatMap((g) => r.resources.flatMap((res) => r.verbs.map((v) => `${g}/${res}:${v}${r.resourceNames ? `@${r.resourceNames.join(",")}` : ""}`))),
  );
  assert.deepEqual(grants.sort(), [
    "/pods:get", "/pods:list", "/pods:watch", "/services:get", "/services:list", "/services:watch",
    "admissionregistration.k8s.io/mutatingwebhookconfigurations:get@weft-sidecar-injector",
    "admissionregistration.k8s.io/mutatingwebhookconfigurations:patch@weft-sidecar-injector",
    "authentication.k8s.io/tokenreviews:create",
  ].sort());
});

test("replicas: base runs 2 control planes, the ha overlay 3 NATS servers routed to each other, dev one of each", () => {
  const replicas = (target: (typeof TARGETS)[number], kind: string, name: string) => (find(rendered.get(target)!, kind, name)!.spec as { replicas: number }).replicas;
  assert.equal(replicas("deploy/k8s/base", "Deployment", "weft-control"), 2);
  assert.equal(replicas("deploy/k8s/base", "StatefulSet", "nats"), 1);
  assert.equal(replicas("deploy/k8s/overlays/dev", "Deployment", "weft-control"), 1);
  assert.equal(replicas("deploy/k8s/overlays/ha", "StatefulSet", "nats"), 3);
  const nats = find(rendered.get("deploy/k8s/overlays/ha")!, "StatefulSet", "nats")!;
  const args = podSpec(nats)!.containers[0]!.args!;
  const routes = args[args.indexOf("--routes") + 1]!.split(",");
  assert.deepEqual(routes, [0, 1, 2].map((i) => `nats://nats-${i}.nats-headless.weft-system.svc:6222`));
  assert.ok(args.includes("-js"));
  for (const kind of ["PodDisruptionBudget"]) {
    assert.deepEqual(rendered.get("deploy/k8s/overlays/ha")!.filter((o) => o.kind === kind).map((o) => o.metadata.name).sort(), ["nats", "weft-control", "weft-gateway"]);
  }
  const lb = find(rendered.get("deploy/k8s/base")!, "Service", "weft-gateway")!;
  assert.equal((lb.spec as { type: string }).type, "LoadBalancer");
});

test("the demo mesh config is valid and its endpoints are the demo Services and ports", () => {
  const r = validateMesh(demoMesh);
  assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
  const objs = rendered.get("deploy/k8s/overlays/dev")!;
  for (const [name, svc] of Object.entries(demoMesh.services)) {
    for (const ep of svc.endpoints ?? []) {
      const [host, port] = ep.address.split(":");
      const [svcName, ns] = host!.split(".");
      const k8sSvc = objs.find((o) => o.kind === "Service" && o.metadata.name === svcName && o.metadata.namespace === ns);
      assert.ok(k8sSvc, `${name}: no Service ${host}`);
      assert.ok((k8sSvc.spec as { ports: { port: number }[] }).ports.some((p) => p.port === Number(port)), `${name}: Service ${host} has no port ${port}`);
    }
  }
  const gatewayPort = demoMesh.gateways.ingress.listeners[0]!.port;
  const gw = podSpec(find(objs, "Deployment", "weft-gateway")!)!.containers[0]!;
  assert.ok(gw.ports!.some((p) => p.name === "http" && p.containerPort === gatewayPort));
});

test("the schema validation has teeth: a string replica count, a named Service port and an unknown kind are refused", async () => {
  const deployment = structuredClone(find(rendered.get("deploy/k8s/base")!, "Deployment", "weft-gateway")!);
  (deployment.spec as { replicas: unknown }).replicas = "two";
  await assert.rejects(validateObject(deployment));
  const service = structuredClone(find(rendered.get("deploy/k8s/base")!, "Service", "weft-gateway")!);
  (service.spec as { ports: { port: unknown }[] }).ports[0]!.port = "http";
  await assert.rejects(validateObject(service));
  await assert.rejects(validateObject({ apiVersion: "policy/v1", kind: "NoSuchKind", metadata: { name: "x" } }));
});
