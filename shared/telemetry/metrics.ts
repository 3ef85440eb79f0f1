import { Counter as PromCounter, Gauge as PromGauge, Histogram as PromHistogram, Registry } from "prom-client";

/** One labelled counter series. */
export interface Counter {
  inc(by?: number): void;
}

/** One labelled gauge series. */
export interface Gauge {
  set(value: number): void;
  inc(by?: number): void;
  dec(by?: number): void;
}

/** One labelled histogram series with the family's fixed buckets. */
export interface Histogram {
  observe(value: number): void;
}

/** A metric name with its label names; `labels(...)` returns the series for one set of values. */
export interface Family<S> {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly string[];
  /** The series for these label values (in labelNames order), created on first use. */
  labels(...values: string[]): S;
  /** Forgets every series, for a gauge rebuilt from live state at each scrape (gone endpoints vanish). */
  clear(): void;
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
  expose(): Promise<string>;
  /** Every family as JSON: name → { type, help, series }. */
  toJson(): Promise<Record<string, { type: string; help: string; series: SeriesJson[] }>>;
}

/** The content type of `expose()`'s output. */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
// Label values are joined into one map key with a character that no route or service name holds.
const SEP = "\u0001";
const OVERFLOW = "overflow";

type Kind = "counter" | "gauge" | "histogram";

/**
 * createMetricsRegistry holds counters, gauges and fixed-bucket histograms (prom-client underneath)
 * and renders them in the Prometheus text format. Series are created on first use, looked up by
 * their label values, and capped per family so that cardinality stays bounded.
 * @example
 * const registry = createMetricsRegistry();
 * const requests = registry.counter({ name: "weft_requests_total", help: "Requests.", labelNames: ["code"] });
 * requests.labels("200").inc();
 * await registry.expose(); // "# HELP weft_requests_total Requests.\n# TYPE ...\nweft_requests_total{code=\"200\"} 1\n"
 */
export function createMetricsRegistry(): MetricsRegistry {
  const registry = new Registry();
  const kinds = new Map<string, { kind: Kind; labelNames: readonly string[] }>();

  function check(kind: Kind, options: FamilyOptions): readonly string[] {
    const { name } = options;
    const labelNames = options.labelNames ?? [];
    if (!METRIC_NAME.test(name)) throw new TypeError(`invalid metric name "${name}"`);
    if (kinds.has(name)) throw new TypeError(`metric "${name}" is already registered`);
    for (const label of labelNames) {
      if (!LABEL_NAME.test(label) || label.startsWith("__") || (kind === "histogram" && label === "le")) {
        throw new TypeError(`invalid label name "${label}" on ${name}`);
      }
    }
    kinds.set(name, { kind, labelNames });
    return labelNames;
  }

  /** Caches one child per label set (prom-client's labels() allocates) and caps how many exist. */
  function family<S>(options: FamilyOptions, labelNames: readonly string[], child: (values: string[]) => S, reset: () => void): Family<S> {
    const { name, help } = options;
    const maxSeries = options.maxSeries ?? 2000;
    const series = new Map<string, S>();
    let overflow: S | undefined;
    return {
      name,
      help,
      labelNames,
      labels(...values: string[]): S {
        if (values.length !== labelNames.length) throw new TypeError(`${name} takes ${labelNames.length} label values, got ${values.length}`);
        const key = values.length === 1 ? values[0]! : values.join(SEP);
        const found = series.get(key);
        if (found) return found;
        if (series.size >= maxSeries) return (overflow ??= child(labelNames.map(() => OVERFLOW)));
        const created = child(values);
        series.set(key, created);
        return created;
      },
      clear() {
        series.clear();
        overflow = undefined;
        reset();
      },
    };
  }

  return {
    counter(options) {
      const labelNames = check("counter", options);
      const metric = new PromCounter({ name: options.name, help: options.help, labelNames: [...labelNames], registers: [registry] });
      return family<Counter>(options, labelNames, (values) => {
        const c = labelNames.length ? metric.labels(...values) : metric;
        // A series exists from its first use, at 0, as Prometheus recommends (rates need the start).
        c.inc(0);
        // A counter only goes up (Prometheus); a negative or NaN increment is a caller bug, ignored.
        return { inc: (by = 1) => void (by > 0 && c.inc(by)) };
      }, () => metric.reset());
    },
    gauge(options) {
      const labelNames = check("gauge", options);
      const metric = new PromGauge({ name: options.name, help: options.help, labelNames: [...labelNames], registers: [registry] });
      return family<Gauge>(options, labelNames, (values) => {
        const g = labelNames.length ? metric.labels(...values) : metric;
        g.set(0);
        return { set: (v) => g.set(v), inc: (by = 1) => g.inc(by), dec: (by = 1) => g.dec(by) };
      }, () => metric.reset());
    },
    histogram(options) {
      const bounds = [...options.buckets];
      for (let i = 0; i < bounds.length; i++) {
        if (!Number.isFinite(bounds[i]!) || (i > 0 && bounds[i]! <= bounds[i - 1]!)) {
          throw new TypeError(`buckets of ${options.name} must be finite and strictly increasing`);
        }
      }
      const labelNames = check("histogram", options);
      const metric = new PromHistogram({ name: options.name, help: options.help, labelNames: [...labelNames], buckets: bounds, registers: [registry] });
      return family<Histogram>(options, labelNames, (values) => {
        const h = labelNames.length ? metric.labels(...values) : metric;
        return { observe: (v) => void (!Number.isNaN(v) && h.observe(v)) };
      }, () => metric.reset());
    },
    expose: () => registry.metrics(),
    async toJson() {
      const result: Record<string, { type: string; help: string; series: SeriesJson[] }> = {};
      for (const m of await registry.getMetricsAsJSON()) {
        const series: SeriesJson[] = [];
        if (String(m.type) !== "histogram") {
          for (const v of m.values) series.push({ labels: stringLabels(v.labels), value: v.value });
        } else {
          // prom-client lists _bucket, _sum and _count samples; fold them into one entry per label set.
          const byLabels = new Map<string, { labels: Record<string, string>; buckets: Record<string, number>; count: number; sum: number }>();
          for (const v of m.values as { labels: Record<string, string | number>; value: number; metricName?: string }[]) {
            const { le, ...rest } = v.labels;
            const labels = stringLabels(rest);
            const key = JSON.stringify(labels);
            let entry = byLabels.get(key);
            if (!entry) byLabels.set(key, (entry = { labels, buckets: {}, count: 0, sum: 0 }));
            if (v.metricName?.endsWith("_bucket")) entry.buckets[le === "+Inf" ? "+Inf" : String(le)] = v.value;
            else if (v.metricName?.endsWith("_sum")) entry.sum = v.value;
            else if (v.metricName?.endsWith("_count")) entry.count = v.value;
          }
          series.push(...byLabels.values());
        }
        result[m.name] = { type: String(m.type), help: m.help, series };
      }
      return result;
    },
  };
}

function stringLabels(labels: Record<string, string | number | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(labels)) if (v !== undefined) out[k] = String(v);
  return out;
}
