/**
 * Put an app on a socket with @hono/node-server, and take it off again cleanly: stop accepting,
 * let requests in flight finish (a pull of a large object may take a while), and after a grace
 * period cut what is left.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import type { Hono } from 'hono';
import { RegistryError } from '../src/errors.js';
import type { AppEnv } from './auth.js';
import { errorResponse } from './errors.js';
import { type Logger, silentLogger } from './logger.js';

/** @hono/node-server's RequestError: the incoming request could not be made a Request. */
function isRequestError(e: unknown): boolean {
  return e instanceof Error && e.name === 'RequestError';
}

/** Long enough for an in-flight object of a few hundred MB on a LAN, short enough for a deploy. */
const CLOSE_GRACE_MS = 10_000;

/**
 * Slow clients. A request's headers must be complete within `headersTimeoutMs` (Node's default is
 * 60 s, checked only every 30 s, so a slowloris held a connection for up to 90 s); a connection on
 * which nothing at all moves for `idleTimeoutMs` is closed (a reader that stopped reading, a client
 * that went silent). Request bodies are paced separately (body-stream.ts), so Node's requestTimeout,
 * a 5-minute cap on the whole request, is off: it would cut a 2 GiB push on a link under 7 MB/s.
 * The idle limit must outlast the longest quiet stretch of a healthy request: generating a pack
 * before its first byte (seconds for a sysroot, tens of seconds for a GiB-sized one on S3).
 */
export interface ListenOptions {
  headersTimeoutMs?: number;
  idleTimeoutMs?: number;
  /** For requests that never reach the app (a target that is not a URL): one line each. */
  logger?: Logger;
}

export const DEFAULT_LISTEN = {
  headersTimeoutMs: 20_000,
  idleTimeoutMs: 120_000,
};

/**
 * A request the adapter cannot turn into a URL (a backslash in the path, a bad Host header) never
 * reaches the app; it gets the same JSON error as everything else instead of an empty 400.
 */
function malformedRequest(e: unknown, logger: Logger): Response {
  const why = e instanceof Error ? e.message : String(e);
  logger.info(`malformed request refused: ${why}`);
  return errorResponse(new RegistryError('E_USAGE', `malformed request: ${why}`), logger);
}

export interface Listening {
  /** `http://HOST:PORT`, with the real port when 0 was asked for. */
  url: string;
  port: number;
  close(graceMs?: number): Promise<void>;
}

export async function listen(
  app: Hono<AppEnv>,
  host: string,
  port: number,
  opts: ListenOptions = {},
): Promise<Listening> {
  const { headersTimeoutMs, idleTimeoutMs } = { ...DEFAULT_LISTEN, ...opts };
  const logger = opts.logger ?? silentLogger;
  const listener = getRequestListener(app.fetch, {
    // Called only for what the app did not answer: its own errors are rendered by app.onError.
    errorHandler: (e) => (isRequestError(e) ? malformedRequest(e, logger) : errorResponse(e, logger)),
  });
  const server = createServer(
    {
      headersTimeout: headersTimeoutMs,
      requestTimeout: 0,
      // How often Node checks headersTimeout: 1/4 of it, so a slow header is cut within 1.25x.
      connectionsCheckingInterval: Math.max(100, Math.floor(headersTimeoutMs / 4)),
    },
    listener,
  );
  server.setTimeout(idleTimeoutMs, (socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException) => {
      reject(new RegistryError('E_IO', `cannot listen on ${host}:${port}: ${e.message}`, { errno: e.code }));
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const actual = (server.address() as AddressInfo).port;
  const shown = host.includes(':') ? `[${host}]` : host;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${shown}:${actual}`,
    port: actual,
    close(graceMs = CLOSE_GRACE_MS) {
      closing ??= new Promise<void>((resolve) => {
        const timer = setTimeout(() => server.closeAllConnections(), graceMs);
        timer.unref();
        server.close(() => {
          clearTimeout(timer);
          resolve();
        });
        server.closeIdleConnections();
      });
      return closing;
    },
  };
}
