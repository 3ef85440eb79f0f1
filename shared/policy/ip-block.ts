/** A parsed CIDR block: the address as a bigint over 32 (v4) or 128 (v6) bits, and its prefix length. */
export interface IpBlock {
  readonly version: 4 | 6;
  readonly network: bigint;
  readonly bits: number;
}

/**
 * parseIp reads an IPv4 or IPv6 address (IPv4-mapped IPv6 `::ffff:a.b.c.d` reads as IPv4, zone ids are
 * dropped) into its version and numeric value; undefined when it is not an address.
 * @example
 * parseIp("10.0.0.1") // { version: 4, value: 167772161n }
 */
export function parseIp(text: string): { version: 4 | 6; value: bigint } | undefined {
  let s = text.trim();
  if (s.startsWith("[") && s.endsWith("]")) s = s.slice(1, -1);
  const zone = s.indexOf("%");
  if (zone >= 0) s = s.slice(0, zone);
  if (!s.includes(":")) {
    const v4 = parseV4(s);
    return v4 === undefined ? undefined : { version: 4, value: v4 };
  }
  const v6 = parseV6(s);
  if (v6 === undefined) return undefined;
  // An IPv4 client seen through a dual-stack socket must match IPv4 blocks.
  if (v6 >> 32n === 0xffffn) return { version: 4, value: v6 & 0xffffffffn };
  return { version: 6, value: v6 };
}

/**
 * parseIpBlock reads `a.b.c.d[/n]` or `v6[/n]`; a bare address is a /32 or /128.
 * @example
 * ipInBlock("192.168.1.7", parseIpBlock("192.168.0.0/16")!) // true
 */
export function parseIpBlock(text: string): IpBlock | undefined {
  const slash = text.indexOf("/");
  const ip = parseIp(slash < 0 ? text : text.slice(0, slash));
  if (!ip) return undefined;
  const width = ip.version === 4 ? 32 : 128;
  // A mapped v4 block written in v6 form keeps its meaning as v4.
  const mappedV4 = ip.version === 4 && text.includes(":");
  let bits = width;
  if (slash >= 0) {
    const n = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(n)) return undefined;
    bits = Number(n) - (mappedV4 ? 96 : 0);
    if (bits < 0 || bits > width) return undefined;
  }
  return { version: ip.version, network: ip.value & mask(width, bits), bits };
}

/** ipInBlock tells whether an address lies inside a block of the same IP version. */
export function ipInBlock(ip: string | { version: 4 | 6; value: bigint }, block: IpBlock): boolean {
  const parsed = typeof ip === "string" ? parseIp(ip) : ip;
  if (!parsed || parsed.version !== block.version) return false;
  return (parsed.value & mask(block.version === 4 ? 32 : 128, block.bits)) === block.network;
}

function mask(width: number, bits: number): bigint {
  if (bits === 0) return 0n;
  const all = (1n << BigInt(width)) - 1n;
  return (all >> BigInt(width - bits)) << BigInt(width - bits);
}

function parseV4(s: string): bigint | undefined {
  const parts = s.split(".");
  if (parts.length !== 4) return undefined;
  let value = 0n;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) return undefined;
    value = (value << 8n) | BigInt(Number(p));
  }
  return value;
}

function parseV6(s: string): bigint | undefined {
  if (!/^[0-9a-f:.]+$/i.test(s)) return undefined;
  const halves = s.split("::");
  if (halves.length > 2) return undefined;
  const groups = (part: string): number[] | undefined => {
    if (part === "") return [];
    const out: number[] = [];
    const items = part.split(":");
    for (let i = 0; i < items.length; i++) {
      const item = items[i]!;
      if (i === items.length - 1 && item.includes(".")) {
        const v4 = parseV4(item);
        if (v4 === undefined) return undefined;
        out.push(Number(v4 >> 16n), Number(v4 & 0xffffn));
      } else {
        if (!/^[0-9a-f]{1,4}$/i.test(item)) return undefined;
        out.push(parseInt(item, 16));
      }
    }
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (!head || !tail) return undefined;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return undefined;
  const all = [...head, ...new Array<number>(halves.length === 2 ? missing : 0).fill(0), ...tail];
  let value = 0n;
  for (const g of all) value = (value << 16n) | BigInt(g);
  return value;
}
