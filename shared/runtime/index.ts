import type { ProxyRuntime } from "../proxy/index.ts";
import type { Logger } from "../telemetry/index.ts";

/**
 * detectRuntime loads the adapter for the runtime this process runs on (Bun, Deno or Node.js).
 * Only a role's main.ts calls it: everything below receives the runtime as an argument. What the
 * runtime's settings limit (Bun's cap on concurrent upstream requests) is logged as a warning.
 * @example
 * const runtime = await detectRuntime(log);
 */
export async function detectRuntime(log?: Pick<Logger, "warn">): Promise<ProxyRuntime> {
  if ("Bun" in globalThis) {
    const bun = await import("./bun/index.ts");
    for (const warning of bun.bunWarnings()) log?.warn(warning.msg, warning.fields);
    return bun.bunRuntime;
  }
  if ("Deno" in globalThis) return (await import("./deno/index.ts")).denoRuntime;
  return (await import("./node/index.ts")).nodeRuntime;
}

export { fileStore } from "./state-file.ts";
export { loadMeshModule, type Loaded } from "./load-config.ts";
export { attestationSource, KUBERNETES_SA_TOKEN, type AttestationFlags } from "./attestation.ts";
export { createAdminApp, dumpSnapshot, redactSecrets, type AdminState } from "./admin.ts";
export { createProxyTelemetry, type ProxyTelemetry } from "./proxy-telemetry.ts";
export { isEntryModule, registrationHost, splitAddress } from "./role-process.ts";
