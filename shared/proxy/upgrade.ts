import type { HeaderMap } from "./types.ts";
import type { OutgoingHeaders } from "./headers.ts";

/** The one upgrade weft carries (RFC 6455); any other Upgrade is ignored and the request goes on as plain HTTP. */
export const WEBSOCKET = "websocket";

/**
 * upgradeProtocol reads the protocol a request asks to switch to: the first Upgrade token, lower-case,
 * when Connection lists `upgrade` (RFC 9110 §7.8); undefined otherwise.
 * @example
 * upgradeProtocol({ connection: "keep-alive, Upgrade", upgrade: "WebSocket" }) // "websocket"
 */
export function upgradeProtocol(headers: HeaderMap): string | undefined {
  const upgrade = headers.upgrade;
  const connection = headers.connection;
  if (upgrade === undefined || connection === undefined) return undefined;
  if (!hasToken(connection, "upgrade")) return undefined;
  const first = (typeof upgrade === "string" ? upgrade : upgrade.join(",")).split(",")[0]!.trim().toLowerCase();
  // A protocol may carry a version ("websocket/13" is not registered, but "HTTP/2.0" is): the name decides.
  const slash = first.indexOf("/");
  const name = slash < 0 ? first : first.slice(0, slash);
  return name === "" ? undefined : name;
}

function hasToken(value: string | readonly string[], wanted: string): boolean {
  const joined = typeof value === "string" ? value : value.join(",");
  for (const token of joined.split(",")) if (token.trim().toLowerCase() === wanted) return true;
  return false;
}

/**
 * withoutUpgrade rewrites a request head (raw name/value pairs, as received) into one that asks for no
 * upgrade: Upgrade, Connection and the names Connection lists go; `Connection: close` stays if asked.
 * The result is the HTTP/1.1 request head text, ready to be parsed again as a plain request.
 * @example
 * withoutUpgrade("GET", "/", "1.1", ["Host", "a", "Connection", "Upgrade, HTTP2-Settings", "Upgrade", "h2c", "HTTP2-Settings", "AAA"])
 * // "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
 */
export function withoutUpgrade(method: string, target: string, version: string, rawHeaders: readonly string[]): string {
  const named = new Set<string>();
  let close = false;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i]!.toLowerCase() !== "connection") continue;
    for (const token of rawHeaders[i + 1]!.split(",")) {
      const name = token.trim().toLowerCase();
      if (name === "close") close = true;
      else if (name) named.add(name);
    }
  }
  let text = `${method} ${target} HTTP/${version}\r\n`;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    const lower = name.toLowerCase();
    if (lower === "connection" || lower === "upgrade" || named.has(lower)) continue;
    text += `${name}: ${rawHeaders[i + 1]}\r\n`;
  }
  if (close) text += "Connection: close\r\n";
  return `${text}\r\n`;
}

/**
 * switchingProtocolsHead writes the head of a 101 answer (RFC 9110 §15.2.2) for the engine's response
 * headers, which already name the protocol in Upgrade and Connection.
 * @example
 * switchingProtocolsHead({ connection: "upgrade", upgrade: "websocket", "sec-websocket-accept": "s3pP..." })
 */
export function switchingProtocolsHead(headers: OutgoingHeaders): string {
  let text = "HTTP/1.1 101 Switching Protocols\r\n";
  for (const name in headers) {
    const value = headers[name]!;
    if (typeof value === "string") text += `${name}: ${value}\r\n`;
    else for (const one of value) text += `${name}: ${one}\r\n`;
  }
  return `${text}\r\n`;
}
