import { test } from "node:test";
import assert from "node:assert/strict";
import { applyCommands, CHAINS, cleanupCommands, DEFAULT_CAPTURE, parseCaptureOptions, planCapture, renderRestore } from "./iptables.ts";

test("default rules: inbound to 15006 except proxy and admin ports, outbound to 15001 except the proxy's uid/gid and loopback", () => {
  assert.equal(
    renderRestore(planCapture(DEFAULT_CAPTURE)),
    [
      "*nat",
      ":WEFT_INBOUND - [0:0]",
      ":WEFT_IN_REDIRECT - [0:0]",
      ":WEFT_OUTPUT - [0:0]",
      ":WEFT_REDIRECT - [0:0]",
      "-A WEFT_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
      "-A WEFT_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
      "-A WEFT_INBOUND -p tcp --dport 15000 -j RETURN",
      "-A WEFT_INBOUND -p tcp --dport 15006 -j RETURN",
      "-A WEFT_INBOUND -p tcp --dport 15001 -j RETURN",
      "-A WEFT_INBOUND -p tcp -j WEFT_IN_REDIRECT",
      "-A WEFT_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner 1337 -j WEFT_IN_REDIRECT",
      "-A WEFT_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN",
      "-A WEFT_OUTPUT -m owner --uid-owner 1337 -j RETURN",
      "-A WEFT_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --gid-owner 1337 -j WEFT_IN_REDIRECT",
      "-A WEFT_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN",
      "-A WEFT_OUTPUT -m owner --gid-owner 1337 -j RETURN",
      "-A WEFT_OUTPUT -d 127.0.0.1/32 -j RETURN",
      "-A WEFT_OUTPUT -j WEFT_REDIRECT",
      "-A PREROUTING -p tcp -j WEFT_INBOUND",
      "-A OUTPUT -p tcp -j WEFT_OUTPUT",
      "COMMIT",
      "",
    ].join("\n"),
  );
});

test("excluded ports and CIDRs return before the redirect; an include list captures only those inbound ports", () => {
  const parsed = parseCaptureOptions({
    "proxy-uid": "2000",
    "include-inbound-ports": "8080,9090,15000",
    "exclude-outbound-ports": "4222",
    "exclude-outbound-cidrs": "10.96.0.0/12,169.254.169.254",
  });
  assert.ok(parsed.ok);
  const text = renderRestore(planCapture(parsed.options));
  const lines = text.split("\n");
  const inbound = lines.filter((l) => l.startsWith("-A WEFT_INBOUND"));
  assert.deepEqual(inbound, ["-A WEFT_INBOUND -p tcp --dport 8080 -j WEFT_IN_REDIRECT", "-A WEFT_INBOUND -p tcp --dport 9090 -j WEFT_IN_REDIRECT"], "the admin port is never captured");
  const output = lines.filter((l) => l.startsWith("-A WEFT_OUTPUT"));
  const redirectAt = output.indexOf("-A WEFT_OUTPUT -j WEFT_REDIRECT");
  assert.equal(redirectAt, output.length - 1, "the redirect comes last");
  for (const rule of ["-A WEFT_OUTPUT -d 10.96.0.0/12 -j RETURN", "-A WEFT_OUTPUT -d 169.254.169.254 -j RETURN", "-A WEFT_OUTPUT -p tcp --dport 4222 -j RETURN"]) {
    assert.ok(output.includes(rule), rule);
  }
  assert.ok(output.includes("-A WEFT_OUTPUT -m owner --uid-owner 2000 -j RETURN"));
  assert.ok(output.includes("-A WEFT_OUTPUT -m owner --gid-owner 2000 -j RETURN"), "the gid defaults to the uid");

  const excluded = parseCaptureOptions({ "exclude-inbound-ports": "22, 4222" });
  assert.ok(excluded.ok);
  const inboundDefault = renderRestore(planCapture(excluded.options)).split("\n").filter((l) => l.startsWith("-A WEFT_INBOUND"));
  assert.deepEqual(inboundDefault.slice(-3), ["-A WEFT_INBOUND -p tcp --dport 22 -j RETURN", "-A WEFT_INBOUND -p tcp --dport 4222 -j RETURN", "-A WEFT_INBOUND -p tcp -j WEFT_IN_REDIRECT"]);
});

