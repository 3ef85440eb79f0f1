#!/usr/bin/env node
// The `weft` command: loads TypeScript through tsx on Node (a user's weft.config.ts too), then runs
// one subcommand (scripts/cli.ts). The container image runs the bundle scripts/build.mjs makes of
// this same file instead, so weft's own code is not transformed at every start.
import { register } from "tsx/esm/api";

register();

const { run } = await import("./cli.ts");
await run(process.argv.slice(2));
