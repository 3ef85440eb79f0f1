/** Log levels in increasing severity. */
export type LogLevel = "debug" | "info" | "warn" | "error";

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  /** Changes the level at run time (the admin API's /logging). */
  setLevel(level: LogLevel): void;
  readonly level: LogLevel;
}

/**
 * createLogger writes one JSON object per line for the process's own events (not the access log).
 * Callers never pass secrets or keys as fields.
 * @example
 * const log = createLogger({ component: "gateway", write: (l) => process.stderr.write(l + "\n") });
 * log.info("listening", { port: 8080 });
 */
export function createLogger(options: { component: string; level?: LogLevel; write: (line: string) => void }): Logger {
  let level: LogLevel = options.level ?? "info";
  const emit = (at: LogLevel, msg: string, fields?: Record<string, unknown>) => {
    if (ORDER[at] < ORDER[level]) return;
    options.write(JSON.stringify({ time: new Date().toISOString(), level: at, component: options.component, msg, ...fields }));
  };
  return {
    debug: (msg, fields) => emit("debug", msg, fields),
    info: (msg, fields) => emit("info", msg, fields),
    warn: (msg, fields) => emit("warn", msg, fields),
    error: (msg, fields) => emit("error", msg, fields),
    setLevel(next) {
      level = next;
    },
    get level() {
      return level;
    },
  };
}
