import type { RequestHead } from "./types.ts";

const ABSOLUTE_HTTP = /^http:\/\/([^/?#]*)([^#]*)/i;
const ABSOLUTE_ANY = /^https?:\/\/([^/?#]*)([^#]*)/i;

/**
 * toOriginForm turns an absolute-form request target (`GET http://orders/x`, as an HTTP proxy
 * client sends it) into origin form with the target's authority, which replaces Host (RFC 9112
 * §3.2.2: a server must accept absolute form); origin-form requests pass unchanged. `https://`
 * targets only with allowHttps; other forms (`*`, authority form, other schemes) give undefined.
 * @example
 * toOriginForm({ ...head, path: "http://orders:8080/x?y" }) // authority "orders:8080", path "/x?y"
 */
export function toOriginForm(head: RequestHead, allowHttps = false): RequestHead | undefined {
  if (head.path.charCodeAt(0) === 47) return head;
  const m = (allowHttps ? ABSOLUTE_ANY : ABSOLUTE_HTTP).exec(head.path);
  if (!m || m[1] === "") return undefined;
  const rest = m[2]!;
  const path = rest === "" ? "/" : rest.startsWith("?") ? `/${rest}` : rest;
  return { ...head, authority: m[1]!, path };
}
