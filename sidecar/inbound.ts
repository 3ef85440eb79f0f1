import type { Endpoint, Snapshot } from "../shared/config/index.ts";
import { compileConnectionAuthz } from "../shared/policy/index.ts";
import type { Engine, InboundTcpView, ListenOptions, MeshListen, RouteView, ServeTarget, SidecarViews } from "../shared/proxy/index.ts";

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
 * inboundListenOptions gives the listen options of the inbound side: mesh mTLS with the sidecar's
 * identity, STRICT or PERMISSIVE per the service's config.
 * @example
 * inboundListenOptions({ port: 15006, address: "0.0.0.0", mesh: { identity, mode: () => "STRICT" } })
 */
export function inboundListenOptions(options: { port: number; address?: string; mesh: MeshListen }): ListenOptions {
  return {
    port: options.port,
    address: options.address ?? "0.0.0.0",
    mesh: options.mesh,
    maxHeaderCount: 100,
    maxHeaderBytes: 16384,
  };
}

/**
 * createInboundTcpView compiles what the inbound side needs for raw TCP (mesh connections that name
 * one of the service's tcp/tls ports): the app's host, and the service's authorization policies with
 * Istio's TCP semantics (principal, namespace, address and port; HTTP-only rules never allow).
 * JWT authentication and rate limits are HTTP-only and do not apply.
 * @example
 * const view = createInboundTcpView(snapshot, "db", parseEndpoint("127.0.0.1:8080"));
 */
export function createInboundTcpView(snapshot: Snapshot, service: string, app: Endpoint): InboundTcpView {
  const own = snapshot.services.get(service);
  if (!own) throw new TypeError(`service "${service}" is not in the config`);
  const authorize = compileConnectionAuthz(own.inbound);
  return {
    revision: snapshot.revision,
    service: own,
    // An app on a Unix socket still listens for its tcp ports on loopback.
    appHost: app.socketPath ? "127.0.0.1" : app.host,
    authorize,
  };
}
