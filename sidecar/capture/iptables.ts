// The nat rules that send a workload's TCP through its sidecar, as data: built and checked here,
// printed (--dry-run) or applied by iptables-command.ts. Modelled on istio-iptables.

/** The chains weft owns in the nat table; cleanup removes exactly these and the jumps to them. */
export const CHAINS = ["WEFT_INBOUND", "WEFT_IN_REDIRECT", "WEFT_OUTPUT", "WEFT_REDIRECT"] as const;
export type WeftChain = (typeof CHAINS)[number];

/** One rule appended to a chain of the nat table (iptables arguments after `-A <chain>`). */
export interface NatRule {
  readonly chain: WeftChain | "PREROUTING" | "OUTPUT";
  readonly args: readonly string[];
}

export interface CaptureOptions {
  /** uid (and gid) the sidecar runs as; its own traffic is never captured (default 1337). */
  readonly proxyUid: number;
  readonly proxyGid: number;
  /** Where inbound TCP is redirected (default 15006). */
  readonly inboundPort: number;
  /** Where outbound TCP is redirected (default 15001). */
  readonly outboundPort: number;
  /** Inbound ports to capture: "*" (every port but the excluded ones) or a list (default "*"). */
  readonly includeInboundPorts: "*" | readonly number[];
  /** Inbound ports never captured (the admin port 15000 and the proxy ports are always excluded). */
  readonly excludeInboundPorts: readonly number[];
  /** Outbound destination ports never captured. */
  readonly excludeOutboundPorts: readonly number[];
  /** Outbound destination CIDRs never captured (IPv4). */
  readonly excludeOutboundCidrs: readonly string[];
  /** Admin port, kept reachable from outside (default 15000). */
  readonly adminPort: number;
}

export const DEFAULT_CAPTURE: CaptureOptions = {
  proxyUid: 1337,
  proxyGid: 1337,
  inboundPort: 15006,
  outboundPort: 15001,
  includeInboundPorts: "*",
  excludeInboundPorts: [],
  excludeOutboundPorts: [],
  excludeOutboundCidrs: [],
  adminPort: 15000,
};

/** The jumps from the built-in chains into weft's: the only rules weft adds outside its own chains. */
export const JUMPS: readonly NatRule[] = [
  { chain: "PREROUTING", args: ["-p", "tcp", "-j", "WEFT_INBOUND"] },
  { chain: "OUTPUT", args: ["-p", "tcp", "-j", "WEFT_OUTPUT"] },
];

export interface CaptureIssue {
  readonly option: string;
  readonly message: string;
}

/**
 * planCapture builds the nat rules for a workload, istio-iptables style: inbound TCP (PREROUTING)
 * → WEFT_INBOUND → redirect to the inbound port, except excluded ports; outbound TCP (OUTPUT) →
 * WEFT_OUTPUT → redirect to the outbound port, except the proxy's own traffic (uid/gid), traffic to
 * 127.0.0.1 and the app's other loopback traffic, and excluded ports and CIDRs. The sidecar calling
 * its own workload's address over `lo` goes to the inbound side, so its inbound policy still applies.
 * @example
 * const rules = planCapture({ ...DEFAULT_CAPTURE, excludeInboundPorts: [22] });
 * console.log(renderRestore(rules));
 */
export function planCapture(options: CaptureOptions): NatRule[] {
  const uid = String(options.proxyUid);
  const gid = String(options.proxyGid);
  const rules: NatRule[] = [
    { chain: "WEFT_IN_REDIRECT", args: ["-p", "tcp", "-j", "REDIRECT", "--to-ports", String(options.inboundPort)] },
    { chain: "WEFT_REDIRECT", args: ["-p", "tcp", "-j", "REDIRECT", "--to-ports", String(options.outboundPort)] },
  ];
  const neverInbound = unique([options.adminPort, options.inboundPort, options.outboundPort, ...options.excludeInboundPorts]);
  if (options.includeInboundPorts === "*") {
    for (const port of neverInbound) rules.push({ chain: "WEFT_INBOUND", args: ["-p", "tcp", "--dport", String(port), "-j", "RETURN"] });
    rules.push({ chain: "WEFT_INBOUND", args: ["-p", "tcp", "-j", "WEFT_IN_REDIRECT"] });
  } else {
    for (const port of unique(options.includeInboundPorts)) {
      if (neverInbound.includes(port)) continue;
      rules.push({ chain: "WEFT_INBOUND", args: ["-p", "tcp", "--dport", String(port), "-j", "WEFT_IN_REDIRECT"] });
    }
  }
  rules.push(
    // The sidecar sending to its own workload's address over lo: through the inbound side (policy applies).
    { chain: "WEFT_OUTPUT", args: ["!", "-d", "127.0.0.1/32", "-o", "lo", "-p", "tcp", "-m", "owner", "--uid-owner", uid, "-j", "WEFT_IN_REDIRECT"] },
    // The app's own loopback traffic (to itself) is not a mesh call.
    { chain: "WEFT_OUTPUT", args: ["-o", "lo", "-m", "owner", "!", "--uid-owner", uid, "-j", "RETURN"] },
    // The sidecar's own traffic is never captured again (loop prevention).
    { chain: "WEFT_OUTPUT", args: ["-m", "owner", "--uid-owner", uid, "-j", "RETURN"] },
    { chain: "WEFT_OUTPUT", args: ["!", "-d", "127.0.0.1/32", "-o", "lo", "-p", "tcp", "-m", "owner", "--gid-owner", gid, "-j", "WEFT_IN_REDIRECT"] },
    { chain: "WEFT_OUTPUT", args: ["-o", "lo", "-m", "owner", "!", "--gid-owner", gid, "-j", "RETURN"] },
    { chain: "WEFT_OUTPUT", args: ["-m", "owner", "--gid-owner", gid, "-j", "RETURN"] },
    { chain: "WEFT_OUTPUT", args: ["-d", "127.0.0.1/32", "-j", "RETURN"] },
  );
  for (const cidr of unique(options.excludeOutboundCidrs)) rules.push({ chain: "WEFT_OUTPUT", args: ["-d", cidr, "-j", "RETURN"] });
  for (const port of unique(options.excludeOutboundPorts)) rules.push({ chain: "WEFT_OUTPUT", args: ["-p", "tcp", "--dport", String(port), "-j", "RETURN"] });
  rules.push({ chain: "WEFT_OUTPUT", args: ["-j", "WEFT_REDIRECT"] });
  rules.push(...JUMPS);
  return rules;
}

