/** Every WEFT_* environment variable weft reads, with its default. Roles call readEnv once at startup. */
export interface WeftEnv {
  /** WEFT_NATS_URL: the config bus (default: none, a role then runs from files only). */
  readonly natsUrl?: string;
  /** WEFT_CONFIG: a config file (weft.config.ts / .json) for a file-driven gateway. */
  readonly configFile?: string;
  /** WEFT_LOG_LEVEL: debug, info, warn or error (default info). */
  readonly logLevel: "debug" | "info" | "warn" | "error";
  /** WEFT_ADMIN_ADDRESS: admin listener (default 127.0.0.1:15000). */
  readonly adminAddress: string;
  /** WEFT_PROXY_ID: this proxy's id on the bus (default <role>-<hostname>-<pid>). */
  readonly proxyId?: string;
  /** WEFT_STATE_DIR: where a proxy keeps its last good config (default .weft/). */
  readonly stateDir: string;
}

const LEVELS = ["debug", "info", "warn", "error"] as const;

/**
 * readEnv reads weft's variables from an environment record.
 * @example
 * const env = readEnv(process.env);
 */
export function readEnv(source: Readonly<Record<string, string | undefined>>): WeftEnv {
  const level = source.WEFT_LOG_LEVEL?.toLowerCase();
  return {
    natsUrl: source.WEFT_NATS_URL || undefined,
    configFile: source.WEFT_CONFIG || undefined,
    logLevel: (LEVELS as readonly string[]).includes(level ?? "") ? (level as WeftEnv["logLevel"]) : "info",
    adminAddress: source.WEFT_ADMIN_ADDRESS || "127.0.0.1:15000",
    proxyId: source.WEFT_PROXY_ID || undefined,
    stateDir: source.WEFT_STATE_DIR || ".weft",
  };
}
