/**
 * Put an app on a socket with @hono/node-server, and take it off again cleanly: stop accepting,
 * let requests in flight finish (a pull of a large object may take a while), and after a grace
 * period cut what is left.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createAdaptorServer } from '@hono/node-server';
import type { Hono } from 'hono';
import { RegistryError } from '../src/errors.js';
import type { AppEnv } from './auth.js';

/** Long enough for an in-flight object of a few hundred MB on a LAN, short enough for a deploy. */
const CLOSE_GRACE_MS = 10_000;

export interface Listening {
  /** `http://HOST:PORT`, with the real port when 0 was asked for. */
  url: string;
  port: number;
  close(graceMs?: number): Promise<void>;
}

export async function listen(app: Hono<AppEnv>, host: string, port: number): Promise<Listening> {
  const server = createAdaptorServer({ fetch: app.fetch }) as Server;
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
