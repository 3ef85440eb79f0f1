import type { IncomingMessage } from "node:http";
import type { Readable, Writable } from "node:stream";
import type { RequestBody } from "../../proxy/index.ts";

/** A request body read from node:http, streamed to one upstream at a time and kept for a replay up to a bound. */
export interface NodeRequestBody extends RequestBody {
  /** Streams the body (what was kept, then the rest) into a new upstream request. */
  sendTo(target: Writable, maxBodyBytes: number | undefined, maxReplayBytes: number, onTooLarge: () => void): void;
  /** Bytes read from the client so far. */
  readonly bytesRead: number;
}

const EMPTY: NodeRequestBody = {
  length: 0,
  replayable: true,
  bytesRead: 0,
  sendTo: (target) => target.end(),
};

/**
 * createNodeBody wraps an IncomingMessage. The first upstream gets the bytes as they arrive; what
 * was sent is kept (up to maxReplayBytes) so that a retry can send it again.
 * @example
 * const body = createNodeBody(req);
 * body.sendTo(upstreamRequest, undefined, 65536, () => upstreamRequest.destroy());
 */
export function createNodeBody(
  source: Readable & Pick<IncomingMessage, "headers">,
  /** The body's length when the framing is not HTTP/1.1's (an HTTP/2 stream); default: from the headers. */
  framing?: { readonly length: number | undefined },
): NodeRequestBody {
  const declared = source.headers["content-length"];
  const chunked = source.headers["transfer-encoding"] !== undefined;
  const length = framing ? framing.length : chunked ? undefined : declared === undefined ? 0 : Number(declared);
  if (length === 0) {
    // Nothing to stream: let node finish reading the (empty) request.
    source.resume();
    return EMPTY;
  }

  let kept: Buffer[] | undefined = [];
  let keptBytes = 0;
  let bytesRead = 0;
  let ended = false;
  let target: Writable | undefined;
  let limit: number | undefined;
  let keepLimit = 0;
  let tooLarge: (() => void) | undefined;
  let started = false;

  const onDrain = () => source.resume();

  function onData(chunk: Buffer) {
    bytesRead += chunk.length;
    if (limit !== undefined && bytesRead > limit) {
      source.pause();
      tooLarge?.();
      return;
    }
    if (kept !== undefined) {
      if (keptBytes + chunk.length > keepLimit) kept = undefined;
      else {
        kept.push(chunk);
        keptBytes += chunk.length;
      }
    }
    if (target && !target.write(chunk)) {
      source.pause();
      target.once("drain", onDrain);
    }
  }

  return {
    length,
    get replayable() {
      return kept !== undefined;
    },
    get bytesRead() {
      return bytesRead;
    },
    sendTo(next, maxBodyBytes, maxReplayBytes, onTooLarge) {
      if (target) target.removeListener("drain", onDrain);
      target = next;
      limit = maxBodyBytes;
      tooLarge = onTooLarge;
      keepLimit = maxReplayBytes;
      // A body declared larger than the replay bound is never kept: no retry could use it.
      if (!started && length !== undefined && length > maxReplayBytes) kept = undefined;
      if (kept) for (const chunk of kept) next.write(chunk);
      if (ended) {
        next.end();
        return;
      }
      if (!started) {
        started = true;
        source.on("data", onData);
        source.once("end", () => {
          ended = true;
          target?.end();
        });
      }
      source.resume();
    },
  };
}
