import { readFile, rename, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import process from "node:process";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import {
  connectNatsBus,
  CONTROL_APPLY_SUBJECT,
  CONTROL_GET_SUBJECT,
  CONTROL_STATUS_SUBJECT,
  decodeJson,
  encodeJson,
  type Bus,
} from "../shared/bus/index.ts";
import { readEnv } from "../shared/config/index.ts";
import { mintJoinToken } from "../shared/identity/index.ts";
import { loadMeshModule } from "../shared/runtime/index.ts";
import { parseAllDocuments, stringify as stringifyYaml } from "yaml";
import { injectManifest } from "./inject.ts";
import { GET_KINDS, type ApplyReply, type GetKind } from "./plane.ts";
import type { ProxyStatusRow } from "./status.ts";
import pkg from "../package.json" with { type: "json" };

const NATS_HELP = "  --nats URL     NATS server(s), comma-separated; env WEFT_NATS_URL (default nats://127.0.0.1:4222)";

async function connect(nats: string | undefined): Promise<Bus> {
  const servers = nats ?? readEnv(process.env).natsUrl ?? "nats://127.0.0.1:4222";
  return connectNatsBus({ servers: servers.split(","), name: "weft-cli", connectTimeoutMs: 3000 });
}

async function ask(bus: Bus, subject: string, body: unknown, timeoutMs: number): Promise<{ ok: true; value: Record<string, unknown> } | { ok: false; message: string }> {
  const r = await bus.request(subject, encodeJson(body), { timeoutMs });
  if (!r.ok) return { ok: false, message: r.reason === "no_responders" ? "no control plane is running on this bus (start `weft control`)" : `control plane did not answer: ${r.reason}` };
  const decoded = decodeJson(r.data);
  return decoded.ok ? { ok: true, value: decoded.value as Record<string, unknown> } : { ok: false, message: `bad reply: ${decoded.reason}` };
}

/**
 * apply runs `weft apply FILE`: validates the config locally (every problem listed, exit 1), then
 * hands it to the control plane and prints what changed.
 * @example
 * process.exitCode = await apply(["weft.config.ts", "--nats", "nats://127.0.0.1:4222"]);
 */
export async function apply(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { nats: { type: "string" }, "timeout-ms": { type: "string" }, help: { type: "boolean" } },
  });
  if (values.help || positionals.length !== 1) {
    console.log(`usage: weft apply FILE [--nats URL]\n\nValidates FILE (weft.config.ts, .js or .json) and applies it to the mesh.\n${NATS_HELP}`);
    return values.help ? 0 : 2;
  }
  const file = resolve(positionals[0]!);
  const loaded = await loadMeshModule(pathToFileURL(file));
  if (!loaded.ok) {
    console.error(`${file}: config refused, ${loaded.issues.length} problem(s):`);
    for (const i of loaded.issues) console.error(`  ${i.path}: ${i.message}`);
    return 1;
  }
  const bus = await connect(values.nats);
  try {
    const r = await ask(bus, CONTROL_APPLY_SUBJECT, { config: loaded.value }, Number(values["timeout-ms"] ?? 30_000));
    if (!r.ok) {
      console.error(r.message);
      return 1;
    }
    const reply = r.value as unknown as ApplyReply;
    if (!reply.ok) {
      if (reply.reason === "invalid_config") {
        console.error(`config refused by the control plane, ${reply.issues.length} problem(s):`);
        for (const i of reply.issues) console.error(`  ${i.path}: ${i.message}`);
      } else console.error(`apply failed (${reply.reason}): ${reply.message}`);
      return 1;
    }
    if (reply.changes.length === 0) console.log(`unchanged (revision ${reply.generation})`);
    else {
      for (const c of reply.changes) console.log(`${c.key} ${c.op}`);
      console.log(`applied revision ${reply.generation}`);
    }
    return 0;
  } finally {
    await bus.close();
  }
}

/**
 * status runs `weft status`: one row per proxy with the revision it runs and whether it is in sync.
 * @example
 * process.exitCode = await status(["--nats", url]);
 */