test("every bad option is reported at once", () => {
  const parsed = parseCaptureOptions({
    "proxy-uid": "root",
    "inbound-port": "70000",
    "exclude-inbound-ports": "22,x",
    "exclude-outbound-cidrs": "10.0.0.0/33,fd00::/8",
  });
  assert.equal(parsed.ok, false);
  if (parsed.ok) return;
  assert.deepEqual(parsed.issues.map((i) => i.option).sort(), ["exclude-inbound-ports", "exclude-outbound-cidrs", "inbound-port", "proxy-uid"]);
});

/** A small model of the nat table with iptables' rules for -N/-A/-D/-F/-X (X refuses a referenced or non-empty chain). */
function natTable(initial: Record<string, string[]>) {
  const chains = new Map(Object.entries(initial).map(([k, v]) => [k, [...v]]));
  const builtin = new Set(["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"]);
  function run(args: readonly string[]): boolean {
    const rest = args.filter((a) => a !== "-w");
    assert.deepEqual(rest.slice(0, 2), ["-t", "nat"]);
    const [op, chain, ...rule] = rest.slice(2);
    const text = rule.join(" ");
    const list = chains.get(chain!);
    switch (op) {
      case "-N":
        if (list) return false;
        chains.set(chain!, []);
        return true;
      case "-A":
        if (!list) return false;
        if (rule.includes("-j") && !["REDIRECT", "RETURN"].includes(rule[rule.indexOf("-j") + 1]!) && !chains.has(rule[rule.indexOf("-j") + 1]!)) return false;
        list.push(text);
        return true;
      case "-D": {
        const at = list?.indexOf(text) ?? -1;
        if (at < 0) return false;
        list!.splice(at, 1);
        return true;
      }
      case "-F":
        if (!list) return false;
        list.length = 0;
        return true;
      case "-X": {
        if (!list || builtin.has(chain!) || list.length > 0) return false;
        const referenced = [...chains.values()].some((rules) => rules.some((r) => r.endsWith(`-j ${chain}`)));
        if (referenced) return false;
        chains.delete(chain!);
        return true;
      }
      default:
        throw new Error(`unexpected iptables op ${op}`);
    }
  }
  return { run, dump: () => Object.fromEntries([...chains].sort(([a], [b]) => (a < b ? -1 : 1))) };
}

test("cleanup removes exactly what apply added, leaving other rules and chains alone", () => {
  const before = {
    PREROUTING: ["-p tcp --dport 30000 -j DOCKER"],
    OUTPUT: ["-d 10.0.0.0/8 -j RETURN"],
    POSTROUTING: ["-j MASQUERADE"],
    DOCKER: ["-p tcp --dport 30000 -j REDIRECT --to-ports 8080"],
  };
  const table = natTable(before);
  const rules = planCapture({ ...DEFAULT_CAPTURE, excludeInboundPorts: [22], excludeOutboundCidrs: ["10.96.0.0/12"] });
  for (const args of applyCommands(rules)) assert.ok(table.run(args), args.join(" "));
  const applied = table.dump();
  for (const chain of CHAINS) assert.ok(applied[chain]!.length > 0, `${chain} has rules`);
  assert.deepEqual(applied.PREROUTING, [...before.PREROUTING, "-p tcp -j WEFT_INBOUND"]);
  assert.deepEqual(applied.OUTPUT, [...before.OUTPUT, "-p tcp -j WEFT_OUTPUT"]);

  for (const args of cleanupCommands()) assert.ok(table.run(args), args.join(" "));
  assert.deepEqual(table.dump(), natTable(before).dump());
  // A second cleanup finds nothing to remove and changes nothing.
  for (const args of cleanupCommands()) assert.equal(table.run(args), false, args.join(" "));
  assert.deepEqual(table.dump(), natTable(before).dump());
});
