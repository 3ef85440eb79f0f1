// `node --import tsx bench/policy.ts [--duration 0.5]`: what policy costs per request, in-process.
//   JWT:     a repeated valid token (steady state: the verified-token cache answers) and a fresh
//            token every request (cache miss: jose verifies the signature), ES256 and RS256, inline JWKS
//   gate:    createPolicyGate(...).evaluate(head), the call the gateway makes per request (JWT + ALLOW)
//   authz:   100 policies (DENY/ALLOW, principals, prefix/suffix paths, methods, headers, a claim) where
//            the matching ALLOW is the last one, and where none matches
//   paths:   normalizeAuthzPath on a plain, a query-carrying and an encoded target
// Each case: a warm-up, then 5 rounds of a fixed count (a round also stops at --duration seconds);
// the median round is reported as µs/op, with its ratio to the group's baseline from the same run.
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from "jose";
import { validatePolicySet, type AuthzPolicyConfig, type PolicySetConfig, type PolicySetInput } from "../shared/config/index.ts";
import { compileAuthz, createJwtAuthenticator, createPolicyGate, normalizeAuthzPath, type AuthzRequest, type PolicyHead } from "../shared/policy/index.ts";
import { markdownTable } from "./measure.ts";

type AuthzPolicyInput = NonNullable<PolicySetInput["authz"]>[number];

const ISSUER = "https://issuer.bench.test";
const ROUNDS = 5;
const PATHS = { encodedSlashes: "keep", caseInsensitive: false } as const;

const fmt = (n: number, digits = 0) => (Number.isFinite(n) ? n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits }) : "-");

interface Case {
  readonly name: string;
  /** One operation; may return a promise (awaited before the next). */
  readonly op: (i: number) => unknown;
  readonly count: number;
  /** Checked once before timing, so a case that silently takes the wrong branch is refused. */
  readonly expect?: () => Promise<void>;
}

interface Result {
  readonly name: string;
  readonly usPerOp: number;
  readonly cpuUsPerOp: number;
  readonly spreadPct: number;
  readonly count: number;
}

async function run(c: Case, maxRoundSeconds: number): Promise<Result> {
  await c.expect?.();
  const warm = Math.max(200, Math.floor(c.count / 5));
  for (let i = 0; i < warm; i++) {
    const r = c.op(i);
    if (r instanceof Promise) await r;
  }
  const rounds: { us: number; cpu: number; n: number }[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const stopAt = t0 + maxRoundSeconds * 1000;
    let n = 0;
    // Time is checked every 64 ops so the clock read stays out of the per-op cost.
    while (n < c.count && ((n & 63) !== 0 || performance.now() < stopAt)) {
      const r = c.op(n);
      if (r instanceof Promise) await r;
      n++;
    }
    const wall = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    rounds.push({ us: (wall * 1000) / n, cpu: (cpu.user + cpu.system) / n, n });
  }
  const sorted = [...rounds].sort((a, b) => a.us - b.us);
  const median = sorted[Math.floor(ROUNDS / 2)]!;
  return { name: c.name, usPerOp: median.us, cpuUsPerOp: median.cpu, spreadPct: ((sorted.at(-1)!.us - sorted[0]!.us) / median.us) * 100, count: median.n };
}

async function group(title: string, cases: readonly Case[], maxRoundSeconds: number): Promise<string> {
  const results: Result[] = [];
  for (const c of cases) results.push(await run(c, maxRoundSeconds));
  const base = results[0]!;
  const rows = results.map((r) => ({
    [title]: r.name,
    "µs/op": fmt(r.usPerOp, r.usPerOp < 10 ? 2 : 1),
    "ops/s": fmt(1e6 / r.usPerOp),
    "CPU µs/op": fmt(r.cpuUsPerOp, r.cpuUsPerOp < 10 ? 2 : 1),
    "+µs over baseline": r === base ? "baseline" : fmt(r.usPerOp - base.usPerOp, 2),
    "× baseline": fmt(r.usPerOp / base.usPerOp, 1),
    "ops/round": fmt(r.count),
    "round spread": `${fmt(r.spreadPct)}%`,
  }));
  return markdownTable(rows);
}

function policySet(input: PolicySetInput): PolicySetConfig {
  const r = validatePolicySet(input);
  if (!r.ok) throw new Error(`bench policy set refused: ${JSON.stringify(r.issues)}`);
  return r.value;
}

