/**
 * The client's HTTP transport (src/transfer/http.ts) against real node:http servers on 127.0.0.1:
 * redirects and where the token may go, streamed bodies with backpressure, a refusal before the
 * body is all sent, and an abort.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { RegistryClient } from '../src/transfer/client.js';
import { send } from '../src/transfer/http.js';
import { cleanup, tempDir } from './helpers/checkout-tree.js';
import { sysrootAsync } from './helpers/cli.js';

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

const servers: Server[] = [];

async function serve(handler: Handler): Promise<string> {
  const s = createServer(handler);
  // A refused upload must not depend on the server hanging up: keep idle connections a long time.
  s.keepAliveTimeout = 60_000;
  servers.push(s);
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
}

const TLS = join(import.meta.dirname, '..', 'fixtures', 'tls');

/** An HTTPS server on 127.0.0.1 with the fixture's self-signed certificate. */
async function serveTls(handler: Handler): Promise<string> {
  const s = createTlsServer(
    { key: readFileSync(join(TLS, 'key.pem')), cert: readFileSync(join(TLS, 'cert.pem')) },
    handler,
  );
  servers.push(s);
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  return `https://127.0.0.1:${(s.address() as AddressInfo).port}`;
}

afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise((resolve) => s.close(resolve));
  }
});

async function text(body: AsyncIterable<Buffer>): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of body) parts.push(c);
  return Buffer.concat(parts).toString('utf8');
}

