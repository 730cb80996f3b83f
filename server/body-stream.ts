/**
 * Bridges between Node async iterables and web streams, without buffering: objects can be hundreds
 * of MB, so a response pulls one chunk from the blob store per chunk the socket takes.
 */
import { errnoCode, RegistryError } from '../src/errors.js';

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
 * A request body as Buffers. A client that goes away before the body ends (killed, a cut network)
 * makes Node abort the request (ECONNRESET "aborted"): that is the client's doing, not the server's,
 * so it becomes a 400 naming how far the body got — not a 500 with a stack trace in the log. The
 * route stops where it was; what it stored before is whole (uploads are verified, then linked).
 */
export async function* fromWebStream(body: ReadableStream<Uint8Array> | null): AsyncGenerator<Buffer> {
  if (!body) return;
  const reader = body.getReader();
  let received = 0;
  try {
    for (;;) {
      let r: ReadableStreamReadResult<Uint8Array>;
      try {
        r = await reader.read();
      } catch (e) {
        if (errnoCode(e) !== 'ECONNRESET') throw e;
        throw new RegistryError(
          'E_USAGE',
          `the client closed the connection after ${received} bytes of the request body`,
          { found: `${received} bytes`, errno: 'ECONNRESET' },
          'nothing partial was stored; send the request again',
        );
      }
      if (r.done) return;
      received += r.value.byteLength;
      yield Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
    }
  } finally {
    // Stopping early (a size limit, a corrupt object) releases the body so the server can drain it.
    await reader.cancel().catch(() => {});
  }
}
