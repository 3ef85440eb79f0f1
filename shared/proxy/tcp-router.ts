import type { TcpRouteConfig, TlsRouteConfig } from "../config/index.ts";

/** The route a TCP or TLS-passthrough connection matched. */
export interface L4RouteMatch {
  readonly route: TcpRouteConfig | TlsRouteConfig;
  /** Index of the route in its list, in declaration order. */
  readonly index: number;
}

/** Routes connections of a gateway's tcp and tls listeners. */
export interface L4Router {
  /** A tcp listener's connection on `port`: the first tcp route whose ports include it (or that names none). */
  matchTcp(port: number): L4RouteMatch | undefined;
  /** A tls listener's connection on `port` with the ClientHello's server name: exact host, then longest `*.suffix`, then `*`. */
  matchTls(port: number, sni: string): L4RouteMatch | undefined;
}

interface SniEntry {
  readonly match: L4RouteMatch;
  readonly ports: ReadonlySet<number> | undefined;
  /** 2 exact, 1 suffix, 0 any. */
  readonly kind: 0 | 1 | 2;
  /** Lower-case exact host, or the suffix with its leading dot (`.example.com`). */
  readonly text: string;
}

/**
 * createL4Router compiles tcp and tls routes once per config. TLS routes rank like HTTP hosts
 * (docs/routing.md): an exact server name beats the longest `*.suffix` (which needs at least one
 * label before the suffix), which beats `*`; then declaration order.
 * @example
 * createL4Router(gateway.tcpRoutes ?? [], gateway.tlsRoutes ?? []).matchTls(8443, "api.example.com")?.route.name
 */
export function createL4Router(tcpRoutes: readonly TcpRouteConfig[], tlsRoutes: readonly TlsRouteConfig[]): L4Router {
  const tcp = tcpRoutes.map((route, index) => ({ match: { route, index }, ports: portSet(route.match?.ports) }));
  const sni: SniEntry[] = [];
  tlsRoutes.forEach((route, index) => {
    const ports = portSet(route.match.ports);
    for (const host of route.match.sniHosts) {
      const lower = host.toLowerCase();
      if (lower === "*") sni.push({ match: { route, index }, ports, kind: 0, text: "" });
      else if (lower.startsWith("*.")) sni.push({ match: { route, index }, ports, kind: 1, text: lower.slice(1) });
      else sni.push({ match: { route, index }, ports, kind: 2, text: lower });
    }
  });
  sni.sort((a, b) => b.kind - a.kind || b.text.length - a.text.length || a.match.index - b.match.index);
  return {
    matchTcp(port) {
      for (const e of tcp) if (e.ports === undefined || e.ports.has(port)) return e.match;
      return undefined;
    },
    matchTls(port, name) {
      const host = name.toLowerCase();
      for (const e of sni) {
        if (e.ports !== undefined && !e.ports.has(port)) continue;
        if (e.kind === 2 ? host === e.text : e.kind === 1 ? host.length > e.text.length && host.endsWith(e.text) : host !== "") return e.match;
      }
      return undefined;
    },
  };
}

function portSet(ports: readonly number[] | undefined): ReadonlySet<number> | undefined {
  return ports === undefined ? undefined : new Set(ports);
}