/**
 * renderRestore prints rules as iptables-restore input for the nat table (what --dry-run shows;
 * `iptables-restore --noflush` accepts it).
 * @example
 * renderRestore(planCapture(DEFAULT_CAPTURE)).startsWith("*nat\n")
 */
export function renderRestore(rules: readonly NatRule[]): string {
  const lines = ["*nat", ...CHAINS.map((c) => `:${c} - [0:0]`)];
  for (const rule of rules) lines.push(`-A ${rule.chain} ${rule.args.join(" ")}`);
  lines.push("COMMIT", "");
  return lines.join("\n");
}

/**
 * applyCommands gives the iptables invocations (arguments) that create weft's chains and rules.
 * @example
 * for (const args of applyCommands(rules)) spawnSync("iptables", args);
 */
export function applyCommands(rules: readonly NatRule[]): string[][] {
  return [...CHAINS.map((c) => ["-w", "-t", "nat", "-N", c]), ...rules.map((r) => ["-w", "-t", "nat", "-A", r.chain, ...r.args])];
}

/**
 * cleanupCommands gives the iptables invocations that remove what applyCommands added, and only
 * that: the jumps from PREROUTING and OUTPUT, then weft's chains (flushed, then deleted). Each may
 * fail harmlessly when the rule or chain is already gone.
 * @example
 * for (const args of cleanupCommands()) spawnSync("iptables", args);
 */
export function cleanupCommands(): string[][] {
  return [
    ...JUMPS.map((r) => ["-w", "-t", "nat", "-D", r.chain, ...r.args]),
    ...CHAINS.map((c) => ["-w", "-t", "nat", "-F", c]),
    ...CHAINS.map((c) => ["-w", "-t", "nat", "-X", c]),
  ];
}

/**
 * parseCaptureOptions reads `weft iptables` options into CaptureOptions, reporting every bad value.
 * @example
 * parseCaptureOptions({ "exclude-inbound-ports": "22,9000" })
 */
export function parseCaptureOptions(
  values: Readonly<Record<string, string | undefined>>,
): { ok: true; options: CaptureOptions } | { ok: false; issues: CaptureIssue[] } {
  const issues: CaptureIssue[] = [];
  const id = (name: string, fallback: number) => {
    const raw = values[name];
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!/^\d+$/.test(raw) || n > 0xfffffffe) issues.push({ option: name, message: "must be a uid/gid number" });
    return n;
  };
  const port = (name: string, fallback: number) => {
    const raw = values[name];
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!isPort(raw)) issues.push({ option: name, message: "must be a port 1-65535" });
    return n;
  };
  const ports = (name: string) => {
    const raw = values[name];
    if (raw === undefined || raw.trim() === "") return [];
    const list = raw.split(",").map((s) => s.trim());
    const bad = list.filter((s) => !isPort(s));
    if (bad.length > 0) issues.push({ option: name, message: `not ports: ${bad.join(",")}` });
    return list.filter(isPort).map(Number);
  };
  const cidrs = (name: string) => {
    const raw = values[name];
    if (raw === undefined || raw.trim() === "") return [];
    const list = raw.split(",").map((s) => s.trim());
    const bad = list.filter((s) => !isIpv4Cidr(s));
    if (bad.length > 0) issues.push({ option: name, message: `not IPv4 CIDRs: ${bad.join(",")}` });
    return list.filter(isIpv4Cidr);
  };
  const proxyUid = id("proxy-uid", DEFAULT_CAPTURE.proxyUid);
  const include = values["include-inbound-ports"];
  const options: CaptureOptions = {
    proxyUid,
    proxyGid: id("proxy-gid", proxyUid),
    inboundPort: port("inbound-port", DEFAULT_CAPTURE.inboundPort),
    outboundPort: port("outbound-port", DEFAULT_CAPTURE.outboundPort),
    adminPort: port("admin-port", DEFAULT_CAPTURE.adminPort),
    includeInboundPorts: include === undefined || include.trim() === "*" ? "*" : ports("include-inbound-ports"),
    excludeInboundPorts: ports("exclude-inbound-ports"),
    excludeOutboundPorts: ports("exclude-outbound-ports"),
    excludeOutboundCidrs: cidrs("exclude-outbound-cidrs"),
  };
  return issues.length > 0 ? { ok: false, issues } : { ok: true, options };
}

function isPort(s: string): boolean {
  if (!/^\d{1,5}$/.test(s)) return false;
  const n = Number(s);
  return n >= 1 && n <= 65535;
}

function isIpv4Cidr(s: string): boolean {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:\/(\d{1,2}))?$/.exec(s);
  if (!m) return false;
  if (m.slice(1, 5).some((o) => Number(o) > 255)) return false;
  return m[5] === undefined || Number(m[5]) <= 32;
}

function unique<T>(list: readonly T[]): T[] {
  return [...new Set(list)];
}
