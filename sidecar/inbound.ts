import type { Engine, ListenOptions, RouteView, ServeTarget, SidecarViews } from "../shared/proxy/index.ts";

export interface InboundOptions {
  readonly engine: Engine;
  /** The views of the config applied now; the inbound listener opens only once there is one. */
  current(): SidecarViews | undefined;
  onInternalError?(err: unknown): void;
}

/**
 * createInbound serves requests arriving for the workload (redirected to port 15006 by iptables,
 * or sent to the registered address): the service's inbound policy (authn → authz → rate limits),
 * then the app over loopback or its Unix socket.
 * @example
 * await runtime.listen(inboundListenOptions({ port: 15006 }), createInbound({ engine, current: () => views }));
 */
export function createInbound(options: InboundOptions): ServeTarget {
  const { engine, current } = options;
  return {
    engine,
    current: () => current()?.inbound as RouteView,
    onInternalError: options.onInternalError,
  };
}

/**
 * inboundListenOptions gives the listen options of the inbound side; `tls` is where the SVID and
 * key go once the identity agent hands them over (mTLS termination), until then it is plain HTTP.
 * @example
 * inboundListenOptions({ port: 15006, address: "0.0.0.0" })
 */
export function inboundListenOptions(options: { port: number; address?: string; tls?: ListenOptions["tls"] }): ListenOptions {
  return {
    port: options.port,
    address: options.address ?? "0.0.0.0",
    ...(options.tls ? { tls: options.tls } : {}),
    maxHeaderCount: 100,
    maxHeaderBytes: 16384,
  };
}