describe('http transport', () => {
  it('follows a redirect of a GET, dropping the token when the origin changes', async () => {
    const seen: Array<{ url: string | undefined; auth: string | undefined }> = [];
    const bucket = await serve((req, res) => {
      seen.push({ url: req.url, auth: req.headers.authorization });
      res.end('object bytes');
    });
    const registry = await serve((req, res) => {
      seen.push({ url: req.url, auth: req.headers.authorization });
      if (req.url === '/same') res.writeHead(307, { location: '/there' }).end();
      else if (req.url === '/there') res.end('same origin');
      else res.writeHead(307, { location: `${bucket}/signed?x=1` }).end();
    });
    const headers = { authorization: 'Bearer secret' };
    const away = await send({ method: 'GET', url: `${registry}/repo/objects/ab/cd.commit`, headers });
    expect(away.status).toBe(200);
    expect(await text(away.body)).toBe('object bytes');
    const same = await send({ method: 'GET', url: `${registry}/same`, headers });
    expect(await text(same.body)).toBe('same origin');
    expect(seen).toEqual([
      { url: '/repo/objects/ab/cd.commit', auth: 'Bearer secret' },
      { url: '/signed?x=1', auth: undefined },
      { url: '/same', auth: 'Bearer secret' },
      { url: '/there', auth: 'Bearer secret' },
    ]);
  });

  it('hands a redirect of a request with a body back as it is (a body is never sent twice)', async () => {
    const url = await serve((req, res) => {
      req.resume();
      res.writeHead(307, { location: '/elsewhere' }).end();
    });
    const a = await send({ method: 'PUT', url: `${url}/x`, headers: {}, body: Buffer.from('bytes') });
    expect(a.status).toBe(307);
    expect(a.header('Location')).toBe('/elsewhere');
    a.cancel();
  });

  it('decodes a body a proxy compressed (gzip, deflate, br), and passes an unknown encoding on as it is', async () => {
    const json = JSON.stringify({ commit: 'a'.repeat(64), pad: 'x'.repeat(10_000) });
    const encoders: Record<string, (b: Buffer) => Buffer> = {
      gzip: gzipSync,
      deflate: deflateSync,
      br: brotliCompressSync,
      zstd: (b) => Buffer.concat([Buffer.from('not really zstd:'), b]),
    };
    const url = await serve((req, res) => {
      const enc = req.url!.slice(1);
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': enc });
      res.end(encoders[enc]!(Buffer.from(json)));
    });
    for (const enc of ['gzip', 'deflate', 'br']) {
      const a = await send({ method: 'GET', url: `${url}/${enc}`, headers: {} });
      expect(await text(a.body), enc).toBe(json);
    }
    const odd = await send({ method: 'GET', url: `${url}/zstd`, headers: {} });
    expect(await text(odd.body)).toBe(`not really zstd:${json}`);
  });

  it('streams a body chunk by chunk and sends every byte', async () => {
    let received = 0;
    const url = await serve((req, res) => {
      req.on('data', (c: Buffer) => {
        received += c.length;
      });
      req.on('end', () => res.end(String(received)));
    });
    const chunk = Buffer.alloc(256 * 1024, 7);
    let chunks = 0;
    async function* source() {
      for (let i = 0; i < 64; i++) yield chunk;
    }
    const a = await send({
      method: 'POST',
      url,
      headers: {},
      body: { source: source(), onChunk: () => chunks++ },
    });
    expect(await text(a.body)).toBe(String(64 * chunk.length));
    expect(chunks).toBe(64);
  });

  it('stops sending, and closes the source, when the server answers before the body is all sent', async () => {
    let closedByClient = false;
    const url = await serve((req, res) => {
      let n = 0;
      req.on('data', (c: Buffer) => {
        n += c.length;
        if (n > 1024 * 1024 && !res.headersSent) {
          res.writeHead(507, { 'content-type': 'application/json' }).end('{"error":"full"}');
        }
      });
      req.socket.on('close', () => {
        closedByClient = true;
      });
    });
    let returned = false;
    let produced = 0;
    async function* endless() {
      try {
        for (;;) {
          produced++;
          yield Buffer.alloc(64 * 1024);
        }
      } finally {
        returned = true;
      }
    }
    const a = await send({ method: 'POST', url, headers: {}, body: { source: endless() } });
    expect(a.status).toBe(507);
    expect(await text(a.body)).toBe('{"error":"full"}');
    // The connection cannot carry another request: the client closes it once the answer is read
    // (the server would keep it open for 60 s, and so would the process).
    await expect.poll(() => closedByClient, { timeout: 10_000 }).toBe(true);
    await expect.poll(() => returned, { timeout: 10_000 }).toBe(true);
    expect(produced).toBeLessThan(1000);
  });

  it('a source that fails destroys the request with its error', async () => {
    const url = await serve((req, res) => {
      req.resume();
      req.on('end', () => res.end('ok'));
    });
    async function* failing() {
      yield Buffer.from('start');
      throw new Error('file changed while pushing');
    }
    await expect(send({ method: 'POST', url, headers: {}, body: { source: failing() } })).rejects.toThrow(
      'file changed while pushing',
    );
  });

  it('an aborted signal stops a body halfway', async () => {
    const url = await serve((_req, res) => {
      res.writeHead(200);
      res.write(Buffer.alloc(1024));
      // …and nothing more: the client's idle timer aborts it.
    });
    const controller = new AbortController();
    const a = await send({ method: 'GET', url, headers: {}, signal: controller.signal });
    const reading = text(a.body);
    controller.abort(new Error('no progress for 60 s'));
    await expect(reading).rejects.toThrow();
  });

  it("a push refused halfway reports the server's error and exit code (the CLI, end to end)", async () => {
    // A registry that answers 507 to the pack after 1 MiB and keeps connections open for 60 s.
    const url = await serve((req, res) => {
      const json = (status: number, body: unknown) =>
        res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      if (req.url?.startsWith('/api/v1/refs/')) {
        req.resume();
        json(404, { error: { code: 'E_REF_NOT_FOUND', message: 'no such ref', details: {} } });
      } else if (req.url === '/api/v1/objects/missing') {
        const parts: Buffer[] = [];
        req.on('data', (c: Buffer) => parts.push(c));
        req.on('end', () => json(200, { missing: JSON.parse(Buffer.concat(parts).toString()).objects }));
      } else if (req.url === '/api/v1/packs') {
        let n = 0;
        req.on('data', (c: Buffer) => {
          n += c.length;
          if (n > 1024 * 1024 && !res.headersSent) {
            json(507, { error: { code: 'E_NO_SPACE', message: 'the disk is full', details: {} } });
          }
        });
      } else {
        req.resume();
        json(500, { error: { code: 'E_INTERNAL', message: 'unexpected', details: {} } });
      }
    });
    // 3 MiB of incompressible files: more than the server reads before it refuses.
    const dir = tempDir('http');
    try {
      for (let i = 0; i < 12; i++) writeFileSync(join(dir, `f${i}`), randomBytes(256 * 1024));
      const r = await sysrootAsync(['push', '--url', url, '--ref', 't/x', '--subject', 's', dir], {
        SYSROOT_TOKEN: 'x',
        SYSROOT_CACHE_DIR: join(dir, '.cache'),
      });
      expect(r.stderr).toContain('the disk is full');
      expect(r.status).toBe(8);
    } finally {
      cleanup(dir);
    }
  }, 30_000);

  it('speaks https, trusting what Node trusts (NODE_EXTRA_CA_CERTS for a private CA)', async () => {
    const url = await serveTls((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ history: [] }));
    });
    const run = (env: NodeJS.ProcessEnv) => sysrootAsync(['log', '--url', url, 'stage3/x86_64'], env);
    const trusted = await run({ NODE_EXTRA_CA_CERTS: join(TLS, 'cert.pem') });
    expect(trusted.stderr).toBe('');
    expect(trusted.status).toBe(0);
    // Untrusted: refused at once with a hint, not retried (a retry would not trust it either).
    const untrusted = await run({});
    expect(untrusted.stderr).toContain('DEPTH_ZERO_SELF_SIGNED_CERT');
    expect(untrusted.stderr).toContain('NODE_EXTRA_CA_CERTS');
    expect(untrusted.stderr).not.toContain('retry');
    expect(untrusted.status).not.toBe(0);
  }, 30_000);

  it('an untrusted certificate is one attempt, not five', async () => {
    let connections = 0;
    const url = await serveTls((_req, res) => res.end('{}'));
    // TCP connections: each attempt opens one before the TLS handshake fails.
    servers.at(-1)!.on('connection', () => connections++);
    const client = new RegistryClient(url, { tries: 5, baseDelayMs: 1, maxDelayMs: 2 });
    await expect(client.getRef('stage3/x86_64')).rejects.toMatchObject({
      code: 'E_IO',
      hint: expect.stringContaining('NODE_EXTRA_CA_CERTS'),
    });
    expect(connections).toBe(1);
  });
});
