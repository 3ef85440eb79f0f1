/**
 * Reading the server name (SNI, RFC 6066 §3) from a TLS ClientHello without terminating TLS, for
 * passthrough routing. The parser is bounded: it looks at most at MAX_CLIENT_HELLO_BYTES of
 * handshake data and never trusts a length field beyond the bytes it holds.
 */

/** The largest ClientHello handshake message read (RFC 8446 allows more; real ones are under 2 KiB, with post-quantum key shares under 4 KiB). */
export const MAX_CLIENT_HELLO_BYTES = 16384;

const RECORD_HANDSHAKE = 0x16;
const HANDSHAKE_CLIENT_HELLO = 0x01;
const EXTENSION_SERVER_NAME = 0x0000;
const NAME_TYPE_HOST_NAME = 0x00;
/** RFC 8446 §5.1: a plaintext record carries at most 2^14 bytes. */
const MAX_RECORD_LENGTH = 16384;
const HOST_NAME = /^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$/;

/** Why no server name could be read. */
export type ClientHelloFailure =
  /** More bytes are needed; read on (up to the bound) and ask again. */
  | "incomplete"
  /** The first bytes are not a TLS handshake record (plaintext, HTTP, garbage). */
  | "not_tls"
  /** A length or field is inconsistent, or the server name is not a valid host name. */
  | "malformed"
  /** The ClientHello is larger than MAX_CLIENT_HELLO_BYTES. */
  | "too_large";

export type ClientHelloSni =
  /** `sni` is undefined when the ClientHello carries no server_name extension. */
  | { readonly ok: true; readonly sni: string | undefined }
  | { readonly ok: false; readonly reason: ClientHelloFailure };

/**
 * readClientHelloSni parses the TLS records at the start of a connection and returns the host name
 * of the ClientHello's server_name extension (lower case), or why it cannot (yet).
 * @example
 * const r = readClientHelloSni(firstBytes);
 * if (r.ok) route(r.sni); else if (r.reason === "incomplete") readMore();
 */
export function readClientHelloSni(bytes: Uint8Array): ClientHelloSni {
  const hello = gatherHandshake(bytes);
  if (!(hello instanceof Uint8Array)) return { ok: false, reason: hello };
  return parseClientHello(hello);
}

/** Joins the handshake fragments of consecutive records until one whole handshake message is held. */
function gatherHandshake(bytes: Uint8Array): Uint8Array | ClientHelloFailure {
  if (bytes.length === 0) return "incomplete";
  if (bytes[0] !== RECORD_HANDSHAKE) return "not_tls";
  // Record version's major byte is 3 (SSL 3.0 .. TLS 1.3 all say 3.x in the record layer).
  if (bytes.length >= 2 && bytes[1] !== 3) return "not_tls";
  const parts: Uint8Array[] = [];
  let held = 0;
  let need = -1;
  let at = 0;
  for (;;) {
    if (bytes.length < at + 5) return "incomplete";
    if (bytes[at] !== RECORD_HANDSHAKE || bytes[at + 1] !== 3) return "malformed";
    const length = (bytes[at + 3]! << 8) | bytes[at + 4]!;
    if (length === 0 || length > MAX_RECORD_LENGTH) return "malformed";
    const end = at + 5 + length;
    const available = Math.min(end, bytes.length);
    parts.push(bytes.subarray(at + 5, available));
    held += available - at - 5;
    if (need < 0 && held >= 4) {
      const first = join(parts, held);
      if (first[0] !== HANDSHAKE_CLIENT_HELLO) return "malformed";
      need = 4 + ((first[1]! << 16) | (first[2]! << 8) | first[3]!);
      if (need > MAX_CLIENT_HELLO_BYTES) return "too_large";
    }
    if (need >= 0 && held >= need) return join(parts, held).subarray(0, need);
    if (available < end) return "incomplete";
    at = end;
  }
}

function join(parts: readonly Uint8Array[], length: number): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(length);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** RFC 8446 §4.1.2 (and RFC 5246 §7.4.1.2 before it): the fields ahead of the extensions, then the extensions. */
function parseClientHello(msg: Uint8Array): ClientHelloSni {
  const fail = { ok: false, reason: "malformed" } as const;
  const end = msg.length;
  let at = 4 + 2 + 32; // handshake header, legacy_version, random
  if (at + 1 > end) return fail;
  at += 1 + msg[at]!; // legacy_session_id
  if (at + 2 > end) return fail;
  const suites = (msg[at]! << 8) | msg[at + 1]!;
  if (suites < 2 || suites % 2 !== 0) return fail;
  at += 2 + suites;
  if (at + 1 > end) return fail;
  const compressions = msg[at]!;
  if (compressions < 1) return fail;
  at += 1 + compressions;
  if (at > end) return fail;
  // SSL 3.0-era hellos end here: no extensions, so no server name.
  if (at === end) return { ok: true, sni: undefined };
  if (at + 2 > end) return fail;
  const extensionsEnd = at + 2 + ((msg[at]! << 8) | msg[at + 1]!);
  if (extensionsEnd !== end) return fail;
  at += 2;
  let sni: string | undefined;
  let seen = false;
  while (at < extensionsEnd) {
    if (at + 4 > extensionsEnd) return fail;
    const type = (msg[at]! << 8) | msg[at + 1]!;
    const length = (msg[at + 2]! << 8) | msg[at + 3]!;
    at += 4;
    if (at + length > extensionsEnd) return fail;
    if (type === EXTENSION_SERVER_NAME) {
      // RFC 8446 §4.2: an extension type appears at most once.
      if (seen) return fail;
      seen = true;
      const name = parseServerName(msg.subarray(at, at + length));
      if (name === null) return fail;
      sni = name;
    }
    at += length;
  }
  return { ok: true, sni };
}

/** The host_name entry of a server_name extension body; null when malformed. */
function parseServerName(body: Uint8Array): string | undefined | null {
  if (body.length === 0) return undefined; // a server's empty echo; a client should not send it
  if (body.length < 2) return null;
  const listEnd = 2 + ((body[0]! << 8) | body[1]!);
  if (listEnd !== body.length) return null;
  let at = 2;
  let host: string | undefined;
  while (at < listEnd) {
    if (at + 3 > listEnd) return null;
    const type = body[at]!;
    const length = (body[at + 1]! << 8) | body[at + 2]!;
    at += 3;
    if (length === 0 || at + length > listEnd) return null;
    if (type === NAME_TYPE_HOST_NAME) {
      // RFC 6066 §3: at most one name of each type.
      if (host !== undefined) return null;
      let text = "";
      for (let i = at; i < at + length; i++) {
        const c = body[i]!;
        if (c < 0x21 || c > 0x7e) return null;
        text += String.fromCharCode(c);
      }
      host = text.toLowerCase();
      // RFC 6066 §3: no trailing dot; only a DNS host name, never an address literal in brackets.
      if (!HOST_NAME.test(host)) return null;
    }
    at += length;
  }
  return host;
}
