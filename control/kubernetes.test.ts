// Kubernetes mode against a local stand-in for the API server (there is no cluster here): it speaks
// the real TokenReview and MutatingWebhookConfiguration JSON over TLS and checks the bearer token.
// The webhook itself is real: TLS from the mesh CA, AdmissionReview v1 in, JSON Patch out.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import jsonpatch from "fast-json-patch";
import { Pod } from "kubernetes-models/v1";
import { createMemoryBus, createMemoryNetwork } from "../shared/bus/index.ts";
import { createIdentityAgent } from "../shared/discovery/index.ts";
import { createCertificateAuthority } from "../shared/identity/index.ts";
import { startCaService, type CaService } from "./ca.ts";
import { SA_TOKEN_AUDIENCE } from "./inject.ts";
import { createTokenReviewer, type KubeApi } from "./kube.ts";
import { startKubernetesMode } from "./kubernetes.ts";

const TD = "cluster.local";
const API_TOKEN = "control-plane-sa-token";

/** Tokens the stand-in API server knows: token → [username, audiences]. */
const TOKENS: Record<string, [string, string[]]> = {
  "web-pod-token": ["system:serviceaccount:shop:web", [SA_TOKEN_AUDIENCE]],
  "other-audience-token": ["system:serviceaccount:shop:web", ["https://kubernetes.default.svc"]],
  "human-token": ["alice@example.com", [SA_TOKEN_AUDIENCE]],
};

