import type { FaultConfig } from "../config/index.ts";
import type { HeaderMap, RequestHead } from "./types.ts";

/** What a route's fault does to one request: hold it, answer it locally, both, or neither. */
export interface FaultDecision {
  /** Wait this long before going on (0: no delay). */
  readonly delayMs: number;
  /** Answer with this status and never reach the upstream (undefined: no abort). */
  readonly abortStatus: number | undefined;
}

/** Decides a route's faults for one request; a named function made once per route config. */
export type Fault = (head: RequestHead, random: () => number) => FaultDecision | undefined;

/**
 * createFault compiles a route's fault block (Istio's HTTPFaultInjection): requests that match
 * `headers` are delayed by `delay.fixedDelayMs` with `delay.percentage` chance and aborted with
 * `abort.httpStatus` with `abort.percentage` chance, each drawn on its own from `random`
 * (delay first, as Envoy's fault filter does). Returns undefined when nothing applies.
 * @example
 * const fault = createFault({ abort: { httpStatus: 503, percentage: 10 } });
 * fault(head, Math.random) // { delayMs: 0, abortStatus: 503 } about one time in ten
 */
export function createFault(config: FaultConfig): Fault {
  const matches = headerMatcher(config.headers);
  const { delay, abort } = config;
  return function fault(head, random) {
    if (!matches(head.headers)) return undefined;
    const delayMs = delay && chance(delay.percentage, random) ? delay.fixedDelayMs : 0;
    const abortStatus = abort && chance(abort.percentage, random) ? abort.httpStatus : undefined;
    return delayMs === 0 && abortStatus === undefined ? undefined : { delayMs, abortStatus };
  };
}

/** True with `percentage` chance (0 to 100); draws from `random` only when the outcome is open. */
export function chance(percentage: number, random: () => number): boolean {
  if (percentage >= 100) return true;
  if (percentage <= 0) return false;
  return random() * 100 < percentage;
}

type HeaderCondition = NonNullable<FaultConfig["headers"]>[string];

function headerMatcher(conditions: FaultConfig["headers"]): (headers: HeaderMap) => boolean {
  if (!conditions) return () => true;
  const checks = Object.entries(conditions).map(([rawName, condition]) => {
    const name = rawName.toLowerCase();
    const test = valueTest(condition);
    return (headers: HeaderMap) => {
      const raw = headers[name];
      const value = raw === undefined ? undefined : typeof raw === "string" ? raw : raw.join(", ");
      return test(value);
    };
  });
  return (headers) => checks.every((check) => check(headers));
}

function valueTest(condition: HeaderCondition): (value: string | undefined) => boolean {
  if ("present" in condition) return (v) => v !== undefined;
  if ("absent" in condition) return (v) => v === undefined;
  if ("exact" in condition) return (v) => v === condition.exact;
  if ("prefix" in condition) return (v) => v !== undefined && v.startsWith(condition.prefix);
  const re = new RegExp(`^(?:${condition.regex})$`);
  return (v) => v !== undefined && re.test(v);
}