interface Issuer {
  readonly alg: "ES256" | "RS256";
  readonly jwk: JWK;
  sign(sub: string): Promise<string>;
}

async function issuer(alg: "ES256" | "RS256"): Promise<Issuer> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const kid = `${alg.toLowerCase()}-1`;
  const jwk = { ...(await exportJWK(publicKey as CryptoKey)), kid, alg, use: "sig" };
  const now = Math.floor(Date.now() / 1000);
  return {
    alg,
    jwk,
    sign: (sub) =>
      new SignJWT({ role: "admin", groups: ["eng", "ops"], tenant: "t99" })
        .setProtectedHeader({ alg, kid })
        .setIssuer(ISSUER)
        .setSubject(sub)
        .setAudience("shop")
        .setIssuedAt(now)
        .setExpirationTime(now + 3600)
        .sign(privateKey),
  };
}

function provider(alg: "ES256" | "RS256", jwk: JWK) {
  return { issuer: ISSUER, audiences: ["shop"], jwks: { keys: [jwk as { kty: "EC" | "RSA" }] }, algorithms: [alg] };
}

/** 100 policies: 25 DENY (principals, namespaces, admin paths), 75 ALLOW (methods, prefix and suffix
 * paths, a header, a claim); only the last ALLOW matches the benchmark request, and only when `lastMatches`. */
function hundredPolicies(lastMatches: boolean): AuthzPolicyConfig[] {
  const input: unknown[] = [];
  for (let i = 0; i < 99; i++) {
    if (i % 4 === 0) {
      input.push({
        name: `deny-${i}`,
        action: "DENY",
        rules: [
          { from: [{ principals: [`spiffe://cluster.local/ns/blocked-${i}/*`] }] },
          { from: [{ namespaces: [`quarantine-${i}`] }], to: [{ paths: [`/admin-${i}/*`] }] },
          { to: [{ methods: ["DELETE"], paths: [`/api/v${i}/*`] }], when: [{ key: "request.auth.claims[role]", values: [`intern-${i}`] }] },
        ],
      });
    } else {
      // Where each ALLOW stops matching varies: at the peer (i % 4 == 1), at the header condition
      // after from/to matched (2), or only at the claim condition, the last check (3).
      const late = i % 4 !== 1;
      input.push({
        name: `allow-${i}`,
        action: "ALLOW",
        rules: [
          {
            from: [{ principals: [late ? "spiffe://cluster.local/ns/web/sa/*" : `spiffe://cluster.local/ns/team-${i}/sa/*`], requestPrincipals: [`${ISSUER}/*`] }],
            to: [{ methods: ["GET", "POST"], paths: [`/api/v${i}/*`, late ? "*/42" : `*.v${i}.json`], hosts: ["shop.example.com", "*.shop.example.com"] }],
            when: [
              { key: "request.headers[x-tenant]", values: [i % 4 === 3 ? "t99" : `t${i}`] },
              { key: "request.auth.claims[role]", values: [`reader-${i}`] },
            ],
          },
        ],
      });
    }
  }
  input.push({
    name: "allow-99",
    action: "ALLOW",
    rules: [
      {
        from: [{ principals: ["spiffe://cluster.local/ns/web/sa/*"], requestPrincipals: [`${ISSUER}/*`] }],
        to: [{ methods: ["GET", "POST"], paths: [lastMatches ? "/api/v99/*" : "/api/v100/*", "*.v99.json"], hosts: ["shop.example.com", "*.shop.example.com"] }],
        when: [
          { key: "request.headers[x-tenant]", values: ["t99"] },
          { key: "request.auth.claims[role]", values: ["admin"] },
        ],
      },
    ],
  });
  return policySet({ authz: input as PolicySetInput["authz"] }).authz ?? [];
}

/**
 * main measures JWT verification, the policy gate, 100-policy authorization and path normalisation per request, and prints tables.
 * @example await main(["--duration", "1"]);
 */
