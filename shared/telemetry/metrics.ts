import { Registry, type Metric } from "prom-client";

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

type Labels = Record<string, string>;

/** A counter's or gauge's sample as prom-client's Registry reads it. */
interface ScalarEntry {
  value: number;
  readonly labels: Labels;
}

/** A histogram's series: per-bucket (not cumulative) counts, sum and count, as prom-client keeps them. */
interface BucketEntry {
  readonly labels: Labels;
  readonly counts: number[];
  sum: number;
  count: number;
}

/**
 * The registry's view of one counter or gauge family. Series are plain numbers updated in place, so
 * a request costs a field add instead of prom-client's per-update label hashing; prom-client's
 * Registry still renders them (same samples, same order: first use, as its hash map kept them).
 */
class ScalarFamily {
  readonly name: string;
  readonly help: string;
  readonly type: "counter" | "gauge";
  readonly aggregator = "sum";
  entries = new Map<string, ScalarEntry>();
  /** Bumped by reset(): series made before it find their entry again on their next update. */
  generation = 0;
  private readonly unlabelled: boolean;

  constructor(type: "counter" | "gauge", name: string, help: string, unlabelled: boolean) {
    this.type = type;
    this.name = name;
    this.help = help;
    this.unlabelled = unlabelled;
    this.reset();
  }

  reset(): void {
    this.entries = new Map();
    this.generation++;
    // As prom-client: a family without labels always has its one series.
    if (this.unlabelled) this.entries.set("", { value: 0, labels: {} });
  }

  entry(key: string, labels: Labels): ScalarEntry {
    let e = this.entries.get(key);
    if (e === undefined) this.entries.set(key, (e = { value: 0, labels }));
    return e;
  }

  async get() {
    return { name: this.name, help: this.help, type: this.type, values: [...this.entries.values()], aggregator: this.aggregator };
  }
}

class ScalarSeries {
  protected entry: ScalarEntry;
  private generation: number;
  private readonly family: ScalarFamily;
  private readonly key: string;
  private readonly labels: Labels;

  constructor(family: ScalarFamily, key: string, labels: Labels) {
    this.family = family;
    this.key = key;
    this.labels = labels;
    this.entry = family.entry(key, labels);
    this.generation = family.generation;
  }

  protected current(): ScalarEntry {
    if (this.generation !== this.family.generation) {
      this.entry = this.family.entry(this.key, this.labels);
      this.generation = this.family.generation;
    }
    return this.entry;
  }
}

class CounterSeries extends ScalarSeries implements Counter {
  inc(by = 1): void {
    // A counter only goes up (Prometheus); a negative or NaN increment is a caller bug, ignored.
    if (!(by > 0)) return;
    if (by === Infinity) throw new TypeError(`Value is not a valid number: ${by}`);
    this.current().value += by;
  }
}

class GaugeSeries extends ScalarSeries implements Gauge {
  constructor(family: ScalarFamily, key: string, labels: Labels) {
    super(family, key, labels);
    // A new series starts at 0 even where its entry already held a value (prom-client's set(0)).
    this.entry.value = 0;
  }
  set(value: number): void {
    this.current().value = value;
  }
  inc(by = 1): void {
    this.current().value += by;
  }
  dec(by = 1): void {
    this.current().value -= by;
  }
}

/** The registry's view of one histogram family; see ScalarFamily. */
class HistogramFamily {
  readonly name: string;
  readonly help: string;
  readonly type = "histogram";
  readonly aggregator = "sum";
  readonly bounds: readonly number[];
  entries = new Map<string, BucketEntry>();
  generation = 0;

  constructor(name: string, help: string, bounds: readonly number[], unlabelled: boolean) {
    this.name = name;
    this.help = help;
    this.bounds = bounds;
    // As prom-client: a histogram without labels has its series from the start (reset() does not restore it).
    if (unlabelled) this.entry("", {});
  }

  reset(): void {
    this.entries = new Map();
    this.generation++;
  }

  entry(key: string, labels: Labels): BucketEntry {
    let e = this.entries.get(key);
    if (e === undefined) this.entries.set(key, (e = { labels, counts: this.bounds.map(() => 0), sum: 0, count: 0 }));
    return e;
  }

