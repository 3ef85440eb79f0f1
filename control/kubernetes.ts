import type { CaService } from "./ca.ts";
import { patchWebhookCaBundle, type KubeApi } from "./kube.ts";
import type { InjectOptions } from "./inject.ts";
import { startInjectionWebhook, type InjectionWebhook } from "./webhook.ts";

export interface KubernetesModeOptions {
  readonly api: KubeApi;
  readonly ca: CaService;
  /** Namespace of the control plane's Service (weft-system). */
  readonly namespace: string;
  /** Name of the control plane's Service, as in the webhook's clientConfig (weft-control). */
  readonly serviceName: string;
  readonly webhookPort: number;
  /** The MutatingWebhookConfiguration whose caBundle this control plane keeps current. */
  readonly webhookConfig: string;
  readonly inject: InjectOptions;
  readonly log: { info(msg: string, fields?: Record<string, unknown>): void; warn(msg: string, fields?: Record<string, unknown>): void };
  /** How often the caBundle is compared with the trust bundle (default 30 s). */
  readonly bundleCheckMs?: number;
}

const SERVING_TTL_MS = 90 * 24 * 3_600_000;

/**
 * startKubernetesMode runs what the control plane does inside a cluster: the injection webhook on
 * its Service (TLS from the mesh CA's issuing root, so the trust bundle is the webhook's caBundle),
 * and keeps the MutatingWebhookConfiguration's caBundle equal to the trust bundle (also across a
 * root rotation). TokenReview attestation is wired separately into the CA (control/kube.ts).
 * @example
 * const k8s = await startKubernetesMode({ api, ca: control.ca, namespace: "weft-system", serviceName: "weft-control", webhookPort: 15017, webhookConfig: "weft-sidecar-injector", inject, log });
 */
export async function startKubernetesMode(o: KubernetesModeOptions): Promise<{ readonly port: number; close(): Promise<void> }> {
  const names = [o.serviceName, `${o.serviceName}.${o.namespace}`, `${o.serviceName}.${o.namespace}.svc`, `${o.serviceName}.${o.namespace}.svc.cluster.local`];
  const serving = await o.ca.ca.issueServing(names, SERVING_TTL_MS);
  const webhook: InjectionWebhook = await startInjectionWebhook({
    port: o.webhookPort,
    certPem: serving.chainPem.join(""),
    keyPem: serving.keyPem,
    inject: o.inject,
    log: o.log,
  });
  o.log.info("injection webhook listening", { port: webhook.port, names, notAfter: serving.notAfter.toISOString() });

  let published = "";
  const syncBundle = async () => {
    const bundle = o.ca.ca.bundle().join("");
    if (bundle === published) return;
    try {
      await patchWebhookCaBundle(o.api, o.webhookConfig, bundle);
      published = bundle;
      o.log.info("webhook caBundle updated", { webhookConfig: o.webhookConfig, roots: o.ca.ca.bundle().length });
    } catch (err) {
      o.log.warn("webhook caBundle not updated, retrying", { webhookConfig: o.webhookConfig, error: String((err as Error).message) });
    }
  };
  await syncBundle();
  const timer = setInterval(() => void syncBundle(), o.bundleCheckMs ?? 30_000);
  timer.unref();
  return {
    port: webhook.port,
    async close() {
      clearInterval(timer);
      await webhook.close();
    },
  };
}
