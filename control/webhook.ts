import https from "node:https";
import type { AddressInfo } from "node:net";
import { injectPod, type InjectOptions } from "./inject.ts";

export interface InjectionWebhookOptions {
  readonly port: number;
  readonly address?: string;
  /** The serving certificate the API server verifies against the caBundle. */
  readonly certPem: string;
  readonly keyPem: string;
  readonly inject: InjectOptions;
  readonly log?: { info(msg: string, fields?: Record<string, unknown>): void; warn(msg: string, fields?: Record<string, unknown>): void };
}

export interface InjectionWebhook {
  readonly port: number;
  close(): Promise<void>;
}

/** AdmissionReview bodies are small; anything bigger than this is not one. */
const MAX_BODY_BYTES = 4 * 1024 * 1024;

/**
 * admissionResponse answers one AdmissionReview v1 request for a pod: allowed, with the sidecar's
 * JSON Patch when injection applies. Undefined when the body is not an AdmissionReview.
 * @example
 * const review = admissionResponse(JSON.parse(body), { image, natsUrl });
 */
export function admissionResponse(review: unknown, options: InjectOptions): { body: unknown; injected: boolean; reason?: string } | undefined {
  const r = review as { apiVersion?: string; kind?: string; request?: { uid?: string; object?: Record<string, unknown> } };
  if (r?.kind !== "AdmissionReview" || typeof r.request?.uid !== "string") return undefined;
  const base = { uid: r.request.uid, allowed: true };
  const pod = r.request.object;
  const result = pod ? injectPod(pod, options) : undefined;
  const response = result?.injected
    ? { ...base, patchType: "JSONPatch", patch: Buffer.from(JSON.stringify(result.patch)).toString("base64") }
    : base;
  return {
    body: { apiVersion: r.apiVersion ?? "admission.k8s.io/v1", kind: "AdmissionReview", response },
    injected: result?.injected === true,
    reason: result && !result.injected ? result.reason : undefined,
  };
}

/**
 * startInjectionWebhook serves POST /inject (AdmissionReview v1) over TLS, the endpoint the
 * MutatingWebhookConfiguration points at. A pod it cannot inject is still allowed unchanged (opt-out,
 * host network, already injected); a request that is not an AdmissionReview gets 400.
 * @example
 * const hook = await startInjectionWebhook({ port: 15017, certPem, keyPem, inject: { image, natsUrl } });
 */
export async function startInjectionWebhook(options: InjectionWebhookOptions): Promise<InjectionWebhook> {
  const server = https.createServer({ cert: options.certPem, key: options.keyPem, minVersion: "TLSv1.2" }, (req, res) => {
    const reply = (status: number, body: unknown) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    if (req.method !== "POST" || req.url?.split("?")[0] !== "/inject") return reply(404, { error: "not found" });
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        reply(413, { error: "request too large" });
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => {
      if (res.headersSent) return;
      let parsed: unknown;
      try {
        parsed = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      } catch {
        return reply(400, { error: "body is not JSON" });
      }
      const answer = admissionResponse(parsed, options.inject);
      if (!answer) return reply(400, { error: "body is not an AdmissionReview with a request uid" });
      const request = (parsed as { request: { namespace?: string; name?: string; object?: { metadata?: { generateName?: string } } } }).request;
      options.log?.info(answer.injected ? "sidecar injected" : "pod left as it is", {
        namespace: request.namespace,
        pod: request.name ?? request.object?.metadata?.generateName,
        ...(answer.reason ? { reason: answer.reason } : {}),
      });
      reply(200, answer.body);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.address ?? "0.0.0.0", () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
  };
}
