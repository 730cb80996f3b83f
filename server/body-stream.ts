/**
 * Bridges between Node async iterables and web streams, without buffering: objects can be hundreds
 * of MB, so a response pulls one chunk from the blob store per chunk the socket takes.
 *
 * Request bodies are read under a pace (BodyPace): while the server is waiting for the client, the
 * client must keep sending. Time the server spends elsewhere (writing to a slow store, verifying)
 * does not count against the client, so backpressure from our side never cuts a healthy upload.
 */
import { Readable } from 'node:stream';
import type { Context } from 'hono';
import { isRegistryError, RegistryError } from '../src/errors.js';

/** A response body that reads `source` on demand; a client that hangs up closes the file. */
export function toWebStream(source: AsyncIterable<Uint8Array>): ReadableStream<Uint8Array> {
  const it = source[Symbol.asyncIterator]();
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        const n = await it.next();
        if (n.done) controller.close();
        else controller.enqueue(n.value);
      },
      async cancel() {
        await it.return?.();
      },
    },
    // Pull only when the consumer asks: no read-ahead beyond what the socket accepts.
    { highWaterMark: 0 },
  );
}

/**
 * How fast a request body must arrive. Every `windowMs` of waiting for body bytes, at least
 * `minBytesPerSecond × windowMs / 1000` must have arrived: a body that stalls, or trickles (the
 * slowloris attack: 1 byte/s holds a connection and its handler for ever), is ended with 408
 * E_TIMEOUT after one window. A total time limit would instead cut a 2 GiB upload on a slow link
 * (Node's own requestTimeout, 5 min by default, is switched off in listen.ts for that reason).
 */
export interface BodyPace {
  windowMs: number;
  minBytesPerSecond: number;
}

/** 30 s at 1 KiB/s: a 2 GiB push at 1 KiB/s would take 24 days, so nothing real is that slow. */
export const DEFAULT_BODY_PACE: BodyPace = { windowMs: 30_000, minBytesPerSecond: 1024 };

function tooSlow(pace: BodyPace, bytes: number): RegistryError {
  const need = Math.ceil((pace.minBytesPerSecond * pace.windowMs) / 1000);
  return new RegistryError(
    'E_TIMEOUT',
    `the request body arrived too slowly: ${bytes} bytes in ${pace.windowMs / 1000} s of waiting`,
    { expected: `>= ${need} bytes per ${pace.windowMs / 1000} s`, found: `${bytes} bytes` },
    'check the network between the client and the server',
  );
}

/** The body ended or broke before the server had it all: the client hung up or sent less than it said. */
function cutShort(cause: unknown): RegistryError {
  const why = cause instanceof Error ? cause.message : String(cause);
  return new RegistryError(
    'E_USAGE',
    `the request body was cut short (${why})`,
    {},
    'the client disconnected or sent fewer bytes than its Content-Length',
    cause,
  );
}

/**
 * A request's body as Buffers, read under `pace`. Under `@hono/node-server` the Node request
 * (`c.env.incoming`) is read directly: through `c.req.raw.body` every chunk would cross a web
 * stream, which copies it (Readable.toWeb) and settles a few promises on the way (a push's pack:
 * ~900 chunks of 64 KiB, ~55 MB copied into fresh memory the server then had to fault in and
 * collect). Anywhere else (app.request in tests, other runtimes) the web stream is read.
 */
export function requestBody(c: Context, pace: BodyPace = DEFAULT_BODY_PACE): AsyncGenerator<Buffer> {
  const incoming = (c.env as { incoming?: unknown } | undefined)?.incoming;
  if (incoming instanceof Readable && !incoming.readableDidRead) {
    const it = incoming.iterator({ destroyOnReturn: false }) as AsyncIterator<Buffer>;
    // Reading that stops early (a limit, the pace) leaves the request as it is, a read maybe still
    // pending: the answer goes out on its socket, and @hono/node-server drains or closes the unread
    // rest once it has (as when a web stream of the body is cancelled). Destroying the request here
    // would close the socket before the answer.
    return paced(
      () => it.next(),
      async () => {},
      pace,
    );
  }
  return fromWebStream(c.req.raw.body, pace);
}

/** A web stream as Buffers, read under `pace`. */
export function fromWebStream(
  body: ReadableStream<Uint8Array> | null,
  pace: BodyPace = DEFAULT_BODY_PACE,
): AsyncGenerator<Buffer> {
  if (!body) return (async function* () {})();
  const reader = body.getReader();
  return paced(
    async () => {
      const r = await reader.read();
      return r.done
        ? r
        : { done: false, value: Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength) };
    },
    () => reader.cancel(),
    pace,
  );
}

/**
 * Chunks from `read` until it is done, each wait raced against the pace's window; `cancel` runs
 * however the reading stops.
 */
async function* paced(
  read: () => Promise<IteratorResult<Buffer, unknown>>,
  cancel: () => Promise<void>,
  pace: BodyPace,
): AsyncGenerator<Buffer> {
  const need = (pace.minBytesPerSecond * pace.windowMs) / 1000;
  // The current window: time spent waiting for the client in it, and bytes received in it.
  let waited = 0;
  let got = 0;
  try {
    for (;;) {
      const next = read();
      // Settled later if this read is abandoned (too slow): that must not be an unhandled rejection.
      next.catch(() => {});
      let r: IteratorResult<Buffer, unknown> | undefined;
      for (;;) {
        const started = performance.now();
        let timer: NodeJS.Timeout | undefined;
        const expired = new Promise<'expired'>((resolve) => {
          timer = setTimeout(() => resolve('expired'), Math.max(1, pace.windowMs - waited));
        });
        let outcome: IteratorResult<Buffer, unknown> | 'expired';
        try {
          outcome = await Promise.race([next, expired]);
        } catch (e) {
          throw isRegistryError(e) ? e : cutShort(e);
        } finally {
          clearTimeout(timer);
        }
        waited += performance.now() - started;
        if (outcome !== 'expired') {
          r = outcome;
          if (!r.done) got += r.value.byteLength;
        }
        if (waited >= pace.windowMs) {
          if (!r?.done && got < need) throw tooSlow(pace, got);
          waited = 0;
          got = 0;
        }
        if (r) break;
      }
      if (r.done) return;
      yield r.value;
    }
  } finally {
    // Stopping early (a size limit, a corrupt object) releases the body so the server can drain it.
    await cancel().catch(() => {});
  }
}
