/**
 * Bridges between Node async iterables and web streams, without buffering: objects can be hundreds
 * of MB, so a response pulls one chunk from the blob store per chunk the socket takes.
 */

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

/** A request body as Buffers. */
export async function* fromWebStream(body: ReadableStream<Uint8Array> | null): AsyncGenerator<Buffer> {
  if (!body) return;
  const reader = body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      yield Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    }
  } finally {
    // Stopping early (a size limit, a corrupt object) releases the body so the server can drain it.
    await reader.cancel().catch(() => {});
  }
}