async function startApiServer() {
  const ca = await createCertificateAuthority({ trustDomain: "kube.test" });
  const serving = await ca.issueServing(["localhost"], 3_600_000);
  const webhookConfig: Record<string, unknown> = {
    apiVersion: "admissionregistration.k8s.io/v1",
    kind: "MutatingWebhookConfiguration",
    metadata: { name: "weft-sidecar-injector" },
    webhooks: [{ name: "inject.weft.dev", clientConfig: { service: { name: "weft-control", namespace: "weft-system", path: "/inject", port: 15017 } } }],
  };
  let failReviews = false;
  const server = https.createServer({ cert: serving.chainPem.join(""), key: serving.keyPem }, (req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      const send = (status: number, value: unknown) => {
        res.writeHead(status, { "content-type": "application/json" });
        res.end(JSON.stringify(value));
      };
      if (req.headers.authorization !== `Bearer ${API_TOKEN}`) return send(401, { kind: "Status", code: 401 });
      if (req.method === "POST" && req.url === "/apis/authentication.k8s.io/v1/tokenreviews") {
        if (failReviews) return send(500, { kind: "Status", code: 500 });
        const review = JSON.parse(body) as { spec: { token: string; audiences: string[] } };
        const known = TOKENS[review.spec.token];
        const audiences = known?.[1].filter((a) => review.spec.audiences.includes(a)) ?? [];
        const status = known && audiences.length > 0 ? { authenticated: true, user: { username: known[0] }, audiences } : { authenticated: false, error: "invalid token" };
        return send(201, { ...review, status });
      }
      const path = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/weft-sidecar-injector";
      if (req.url === path && req.method === "GET") return send(200, webhookConfig);
      if (req.url === path && req.method === "PATCH") {
        assert.equal(req.headers["content-type"], "application/json-patch+json");
        const patched = jsonpatch.applyPatch(structuredClone(webhookConfig), JSON.parse(body) as jsonpatch.Operation[], true, false).newDocument;
        Object.assign(webhookConfig, patched);
        return send(200, webhookConfig);
      }
      send(404, { kind: "Status", code: 404 });
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const api: KubeApi = { server: `https://localhost:${(server.address() as AddressInfo).port}`, caPem: ca.bundle().join(""), token: async () => API_TOKEN };
  return {
    api,
    webhookConfig,
    failReviews: (on: boolean) => (failReviews = on),
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

describe("control plane in Kubernetes mode", () => {
  let dir: string;
  let apiServer: Awaited<ReturnType<typeof startApiServer>>;
  let network: ReturnType<typeof createMemoryNetwork>;
  let caService: CaService;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "weft-k8s-"));
    apiServer = await startApiServer();
    network = createMemoryNetwork();
    caService = await startCaService({
      bus: createMemoryBus({ network }),
      trustDomain: TD,
      stateDir: dir,
      reviewServiceAccountToken: createTokenReviewer(apiServer.api, [SA_TOKEN_AUDIENCE]),
    });
  });

  after(async () => {
    caService?.stop();
    await apiServer?.close();
    await rm(dir, { recursive: true, force: true });
  });

  test("TokenReview: a pod's projected token for the CA's audience names its namespace and service account", async () => {
    const review = createTokenReviewer(apiServer.api, [SA_TOKEN_AUDIENCE]);
    assert.deepEqual(await review("web-pod-token"), { ok: true, namespace: "shop", serviceAccount: "web" });
    assert.deepEqual(await review("other-audience-token"), { ok: false });
    assert.deepEqual(await review("human-token"), { ok: false });
    assert.deepEqual(await review("forged"), { ok: false });
  });

  test("a sidecar attesting with its service-account token gets the SVID of that account, and only that one", async () => {
    const agent = createIdentityAgent({
      bus: createMemoryBus({ network }),
      trustDomain: TD,
      spiffeId: `spiffe://${TD}/ns/shop/sa/web`,
      attestation: async () => ({ kind: "k8s_sa_token", token: "web-pod-token" }),
    });
    try {
      const m = await agent.start();
      assert.equal(m.svid.spiffeId, `spiffe://${TD}/ns/shop/sa/web`);
    } finally {
      agent.stop();
    }
    const impostor = createIdentityAgent({
      bus: createMemoryBus({ network }),
      trustDomain: TD,
      spiffeId: `spiffe://${TD}/ns/shop/sa/payments`,
      attestation: async () => ({ kind: "k8s_sa_token", token: "web-pod-token" }),
    });
    await assert.rejects(impostor.start(), /id_not_attested/);
    impostor.stop();
  });

  test("TokenReview unreachable: the CA refuses (fails closed)", async () => {
    apiServer.failReviews(true);
    const agent = createIdentityAgent({
      bus: createMemoryBus({ network }),
      trustDomain: TD,
      spiffeId: `spiffe://${TD}/ns/shop/sa/web`,
      attestation: async () => ({ kind: "k8s_sa_token", token: "web-pod-token" }),
    });
    try {
      await assert.rejects(agent.start(), /sa_token_invalid/);
    } finally {
      agent.stop();
      apiServer.failReviews(false);
    }
  });

  test("the webhook serves TLS trusted by the caBundle it patched in, and answers AdmissionReview with a patch that yields a valid pod", async () => {
    const mode = await startKubernetesMode({
      api: apiServer.api,
      ca: caService,
      namespace: "weft-system",
      serviceName: "weft-control",
      webhookPort: 0,
      webhookConfig: "weft-sidecar-injector",
      inject: { image: "weft:test", natsUrl: "nats://nats.weft-system.svc:4222" },
      log: { info() {}, warn: (msg, fields) => assert.fail(`${msg} ${JSON.stringify(fields)}`) },
    });
    try {
      const caBundle = (apiServer.webhookConfig.webhooks as { clientConfig: { caBundle?: string } }[])[0]!.clientConfig.caBundle;
      assert.ok(caBundle, "caBundle patched in");
      const trusted = Buffer.from(caBundle, "base64").toString("utf8");
      assert.equal(trusted, caService.ca.bundle().join(""));

      const pod = {
        apiVersion: "v1",
        kind: "Pod",
        metadata: { generateName: "web-", namespace: "shop", labels: { "app.kubernetes.io/name": "web" } },
        spec: { serviceAccountName: "web", containers: [{ name: "app", image: "shop/web:1", ports: [{ containerPort: 9001 }] }] },
      };
      const review = { apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview", request: { uid: "7c2b", kind: { kind: "Pod" }, namespace: "shop", object: pod } };
      const answer = await postReview(mode.port, trusted, review);
      assert.equal(answer.status, 200);
      const response = (answer.body as { response: { uid: string; allowed: boolean; patchType: string; patch: string } }).response;
      assert.deepEqual([response.uid, response.allowed, response.patchType], ["7c2b", true, "JSONPatch"]);
      const patch = JSON.parse(Buffer.from(response.patch, "base64").toString("utf8")) as jsonpatch.Operation[];
      const patched = jsonpatch.applyPatch(structuredClone(pod), patch, true, false).newDocument;
      new Pod(patched as ConstructorParameters<typeof Pod>[0]).validate();

      const bad = await postReview(mode.port, trusted, { hello: "world" });
      assert.equal(bad.status, 400);
    } finally {
      await mode.close();
    }
  });
});

/** POSTs an AdmissionReview as the API server does: TLS verified against the caBundle, for the Service's DNS name. */
function postReview(port: number, caPem: string, body: unknown): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const payload = JSON.stringify(body);
    const req = https.request(
      { host: "127.0.0.1", port, method: "POST", path: "/inject", ca: caPem, servername: "weft-control.weft-system.svc", headers: { "content-type": "application/json" } },
      (res) => {
        let text = "";
        res.on("data", (c) => (text += c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
      },
    );
    req.on("error", reject);
    req.end(payload);
  });
}