export async function status(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { nats: { type: "string" }, output: { type: "string", short: "o" }, help: { type: "boolean" } } });
  if (values.help) {
    console.log(`usage: weft status [--nats URL] [-o json]\n\nOne row per proxy: id, role, name, running/expected revision, SYNCED|STALE|NACK|WAITING|GONE, last refusal.\n${NATS_HELP}`);
    return 0;
  }
  const bus = await connect(values.nats);
  try {
    const r = await ask(bus, CONTROL_STATUS_SUBJECT, {}, 5000);
    if (!r.ok) {
      console.error(r.message);
      return 1;
    }
    const rows = r.value.rows as ProxyStatusRow[];
    if (values.output === "json") console.log(JSON.stringify(rows, null, 2));
    else {
      console.log(`mesh revision ${String(r.value.generation)}`);
      printTable(rows.map((row) => ({
        PROXY: row.proxyId,
        ROLE: row.role,
        NAME: row.name,
        REVISION: `${row.revision}/${row.expected}`,
        SYNC: row.sync,
        "LAST NACK": row.lastNack ?? "",
      })));
    }
    return 0;
  } finally {
    await bus.close();
  }
}

/**
 * get runs `weft get routes|services|endpoints|gateways`.
 * @example
 * process.exitCode = await get(["routes", "-o", "json"]);
 */
export async function get(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { nats: { type: "string" }, output: { type: "string", short: "o" }, help: { type: "boolean" } },
  });
  const kind = positionals[0] as GetKind | undefined;
  if (values.help || !kind || !GET_KINDS.includes(kind)) {
    console.log(`usage: weft get ${GET_KINDS.join("|")} [--nats URL] [-o json]\n${NATS_HELP}`);
    return values.help ? 0 : 2;
  }
  const bus = await connect(values.nats);
  try {
    const r = await ask(bus, CONTROL_GET_SUBJECT, { kind }, 5000);
    if (!r.ok) {
      console.error(r.message);
      return 1;
    }
    const items = r.value.items as Record<string, unknown>[];
    if (values.output === "json") console.log(JSON.stringify(items, null, 2));
    else printTable(items.map((item) => Object.fromEntries(Object.entries(item).map(([k, v]) => [k.toUpperCase(), String(v)]))));
    return 0;
  } finally {
    await bus.close();
  }
}

const TOKEN_USAGE = `usage: weft token --ns NAMESPACE --sa SERVICE_ACCOUNT [-o FILE] [--ttl-ms 3600000] [--state-dir DIR] [--wait-ms N]

Mints a join token with the control plane's key (DIR default $WEFT_STATE_DIR/control), for a proxy
outside Kubernetes to prove its identity to the mesh CA (its --join-token or --join-token-file).
The token is printed, or with -o written to FILE (mode 0600, replaced atomically: a proxy reading it
never sees half a token). --ns, --sa and -o may repeat to mint several tokens at once: the Nth of
each make one token, so each needs its own -o.
  --ttl-ms N     how long the tokens are accepted (default 3600000); a proxy presents its token again
                 for every certificate renewal, so it must outlive the proxy or be minted again
  --wait-ms N    wait up to N ms for the control plane to have created the key (default 0)`;

/**
 * token runs `weft token --ns NS --sa SA [-o FILE]`: mints join tokens from the CA's key on this
 * machine (never over the bus), for proxies outside Kubernetes to attest their identity.
 * @example
 * process.exitCode = await token(["--ns", "default", "--sa", "web", "--state-dir", ".weft/control", "-o", "web.token"]);
 */
export async function token(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ns: { type: "string", multiple: true },
      sa: { type: "string", multiple: true },
      out: { type: "string", short: "o", multiple: true },
      "ttl-ms": { type: "string" },
      "state-dir": { type: "string" },
      "wait-ms": { type: "string" },
      help: { type: "boolean" },
    },
  });
  const ns = values.ns ?? [];
  const sa = values.sa ?? [];
  const out = values.out ?? [];
  const ttlMs = Number(values["ttl-ms"] ?? 3_600_000);
  const waitMs = Number(values["wait-ms"] ?? 0);
  const paired = ns.length > 0 && ns.length === sa.length && (ns.length === 1 ? out.length <= 1 : out.length === ns.length);
  if (values.help || !paired || !(ttlMs > 0) || !(waitMs >= 0)) {
    console.log(TOKEN_USAGE);
    return values.help ? 0 : 2;
  }
  const dir = values["state-dir"] ?? join(readEnv(process.env).stateDir, "control");
  const key = await readKey(join(dir, "join-token.key"), waitMs);
  if (!key) {
    console.error(`no join-token key in ${dir}${waitMs > 0 ? ` after ${waitMs} ms` : ""}: start \`weft control --state-dir ${dir}\` once first`);
    return 1;
  }
  for (const [i, namespace] of ns.entries()) {
    const minted = await mintJoinToken({ namespace, serviceAccount: sa[i]!, ttlMs }, key);
    const file = out[i];
    if (file === undefined) {
      console.log(minted);
      continue;
    }
    const tmp = `${file}.${process.pid}.tmp`;
    try {
      await writeFile(tmp, `${minted}\n`, { mode: 0o600 });
      await rename(tmp, file);
    } catch (err) {
      await rm(tmp, { force: true });
      console.error(`cannot write ${file}: ${(err as Error).message}`);
      return 1;
    }
    console.error(`wrote a join token for ${namespace}/${sa[i]} to ${file}`);
  }
  return 0;
}

