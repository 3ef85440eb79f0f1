import type { PathNormalizationConfig } from "../config/index.ts";
import { normalizePath } from "../proxy/router.ts";

const HEX = "0123456789ABCDEF";
const UNRESERVED = /[A-Za-z0-9\-._~]/;

/**
 * normalizeAuthzPath prepares a request target for authorization matching, so that no spelling of a
 * path slips past a rule written for its plain form (CVE-2021-31920). Steps, in order:
 * 1. the query and fragment are dropped (rules match paths only);
 * 2. a raw `\` reads as `/` (as Istio's BASE normalisation; some upstreams treat it as a separator);
 * 3. `%XX` of an unreserved character (RFC 3986 §2.3: letters, digits, `-._~`) is decoded once, so
 *    `/%61dmin` is `/admin`; every other `%XX` stays encoded with upper-case hex, and a malformed `%`
 *    rejects the path;
 * 4. `%2F` and `%5C` follow `encodedSlashes`: "keep" leaves them as ordinary characters (so
 *    `/admin%2Fx` is still under the prefix `/admin`), "decode" turns them into `/`, "reject" refuses;
 * 5. dot segments are resolved and repeated slashes merged, exactly as routing does (normalizePath);
 * 6. with `caseInsensitive` the result is lower-cased.
 * Returns undefined when the path is refused (the request is then denied).
 * @example
 * normalizeAuthzPath("//%61dmin/./x/../?q", { encodedSlashes: "keep", caseInsensitive: false }) // "/admin/"
 */
export function normalizeAuthzPath(target: string, options: PathNormalizationConfig): string | undefined {
  let end = target.length;
  const q = target.indexOf("?");
  if (q >= 0) end = q;
  const h = target.indexOf("#");
  if (h >= 0 && h < end) end = h;
  let path = target.slice(0, end);
  if (path.includes("\\")) path = path.replaceAll("\\", "/");
  if (path.includes("%")) {
    const decoded = decodeUnreserved(path);
    if (decoded === undefined) return undefined;
    path = decoded;
    if (path.includes("%2F") || path.includes("%5C")) {
      if (options.encodedSlashes === "reject") return undefined;
      if (options.encodedSlashes === "decode") path = path.replaceAll("%2F", "/").replaceAll("%5C", "/");
    }
  }
  const normalized = normalizePath(path);
  if (normalized === undefined) return undefined;
  return options.caseInsensitive ? normalized.toLowerCase() : normalized;
}

function decodeUnreserved(path: string): string | undefined {
  let out = "";
  let last = 0;
  for (let i = path.indexOf("%"); i >= 0; i = path.indexOf("%", i + 1)) {
    const hi = HEX.indexOf(path.charAt(i + 1).toUpperCase());
    const lo = HEX.indexOf(path.charAt(i + 2).toUpperCase());
    if (hi < 0 || lo < 0 || i + 2 >= path.length) return undefined;
    const ch = String.fromCharCode(hi * 16 + lo);
    out += path.slice(last, i) + (UNRESERVED.test(ch) ? ch : `%${HEX[hi]}${HEX[lo]}`);
    last = i + 3;
    i += 2;
  }
  return out + path.slice(last);
}
