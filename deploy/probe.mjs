#!/usr/bin/env node
// weft-probe [URL]: exits 0 when URL answers 2xx within 2 s, else 1. The default URL is this
// container's admin /healthz (port from WEFT_ADMIN_ADDRESS). The image's HEALTHCHECK and the compose
// healthchecks run it: one argv, nothing for a shell to re-quote.
const admin = process.env.WEFT_ADMIN_ADDRESS || "127.0.0.1:15000";
const url = process.argv[2] ?? `http://127.0.0.1:${admin.split(":").pop()}/healthz`;
fetch(url, { signal: AbortSignal.timeout(2000) }).then(
  (r) => process.exit(r.ok ? 0 : 1),
  () => process.exit(1),
);
