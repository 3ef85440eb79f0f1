import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import jsonpatch from "fast-json-patch";
import { Pod } from "kubernetes-models/v1";
import { Deployment } from "kubernetes-models/apps/v1";
import { ANNOTATIONS, applyPatch, injectManifest, injectPod, type InjectOptions } from "./inject.ts";
import { runWeft } from "../test/harness/weft-process.ts";

const OPTIONS: InjectOptions = { image: "weft:0.1.0", natsUrl: "nats://nats.weft-system.svc:4222" };

function pod(extra: { annotations?: Record<string, string>; spec?: Record<string, unknown> } = {}): Record<string, unknown> {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: "orders-1", namespace: "shop", labels: { "app.kubernetes.io/name": "orders" }, ...(extra.annotations ? { annotations: extra.annotations } : {}) },
    spec: {
      serviceAccountName: "orders",
      containers: [{ name: "app", image: "shop/orders:1", ports: [{ name: "http", containerPort: 8080 }] }],
      ...extra.spec,
    },
  };
}

/** Applies a patch the way the API server does (RFC 6902, validated), returning the new document. */
function applyRfc6902(doc: Record<string, unknown>, patch: readonly unknown[]): Record<string, unknown> {
  const errors = jsonpatch.validate(patch as jsonpatch.Operation[], doc);
  assert.equal(errors, undefined, String(errors));
  return jsonpatch.applyPatch(structuredClone(doc), patch as jsonpatch.Operation[], true, false).newDocument as Record<string, unknown>;
}

type Container = { name: string; args?: string[]; env?: { name: string; value?: string }[]; securityContext?: Record<string, unknown> };

test("the injection patch applies cleanly as RFC 6902 and the patched pod validates against the Pod schema", () => {
  const original = pod();
  const r = injectPod(original, OPTIONS);
  assert.ok(r.injected);
  const patched = applyRfc6902(original, r.patch);
  new Pod(patched as ConstructorParameters<typeof Pod>[0]).validate();
  const spec = patched.spec as { initContainers: Container[]; containers: Container[]; volumes: { name: string }[] };
  assert.deepEqual(spec.containers.map((c) => c.name), ["app", "weft-sidecar"]);
  assert.deepEqual(spec.initContainers.map((c) => c.name), ["weft-init"]);
  assert.deepEqual(spec.initContainers[0]!.args, ["iptables", "--proxy-uid", "1337"]);
  assert.deepEqual((spec.initContainers[0]!.securityContext as { capabilities: { add: string[] } }).capabilities.add, ["NET_ADMIN", "NET_RAW"]);
  const sidecar = spec.containers[1]!;
  assert.deepEqual(sidecar.args!.slice(0, 5), ["sidecar", "--service", "orders", "--app-port", "8080"]);
  assert.equal((sidecar.securityContext as { runAsUser: number }).runAsUser, 1337);
  assert.deepEqual(spec.volumes.map((v) => v.name), ["weft-token", "weft-state"]);
  assert.equal((patched.metadata as { annotations: Record<string, string> }).annotations[ANNOTATIONS.status], "injected");
});

test("weft's own patch applier gives the same pod as an RFC 6902 implementation", () => {
  const original = pod({ annotations: { team: "shop" }, spec: { initContainers: [{ name: "migrate", image: "shop/migrate:1" }], volumes: [{ name: "data", emptyDir: {} }] } });
  const r = injectPod(original, OPTIONS);
  assert.ok(r.injected);
  const ours = structuredClone(original);
  applyPatch(ours, r.patch);
  assert.deepEqual(ours, applyRfc6902(original, r.patch));
  // The capture runs before the pod's own init containers.
  assert.deepEqual((ours.spec as { initContainers: Container[] }).initContainers.map((c) => c.name), ["weft-init", "migrate"]);
});

test("injecting an injected pod again is a no-op", () => {
  const r = injectPod(pod(), OPTIONS);
  assert.ok(r.injected);
  const once = applyRfc6902(pod(), r.patch);
  assert.deepEqual(injectPod(once, OPTIONS), { injected: false, reason: "already_injected" });
});

