/** One labelled counter series. */
export interface Counter {
  inc(by?: number): void;
  readonly value: number;
}

/** One labelled gauge series. */
export interface Gauge {
  set(value: number): void;
  inc(by?: number): void;
  dec(by?: number): void;
  readonly value: number;
}

/** One labelled histogram series with the family's fixed buckets. */
export interface Histogram {
  observe(value: number): void;
  /** Observations per bucket, not cumulative; the last entry counts values above every bound. */
  readonly counts: readonly number[];
  readonly count: number;
  readonly sum: number;
}

/** A metric name with its label names; `labels(...)` returns the series for one set of values. */
export interface Family<S> {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly string[];
  /** The series for these label values (in labelNames order), created on first use. */
  labels(...values: string[]): S;
}

export interface FamilyOptions {
  readonly name: string;
  readonly help: string;
  readonly labelNames?: readonly string[];
  /** Distinct label sets kept; further ones all land in one series whose labels are "overflow" (default 2000). */
  readonly maxSeries?: number;
}

export interface HistogramOptions extends FamilyOptions {
  /** Upper bounds, strictly increasing; +Inf is implied. */
  readonly buckets: readonly number[];
}

/** A JSON view of one series for /stats. */
export interface SeriesJson {
  readonly labels: Readonly<Record<string, string>>;
  readonly value?: number;
  readonly buckets?: Readonly<Record<string, number>>;
  readonly count?: number;
  readonly sum?: number;
}

export interface MetricsRegistry {
  counter(options: FamilyOptions): Family<Counter>;
  gauge(options: FamilyOptions): Family<Gauge>;
  histogram(options: HistogramOptions): Family<Histogram>;
  /** Prometheus text exposition format 0.0.4. */
  expose(): string;
  /** Every family as JSON: name → { type, help, series }. */
  toJson(): Record<string, { type: string; help: string; series: SeriesJson[] }>;
}

/** The content type of `expose()`'s output. */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
// Label values are joined into one map key with a character that no route or service name holds.
const SEP = "\u0001";
const OVERFLOW = "overflow";

type Kind = "counter" | "gauge" | "histogram";

interface Entry {
  readonly kind: Kind;
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly string[];
  readonly series: Map<string, { readonly values: readonly string[]; readonly series: Counter | Gauge | HistogramImpl }>;
  readonly bounds?: readonly number[];
}

class CounterImpl implements Counter {
  value = 0;
  inc(by = 1) {
    // A counter only goes up (Prometheus); a negative or NaN increment is a caller bug, ignored.
    if (by > 0) this.value += by;
  }
}

class GaugeImpl implements Gauge {
  value = 0;
  set(value: number) {
    this.value = value;
  }
  inc(by = 1) {
    this.value += by;
  }
  dec(by = 1) {
    this.value -= by;
  }
}

class HistogramImpl implements Histogram {
  readonly counts: number[];
  count = 0;
  sum = 0;
  readonly bounds: readonly number[];
  constructor(bounds: readonly number[]) {
    this.bounds = bounds;
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }
  observe(value: number) {
    if (Number.isNaN(value)) return;
    const bounds = this.bounds;
    // Bucket i holds bounds[i-1] < value <= bounds[i] ("le" is inclusive).
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    this.counts[i]!++;
    this.count++;
    this.sum += value;
  }
}

/**
 * escapeLabelValue escapes a label value for the text format: backslash, double quote and line feed.
 * @example
 * escapeLabelValue('a"b') // 'a\\"b'
 */
export function escapeLabelValue(value: string): string {
  return /[\\"\n]/.test(value) ? value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n") : value;
}

