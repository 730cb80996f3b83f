/**
 * Hostile HTTP, by hand: malformed checksums and ref names on every route, path tricks as raw
 * request targets, oversized bodies, slow clients, Content-Lengths that lie, and uploads whose bytes
 * are not what their name says. Each answer is a 4xx with a JSON error (or the connection is cut, for
 * a client too slow to deserve an answer), never a 5xx, and the repository is byte for byte what it
 * was. Real sockets where framing matters: a server from listen() on 127.0.0.1.
 */
import { readdirSync } from 'node:fs';
import { Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ApiLimits } from '../server/api-routes.js';
import { createApp } from '../server/app.js';
import { type Listening, listen } from '../server/listen.js';
import { streamLogger } from '../server/logger.js';
import { encodeDirTree, objectPath, sha256 } from '../src/objects/index.js';
import { KIND, PackWriter } from '../src/pack/index.js';
import { HOSTILE_REF, type HostileFixture, hostileFixture } from './helpers/hostile-fixture.js';
import { routeTemplates } from './helpers/http-fuzz.js';

let f: HostileFixture;
let before: Map<string, string>;
let stored: (id: string) => Promise<Buffer>;

beforeAll(async () => {
  f = await hostileFixture();
  before = f.snapshot();
  stored = async (id) => {
    const [sha, type] = id.split('.') as [string, 'file'];
    return (await f.repo.blobs.read(objectPath(sha, type)))!;
  };
});
afterAll(() => {
  f?.tokenStore.close();
  f?.repo.close();
});

function app(limits: Partial<ApiLimits> = {}, log: string[] = []) {
  return createApp({
    repo: f.repo,
    tokens: f.tokenStore,
    anonymousPull: true,
    logger: streamLogger((l) => log.push(l)),
    limits,
  });
}

const bearer = (t: string) => ({ authorization: `Bearer ${t}` });

async function expectJsonError(res: Response, what: string): Promise<{ code: string; message: string }> {
  expect(res.status, what).toBeGreaterThanOrEqual(400);
  expect(res.status, what).toBeLessThan(500);
  const text = await res.text();
  const body = JSON.parse(text) as { error: { code: string; message: string } };
  expect(body.error.code, what).toMatch(/^E_[A-Z_]+$/);
  expect(body.error.message.length, what).toBeGreaterThan(0);
  return body.error;
}

function tmpFiles(): string[] {
  return readdirSync(join(f.repo.location, 'tmp')).filter((n) => n.startsWith('tmp-'));
}

/** A raw exchange: write `parts` (with `gapMs` between them), and read until the server closes. */
function exchange(
  port: number,
  parts: Array<string | Buffer>,
  o: { gapMs?: number; hangupAfterMs?: number; timeoutMs?: number } = {},
): Promise<{ text: string; status: number; ms: number; closedBy: 'server' | 'client' }> {
  return new Promise((resolve, reject) => {
    const s = new Socket();
    const got: Buffer[] = [];
    const t0 = performance.now();
    let closedBy: 'server' | 'client' = 'server';
    const timer = setTimeout(() => reject(new Error('no close within the timeout')), o.timeoutMs ?? 15_000);
    s.on('data', (d) => got.push(d));
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(timer);
      clearInterval(drip);
      const text = Buffer.concat(got).toString('latin1');
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
      resolve({ text, status, ms: performance.now() - t0, closedBy });
    });
    let drip: NodeJS.Timeout | undefined;
    s.connect(port, '127.0.0.1', () => {
      const queue = [...parts];
      if (!o.gapMs) for (const p of queue) s.write(p);
      else {
        s.write(queue.shift()!);
        drip = setInterval(() => {
          const next = queue.shift();
          if (next === undefined || s.destroyed) clearInterval(drip);
          else s.write(next);
        }, o.gapMs);
      }
      if (o.hangupAfterMs !== undefined) {
        setTimeout(() => {
          closedBy = 'client';
          s.destroy();
        }, o.hangupAfterMs);
      }
    });
  });
}

