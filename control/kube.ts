import https from "node:https";
import { readFile } from "node:fs/promises";
import { serviceAccountFromUsername, type ReviewServiceAccountToken } from "../shared/identity/index.ts";

/** Where a pod finds its service account's credentials for the Kubernetes API. */
export const IN_CLUSTER_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

/** How to reach the Kubernetes API: base URL, CA bundle, and a bearer token read per call (it rotates). */
export interface KubeApi {
  readonly server: string;
  readonly caPem: string;
  token(): Promise<string>;
}

/**
 * inClusterApi reads the control plane pod's own API credentials (KUBERNETES_SERVICE_HOST/PORT, the
 * projected token and ca.crt); undefined outside Kubernetes.
 * @example const api = await inClusterApi(process.env);
 */
export async function inClusterApi(env: Readonly<Record<string, string | undefined>>, dir = IN_CLUSTER_DIR): Promise<KubeApi | undefined> {
  const host = env.KUBERNETES_SERVICE_HOST;
  if (!host) return undefined;
  const port = env.KUBERNETES_SERVICE_PORT ?? "443";
  const caPem = await readFile(`${dir}/ca.crt`, "utf8");
  return {
    server: `https://${host.includes(":") ? `[${host}]` : host}:${port}`,
    caPem,
    token: async () => (await readFile(`${dir}/token`, "utf8")).trim(),
  };
}

/** One JSON request to the API server; rejects on transport errors, resolves with status and body. */
async function call(api: KubeApi, method: string, path: string, body: unknown, contentType = "application/json"): Promise<{ status: number; body: unknown }> {
  const token = await api.token();
  const payload = body === undefined ? "" : JSON.stringify(body);
  const url = new URL(path, api.server);
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        method,
        host: url.hostname.replace(/^\[|\]$/g, ""),
        port: url.port,
        path: url.pathname + url.search,
        ca: api.caPem,
        headers: {
          authorization: `Bearer ${token}`,
          accept: "application/json",
          ...(body === undefined ? {} : { "content-type": contentType, "content-length": Buffer.byteLength(payload) }),
        },
        timeout: 5000,
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (text += c));
        res.on("end", () => {
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            // Not JSON (an error page): kept as text.
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
      },
    );
    req.on("timeout", () => req.destroy(new Error("Kubernetes API timed out")));
    req.on("error", reject);
    req.end(payload);
  });
}

/**
 * createTokenReviewer verifies a pod's projected service-account token with the TokenReview API,
 * for the audience the injector asks for, and says which namespace/service account it belongs to.
 * Anything but an authenticated service account (a user, another audience, an API error) fails.
 * @example
 * startCaService({ ..., reviewServiceAccountToken: createTokenReviewer(api, ["weft-ca"]) });
 */
export function createTokenReviewer(api: KubeApi, audiences: readonly string[]): ReviewServiceAccountToken {
  return async (token) => {
    const r = await call(api, "POST", "/apis/authentication.k8s.io/v1/tokenreviews", {
      apiVersion: "authentication.k8s.io/v1",
      kind: "TokenReview",
      spec: { token, audiences },
    });
    if (r.status !== 201 && r.status !== 200) throw new Error(`TokenReview answered ${r.status}`);
    const status = (r.body as { status?: { authenticated?: boolean; user?: { username?: string }; audiences?: string[] } }).status;
    if (!status?.authenticated || !status.user?.username) return { ok: false };
    // The API server echoes the audiences the token is valid for; it must include ours.
    if (status.audiences && !audiences.some((a) => status.audiences!.includes(a))) return { ok: false };
    const sa = serviceAccountFromUsername(status.user.username);
    return sa ? { ok: true, ...sa } : { ok: false };
  };
}

/**
 * patchWebhookCaBundle puts the webhook's serving CA into every webhook of a
 * MutatingWebhookConfiguration, so the API server trusts the control plane's /inject endpoint.
 * @example await patchWebhookCaBundle(api, "weft-sidecar-injector", caPem);
 */
export async function patchWebhookCaBundle(api: KubeApi, name: string, caPem: string): Promise<void> {
  const path = `/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/${encodeURIComponent(name)}`;
  const current = await call(api, "GET", path, undefined);
  if (current.status !== 200) throw new Error(`reading ${name} answered ${current.status}`);
  const webhooks = ((current.body as { webhooks?: unknown[] }).webhooks ?? []) as unknown[];
  const caBundle = Buffer.from(caPem).toString("base64");
  // "add" on an object member sets it whether or not it exists (RFC 6902 §4.1).
  const ops = webhooks.map((_, i) => ({ op: "add", path: `/webhooks/${i}/clientConfig/caBundle`, value: caBundle }));
  const r = await call(api, "PATCH", path, ops, "application/json-patch+json");
  if (r.status !== 200) throw new Error(`patching ${name} answered ${r.status}`);
}
