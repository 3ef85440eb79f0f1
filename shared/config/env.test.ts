import { test } from "node:test";
import assert from "node:assert/strict";
import { readEnv } from "./env.ts";

test("readEnv with no WEFT_* variables gives the documented defaults", () => {
  assert.deepEqual(readEnv({ PATH: "/usr/bin", HOME: "/root" }), {
    natsUrl: undefined,
    configFile: undefined,
    logLevel: "info",
    adminAddress: "127.0.0.1:15000",
    proxyId: undefined,
    stateDir: ".weft",
  });
});

test("readEnv reads every WEFT_* variable", () => {
  assert.deepEqual(
    readEnv({
      WEFT_NATS_URL: "nats://127.0.0.1:4222",
      WEFT_CONFIG: "/etc/weft/weft.config.ts",
      WEFT_LOG_LEVEL: "debug",
      WEFT_ADMIN_ADDRESS: "0.0.0.0:15001",
      WEFT_PROXY_ID: "sidecar-web-1",
      WEFT_STATE_DIR: "/var/lib/weft",
    }),
    {
      natsUrl: "nats://127.0.0.1:4222",
      configFile: "/etc/weft/weft.config.ts",
      logLevel: "debug",
      adminAddress: "0.0.0.0:15001",
      proxyId: "sidecar-web-1",
      stateDir: "/var/lib/weft",
    },
  );
});

test("readEnv treats an empty variable as unset", () => {
  const env = readEnv({
    WEFT_NATS_URL: "",
    WEFT_CONFIG: "",
    WEFT_LOG_LEVEL: "",
    WEFT_ADMIN_ADDRESS: "",
    WEFT_PROXY_ID: "",
    WEFT_STATE_DIR: "",
  });
  assert.deepEqual(env, readEnv({}));
});

test("readEnv accepts log levels in any case", () => {
  for (const [raw, level] of [
    ["DEBUG", "debug"],
    ["Info", "info"],
    ["warn", "warn"],
    ["ERROR", "error"],
  ] as const) {
    assert.equal(readEnv({ WEFT_LOG_LEVEL: raw }).logLevel, level, raw);
  }
});

test("readEnv falls back to info for a log level it does not know, never to an arbitrary string", () => {
  for (const raw of ["verbose", "trace", "warning", " debug", "0"]) {
    assert.equal(readEnv({ WEFT_LOG_LEVEL: raw }).logLevel, "info", raw);
  }
});

test("readEnv ignores variables outside its set and names that differ in case", () => {
  const env = readEnv({ weft_nats_url: "nats://x:4222", WEFT_NATS: "nats://y:4222", WEFT_STATEDIR: "/tmp/x" });
  assert.equal(env.natsUrl, undefined);
  assert.equal(env.stateDir, ".weft");
});

test("readEnv reads the record it is given and does not modify it", () => {
  const source = Object.freeze({ WEFT_LOG_LEVEL: "WARN", WEFT_PROXY_ID: "gw-1" });
  const env = readEnv(source);
  assert.equal(env.logLevel, "warn");
  assert.equal(env.proxyId, "gw-1");
  assert.deepEqual(source, { WEFT_LOG_LEVEL: "WARN", WEFT_PROXY_ID: "gw-1" });
});
