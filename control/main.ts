import { readFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { connectNatsBus, toBusToken } from "../shared/bus/index.ts";
import { readEnv } from "../shared/config/index.ts";
import { isEntryModule } from "../shared/runtime/index.ts";
import { createLogger } from "../shared/telemetry/index.ts";
import { SA_TOKEN_AUDIENCE } from "./inject.ts";
import { createTokenReviewer, inClusterApi, IN_CLUSTER_DIR } from "./kube.ts";
import { startKubernetesMode } from "./kubernetes.ts";
import { serveMeshView } from "./mesh-view.ts";
import { startControlPlane } from "./plane.ts";

const USAGE = `usage: weft control --nats URL [--id ID] [--trust-domain cluster.local] [--state-dir DIR] [--leaf-ttl-ms N]

Runs the control plane: validates and compiles applied configs into the weft-config bucket, keeps
the service registry (eps.<service>) current from heartbeats, and tracks every proxy's status.
Several replicas may run against one NATS; applies are serialised through a lock key.
  --nats URL   NATS server(s), comma-separated; env WEFT_NATS_URL
  --id ID      this replica's id (default control-<host>-<pid>)
  --trust-domain TD   the mesh CA's SPIFFE trust domain (default cluster.local); applied configs must match
  --state-dir DIR     CA state and join-token key, files mode 0600 (default $WEFT_STATE_DIR/control);
                      replicas must share it (a mounted secret), a replica with another root refuses to start
  --leaf-ttl-ms N     workload certificate lifetime (default 3600000)
  --ui ADDR           the mesh view (live service graph) at http://ADDR/ (default 127.0.0.1:15080; off = none)

In Kubernetes (KUBERNETES_SERVICE_HOST set, or --kubernetes) it also verifies sidecars' projected
service-account tokens with the TokenReview API, serves the sidecar-injection webhook over TLS and
keeps the webhook configuration's caBundle equal to the trust bundle:
  --webhook-port N        injection webhook port (default 15017)
  --webhook-config NAME   the MutatingWebhookConfiguration (default weft-sidecar-injector)
  --service NAME          the control plane's Service, named in the certificate (default weft-control)
  --inject-image IMAGE    the weft image injected sidecars run (env WEFT_IMAGE; default weft)
  --inject-nats URL       the bus injected sidecars follow (default: this control plane's --nats)`;

/**
 * main runs `weft control`; it resolves once the control plane answers and returns a stop function.
 * @example
 * const stop = await main(["--nats", "nats://127.0.0.1:4222"]);
 */
export async function main(argv: string[]): Promise<() => Promise<void>> {
  const { values } = parseArgs({
    args: argv,
    options: {
      nats: { type: "string" },
      id: { type: "string" },
      "trust-domain": { type: "string" },
      "state-dir": { type: "string" },
      "leaf-ttl-ms": { type: "string" },
      kubernetes: { type: "boolean" },
      ui: { type: "string" },
      "webhook-port": { type: "string" },
      "webhook-config": { type: "string" },
      service: { type: "string" },
      "inject-image": { type: "string" },
      "inject-nats": { type: "string" },
      help: { type: "boolean" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const env = readEnv(process.env);
  const log = createLogger({ component: "control", level: env.logLevel, write: (line) => process.stderr.write(`${line}\n`) });
  const servers = values.nats ?? env.natsUrl;
  if (!servers) {
    console.error(USAGE);
    process.exit(2);
  }
  const id = toBusToken(values.id ?? `control-${hostname()}-${process.pid}`);
  const bus = await connectNatsBus({ servers: servers.split(","), name: id, waitOnFirstConnect: true });
  bus.onStatus((status) => log.info("bus", { status }));
  const api = values.kubernetes || process.env.KUBERNETES_SERVICE_HOST ? await inClusterApi(process.env) : undefined;
  if (values.kubernetes && !api) {
    log.error("--kubernetes needs the in-cluster API (KUBERNETES_SERVICE_HOST and the service-account token)");
    process.exit(2);
  }
  const ca = {
    trustDomain: values["trust-domain"] ?? "cluster.local",
    stateDir: values["state-dir"] ?? join(env.stateDir, "control"),
    ...(values["leaf-ttl-ms"] ? { leafTtlMs: Number(values["leaf-ttl-ms"]) } : {}),
    // Injected sidecars present a projected token for this audience only (control/inject.ts).
    ...(api ? { reviewServiceAccountToken: createTokenReviewer(api, [SA_TOKEN_AUDIENCE]) } : {}),
  };
  const control = await startControlPlane({ bus, id, log, ca });
  const kubernetes = api
    ? await startKubernetesMode({
        api,
        ca: control.ca!,
        namespace: process.env.POD_NAMESPACE ?? (await readFile(`${IN_CLUSTER_DIR}/namespace`, "utf8").catch(() => "weft-system")).trim(),
        serviceName: values.service ?? "weft-control",
        webhookPort: Number(values["webhook-port"] ?? 15017),
        webhookConfig: values["webhook-config"] ?? "weft-sidecar-injector",
        inject: { image: values["inject-image"] ?? process.env.WEFT_IMAGE ?? "weft", natsUrl: values["inject-nats"] ?? servers },
        log,
      })
    : undefined;
  // A second replica on the same host finds the port taken: the view is a convenience, not a reason to stop.
  const ui =
    values.ui === "off"
      ? undefined
      : await serveMeshView(bus, control, values.ui ?? "127.0.0.1:15080", log).catch((err: unknown) => {
          log.warn("mesh view not served", { address: values.ui ?? "127.0.0.1:15080", error: String((err as Error).message) });
          return undefined;
        });
  return async () => {
    await ui?.close();
    await kubernetes?.close();
    await control.stop();
    await bus.close();
  };
}

// import.meta.main as written: the bundle defines this expression (scripts/build.mjs).
if (isEntryModule(import.meta.url, (import.meta as ImportMeta & { main?: boolean }).main)) {
  const stop = await main(process.argv.slice(2));
  for (const signal of ["SIGTERM", "SIGINT"] as const) process.once(signal, () => void stop().then(() => process.exit(0)));
}