  /** The samples as prom-client's Histogram lists them for the text format: buckets (cumulative), +Inf, _sum, _count. */
  async getForPromString() {
    const bucket = `${this.name}_bucket`;
    const values: { labels: Record<string, string | number>; sharedLabels: Labels; value: number; metricName: string; exemplar?: null }[] = [];
    for (const e of this.entries.values()) {
      let acc = 0;
      for (let i = 0; i < this.bounds.length; i++) {
        acc += e.counts[i]!;
        values.push({ labels: { le: this.bounds[i]! }, sharedLabels: e.labels, value: acc, metricName: bucket, exemplar: null });
      }
      values.push({ labels: { le: "+Inf" }, sharedLabels: e.labels, value: e.count, metricName: bucket, exemplar: null });
      values.push({ labels: {}, sharedLabels: e.labels, value: e.sum, metricName: `${this.name}_sum`, exemplar: undefined });
      values.push({ labels: {}, sharedLabels: e.labels, value: e.count, metricName: `${this.name}_count`, exemplar: undefined });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  /** The same samples with each series' labels folded in after `le` (prom-client's get()). */
  async get() {
    const data = await this.getForPromString();
    const values = data.values.map(({ labels, sharedLabels, ...rest }) => ({ ...rest, labels: { ...labels, ...sharedLabels } }));
    return { ...data, values };
  }
}

class HistogramSeries implements Histogram {
  private entry: BucketEntry | undefined;
  private generation = -1;
  private readonly family: HistogramFamily;
  private readonly key: string;
  private readonly labels: Labels;

  constructor(family: HistogramFamily, key: string, labels: Labels) {
    this.family = family;
    this.key = key;
    this.labels = labels;
  }

  observe(value: number): void {
    if (Number.isNaN(value)) return;
    if (!Number.isFinite(value)) throw new TypeError(`Value is not a valid number: ${value}`);
    let e = this.entry;
    // The series appears at its first observation, as in prom-client.
    if (e === undefined || this.generation !== this.family.generation) {
      e = this.entry = this.family.entry(this.key, this.labels);
      this.generation = this.family.generation;
    }
    e.sum += value;
    e.count += 1;
    const bounds = this.family.bounds;
    for (let i = 0; i < bounds.length; i++) {
      if (value <= bounds[i]!) {
        e.counts[i]! += 1;
        break;
      }
    }
  }
}

/**
 * createMetricsRegistry holds counters, gauges and fixed-bucket histograms and renders them in the
 * Prometheus text format (prom-client's Registry). Series are created on first use, looked up by
 * their label values, kept as plain numbers, and capped per family so that cardinality stays bounded.
 * @example
 * const registry = createMetricsRegistry();
 * const requests = registry.counter({ name: "weft_requests_total", help: "Requests.", labelNames: ["code"] });
 * requests.labels("200").inc();
 * await registry.expose(); // "# HELP weft_requests_total Requests.\n# TYPE ...\nweft_requests_total{code=\"200\"} 1\n"
 */
export function createMetricsRegistry(): MetricsRegistry {
  const registry = new Registry();
  const kinds = new Map<string, { kind: Kind; labelNames: readonly string[] }>();
  const register = (metric: ScalarFamily | HistogramFamily) => registry.registerMetric(metric as unknown as Metric);

  function check(kind: Kind, options: FamilyOptions): readonly string[] {
    const { name } = options;
    const labelNames = options.labelNames ?? [];
    if (!METRIC_NAME.test(name)) throw new TypeError(`invalid metric name "${name}"`);
    if (kinds.has(name)) throw new TypeError(`metric "${name}" is already registered`);
    if (!options.help) throw new TypeError(`metric "${name}" needs a help text`);
    for (const label of labelNames) {
      if (!LABEL_NAME.test(label) || label.startsWith("__") || (kind === "histogram" && label === "le")) {
        throw new TypeError(`invalid label name "${label}" on ${name}`);
      }
    }
    kinds.set(name, { kind, labelNames });
    return labelNames;
  }

  /** Caches one series per label set and caps how many exist. */
  function family<S>(options: FamilyOptions, labelNames: readonly string[], child: (key: string, labels: Labels) => S, reset: () => void): Family<S> {
    const { name, help } = options;
    const maxSeries = options.maxSeries ?? 2000;
    const series = new Map<string, S>();
    let overflow: S | undefined;
    const labelsOf = (values: readonly string[]) => {
      const labels: Labels = {};
      for (let i = 0; i < labelNames.length; i++) labels[labelNames[i]!] = values[i]!;
      return labels;
    };
    return {
      name,
      help,
      labelNames,
      labels(...values: string[]): S {
        if (values.length !== labelNames.length) throw new TypeError(`${name} takes ${labelNames.length} label values, got ${values.length}`);
        const key = values.length === 1 ? values[0]! : values.join(SEP);
        const found = series.get(key);
        if (found) return found;
        if (series.size >= maxSeries) {
          if (overflow === undefined) {
            const values = labelNames.map(() => OVERFLOW);
            overflow = child(values.join(SEP), labelsOf(values));
          }
          return overflow;
        }
        const created = child(key, labelsOf(values));
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
      const metric = new ScalarFamily("counter", options.name, options.help, labelNames.length === 0);
      register(metric);
      // A series exists from its first use, at 0, as Prometheus recommends (rates need the start).
      return family<Counter>(options, labelNames, (key, labels) => new CounterSeries(metric, key, labels), () => metric.reset());
    },
    gauge(options) {
      const labelNames = check("gauge", options);
      const metric = new ScalarFamily("gauge", options.name, options.help, labelNames.length === 0);
      register(metric);
      return family<Gauge>(options, labelNames, (key, labels) => new GaugeSeries(metric, key, labels), () => metric.reset());
    },
    histogram(options) {
      const bounds = [...options.buckets];
      for (let i = 0; i < bounds.length; i++) {
        if (!Number.isFinite(bounds[i]!) || (i > 0 && bounds[i]! <= bounds[i - 1]!)) {
          throw new TypeError(`buckets of ${options.name} must be finite and strictly increasing`);
        }
      }
      const labelNames = check("histogram", options);
      const metric = new HistogramFamily(options.name, options.help, bounds, labelNames.length === 0);
      register(metric);
      return family<Histogram>(options, labelNames, (key, labels) => new HistogramSeries(metric, key, labels), () => metric.reset());
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
