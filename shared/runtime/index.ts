import type { ProxyRuntime } from "../proxy/index.ts";

/**
 * detectRuntime loads the adapter for the runtime this process runs on (Bun, Deno or Node.js).
 * Only a role's main.ts calls it: everything below receives the runtime as an argument.
 * @example
 * const runtime = await detectRuntime();
 */
export async function detectRuntime(): Promise<ProxyRuntime> {
  if ("Bun" in globalThis) return (await import("./bun/index.ts")).bunRuntime;
  if ("Deno" in globalThis) return (await import("./deno/index.ts")).denoRuntime;
  return (await import("./node/index.ts")).nodeRuntime;
}

export { fileStore } from "./state-file.ts";
export { loadMeshModule, type Loaded } from "./load-config.ts";
export { attestationSource, KUBERNETES_SA_TOKEN, type AttestationFlags } from "./attestation.ts";
export { createAdminApp, dumpSnapshot, redactSecrets, type AdminState } from "./admin.ts";
export { createProxyTelemetry, type ProxyTelemetry } from "./proxy-telemetry.ts";
export { isEntryModule, registrationHost, splitAddress } from "./role-process.ts";