function escapeHelp(help: string): string {
  return help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

/**
 * formatSampleValue writes a number as the text format wants it (+Inf, -Inf, NaN, else Go-parsable).
 * @example
 * formatSampleValue(Infinity) // "+Inf"
 */
export function formatSampleValue(value: number): string {
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  if (Number.isNaN(value)) return "NaN";
  return String(value);
}

function labelText(names: readonly string[], values: readonly string[], extra?: string): string {
  if (names.length === 0 && extra === undefined) return "";
  let out = "{";
  for (let i = 0; i < names.length; i++) {
    if (i > 0) out += ",";
    out += `${names[i]}="${escapeLabelValue(values[i]!)}"`;
  }
  if (extra !== undefined) out += names.length > 0 ? `,${extra}` : extra;
  return `${out}}`;
}

/**
 * createMetricsRegistry holds counters, gauges and fixed-bucket histograms and renders them in the
 * Prometheus text format. Series are created on first use and looked up by their label values.
 * @example
 * const registry = createMetricsRegistry();
 * const requests = registry.counter({ name: "weft_requests_total", help: "Requests.", labelNames: ["code"] });
 * requests.labels("200").inc();
 * registry.expose(); // "# HELP weft_requests_total Requests.\n# TYPE ...\nweft_requests_total{code=\"200\"} 1\n"
 */
export function createMetricsRegistry(): MetricsRegistry {
  const families = new Map<string, Entry>();

  function register<S>(kind: Kind, options: FamilyOptions, make: () => S, bounds?: readonly number[]): Family<S> {
    const { name, help } = options;
    const labelNames = options.labelNames ?? [];
    if (!METRIC_NAME.test(name)) throw new TypeError(`invalid metric name "${name}"`);
    if (families.has(name)) throw new TypeError(`metric "${name}" is already registered`);
    for (const label of labelNames) {
      if (!LABEL_NAME.test(label) || label.startsWith("__") || (kind === "histogram" && label === "le")) {
        throw new TypeError(`invalid label name "${label}" on ${name}`);
      }
    }
    const maxSeries = options.maxSeries ?? 2000;
    const entry: Entry = { kind, name, help, labelNames, series: new Map(), bounds };
    families.set(name, entry);
    const series = entry.series as Map<string, { values: readonly string[]; series: S }>;
    let overflow: S | undefined;
    return {
      name,
      help,
      labelNames,
      labels(...values: string[]): S {
        if (values.length !== labelNames.length) throw new TypeError(`${name} takes ${labelNames.length} label values, got ${values.length}`);
        const key = values.length === 1 ? values[0]! : values.join(SEP);
        const found = series.get(key);
        if (found) return found.series;
        if (series.size >= maxSeries) {
          if (!overflow) {
            overflow = make();
            series.set(SEP, { values: labelNames.map(() => OVERFLOW), series: overflow });
          }
          return overflow;
        }
        const created = make();
        series.set(key, { values, series: created });
        return created;
      },
    };
  }

  function exposeEntry(entry: Entry, out: string[]) {
    out.push(`# HELP ${entry.name} ${escapeHelp(entry.help)}\n# TYPE ${entry.name} ${entry.kind}\n`);
    for (const { values, series } of entry.series.values()) {
      if (entry.kind !== "histogram") {
        out.push(`${entry.name}${labelText(entry.labelNames, values)} ${formatSampleValue((series as Counter).value)}\n`);
        continue;
      }
      const h = series as HistogramImpl;
      let cumulative = 0;
      for (let i = 0; i <= h.bounds.length; i++) {
        cumulative += h.counts[i]!;
        const le = i < h.bounds.length ? formatSampleValue(h.bounds[i]!) : "+Inf";
        out.push(`${entry.name}_bucket${labelText(entry.labelNames, values, `le="${le}"`)} ${cumulative}\n`);
      }
      const labels = labelText(entry.labelNames, values);
      out.push(`${entry.name}_sum${labels} ${formatSampleValue(h.sum)}\n${entry.name}_count${labels} ${h.count}\n`);
    }
  }

  return {
    counter: (options) => register<Counter>("counter", options, () => new CounterImpl()),
    gauge: (options) => register<Gauge>("gauge", options, () => new GaugeImpl()),
    histogram(options) {
      const bounds = [...options.buckets];
      for (let i = 0; i < bounds.length; i++) {
        if (!Number.isFinite(bounds[i]!) || (i > 0 && bounds[i]! <= bounds[i - 1]!)) {
          throw new TypeError(`buckets of ${options.name} must be finite and strictly increasing`);
        }
      }
      return register<Histogram>("histogram", options, () => new HistogramImpl(bounds), bounds);
    },
    expose() {
      const out: string[] = [];
      for (const entry of families.values()) exposeEntry(entry, out);
      return out.join("");
    },
    toJson() {
      const result: Record<string, { type: string; help: string; series: SeriesJson[] }> = {};
      for (const entry of families.values()) {
        const series: SeriesJson[] = [];
        for (const { values, series: s } of entry.series.values()) {
          const labels = Object.fromEntries(entry.labelNames.map((n, i) => [n, values[i]!]));
          if (entry.kind !== "histogram") {
            series.push({ labels, value: (s as Counter).value });
            continue;
          }
          const h = s as HistogramImpl;
          const buckets: Record<string, number> = {};
          let cumulative = 0;
          for (let i = 0; i <= h.bounds.length; i++) {
            cumulative += h.counts[i]!;
            buckets[i < h.bounds.length ? String(h.bounds[i]) : "+Inf"] = cumulative;
          }
          series.push({ labels, buckets, count: h.count, sum: h.sum });
        }
        result[entry.name] = { type: entry.kind, help: entry.help, series };
      }
      return result;
    },
  };
}