/** The join-token key, polled for up to waitMs while the control plane creates it; undefined if absent. */
async function readKey(file: string, waitMs: number): Promise<Uint8Array | undefined> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const key = await readFile(file).then((b) => new Uint8Array(b), () => undefined);
    if (key || Date.now() >= deadline) return key;
    await new Promise((r) => setTimeout(r, Math.min(250, Math.max(1, deadline - Date.now()))));
  }
}

function printTable(rows: Record<string, string>[]): void {
  if (rows.length === 0) {
    console.log("(none)");
    return;
  }
  const cols = Object.keys(rows[0]!);
  const width = cols.map((c) => Math.max(c.length, ...rows.map((r) => (r[c] ?? "").length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(width[i]!)).join("  ").trimEnd();
  console.log(line(cols));
  for (const r of rows) console.log(line(cols.map((c) => r[c] ?? "")));
}

const INJECT_USAGE = `usage: weft inject -f FILE [--image IMAGE] [--nats URL] [-o FILE]

Adds the weft sidecar (and the init container that runs weft iptables) to every Pod, and to the pod
template of every Deployment, StatefulSet, DaemonSet, ReplicaSet, Job and CronJob, in a Kubernetes
YAML file — what the control plane's admission webhook does to pods of namespaces labelled
weft-injection=enabled, offline (like istioctl kube-inject). FILE - reads standard input.
  --image IMAGE   the weft image (default weft:<version>; env WEFT_IMAGE)
  --nats URL      the config bus the sidecars follow (default nats://nats.weft-system.svc:4222)
  -o FILE         write here instead of standard output`;

/**
 * inject runs `weft inject -f pod.yaml`: prints the manifest with sidecars injected.
 * @example
 * process.exitCode = await inject(["-f", "deploy.yaml", "--image", "weft:0.1.0"]);
 */
export async function inject(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { file: { type: "string", short: "f" }, image: { type: "string" }, nats: { type: "string" }, output: { type: "string", short: "o" }, help: { type: "boolean" } },
  });
  if (values.help || !values.file) {
    console.log(INJECT_USAGE);
    return values.help ? 0 : 2;
  }
  const version = pkg.version;
  const options = {
    image: values.image ?? process.env.WEFT_IMAGE ?? `weft:${version}`,
    natsUrl: values.nats ?? "nats://nats.weft-system.svc:4222",
  };
  const text = values.file === "-" ? await readStdin() : await readFile(values.file, "utf8");
  const docs = parseAllDocuments(text);
  const out: string[] = [];
  for (const doc of docs) {
    if (doc.errors.length > 0) {
      for (const e of doc.errors) console.error(`${values.file}: ${e.message}`);
      return 1;
    }
    const object = doc.toJS() as Record<string, unknown> | null;
    if (object === null) continue;
    const { object: injected, result } = injectManifest(object, options);
    if (result && !result.injected) console.error(`${String(object.kind)}/${String((object.metadata as { name?: string } | undefined)?.name)}: not injected (${result.reason})`);
    out.push(stringifyYaml(injected));
  }
  const rendered = out.join("---\n");
  if (values.output) await writeFile(values.output, rendered);
  else process.stdout.write(rendered);
  return 0;
}

async function readStdin(): Promise<string> {
  let text = "";
  for await (const chunk of process.stdin) text += chunk;
  return text;
}