describe('malformed checksums and ref names', () => {
  const BAD = [
    'XYZ',
    'A'.repeat(64),
    'g'.repeat(64),
    'a'.repeat(63),
    'a'.repeat(65),
    '..',
    '.',
    '%2e%2e',
    '..%2f..%2fconfig',
    '%00',
    'a%2f..%2fb',
    '-x',
    'x/',
    'é',
    '%ff',
    'a'.repeat(5000),
    `${'0'.repeat(64)}...${'0'.repeat(64)}`,
  ];

  it('every route and method the OpenAPI document lists answers each with a 4xx JSON error', async () => {
    const a = app();
    const routes = routeTemplates().filter((r) => r.template.includes('{') && !r.template.includes('{junk}'));
    // Every parameterised API path of the OpenAPI document, and the two of /repo.
    expect(routes.map((r) => r.template).sort()).toEqual(
      [
        '/api/v1/commits/{sha}',
        '/api/v1/log/{ref}',
        '/api/v1/objects/{name}',
        '/api/v1/packs/{spec}',
        '/api/v1/refs/{ref}',
        '/api/v1/reset/{ref}',
        '/repo/objects/{xx}/{rest}',
        '/repo/refs/heads/{ref}',
      ].sort(),
    );
    let asked = 0;
    for (const { template, methods } of routes) {
      for (const method of methods.filter((m) => m !== 'HEAD')) {
        for (const bad of BAD) {
          const path = template.replace(/\{\w+\}/g, bad);
          const res = await a.request(`http://localhost${path}`, {
            method,
            headers: bearer(f.tokens.admin),
            body: method === 'GET' ? undefined : JSON.stringify({ from: null, to: bad, reason: 'x' }),
          });
          const e = await expectJsonError(res, `${method} ${path.slice(0, 100)}`);
          expect(e.code, path).not.toBe('E_INTERNAL');
          asked++;
        }
      }
    }
    expect(asked).toBe(BAD.length * 9);
    // Bodies naming bad checksums, on the routes that take them.
    for (const [path, method, body] of [
      ['/api/v1/objects/missing', 'POST', { objects: [{ checksum: 'XYZ', type: 'file' }] }],
      ['/api/v1/objects/missing', 'POST', { objects: [{ checksum: 'a'.repeat(64), type: 'filez' }] }],
      [`/api/v1/refs/${HOSTILE_REF}`, 'PUT', { from: 'x', to: f.commits[0] }],
      [`/api/v1/refs/${HOSTILE_REF}`, 'PUT', { from: f.commits[1], to: '..' }],
      [`/api/v1/reset/${HOSTILE_REF}`, 'POST', { to: 'A'.repeat(64), reason: 'x' }],
    ] as const) {
      const res = await a.request(path, {
        method,
        headers: bearer(f.tokens.admin),
        body: JSON.stringify(body),
      });
      await expectJsonError(res, `${method} ${path} ${JSON.stringify(body)}`);
    }
    expect(f.snapshot()).toEqual(before);
  });
});