export async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { duration: { type: "string" } } });
  const maxRoundSeconds = Number(values.duration ?? 0.5);
  if (!(maxRoundSeconds > 0 && maxRoundSeconds <= 10)) throw new RangeError("--duration is the longest round in seconds, 0..10");
  console.log(`Policy cost: warm-up, then median of ${ROUNDS} rounds (fixed count, each capped at ${maxRoundSeconds}s); node ${process.version}, load average ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}`);
  console.log(`command: node --import tsx bench/policy.ts ${argv.join(" ")}`.trimEnd() + "\n");

  const es = await issuer("ES256");
  const rs = await issuer("RS256");
  const esToken = await es.sign("alice");
  const rsToken = await rs.sign("alice");
  // Fresh tokens for the cache-miss cases: every request presents one the cache has not seen.
  const esFresh: string[] = [];
  for (let i = 0; i < 2000; i++) esFresh.push(await es.sign(`user-${i}`));
  const rsFresh: string[] = [];
  for (let i = 0; i < 300; i++) rsFresh.push(await rs.sign(`user-${i}`));

  const bearer = (token: string) => ({ authorization: `Bearer ${token}`, "x-tenant": "t99", "user-agent": "bench" });
  const authnOf = (alg: "ES256" | "RS256", jwk: JWK, maxCachedTokens?: number) =>
    createJwtAuthenticator(policySet({ authn: { jwt: [provider(alg, jwk)] } }).authn!.jwt, maxCachedTokens ? { maxCachedTokens } : {});
  const none = createJwtAuthenticator([]);
  const esAuthn = authnOf("ES256", es.jwk);
  const rsAuthn = authnOf("RS256", rs.jwk);
  // A one-entry cache and a different token each time: every call verifies the signature.
  const esCold = authnOf("ES256", es.jwk, 1);
  const rsCold = authnOf("RS256", rs.jwk, 1);
  const esHeaders = bearer(esToken);
  const rsHeaders = bearer(rsToken);
  const esFreshHeaders = esFresh.map(bearer);
  const rsFreshHeaders = rsFresh.map(bearer);
  const authenticated = (authn: typeof none, headers: Record<string, string>) => async () => {
    const r = await authn.authenticate(headers);
    if (!r.ok || r.requestPrincipal === undefined) throw new Error(`token refused: ${JSON.stringify(r)}`);
  };

  console.log(
    (await group(
      "JWT authn (createJwtAuthenticator)",
      [
        { name: "no issuer configured (anonymous)", op: () => none.authenticate(esHeaders), count: 200_000 },
        { name: "ES256, repeated token (cache hit)", op: () => esAuthn.authenticate(esHeaders), count: 200_000, expect: authenticated(esAuthn, esHeaders) },
        { name: "RS256, repeated token (cache hit)", op: () => rsAuthn.authenticate(rsHeaders), count: 200_000, expect: authenticated(rsAuthn, rsHeaders) },
        { name: "ES256, new token each time (verify)", op: (i) => esCold.authenticate(esFreshHeaders[i % esFreshHeaders.length]!), count: 5_000, expect: authenticated(esCold, esFreshHeaders[0]!) },
        { name: "RS256, new token each time (verify)", op: (i) => rsCold.authenticate(rsFreshHeaders[i % rsFreshHeaders.length]!), count: 5_000, expect: authenticated(rsCold, rsFreshHeaders[0]!) },
      ],
      maxRoundSeconds,
    )) + "\n",
  );

  // The gate as the gateway calls it: createPolicyGate(policy).evaluate(head) per request.
  const head = (headers: Record<string, string>, path = "/api/v99/orders/42?expand=items"): PolicyHead => ({
    method: "GET",
    authority: "shop.example.com",
    path,
    headers,
    clientIp: "10.0.0.7",
    localPort: 8443,
    peer: { spiffeId: "spiffe://cluster.local/ns/web/sa/web" },
  });
  const allowOne: AuthzPolicyInput = { name: "allow-shop", action: "ALLOW", rules: [{ from: [{ requestPrincipals: [`${ISSUER}/*`] }], to: [{ methods: ["GET"], paths: ["/api/*"] }] }] };
  const emptyGate = createPolicyGate(policySet({}));
  const authzOnlyGate = createPolicyGate(policySet({ authz: [{ ...allowOne, rules: [{ to: [{ methods: ["GET"], paths: ["/api/*"] }] }] }] }));
  const esGate = createPolicyGate(policySet({ authn: { jwt: [provider("ES256", es.jwk)] }, authz: [allowOne] }));
  const rsGate = createPolicyGate(policySet({ authn: { jwt: [provider("RS256", rs.jwk)] }, authz: [allowOne] }));
  const hundredGate = createPolicyGate(policySet({ authn: { jwt: [provider("ES256", es.jwk)] }, authz: hundredPolicies(true) as PolicySetInput["authz"] }));
  const esHead = head(esHeaders);
  const rsHead = head(rsHeaders);
  const allowed = (gate: typeof emptyGate, h: PolicyHead) => async () => {
    const v = await gate.evaluate(h);
    if (!v.ok) throw new Error(`gate refused the bench request: ${v.reason}`);
  };
  if (emptyGate.active) throw new Error("an empty policy set should leave the gate inactive");

  console.log(
    (await group(
      "policy gate (evaluate per request)",
      [
        { name: "no policy (inactive gate; the engine skips it)", op: () => emptyGate.evaluate(esHead), count: 200_000 },
        { name: "1 ALLOW, no JWT configured", op: () => authzOnlyGate.evaluate(esHead), count: 100_000, expect: allowed(authzOnlyGate, esHead) },
        { name: "ES256 JWT (cached) + 1 ALLOW", op: () => esGate.evaluate(esHead), count: 100_000, expect: allowed(esGate, esHead) },
        { name: "RS256 JWT (cached) + 1 ALLOW", op: () => rsGate.evaluate(rsHead), count: 100_000, expect: allowed(rsGate, rsHead) },
        { name: "ES256 JWT (cached) + 100 policies, last matches", op: () => hundredGate.evaluate(esHead), count: 50_000, expect: allowed(hundredGate, esHead) },
      ],
      maxRoundSeconds,
    )) + "\n",
  );

  // Authorization alone (compiled once, evaluated per request), after authentication.
  const request: AuthzRequest = {
    method: "GET",
    authority: "shop.example.com",
    path: "/api/v99/orders/42?expand=items",
    headers: esHeaders,
    port: 8443,
    sourceIp: "10.0.0.7",
    sourcePrincipal: "spiffe://cluster.local/ns/web/sa/web",
    requestPrincipal: `${ISSUER}/alice`,
    claims: { iss: ISSUER, sub: "alice", role: "admin", groups: ["eng", "ops"] },
  };
  const one = compileAuthz(policySet({ authz: [allowOne] }).authz ?? [], PATHS);
  const lastMatches = compileAuthz(hundredPolicies(true), PATHS);
  const noneMatches = compileAuthz(hundredPolicies(false), PATHS);
  const decides = (authz: typeof one, allowedExpected: boolean, policy?: string) => async () => {
    const d = authz.evaluate(request);
    if (d.allowed !== allowedExpected || (policy !== undefined && d.policy !== policy)) throw new Error(`unexpected decision: ${JSON.stringify(d)}`);
  };
  console.log(
    (await group(
      "authz (compileAuthz.evaluate)",
      [
        { name: "1 ALLOW policy, matches", op: () => one.evaluate(request), count: 200_000, expect: decides(one, true, "allow-shop") },
        { name: "100 policies (25 DENY, 75 ALLOW), last ALLOW matches", op: () => lastMatches.evaluate(request), count: 50_000, expect: decides(lastMatches, true, "allow-99") },
        { name: "100 policies, none matches (no_allow_match)", op: () => noneMatches.evaluate(request), count: 50_000, expect: decides(noneMatches, false) },
      ],
      maxRoundSeconds,
    )) + "\n",
  );

  const plain = "/api/v99/orders/42";
  const query = "/api/v99/orders/42?expand=items&page=2";
  const encoded = "//api/%76%399/./orders/../orders/%34%32%2Fx?expand=items";
  if (normalizeAuthzPath(encoded, PATHS) !== "/api/v99/orders/42%2Fx") throw new Error(`normalisation changed: ${normalizeAuthzPath(encoded, PATHS)}`);
  console.log(
    await group(
      "path normalisation (normalizeAuthzPath)",
      [
        { name: "String#slice of the path (floor)", op: () => plain.slice(0, plain.length - 1), count: 1_000_000 },
        { name: `plain ${plain}`, op: () => normalizeAuthzPath(plain, PATHS), count: 500_000 },
        { name: "with a query", op: () => normalizeAuthzPath(query, PATHS), count: 500_000 },
        { name: `encoded ${encoded}`, op: () => normalizeAuthzPath(encoded, PATHS), count: 200_000 },
      ],
      maxRoundSeconds,
    ),
  );
  console.log(`\nload average at the end: ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")} (other work on this 2-core machine shows up here)`);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main(process.argv.slice(2));
}
