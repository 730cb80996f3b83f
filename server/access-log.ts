/**
 * One access-log line per request: `METHOD PATH STATUS BYTES MSms`, written when the last body byte
 * has been handed to the connection (or the client went away: `aborted`), so a 300 MB object's line
 * carries its real duration. The path keeps its query string, with anything token-like redacted.
 */
import type { MiddlewareHandler } from 'hono';
import { redactTokens } from '../src/auth/token-string.js';
import type { Logger } from './logger.js';

function countingBody(
  body: ReadableStream<Uint8Array>,
  done: (bytes: number, aborted: boolean) => void,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  let bytes = 0;
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          const r = await reader.read();
          if (r.done) {
            controller.close();
            done(bytes, false);
            return;
          }
          bytes += r.value.byteLength;
          controller.enqueue(r.value);
        } catch (e) {
          done(bytes, true);
          throw e;
        }
      },
      async cancel(reason) {
        done(bytes, true);
        await reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}

export function accessLog(logger: Logger): MiddlewareHandler {
  return async (c, next) => {
    const started = performance.now();
    await next();
    const url = new URL(c.req.url);
    const path = redactTokens(`${url.pathname}${url.search}`);
    const res = c.res;
    let logged = false;
    const line = (bytes: number, aborted: boolean) => {
      if (logged) return;
      logged = true;
      const ms = Math.round(performance.now() - started);
      logger.info(`${c.req.method} ${path} ${res.status} ${bytes} ${ms}ms${aborted ? ' aborted' : ''}`);
    };
    // HEAD bodies are dropped by Hono after this middleware, so they would never be read.
    if (c.req.method === 'HEAD' || res.body === null) {
      line(0, false);
      return;
    }
    // A client may hang up right after the last byte, before the stream reports its end: that is
    // a complete response, not an aborted one.
    const length = Number(res.headers.get('content-length') ?? Number.NaN);
    c.res = new Response(
      countingBody(res.body, (bytes, aborted) => line(bytes, aborted && bytes !== length)),
      res,
    );
  };
}
