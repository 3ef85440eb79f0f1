import * as v from "valibot";
import { decodeJson, parseConfigKey, STATUS_SUBJECTS, type Bus, type Subscription } from "../shared/bus/index.ts";
import type { StatusReport } from "../shared/discovery/index.ts";
import type { ConfigMirror } from "./mirror.ts";

/** One row of `weft status` (like `istioctl proxy-status`). */
export interface ProxyStatusRow {
  readonly proxyId: string;
  readonly role: string;
  readonly name: string;
  /** Revision the proxy runs. */
  readonly revision: number;
  /** Revision it should run: the newest generation among the keys it watches. */
  readonly expected: number;
  /** SYNCED, STALE (behind), NACK (refused the newest), WAITING (no config yet), or GONE (silent for 3 report intervals). */
  readonly sync: "SYNCED" | "STALE" | "NACK" | "WAITING" | "GONE";
  readonly lastNack?: string;
  readonly lastSeenMs: number;
}

const ReportSchema = v.object({
  proxyId: v.string(),
  role: v.picklist(["gateway", "sidecar"]),
  name: v.string(),
  revision: v.number(),
  state: v.picklist(["ACK", "NACK", "WAITING"]),
  nack: v.optional(v.object({ revision: v.number(), issues: v.array(v.object({ path: v.string(), message: v.string() })) })),
  watching: v.array(v.string()),
  at: v.number(),
});

export interface StatusTracker {
  rows(): ProxyStatusRow[];
  stop(): void;
}

/**
 * createStatusTracker listens to every proxy's reports and compares what each runs with what the
 * bucket holds for the keys it watches.
 * @example
 * const status = createStatusTracker({ bus, mirror }); status.rows();
 */
export function createStatusTracker(options: { bus: Bus; mirror: ConfigMirror; now?: () => number; goneAfterMs?: number }): StatusTracker {
  const { bus, mirror } = options;
  const now = options.now ?? Date.now;
  const goneAfterMs = options.goneAfterMs ?? 30_000;
  const reports = new Map<string, { report: StatusReport; heardAt: number }>();
  const sub: Subscription = bus.subscribe(STATUS_SUBJECTS, (msg) => {
    const decoded = decodeJson(msg.data);
    if (!decoded.ok) return;
    const r = v.safeParse(ReportSchema, decoded.value);
    if (r.success) reports.set(r.output.proxyId, { report: r.output, heardAt: now() });
  });
  return {
    rows() {
      const t = now();
      return [...reports.values()]
        .map(({ report, heardAt }): ProxyStatusRow => {
          let expected = 0;
          for (const key of report.watching) {
            const kind = parseConfigKey(key)?.kind;
            if (kind === "endpoints" || kind === undefined) continue;
            const g = (mirror.get(key) as { generation?: number } | undefined)?.generation;
            if (typeof g === "number") expected = Math.max(expected, g);
          }
          const lastNack = report.nack ? `rev ${report.nack.revision}: ${report.nack.issues.map((i) => `${i.path}: ${i.message}`).join("; ")}` : undefined;
          const sync: ProxyStatusRow["sync"] =
            t - heardAt > goneAfterMs ? "GONE"
            : report.state === "WAITING" && report.revision === 0 ? "WAITING"
            : report.revision >= expected ? "SYNCED"
            : report.nack && report.nack.revision >= expected ? "NACK"
            : "STALE";
          return { proxyId: report.proxyId, role: report.role, name: report.name, revision: report.revision, expected, sync, ...(lastNack ? { lastNack } : {}), lastSeenMs: t - heardAt };
        })
        .sort((a, b) => (a.proxyId < b.proxyId ? -1 : 1));
    },
    stop: () => sub.unsubscribe(),
  };
}