describe('over a real socket', () => {
  let server: Listening;
  const log: string[] = [];
  const PACE = { windowMs: 1_000, minBytesPerSecond: 200 };

  beforeAll(async () => {
    server = await listen(
      app({ bodyPace: PACE, maxJsonBytes: 4096, maxMetadataBytes: 4096 }, log),
      '127.0.0.1',
      0,
      {
        headersTimeoutMs: 1_000,
        idleTimeoutMs: 3_000,
      },
    );
  });
  afterAll(() => server?.close(100));

  const req = (method: string, target: string, headers: Record<string, string | number> = {}) =>
    `${method} ${target} HTTP/1.1\r\nhost: x\r\n${Object.entries(headers)
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join('')}\r\n`;

  it('refuses path tricks in the raw request target and never serves a file outside the repository', async () => {
    const targets = [
      '/repo/objects/%2e%2e/%2e%2e/config',
      '/repo/refs/heads/../../config',
      '/repo/refs/heads/..%2f..%2fconfig',
      '/repo/refs/heads/a%2fb',
      '/repo//config',
      '//repo/config',
      '/repo/./config',
      '/repo/config%00',
      '/repo/%2e%2e/%2e%2e/%2e%2e/etc/passwd',
      '/repo/..\\..\\etc\\passwd',
      '/repo/sysroot/tokens/',
      '/repo/sysroot/index.sqlite',
      '/api/v1/refs/..%2f..%2f..%2fetc%2fpasswd',
      '/api/v1/refs/%2e%2e/%2e%2e/repo/config',
      '/api/v1//refs',
      '/api/v1/objects/%2e%2e%2fconfig',
      '/api/v1/packs/%2e%2e',
    ];
    for (const t of targets) {
      const r = await exchange(server.port, [req('GET', t, { connection: 'close' })]);
      expect(r.status, t).toBeGreaterThanOrEqual(400);
      expect(r.status, t).toBeLessThan(500);
      expect(r.text, t).not.toContain('archive-z2');
      expect(r.text, t).not.toContain('root:');
      expect(r.text, t).toContain('"error"');
    }
  });

  it('checks a push scope against the decoded ref: %2f is a slash, for the router and for auth', async () => {
    const body = JSON.stringify({ from: f.commits[1], to: f.commits[0] });
    const target = `/api/v1/refs/${HOSTILE_REF.replace('/', '%2f')}`;
    const stray = await exchange(server.port, [
      req('PUT', target, {
        ...bearer(f.tokens.strayPusher),
        'content-length': body.length,
        connection: 'close',
      }),
      body,
    ]);
    expect(stray.status).toBe(403);
    expect(stray.text).toContain(`no push scope matches ref ${HOSTILE_REF}`);
    // The right token reaches the fast-forward check (v1 is not a descendant of v2), and no further.
    const owner = await exchange(server.port, [
      req('PUT', target, { ...bearer(f.tokens.pusher), 'content-length': body.length, connection: 'close' }),
      body,
    ]);
    expect(owner.status).toBe(409);
    expect(f.snapshot()).toEqual(before);
  });

  it('refuses oversized bodies with 413, from the declared length or while reading, storing nothing', async () => {
    const big = Buffer.alloc(10_000, 0x20);
    const cases: Array<[string, string, Array<string | Buffer>]> = [
      [
        'json, declared',
        '/api/v1/objects/missing',
        [req('POST', '/api/v1/objects/missing', { 'content-length': big.length, connection: 'close' }), big],
      ],
      [
        'json, chunked',
        '/api/v1/objects/missing',
        [
          req('POST', '/api/v1/objects/missing', { 'transfer-encoding': 'chunked', connection: 'close' }),
          `${big.length.toString(16)}\r\n`,
          big,
          '\r\n0\r\n\r\n',
        ],
      ],
      [
        'metadata object, chunked',
        `/api/v1/objects/${'ab'.repeat(32)}.dirtree`,
        [
          req('PUT', `/api/v1/objects/${'ab'.repeat(32)}.dirtree`, {
            ...bearer(f.tokens.pusher),
            'transfer-encoding': 'chunked',
            connection: 'close',
          }),
          `${big.length.toString(16)}\r\n`,
          big,
          '\r\n0\r\n\r\n',
        ],
      ],
    ];
    for (const [what, , parts] of cases) {
      const r = await exchange(server.port, parts);
      expect(r.status, what).toBe(413);
      expect(r.text, what).toContain('"E_LIMIT"');
    }
    // A pack record over the metadata limit (a valid dirtree of 150 files, ~11 KB).
    const tree = encodeDirTree({
      files: Array.from({ length: 150 }, (_, i) => ({
        name: `file-${String(i).padStart(4, '0')}-${'n'.repeat(30)}`,
        checksum: sha256(Buffer.from(String(i))),
      })),
      dirs: [],
    });
    const chunks: Buffer[] = [];
    const w = new PackWriter(async (c) => void chunks.push(c), { threads: false });
    await w.add(KIND.dirtree, sha256(tree), tree);
    await w.finish();
    const pack = Buffer.concat(chunks);
    const r = await exchange(server.port, [
      req('POST', '/api/v1/packs', {
        ...bearer(f.tokens.pusher),
        'content-length': pack.length,
        connection: 'close',
      }),
      pack,
    ]);
    expect(r.status, r.text).toBe(413);
    expect(r.text).toContain(`${sha256(tree)}.dirtree`);
    expect(f.snapshot()).toEqual(before);
    expect(tmpFiles()).toEqual([]);
  });

  it('times out a body trickling 1 byte at a time, and a stalled one, with 408; others are served meanwhile', async () => {
    // Each trickles the start of a body that is right so far (200 bytes at 20/s; the pace asks for
    // 200 B/s), so only its slowness can end it.
    const fileId = f.objects.find((i) => i.endsWith('.file'))!;
    const packBytes = await (await fetch(`${server.url}/api/v1/packs/${f.commits[1]}`)).arrayBuffer();
    const slow = (method: string, target: string, headers: Record<string, string | number>, body: Buffer) =>
      exchange(
        server.port,
        [
          req(method, target, { ...headers, 'content-length': 3_000 }),
          ...Array.from(body.subarray(0, 200), (b) => Buffer.from([b])),
        ],
        { gapMs: 50 },
      );
    const started = performance.now();
    const commitBytes = await stored(`${f.commits[0]}.commit`);
    const trickles = Promise.all([
      slow('PUT', '/api/v1/objects/missing', {}, Buffer.alloc(200, 0x20)),
      slow('PUT', `/api/v1/objects/${f.commits[0]}.commit`, bearer(f.tokens.pusher), commitBytes),
      slow('PUT', `/api/v1/objects/${fileId}`, bearer(f.tokens.pusher), await stored(fileId)),
      slow('POST', '/api/v1/packs', bearer(f.tokens.pusher), Buffer.from(packBytes)),
      exchange(server.port, [
        req('PUT', `/api/v1/refs/${HOSTILE_REF}`, { ...bearer(f.tokens.admin), 'content-length': 50 }),
      ]),
    ]);
    // While they hold their connections, everyone else is served at once.
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      const ok = await fetch(`${server.url}/repo/config`);
      expect(ok.status).toBe(200);
      await ok.text();
      expect(performance.now() - t0).toBeLessThan(500);
      await new Promise((r) => setTimeout(r, 100));
    }
    const results = await trickles;
    const [json, commit, file, pack, stalled] = results;
    // PUT /objects/missing is an upload named "missing": refused (no token) before the body is read.
    expect(json!.status).toBe(401);
    expect(json!.ms).toBeLessThan(1_000);
    for (const r of [commit!, file!, pack!, stalled!]) {
      expect(r.status, r.text).toBe(408);
      expect(r.text).toContain('"E_TIMEOUT"');
      expect(r.closedBy).toBe('server');
      // One pace window (1 s) plus scheduling, not the client's 10 s of trickle.
      expect(r.ms).toBeLessThan(4_000);
    }
    expect(performance.now() - started).toBeLessThan(6_000);
    expect(f.snapshot()).toEqual(before);
    expect(tmpFiles()).toEqual([]);
  });

  it('lets a slow but steady upload through: the pace counts bytes per window, not total time', async () => {
    // A 6 KB pack sent over ~3 s, 300 B/s (the pace asks for 200 B/s): stored objects only, so 200.
    const chunks: Buffer[] = [];
    const w = new PackWriter(async (c) => void chunks.push(c), { threads: false });
    const dirtrees = f.objects.filter((id) => id.endsWith('.dirtree'));
    for (const id of dirtrees) await w.add(KIND.dirtree, id.slice(0, 64), await stored(id));
    await w.finish();
    const pack = Buffer.concat(chunks);
    const pieces: Buffer[] = [];
    for (let i = 0; i < pack.length; i += 30) pieces.push(pack.subarray(i, i + 30));
    const r = await exchange(
      server.port,
      [
        req('POST', '/api/v1/packs', {
          ...bearer(f.tokens.pusher),
          'content-length': pack.length,
          connection: 'close',
        }),
        ...pieces,
      ],
      { gapMs: 1_000 / 10 },
    );
    expect(r.status, r.text).toBe(200);
    expect(r.text).toContain(`"existing":${dirtrees.length}`);
    expect(r.ms).toBeGreaterThan((pieces.length / 10) * 1000 - 500);
  });

  it('cuts a client whose headers never end', async () => {
    const r = await exchange(
      server.port,
      ['GET /repo/config HTTP/1.1\r\nhost: x\r\n', ...'x-slow: 1'.split('')],
      {
        gapMs: 200,
      },
    );
    expect(r.closedBy).toBe('server');
    // headersTimeout 1 s, checked every 250 ms.
    expect(r.ms).toBeLessThan(3_000);
  });

  it('answers a Content-Length that lies with a 4xx: shorter, longer and stalled, longer and gone', async () => {
    const body = JSON.stringify({ objects: [{ checksum: f.commits[0], type: 'commit' }] });
    // Shorter: the server reads what was declared, which is not JSON (400 E_USAGE in the log); the
    // rest is not a request, and Node's parser answers that 400 Bad Request, which may reach the
    // client first, and closes.
    log.length = 0;
    const short = await exchange(server.port, [
      req('POST', '/api/v1/objects/missing', { 'content-length': 10 }),
      body,
    ]);
    expect(short.status).toBe(400);
    await new Promise((r) => setTimeout(r, 100));
    expect(log).toEqual([expect.stringMatching(/ info POST \/api\/v1\/objects\/missing 400 \d+ \d+ms$/)]);
    // Longer, and the client waits: the pace ends it.
    const stalled = await exchange(server.port, [
      req('POST', '/api/v1/objects/missing', { 'content-length': body.length + 100 }),
      body,
    ]);
    expect(stalled.status).toBe(408);
    // Longer, and the client hangs up: nobody gets the answer, but it is a 400, not a 500.
    log.length = 0;
    const file = await stored(f.objects.find((id) => id.endsWith('.file'))!);
    const id = f.objects.find((i) => i.endsWith('.file'))!;
    const gone = await exchange(
      server.port,
      [
        req('PUT', `/api/v1/objects/${id.slice(0, 64)}.file`, {
          ...bearer(f.tokens.pusher),
          'content-length': file.length + 1000,
        }),
        file,
      ],
      { hangupAfterMs: 200 },
    );
    expect(gone.closedBy).toBe('client');
    await new Promise((r) => setTimeout(r, 200));
    expect(log.filter((l) => l.includes('/api/v1/objects/'))).toEqual([
      expect.stringMatching(/ info PUT \/api\/v1\/objects\/[0-9a-f]{64}\.file 400 \d+ \d+ms$/),
    ]);
    expect(log.join('\n')).not.toMatch(/ error | 5\d\d \d+ \d+ms/);
    expect(f.snapshot()).toEqual(before);
    expect(tmpFiles()).toEqual([]);
  });

  it('refuses uploads whose bytes are not what their name says, storing nothing under the name', async () => {
    const commit = await stored(`${f.commits[0]}.commit`);
    const dirtreeId = f.objects.find((i) => i.endsWith('.dirtree'))!;
    const fileId = f.objects.find((i) => i.endsWith('.file'))!;
    const file = await stored(fileId);
    const other = f.objects.filter((i) => i.endsWith('.file')).find((i) => i !== fileId)!;
    const fresh = 'ef'.repeat(32);
    const cases: Array<[string, Buffer, string]> = [
      // A commit's bytes under a name that is not theirs, and under their own checksum as a dirtree.
      [`${fresh}.commit`, commit, 'E_CORRUPT_OBJECT'],
      [`${f.commits[0]}.dirtree`, commit, 'E_NOT_NORMAL_FORM'],
      // A stored file's .filez under another file's name, with a byte flipped, with junk after it.
      [`${fresh}.file`, file, 'E_CORRUPT_OBJECT'],
      [`${other}`, file, 'E_CORRUPT_OBJECT'],
      [fileId, Buffer.concat([file.subarray(0, -1), Buffer.from([file.at(-1)! ^ 1])]), 'E_CORRUPT_OBJECT'],
      [fileId, Buffer.concat([file, Buffer.from('trailing')]), 'E_CORRUPT_OBJECT'],
      [`${dirtreeId.slice(0, 64)}.dirmeta`, await stored(dirtreeId), 'E_NOT_NORMAL_FORM'],
    ];
    for (const [name, bytes, code] of cases) {
      const r = await exchange(server.port, [
        req('PUT', `/api/v1/objects/${name}`, {
          ...bearer(f.tokens.pusher),
          'content-length': bytes.length,
          connection: 'close',
        }),
        bytes,
      ]);
      expect(r.status, name).toBe(400);
      expect(r.text, name).toContain(`"${code}"`);
    }
    expect(f.snapshot()).toEqual(before);
    expect(tmpFiles()).toEqual([]);
  });
});
