import { networkInterfaces } from "node:os";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * isEntryModule tells whether the module at `url` is the program being run (`node gateway/main.ts`),
 * not one imported by another (the `weft` CLI, tests). Pass `import.meta.main` as written: Bun and
 * Deno set it, and the production bundle defines that expression false (every bundled module
 * shares the bundle's URL, so the URL cannot tell).
 * @example
 * if (isEntryModule(import.meta.url, (import.meta as ImportMeta & { main?: boolean }).main)) await main(argv);
 */
export function isEntryModule(url: string, main: boolean | undefined): boolean {
  if (main !== undefined) return main;
  return process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(url);
}

/**
 * registrationHost gives the address a proxy registers for its listener: the bind address itself,
 * or for a wildcard bind (or none) this host's first external IPv4 address (loopback as a last resort).
 * @example
 * `${registrationHost("0.0.0.0")}:15006` // "10.0.0.5:15006"
 */
export function registrationHost(bind: string | undefined): string {
  if (bind && bind !== "0.0.0.0" && bind !== "::") return bind;
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === "IPv4" && !a.internal) return a.address;
  }
  return "127.0.0.1";
}

/**
 * splitAddress reads `host:port` (an empty host means 127.0.0.1), as the admin address is given.
 * @example
 * splitAddress(":15000") // ["127.0.0.1", 15000]
 */
export function splitAddress(address: string): [string, number] {
  const colon = address.lastIndexOf(":");
  return [address.slice(0, colon) || "127.0.0.1", Number(address.slice(colon + 1))];
}
