import { test } from "node:test";
import assert from "node:assert/strict";
import { createMetricsRegistry } from "./metrics.ts";

interface Sample {
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly value: number;
}
interface Parsed {
  readonly help: Map<string, string>;
  readonly type: Map<string, string>;
  readonly samples: Sample[];
}

/** A strict reader of the text format 0.0.4: anything it does not understand fails the test. */
function parseExposition(text: string): Parsed {
  const help = new Map<string, string>();
  const type = new Map<string, string>();
  const samples: Sample[] = [];
  assert.ok(text === "" || text.endsWith("\n"), "exposition ends with a newline");
  const lines = text.split("\n");
  lines.pop();
  const familyOf = (name: string) => {
    for (const suffix of ["_bucket", "_sum", "_count"]) {
      const base = name.slice(0, -suffix.length);
      if (name.endsWith(suffix) && type.get(base) === "histogram") return base;
    }
    return name;
  };
  for (const line of lines) {
    // The format ignores empty lines (prom-client puts one between families).
    if (line === "") continue;
    let m = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (m) {
      assert.ok(!help.has(m[1]!), `HELP for ${m[1]} once`);
      assert.ok(!/\\[^\\n]/.test(m[2]!.replace(/\\\\/g, "")), `HELP escapes only \\\\ and \\n: ${line}`);
      help.set(m[1]!, m[2]!.replace(/\\(\\|n)/g, (_, c: string) => (c === "n" ? "\n" : "\\")));
      continue;
    }
    m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (m) {
      assert.ok(!type.has(m[1]!), `TYPE for ${m[1]} once`);
      assert.ok(!samples.some((s) => familyOf(s.name) === m![1]), `TYPE for ${m[1]} before its samples`);
      type.set(m[1]!, m[2]!);
      continue;
    }
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$/.exec(line);
    assert.ok(m, `sample line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    if (m[2]) {
      let rest = m[2].slice(1, -1);
      while (rest.length > 0) {
        const lm = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"(,|$)/.exec(rest);
        assert.ok(lm, `labels: ${m[2]}`);
        assert.ok(!(lm[1]! in labels), `label ${lm[1]} once`);
        labels[lm[1]!] = lm[2]!.replace(/\\(["\\n])/g, (_, c: string) => (c === "n" ? "\n" : c));
        rest = rest.slice(lm[0].length);
      }
    }
    const raw = m[3]!;
    const value = raw === "+Inf" ? Infinity : raw === "-Inf" ? -Infinity : raw === "NaN" ? NaN : Number(raw);
    assert.ok(raw === "NaN" || !Number.isNaN(value), `value ${raw}`);
    assert.ok(type.has(familyOf(m[1]!)), `TYPE declared for ${m[1]}`);
    samples.push({ name: m[1]!, labels, value });
  }
  return { help, type, samples };
}

function sample(parsed: Parsed, name: string, labels: Record<string, string>): number | undefined {
  const key = (l: Record<string, string>) => JSON.stringify(Object.entries(l).sort());
  return parsed.samples.find((s) => s.name === name && key(s.labels) === key(labels))?.value;
}

test("counters, gauges and histograms expose as valid text format 0.0.4 and parse back to their values", async () => {
  const registry = createMetricsRegistry();
  const requests = registry.counter({ name: "weft_requests_total", help: "Requests.", labelNames: ["route", "code"] });
  requests.labels("web", "200").inc();
  requests.labels("web", "200").inc(2);
  requests.labels("api", "503").inc();
  registry.gauge({ name: "weft_in_flight", help: "In flight." }).labels().set(4);
  const h = registry.histogram({ name: "weft_duration_seconds", help: "Duration.", labelNames: ["route"], buckets: [0.1, 1] });
  h.labels("web").observe(0.05);
  h.labels("web").observe(0.5);
  h.labels("web").observe(7);

  const parsed = parseExposition(await registry.expose());
  assert.equal(parsed.type.get("weft_requests_total"), "counter");
  assert.equal(parsed.type.get("weft_in_flight"), "gauge");
  assert.equal(parsed.type.get("weft_duration_seconds"), "histogram");
  assert.equal(parsed.help.get("weft_requests_total"), "Requests.");
  assert.equal(sample(parsed, "weft_requests_total", { route: "web", code: "200" }), 3);
  assert.equal(sample(parsed, "weft_requests_total", { route: "api", code: "503" }), 1);
  assert.equal(sample(parsed, "weft_in_flight", {}), 4);
  assert.equal(sample(parsed, "weft_duration_seconds_bucket", { route: "web", le: "0.1" }), 1);
  assert.equal(sample(parsed, "weft_duration_seconds_bucket", { route: "web", le: "1" }), 2);
  assert.equal(sample(parsed, "weft_duration_seconds_bucket", { route: "web", le: "+Inf" }), 3);
  assert.equal(sample(parsed, "weft_duration_seconds_count", { route: "web" }), 3);
  assert.equal(sample(parsed, "weft_duration_seconds_sum", { route: "web" }), 7.55);
});

test("label values with quotes, backslashes and newlines, and help with newlines, are escaped and read back intact", async () => {
  const registry = createMetricsRegistry();
  const nasty = 'a"b\\c\nd';
  registry.counter({ name: "weft_x_total", help: "line one\nline two \\ end", labelNames: ["route"] }).labels(nasty).inc();
  const text = await registry.expose();
  assert.equal(text.split("\n").filter((l) => l !== "").length, 3, "one HELP, one TYPE, one sample");
  const parsed = parseExposition(text);
  assert.equal(parsed.help.get("weft_x_total"), "line one\nline two \\ end");
  assert.equal(sample(parsed, "weft_x_total", { route: nasty }), 1);
});

test("histogram buckets are upper-inclusive (le) and cumulative, with +Inf equal to the count", async () => {
  const registry = createMetricsRegistry();
  const h = registry.histogram({ name: "h", help: "h", buckets: [1, 2, 5] }).labels();
  for (const v of [0, 1, 1.0000001, 2, 4.9, 5, 5.1, 100, -3]) h.observe(v);
  // Per bucket: (-inf,1] = 0,1,-3; (1,2] = 1.0000001,2; (2,5] = 4.9,5; (5,+inf) = 5.1,100.
  const parsed = parseExposition(await registry.expose());
  const buckets = parsed.samples.filter((s) => s.name === "h_bucket").map((s) => [s.labels.le, s.value]);
  assert.deepEqual(buckets, [["1", 3], ["2", 5], ["5", 7], ["+Inf", 9]]);
  assert.equal(sample(parsed, "h_count", {}), 9);
});

test("a NaN observation is ignored and a counter never decreases", async () => {
  const registry = createMetricsRegistry();
  const h = registry.histogram({ name: "h", help: "h", buckets: [1] }).labels();
  h.observe(NaN);
  const c = registry.counter({ name: "c_total", help: "c" }).labels();
  c.inc(5);
  c.inc(-2);
  c.inc(NaN);
  const parsed = parseExposition(await registry.expose());
  assert.equal(sample(parsed, "h_count", {}), 0);
  assert.equal(sample(parsed, "c_total", {}), 5);
});

test("series beyond maxSeries collapse into one overflow series, so cardinality stays bounded", async () => {
  const registry = createMetricsRegistry();
  const family = registry.counter({ name: "c_total", help: "c", labelNames: ["route", "code"], maxSeries: 3 });
  for (let i = 0; i < 10; i++) family.labels(`r${i}`, "200").inc();
  const parsed = parseExposition(await registry.expose());
  assert.equal(parsed.samples.length, 4);
  assert.equal(sample(parsed, "c_total", { route: "overflow", code: "overflow" }), 7);
  assert.equal(sample(parsed, "c_total", { route: "r0", code: "200" }), 1);
});

test("the same label values give the same series object (a lookup, not a new series)", async () => {
  const family = createMetricsRegistry().counter({ name: "c_total", help: "c", labelNames: ["a", "b"] });
  assert.equal(family.labels("x", "y"), family.labels("x", "y"));
  assert.notEqual(family.labels("x", "y"), family.labels("xy", ""));
});

test("bad names, duplicate families, reserved labels and unordered buckets are refused at registration", async () => {
  const registry = createMetricsRegistry();
  registry.counter({ name: "ok_total", help: "x" });
  assert.throws(() => registry.counter({ name: "ok_total", help: "x" }), TypeError);
  assert.throws(() => registry.counter({ name: "1bad", help: "x" }), TypeError);
  assert.throws(() => registry.counter({ name: "x_total", help: "x", labelNames: ["__name"] }), TypeError);
  assert.throws(() => registry.histogram({ name: "h1", help: "x", labelNames: ["le"], buckets: [1] }), TypeError);
  assert.throws(() => registry.histogram({ name: "h2", help: "x", buckets: [2, 1] }), TypeError);
  assert.throws(() => registry.histogram({ name: "h3", help: "x", buckets: [1, Infinity] }), TypeError);
  const family = registry.counter({ name: "y_total", help: "x", labelNames: ["a"] });
  assert.throws(() => family.labels("1", "2"), TypeError);
});

test("clear() drops a gauge's series; one still held starts over as a new series when next set", async () => {
  const registry = createMetricsRegistry();
  const family = registry.gauge({ name: "g", help: "g", labelNames: ["endpoint"] });
  const held = family.labels("a");
  held.set(3);
  family.labels("b").set(1);
  family.clear();
  assert.equal(parseExposition(await registry.expose()).samples.length, 0);
  held.inc();
  const parsed = parseExposition(await registry.expose());
  assert.equal(parsed.samples.length, 1);
  assert.equal(sample(parsed, "g", { endpoint: "a" }), 1);
});

test("a histogram series appears at its first observation, in the order series were first observed", async () => {
  const registry = createMetricsRegistry();
  const family = registry.histogram({ name: "h", help: "h", labelNames: ["route"], buckets: [1] });
  const first = family.labels("first");
  family.labels("second").observe(0.5);
  assert.deepEqual(
    parseExposition(await registry.expose()).samples.map((s) => s.labels.route),
    ["second", "second", "second", "second"],
  );
  first.observe(2);
  const parsed = parseExposition(await registry.expose());
  assert.deepEqual([...new Set(parsed.samples.map((s) => s.labels.route))], ["second", "first"]);
  assert.equal(sample(parsed, "h_bucket", { route: "first", le: "1" }), 0);
  assert.equal(sample(parsed, "h_count", { route: "first" }), 1);
});

test("special float values use the text format's spelling", async () => {
  const registry = createMetricsRegistry();
  registry.gauge({ name: "g", help: "g" }).labels().set(-Infinity);
  assert.equal(sample(parseExposition(await registry.expose()), "g", {}), -Infinity);
});

test("toJson lists every family with its series, cumulative buckets included", async () => {
  const registry = createMetricsRegistry();
  registry.counter({ name: "c_total", help: "c", labelNames: ["code"] }).labels("200").inc(2);
  registry.histogram({ name: "h", help: "h", buckets: [1] }).labels().observe(3);
  const json = await registry.toJson();
  assert.deepEqual(json.c_total, { type: "counter", help: "c", series: [{ labels: { code: "200" }, value: 2 }] });
  assert.deepEqual(json.h!.series[0], { labels: {}, buckets: { "1": 0, "+Inf": 1 }, count: 1, sum: 3 });
});