test("a pod that opts out, or runs on the host network, is left alone", () => {
  assert.deepEqual(injectPod(pod({ annotations: { [ANNOTATIONS.inject]: "false" } }), OPTIONS), { injected: false, reason: "opted_out" });
  assert.deepEqual(injectPod(pod({ spec: { hostNetwork: true } }), OPTIONS), { injected: false, reason: "host_network" });
});

test("annotations set the excluded ports and CIDRs of the capture", () => {
  const original = pod({ annotations: { [ANNOTATIONS.excludeInboundPorts]: "9090", [ANNOTATIONS.excludeOutboundPorts]: "5432,6379", [ANNOTATIONS.excludeOutboundCidrs]: "10.0.0.0/8" } });
  const r = injectPod(original, OPTIONS);
  assert.ok(r.injected);
  const init = (applyRfc6902(original, r.patch).spec as { initContainers: Container[] }).initContainers[0]!;
  assert.deepEqual(init.args, ["iptables", "--proxy-uid", "1337", "--exclude-inbound-ports", "9090", "--exclude-outbound-ports", "5432,6379", "--exclude-outbound-cidrs", "10.0.0.0/8"]);
});

test("Unix-socket mode adds no init container and points the app at its sidecar as HTTP proxy", () => {
  const original = pod({ annotations: { [ANNOTATIONS.mode]: "uds" } });
  const r = injectPod(original, OPTIONS);
  assert.ok(r.injected);
  const patched = applyRfc6902(original, r.patch);
  new Pod(patched as ConstructorParameters<typeof Pod>[0]).validate();
  const spec = patched.spec as { initContainers?: Container[]; containers: Container[] };
  assert.equal(spec.initContainers, undefined);
  assert.deepEqual(spec.containers[0]!.env, [
    { name: "HTTP_PROXY", value: "http://127.0.0.1:15001" },
    { name: "http_proxy", value: "http://127.0.0.1:15001" },
  ]);
});

test("the service and app port come from annotations when given", () => {
  const original = pod({ annotations: { [ANNOTATIONS.service]: "orders-v2", [ANNOTATIONS.appPort]: "9000" } });
  const r = injectPod(original, OPTIONS);
  assert.ok(r.injected);
  assert.equal(r.service, "orders-v2");
  const sidecar = (applyRfc6902(original, r.patch).spec as { containers: Container[] }).containers[1]!;
  assert.deepEqual(sidecar.args!.slice(0, 5), ["sidecar", "--service", "orders-v2", "--app-port", "9000"]);
});

test("a pod without a port to forward to is not injected", () => {
  assert.deepEqual(injectPod(pod({ spec: { containers: [{ name: "app", image: "x" }] } }), OPTIONS), { injected: false, reason: "no_app_port" });
});

test("the demo Deployments are injected in their pod templates and still validate", () => {
  const docs = parseAllDocuments(readFileSync(new URL("../deploy/k8s/demo/apps.yaml", import.meta.url), "utf8")).map((d) => d.toJS() as Record<string, unknown>);
  const deployments = docs.filter((d) => d.kind === "Deployment");
  assert.ok(deployments.length >= 2);
  for (const d of deployments) {
    const { object, result } = injectManifest(d, OPTIONS);
    assert.ok(result?.injected, JSON.stringify(result));
    new Deployment(object as ConstructorParameters<typeof Deployment>[0]).validate();
    const names = ((object.spec as { template: { spec: { containers: Container[] } } }).template.spec.containers).map((c) => c.name);
    assert.deepEqual(names, ["app", "weft-sidecar"]);
  }
  // Objects without pods come back as they were.
  const service = docs.find((d) => d.kind === "Service")!;
  assert.equal(injectManifest(service, OPTIONS).object, service);
});

test("weft inject -f prints the manifest with a sidecar in every workload", async () => {
  const r = await runWeft(["inject", "-f", "deploy/k8s/demo/apps.yaml", "--image", "weft:test"]);
  assert.equal(r.code, 0, r.stderr);
  const docs = parseAllDocuments(r.stdout).map((d) => d.toJS() as { kind: string; spec?: { template?: { spec: { containers: Container[] } } } });
  const sidecars = docs.flatMap((d) => d.spec?.template?.spec.containers.filter((c) => c.name === "weft-sidecar") ?? []);
  assert.equal(sidecars.length, docs.filter((d) => d.kind === "Deployment").length);
});
