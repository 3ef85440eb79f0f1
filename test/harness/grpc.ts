import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

/** A grpc-js client's method for one unary RPC, typed by its request and response. */
export type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: (err: grpc.ServiceError | null, response?: Res) => void,
) => grpc.ClientUnaryCall;

/** A service from a loaded proto: a client constructor that also carries the definition a server adds. */
export type ProtoService = grpc.ServiceClientConstructor & { service: grpc.ServiceDefinition };

/**
 * loadProto writes proto source into `dir` and returns the services of one package (field names as written, defaults filled in).
 * @example
 * const { Echo } = await loadProto(dir, PROTO, "weft.test");
 * server.addService(Echo.service, handlers);
 */
export async function loadProto(dir: string, proto: string, packageName: string): Promise<Record<string, ProtoService>> {
  const protoFile = join(dir, "echo.proto");
  await writeFile(protoFile, proto);
  let node: unknown = grpc.loadPackageDefinition(protoLoader.loadSync(protoFile, { keepCase: true, defaults: true }));
  for (const part of packageName.split(".")) node = (node as Record<string, unknown>)[part];
  return node as Record<string, ProtoService>;
}

/**
 * callUnary makes one unary call and resolves with its response or its error (it never rejects).
 * @example
 * const { response, error } = await callUnary(echo.Unary, echo, { text: "hi" }, { deadline: Date.now() + 10_000 });
 */
export function callUnary<Req, Res>(
  method: UnaryMethod<Req, Res>,
  client: grpc.Client,
  request: Req,
  options: grpc.CallOptions = {},
): Promise<{ response?: Res; error?: grpc.ServiceError }> {
  return new Promise((resolve) => {
    method.call(client, request, new grpc.Metadata(), options, (error, response) => resolve(error ? { error } : { response }));
  });
}
