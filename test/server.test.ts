import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import type { ApiLimits } from '../server/api-routes.js';
import { createApp } from '../server/app.js';
import { stableLastModified } from '../server/http-cache.js';
import { streamLogger } from '../server/logger.js';
import type { OPENAPI } from '../server/openapi.js';
import { TokenStore } from '../src/auth/tokens.js';
import {
  type Checksum,
  contentChecksum,
  decodeSummary,
  encodeCommit,
  encodeCommitMeta,
  encodeDirMeta,
  type FileMeta,
  filezHeader,
  objectPath,
  sha256,
} from '../src/objects/index.js';
import { refKey } from '../src/repo/layout.js';
import type { Repository } from '../src/repo/repository.js';
import { commitContent, storeTree, tempRepo } from './helpers/repo.js';

const REF = 'stage3-sysroot/x86_64';

interface Setup {
  repo: Repository;
  tokens: TokenStore;
  app: ReturnType<typeof createApp>;
  log: string[];
  admin: string;
  pusher: string;
  otherPusher: string;
  puller: string;
}

async function setup(o: { anonymousPull?: boolean; limits?: Partial<ApiLimits> } = {}): Promise<Setup> {
  const repo = await tempRepo();
  const tokens = TokenStore.forRepo(repo);
  const log: string[] = [];
  const app = createApp({
    repo,
    tokens,
    anonymousPull: o.anonymousPull ?? true,
    logger: streamLogger((l) => log.push(l)),
    limits: o.limits,
  });
  const make = async (name: string, scope: string) => (await tokens.create({ name, scopes: [scope] })).token;
  return {
    repo,
    tokens,
    app,
    log,
    admin: await make('admin', 'admin'),
    pusher: await make('release-ci', 'push:stage3-sysroot/*'),
    otherPusher: await make('other-ci', 'push:other/*'),
    puller: await make('builder', 'pull'),
  };
}

const auth = (token: string) => ({ authorization: `Bearer ${token}` });
/** A request body: fetch's types take a plain Uint8Array, not a Buffer. */
const bin = (b: Buffer) => new Uint8Array(b);

async function errorOf(
  res: Response,
): Promise<{ code: string; message: string; details: Record<string, unknown> }> {
  const body = (await res.json()) as {
    error: { code: string; message: string; details: Record<string, unknown> };
  };
  return body.error;
}

function filez(content: string, mode = 0o100644): { checksum: Checksum; bytes: Buffer } {
  const meta: FileMeta = { uid: 0, gid: 0, mode, symlinkTarget: '', xattrs: [] };
  const payload = Buffer.from(content);
  return {
    checksum: contentChecksum(meta, payload),
    bytes: Buffer.concat([filezHeader(meta, payload.length), deflateRawSync(payload)]),
  };
}

/** A commit on top of `parent`, stored in the repository but not on any ref yet. */
async function storeCommit(repo: Repository, parent: Checksum | null, content: string): Promise<Checksum> {
  const root = await storeTree(repo, content);
  const bytes = encodeCommit({
    metadata: [],
    parent,
    related: [],
    subject: content,
    body: '',
    timestamp: 1,
    ...root,
  });
  return repo.objects.putMetadata('commit', bytes);
}

/** Make a file's mtime old, so a Last-Modified header is offered for it. */
function age(repo: Repository, key: string): void {
  const then = new Date('2024-01-01T00:00:00Z');
  utimesSync(join(repo.location, key), then, then);
}

describe('OSTree routes under /repo/', () => {
  it('serves config with no-cache, a strong ETag, Last-Modified, and 304s', async () => {
    const { app, repo } = await setup();
    age(repo, 'config');
    const res = await app.request('/repo/config');
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('[core]\nrepo_version=1\nmode=archive-z2\n');
    expect(res.headers.get('cache-control')).toBe('no-cache');
    const etag = res.headers.get('etag')!;
    expect(etag).toMatch(/^"[0-9a-f]{32}"$/);
    expect(res.headers.get('last-modified')).toBe('Mon, 01 Jan 2024 00:00:00 GMT');
    expect(res.headers.get('content-length')).toBe('38');

    const inm = await app.request('/repo/config', { headers: { 'if-none-match': etag } });
    expect(inm.status).toBe(304);
    expect(await inm.text()).toBe('');
    expect(inm.headers.get('etag')).toBe(etag);
    const ims = await app.request('/repo/config', {
      headers: { 'if-modified-since': 'Mon, 01 Jan 2024 00:00:00 GMT' },
    });
    expect(ims.status).toBe(304);
    const older = await app.request('/repo/config', {
      headers: { 'if-modified-since': 'Sun, 31 Dec 2023 23:59:59 GMT' },
    });
    expect(older.status).toBe(200);
    // If-None-Match wins over If-Modified-Since.
    const both = await app.request('/repo/config', {
      headers: { 'if-none-match': '"other"', 'if-modified-since': 'Mon, 01 Jan 2024 00:00:00 GMT' },
    });
    expect(both.status).toBe(200);
  });

  it('offers no Last-Modified for a file changed within the current second', async () => {
    const { app, repo } = await setup();
    // An mtime in the current second (here: in the future, so the test cannot race the clock).
    const soon = new Date(Date.now() + 60_000);
    utimesSync(join(repo.location, 'config'), soon, soon);
    const res = await app.request('/repo/config', { headers: { 'if-modified-since': soon.toUTCString() } });
    expect(res.status).toBe(200);
    expect(res.headers.get('last-modified')).toBeNull();
    expect(res.headers.get('etag')).not.toBeNull();
    expect(stableLastModified(10_999, 10_999)).toBeUndefined();
    expect(stableLastModified(10_999, 11_000)).toEqual(new Date(10_000));
  });

  it('answers HEAD on every route with the GET headers and no body', async () => {
    const { app, repo } = await setup();
    const c = await commitContent(repo, REF, 'v1');
    for (const path of ['config', 'summary', `refs/heads/${REF}`, objectPath(c, 'commit')]) {
      const get = await app.request(`/repo/${path}`);
      const head = await app.request(`/repo/${path}`, { method: 'HEAD' });
      expect(head.status, path).toBe(200);
      expect(head.headers.get('content-length'), path).toBe(get.headers.get('content-length'));
      expect(head.headers.get('etag'), path).toBe(get.headers.get('etag'));
      expect(head.headers.get('cache-control'), path).toBe(get.headers.get('cache-control'));
      expect((await head.arrayBuffer()).byteLength, path).toBe(0);
    }
    expect((await app.request('/repo/summary.sig', { method: 'HEAD' })).status).toBe(404);
  });

  it('serves refs/heads/<ref> with slashes, and 404 for unknown or invalid refs', async () => {
    const { app, repo } = await setup();
    const c = await commitContent(repo, REF, 'v1');
    const res = await app.request(`/repo/refs/heads/${REF}`);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe(`${c}\n`);
    expect(res.headers.get('cache-control')).toBe('no-cache');
    expect((await app.request('/repo/refs/heads/stage3-sysroot/nope')).status).toBe(404);
    expect((await app.request('/repo/refs/heads/stage3-sysroot')).status).toBe(404);
    expect((await app.request('/repo/refs/heads/-x')).status).toBe(404);
  });

  it('serves a summary that matches refs/heads, and 404 for summary.sig', async () => {
    const { app, repo } = await setup();
    const a = await commitContent(repo, REF, 'v1');
    const b = await commitContent(repo, 'stage3-sysroot/armv8l64', 'arm');
    const res = await app.request('/repo/summary');
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-cache');
    const summary = decodeSummary(Buffer.from(await res.arrayBuffer()));
    const heads = await Promise.all(
      summary.refs.map(async (r) => [
        r.name,
        (await (await app.request(`/repo/refs/heads/${r.name}`)).text()).trim(),
      ]),
    );
    expect(summary.refs.map((r) => [r.name, r.checksum])).toEqual(heads);
    expect(summary.refs.map((r) => [r.name, r.checksum])).toEqual([
      ['stage3-sysroot/armv8l64', b],
      [REF, a],
    ]);
    const sig = await app.request('/repo/summary.sig');
    expect(sig.status).toBe(404);
    expect((await errorOf(sig)).code).toBe('E_NOT_FOUND');
  });

  it('never serves a summary that disagrees with refs/heads: a stale one is rewritten first', async () => {
    const { app, repo } = await setup();
    const c1 = await commitContent(repo, REF, 'v1');
    const c2 = await storeCommit(repo, c1, 'v2');
    // A crash between the two replaces of a ref move leaves exactly this behind.
    await repo.blobs.replace(refKey(REF), Buffer.from(`${c2}\n`));
    const res = await app.request('/repo/summary');
    const summary = decodeSummary(Buffer.from(await res.arrayBuffer()));
    expect(summary.refs.map((r) => [r.name, r.checksum])).toEqual([[REF, c2]]);
  });

  it('serves objects as immutable, with a content-addressed ETag, Content-Length and 304', async () => {
    const { app, repo } = await setup();
    const c = await commitContent(repo, REF, 'hello');
    const commit = (await repo.readCommit(c)).rootTree;
    for (const [checksum, type, ext] of [
      [c, 'commit', 'commit'],
      [commit, 'dirtree', 'dirtree'],
    ] as const) {
      const path = `/repo/${objectPath(checksum, type)}`;
      const res = await app.request(path);
      expect(res.status).toBe(200);
      const bytes = Buffer.from(await res.arrayBuffer());
      expect(bytes.equals((await repo.objects.getRaw(checksum, type))!)).toBe(true);
      expect(res.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
      expect(res.headers.get('etag')).toBe(`"${checksum}.${ext}"`);
      expect(res.headers.get('content-length')).toBe(String(bytes.length));
      expect(res.headers.get('accept-ranges')).toBe('bytes');
      const again = await app.request(path, { headers: { 'if-none-match': `W/"${checksum}.${ext}", "x"` } });
      expect(again.status).toBe(304);
    }
    const file = filez('hello');
    const res = await app.request(`/repo/${objectPath(file.checksum, 'file')}`);
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer()).equals(file.bytes)).toBe(true);
    expect(res.headers.get('etag')).toBe(`"${file.checksum}.filez"`);
  });

  it('serves .commitmeta as revalidated, not immutable, and 404 when absent', async () => {
    const { app, repo } = await setup();
    const c = await commitContent(repo, REF, 'v1');
    expect((await app.request(`/repo/${objectPath(c, 'commitmeta')}`)).status).toBe(404);
    await repo.objects.putMetadata('commitmeta', encodeCommitMeta([]), c);
    const res = await app.request(`/repo/${objectPath(c, 'commitmeta')}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-cache');
  });

  it('answers Range with 206 and Content-Range, and 416 when unsatisfiable', async () => {
    const { app, repo } = await setup();
    const c = await commitContent(repo, REF, 'ranges');
    const path = `/repo/${objectPath(c, 'commit')}`;
    const whole = (await repo.objects.getRaw(c, 'commit'))!;
    const size = whole.length;
    const cases: Array<[string, number, number]> = [
      ['bytes=0-9', 0, 10],
      ['bytes=10-', 10, size],
      ['bytes=-5', size - 5, size],
      [`bytes=5-${size + 100}`, 5, size],
    ];
    for (const [range, start, end] of cases) {
      const res = await app.request(path, { headers: { range } });
      expect(res.status, range).toBe(206);
      expect(res.headers.get('content-range'), range).toBe(`bytes ${start}-${end - 1}/${size}`);
      expect(res.headers.get('content-length'), range).toBe(String(end - start));
      expect(Buffer.from(await res.arrayBuffer()).equals(whole.subarray(start, end)), range).toBe(true);
    }
    const beyond = await app.request(path, { headers: { range: `bytes=${size}-` } });
    expect(beyond.status).toBe(416);
    expect(beyond.headers.get('content-range')).toBe(`bytes */${size}`);
    // Several ranges, or a stale If-Range, get the whole object.
    expect((await app.request(path, { headers: { range: 'bytes=0-1,4-5' } })).status).toBe(200);
    expect((await app.request(path, { headers: { range: 'bytes=0-1', 'if-range': '"old"' } })).status).toBe(
      200,
    );
    const head = await app.request(path, { method: 'HEAD', headers: { range: 'bytes=0-9' } });
    expect(head.status).toBe(206);
    expect(head.headers.get('content-length')).toBe('10');
    // Small mutable files take ranges too.
    const cfg = await app.request('/repo/config', { headers: { range: 'bytes=0-5' } });
    expect(cfg.status).toBe(206);
    expect(await cfg.text()).toBe('[core]');
  });

  it('404s anything that is not a repository file ostree asks for', async () => {
    const { app, repo } = await setup();
    const c = await commitContent(repo, REF, 'v1');
    const tail = c.slice(2);
    for (const path of [
      `objects/${c.slice(0, 2)}/${tail}.file`,
      `objects/${c.slice(0, 2)}/${tail}.foo`,
      `objects/${c.slice(0, 2)}/${tail.toUpperCase()}.commit`,
      `objects/${c.slice(0, 2)}/${tail.slice(1)}.commit`,
      `objects/${c.slice(0, 3)}/${tail.slice(1)}.commit`,
      `objects/${c}.commit`,
      'delta-indexes/ab/cdef+gh.index',
      'deltas/ab/cdef+gh/superblock',
      'refs/remotes/x',
      'tmp/x',
      'state',
      'sysroot/index.sqlite',
      `sysroot/tokens/${readdirSync(join(repo.location, 'sysroot/tokens'))[0]}`,
      'objects/',
      '',
    ]) {
      const res = await app.request(`/repo/${path}`);
      expect(res.status, path).toBe(404);
    }
    expect((await app.request('/repo')).status).toBe(404);
  });

  it('keeps a literal + in the path: it is not a space', async () => {
    const { app, log } = await setup();
    const res = await app.request('/repo/delta-indexes/AB/cd+ef_gh.index');
    expect(res.status).toBe(404);
    expect((await errorOf(res)).details.path).toBe('/repo/delta-indexes/AB/cd+ef_gh.index');
    expect(log.at(-1)).toContain('GET /repo/delta-indexes/AB/cd+ef_gh.index 404');
  });

  it('refuses path tricks with 4xx and never reaches a file outside the repository', async () => {
    const { app } = await setup();
    for (const path of [
      '/repo/../../../../etc/passwd',
      '/repo/objects/../../../etc/passwd',
      '/repo/refs/heads/a%2Fb',
      '/repo/refs/heads/..%2F..%2Fconfig',
      '/repo//config',
      '/repo/objects//ab/x.commit',
      '/repo/refs/heads/%252e%252e/config',
      '/repo/%63onfig',
    ]) {
      const res = await app.request(path);
      expect([400, 404], path).toContain(res.status);
      expect(await res.text(), path).not.toContain('root:');
    }
    // The raw request target, as @hono/node-server passes it: dot segments are refused before the
    // URL parser could resolve them into another repository path.
    for (const raw of [
      '/repo/objects/%2e%2e/config',
      '/repo/refs/heads/../../config',
      '/repo/refs/heads/a%2fb',
    ]) {
      const res = await app.request(`http://localhost${raw}`, {}, { incoming: { url: raw } });
      expect(res.status, raw).toBe(400);
      expect((await errorOf(res)).code).toBe('E_USAGE');
    }
  });
});

describe('JSON API: reading', () => {
  it('lists refs and answers one ref, with slashes in its name', async () => {
    const { app, repo } = await setup();
    const a = await commitContent(repo, REF, 'v1');
    expect(await (await app.request('/api/v1/refs')).json()).toEqual({ refs: [{ ref: REF, commit: a }] });
    expect(await (await app.request(`/api/v1/refs/${REF}`)).json()).toEqual({ ref: REF, commit: a });
    const missing = await app.request('/api/v1/refs/stage3-sysroot/none');
    expect(missing.status).toBe(404);
    expect(await errorOf(missing)).toMatchObject({
      code: 'E_REF_NOT_FOUND',
      details: { ref: 'stage3-sysroot/none' },
    });
    const bad = await app.request('/api/v1/refs/.hidden');
    expect(bad.status).toBe(400);
    expect((await errorOf(bad)).code).toBe('E_INVALID_REF');
  });

  it("answers a ref's history newest first, each record with its pin", async () => {
    const { app, repo } = await setup();
    const a = await commitContent(repo, REF, 'v1');
    const b = await commitContent(repo, REF, 'v2');
    const body = (await (await app.request(`/api/v1/log/${REF}`)).json()) as {
      ref: string;
      history: Array<{ seq: number; from: string | null; to: string; pin: string; action: string }>;
    };
    expect(body.ref).toBe(REF);
    expect(body.history.map((r) => [r.seq, r.from, r.to, r.pin, r.action])).toEqual([
      [2, a, b, `${REF}@${b}`, 'commit'],
      [1, null, a, `${REF}@${a}`, 'commit'],
    ]);
    expect((await app.request('/api/v1/log/nope')).status).toBe(404);
  });

  it('describes a commit, and 404/400 for unknown or malformed checksums', async () => {
    const { app, repo } = await setup();
    const a = await commitContent(repo, REF, 'v1');
    const body = await (await app.request(`/api/v1/commits/${a}`)).json();
    expect(body).toEqual({
      commit: a,
      parent: null,
      subject: 'v1',
      body: '',
      timestamp: 1704067200,
      metadata: {},
      totalSize: 2,
      fileCount: 1,
      refs: [REF],
    });
    const unknown = await app.request(`/api/v1/commits/${'0'.repeat(64)}`);
    expect(unknown.status).toBe(404);
    expect((await errorOf(unknown)).code).toBe('E_NOT_FOUND');
    const bad = await app.request('/api/v1/commits/XYZ');
    expect(bad.status).toBe(400);
    expect((await errorOf(bad)).code).toBe('E_INVALID_CHECKSUM');
  });

  it('serves a hand-written OpenAPI 3.1 document listing every route', async () => {
    const { app } = await setup({ anonymousPull: false });
    const res = await app.request('/api/v1/openapi.json');
    expect(res.status).toBe(200);
    const doc = (await res.json()) as typeof OPENAPI;
    expect(doc.openapi).toBe('3.1.0');
    expect(Object.keys(doc.paths).sort()).toEqual(
      [
        '/commits/{sha}',
        '/keys',
        '/log/{ref}',
        '/objects/missing',
        '/objects/{name}',
        '/openapi.json',
        '/packs',
        '/packs/{spec}',
        '/refs',
        '/refs/{ref}',
        '/reset/{ref}',
      ].sort(),
    );
  });

  it('with anonymous pulls off, reads need a token (any valid scope) and bad tokens get 401', async () => {
    const { app, puller, pusher, repo } = await setup({ anonymousPull: false });
    await commitContent(repo, REF, 'v1');
    for (const path of ['/repo/config', `/repo/refs/heads/${REF}`, '/api/v1/refs', `/api/v1/log/${REF}`]) {
      const anon = await app.request(path);
      expect(anon.status, path).toBe(401);
      expect(anon.headers.get('www-authenticate'), path).toContain('Bearer');
      expect((await app.request(path, { headers: auth(puller) })).status, path).toBe(200);
      expect((await app.request(path, { headers: auth(pusher) })).status, path).toBe(200);
    }
    // Basic auth with the token as the password: what stock ostree sends for http://x:TOKEN@host/repo.
    const basic = `Basic ${Buffer.from(`ostree:${puller}`).toString('base64')}`;
    expect((await app.request('/repo/config', { headers: { authorization: basic } })).status).toBe(200);
    expect((await app.request('/repo/config', { headers: auth(`${puller}x`) })).status).toBe(401);
  });
});

describe('JSON API: uploads', () => {
  it('stores a good object (201), accepts it again (200), and serves it', async () => {
    const { app, repo, pusher } = await setup();
    const f = filez('payload '.repeat(1000));
    const put = () =>
      app.request(`/api/v1/objects/${f.checksum}.file`, {
        method: 'PUT',
        headers: auth(pusher),
        body: bin(f.bytes),
      });
    const first = await put();
    expect(first.status).toBe(201);
    expect(await first.json()).toEqual({ checksum: f.checksum, type: 'file', created: true });
    expect((await put()).status).toBe(200);
    expect(readFileSync(join(repo.location, objectPath(f.checksum, 'file'))).equals(f.bytes)).toBe(true);
    expect(readdirSync(join(repo.location, 'tmp')).filter((n) => n.startsWith('tmp-'))).toEqual([]);

    const dirmeta = encodeDirMeta({ uid: 0, gid: 0, mode: 0o40755, xattrs: [] });
    const name = sha256(dirmeta);
    const meta = () =>
      app.request(`/api/v1/objects/${name}.dirmeta`, {
        method: 'PUT',
        headers: auth(pusher),
        body: bin(dirmeta),
      });
    expect((await meta()).status).toBe(201);
    expect((await meta()).status).toBe(200);
  });

  it('refuses bytes that do not hash to the name (400, expected and found) and stores nothing', async () => {
    const { app, repo, pusher } = await setup();
    const good = filez('the real thing');
    const other = filez('something else');
    const res = await app.request(`/api/v1/objects/${good.checksum}.file`, {
      method: 'PUT',
      headers: auth(pusher),
      body: bin(other.bytes),
    });
    expect(res.status).toBe(400);
    const err = await errorOf(res);
    expect(err.code).toBe('E_CORRUPT_OBJECT');
    expect(err.details.expected).toBe(good.checksum);
    expect(err.details.found).toBe(other.checksum);
    expect(await repo.objects.has(good.checksum, 'file')).toBe(false);
    expect(readdirSync(join(repo.location, 'tmp')).filter((n) => n.startsWith('tmp-'))).toEqual([]);

    const dirmeta = encodeDirMeta({ uid: 0, gid: 0, mode: 0o40755, xattrs: [] });
    const wrongName = sha256(Buffer.from('x'));
    const meta = await app.request(`/api/v1/objects/${wrongName}.dirmeta`, {
      method: 'PUT',
      headers: auth(pusher),
      body: bin(dirmeta),
    });
    expect(meta.status).toBe(400);
    expect((await errorOf(meta)).details).toMatchObject({ expected: wrongName, found: sha256(dirmeta) });
    expect(await repo.objects.has(wrongName, 'dirmeta')).toBe(false);
  });

  it('refuses metadata that hashes right but is not in GVariant normal form', async () => {
    const { app, repo, pusher } = await setup();
    const bytes = Buffer.concat([
      encodeDirMeta({ uid: 0, gid: 0, mode: 0o40755, xattrs: [] }),
      Buffer.from([0]),
    ]);
    const res = await app.request(`/api/v1/objects/${sha256(bytes)}.dirmeta`, {
      method: 'PUT',
      headers: auth(pusher),
      body: bin(bytes),
    });
    expect(res.status).toBe(400);
    expect((await errorOf(res)).code).toBe('E_NOT_NORMAL_FORM');
    expect(await repo.objects.has(sha256(bytes), 'dirmeta')).toBe(false);
  });

  it('refuses objects over the size limits with 413', async () => {
    const { app, pusher } = await setup({ limits: { maxFileBytes: 100, maxMetadataBytes: 10 } });
    const f = filez(randomBytes(200).toString('hex'));
    const big = await app.request(`/api/v1/objects/${f.checksum}.file`, {
      method: 'PUT',
      headers: auth(pusher),
      body: bin(f.bytes),
    });
    expect(big.status).toBe(413);
    expect((await errorOf(big)).code).toBe('E_LIMIT');
    const dirmeta = encodeDirMeta({ uid: 0, gid: 0, mode: 0o40755, xattrs: [] });
    const meta = await app.request(`/api/v1/objects/${sha256(dirmeta)}.dirmeta`, {
      method: 'PUT',
      headers: auth(pusher),
      body: bin(dirmeta),
    });
    expect(meta.status).toBe(413);
  });

  it('needs a push or admin token for uploads, and refuses unknown object types', async () => {
    const { app, pusher, puller, otherPusher } = await setup();
    const f = filez('x');
    const url = `/api/v1/objects/${f.checksum}.file`;
    expect((await app.request(url, { method: 'PUT', body: bin(f.bytes) })).status).toBe(401);
    expect(
      (await app.request(url, { method: 'PUT', headers: auth(puller), body: bin(f.bytes) })).status,
    ).toBe(403);
    expect(
      (await app.request(url, { method: 'PUT', headers: auth(otherPusher), body: bin(f.bytes) })).status,
    ).toBe(201);
    const bad = await app.request(`/api/v1/objects/${f.checksum}.filez`, {
      method: 'PUT',
      headers: auth(pusher),
      body: bin(f.bytes),
    });
    expect(bad.status).toBe(400);
    expect((await errorOf(bad)).code).toBe('E_USAGE');
  });

  it('answers which objects of a batch are missing, each once, in request order', async () => {
    const { app, repo } = await setup();
    const c = await commitContent(repo, REF, 'v1');
    const absent = '1'.repeat(64);
    const res = await app.request('/api/v1/objects/missing', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        objects: [
          { checksum: c, type: 'commit' },
          { checksum: absent, type: 'file' },
          { checksum: c, type: 'commitmeta' },
          { checksum: absent, type: 'file' },
        ],
      }),
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      missing: [
        { checksum: absent, type: 'file' },
        { checksum: c, type: 'commitmeta' },
      ],
    });
    const post = (body: string) => app.request('/api/v1/objects/missing', { method: 'POST', body });
    const badSum = await post(JSON.stringify({ objects: [{ checksum: 'abc', type: 'file' }] }));
    expect((await errorOf(badSum)).code).toBe('E_INVALID_CHECKSUM');
    const badType = await post(JSON.stringify({ objects: [{ checksum: absent, type: 'filez' }] }));
    expect(badType.status).toBe(400);
    expect((await errorOf(badType)).message).toContain('objects.0.type');
    expect((await post('{not json')).status).toBe(400);
    const tooMany = { objects: Array.from({ length: 100_001 }, () => ({ checksum: absent, type: 'file' })) };
    expect((await post(JSON.stringify(tooMany))).status).toBe(400);
  });
});

describe('JSON API: moving refs', () => {
  const put = (s: Setup, token: string | undefined, body: unknown, ref = REF) =>
    s.app.request(`/api/v1/refs/${ref}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json', ...(token ? auth(token) : {}) },
      body: JSON.stringify(body),
    });

  it('moves a ref by compare-and-swap, fast-forward only, to a complete commit', async () => {
    const s = await setup();
    const { repo, pusher } = s;
    const c1 = await commitContent(repo, REF, 'v1');
    const c2 = await storeCommit(repo, c1, 'v2');

    const conflict = await put(s, pusher, { from: '9'.repeat(64), to: c2 });
    expect(conflict.status).toBe(409);
    expect(await errorOf(conflict)).toMatchObject({ code: 'E_REF_CONFLICT', details: { found: c1 } });
    const created = await put(s, pusher, { from: null, to: c2 });
    expect((await errorOf(created)).code).toBe('E_REF_CONFLICT');

    const sideways = await storeCommit(repo, null, 'unrelated');
    const nff = await put(s, pusher, { from: c1, to: sideways });
    expect(nff.status).toBe(409);
    expect((await errorOf(nff)).code).toBe('E_NOT_FAST_FORWARD');

    const incomplete = await repo.objects.putMetadata(
      'commit',
      encodeCommit({
        metadata: [],
        parent: c1,
        related: [],
        subject: 'half',
        body: '',
        timestamp: 2,
        rootTree: 'a'.repeat(64),
        rootMeta: (await storeTree(repo, 'x')).rootMeta,
      }),
    );
    const half = await put(s, pusher, { from: c1, to: incomplete });
    expect(half.status).toBe(422);
    expect((await errorOf(half)).code).toBe('E_OBJECT_MISSING');
    expect((await put(s, pusher, { from: c1, to: '8'.repeat(64) })).status).toBe(422);
    expect(await repo.readRef(REF)).toBe(c1);

    const good = await put(s, pusher, { from: c1, to: c2, reason: 'release 2026.1' });
    expect(good.status).toBe(200);
    expect(await good.json()).toEqual({ ref: REF, commit: c2, seq: 2 });
    expect(await (await s.app.request(`/repo/refs/heads/${REF}`)).text()).toBe(`${c2}\n`);
    const summary = decodeSummary(Buffer.from(await (await s.app.request('/repo/summary')).arrayBuffer()));
    expect(summary.refs.map((r) => [r.name, r.checksum])).toEqual([[REF, c2]]);
    const [last] = await repo.log(REF);
    expect(last).toMatchObject({
      action: 'push',
      actor: 'token:release-ci',
      reason: 'release 2026.1',
      from: c1,
      to: c2,
    });
    const info = (await (await s.app.request(`/api/v1/commits/${c2}`)).json()) as {
      refs: string[];
      fileCount: number;
    };
    expect(info).toMatchObject({ refs: [REF], fileCount: 1 });
  });

  it('creates a new ref from null with a parentless commit, the reason defaulting to the subject', async () => {
    const s = await setup();
    const c = await storeCommit(s.repo, null, 'first');
    const res = await put(s, s.pusher, { from: null, to: c });
    expect(res.status).toBe(200);
    expect((await s.repo.log(REF))[0]).toMatchObject({ reason: 'first', seq: 1 });
  });

  it('validates the body: checksums, from present, types', async () => {
    const s = await setup();
    const c1 = await commitContent(s.repo, REF, 'v1');
    const badTo = await put(s, s.pusher, { from: c1, to: 'nope' });
    expect((await errorOf(badTo)).code).toBe('E_INVALID_CHECKSUM');
    const noFrom = await put(s, s.pusher, { to: c1 });
    expect(noFrom.status).toBe(400);
    expect((await errorOf(noFrom)).code).toBe('E_USAGE');
    const badRef = await put(s, s.admin, { from: c1, to: c1 }, 'stage3-sysroot/-x');
    expect((await errorOf(badRef)).code).toBe('E_INVALID_REF');
  });

  it('refuses pushes without a token, with a wrong, revoked or other-glob token, and the ref stays', async () => {
    const s = await setup();
    const { repo, tokens } = s;
    const c1 = await commitContent(repo, REF, 'v1');
    const c2 = await storeCommit(repo, c1, 'v2');
    const body = { from: c1, to: c2 };
    const revoked = await tokens.create({ name: 'old', scopes: ['push:**'] });
    await tokens.revoke(revoked.info.id);
    const wrong = `${s.pusher.slice(0, -3)}${s.pusher.endsWith('AAA') ? 'BBB' : 'AAA'}`;
    const cases: Array<[string, string | undefined, number, string]> = [
      ['no token', undefined, 401, 'E_UNAUTHORIZED'],
      ['wrong secret', wrong, 401, 'E_UNAUTHORIZED'],
      ['garbage', 'hunter2', 401, 'E_UNAUTHORIZED'],
      ['revoked', revoked.token, 401, 'E_UNAUTHORIZED'],
      ['other glob', s.otherPusher, 403, 'E_FORBIDDEN'],
      ['pull only', s.puller, 403, 'E_FORBIDDEN'],
    ];
    for (const [what, token, status, code] of cases) {
      const res = await put(s, token, body);
      expect(res.status, what).toBe(status);
      const text = await res.text();
      expect(JSON.parse(text).error.code, what).toBe(code);
      if (token) expect(text, what).not.toContain(token);
    }
    expect(await repo.readRef(REF)).toBe(c1);
    expect(await repo.log(REF)).toHaveLength(1);
    // The same push with the right token goes through.
    expect((await put(s, s.pusher, body)).status).toBe(200);
  });

  it('rolls back only with admin, only to a commit in the history, only with a reason', async () => {
    const s = await setup();
    const c1 = await commitContent(s.repo, REF, 'v1');
    const c2 = await commitContent(s.repo, REF, 'v2');
    const reset = (token: string | undefined, body: unknown) =>
      s.app.request(`/api/v1/reset/${REF}`, {
        method: 'POST',
        headers: token ? auth(token) : {},
        body: JSON.stringify(body),
      });
    expect((await reset(undefined, { to: c1, reason: 'x' })).status).toBe(401);
    expect((await reset(s.pusher, { to: c1, reason: 'x' })).status).toBe(403);
    expect((await reset(s.admin, { to: c1, reason: '  ' })).status).toBe(400);
    const stranger = await storeCommit(s.repo, null, 'never a head');
    const never = await reset(s.admin, { to: stranger, reason: 'x' });
    expect(never.status).toBe(409);
    expect((await errorOf(never)).code).toBe('E_NOT_IN_HISTORY');
    expect(await s.repo.readRef(REF)).toBe(c2);
    const ok = await reset(s.admin, { to: c1, reason: 'v2 breaks gcc' });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ ref: REF, commit: c1, seq: 3 });
    expect((await s.repo.log(REF))[0]).toMatchObject({
      action: 'reset',
      actor: 'token:admin',
      reason: 'v2 breaks gcc',
    });
    expect(
      (
        await s.app.request(`/api/v1/reset/stage3-sysroot/none`, {
          method: 'POST',
          headers: auth(s.admin),
          body: JSON.stringify({ to: c1, reason: 'x' }),
        })
      ).status,
    ).toBe(404);
  });
});

describe('errors and logs', () => {
  it('turns an unexpected exception into 500 E_INTERNAL without details for the client', async () => {
    const { app, repo, log } = await setup();
    repo.listRefs = async () => {
      throw new Error('disk on fire at /secret/place');
    };
    const res = await app.request('/api/v1/refs');
    expect(res.status).toBe(500);
    const text = await res.text();
    expect(JSON.parse(text).error.code).toBe('E_INTERNAL');
    expect(text).not.toContain('fire');
    expect(text).not.toContain('/secret');
    expect(log.join('\n')).toContain('disk on fire');
  });

  it('answers unknown API routes with a JSON 404', async () => {
    const { app } = await setup();
    const res = await app.request('/api/v1/nope');
    expect(res.status).toBe(404);
    expect((await errorOf(res)).code).toBe('E_NOT_FOUND');
    expect(res.headers.get('content-type')).toContain('application/json');
  });

  it('logs one line per request with method, path, status, bytes and time, and never a token', async () => {
    const { app, log, pusher, repo } = await setup();
    const c = await commitContent(repo, REF, 'v1');
    // A line is written when the body has been sent, so each body is read to the end here.
    await (await app.request(`/repo/config?token=${pusher}`, { headers: auth(pusher) })).text();
    await (await app.request('/repo/config', { method: 'HEAD' })).text();
    const res = await app.request(`/repo/${objectPath(c, 'commit')}`);
    const size = (await res.arrayBuffer()).byteLength;
    await (await app.request('/api/v1/refs', { headers: auth('srt_00000000_nottherealthing') })).text();
    expect(log).toHaveLength(4);
    expect(log[0]).toMatch(/ GET \/repo\/config\?token=srt_REDACTED 200 38 \d+ms$/);
    expect(log[1]).toMatch(/ HEAD \/repo\/config 200 0 \d+ms$/);
    expect(log[2]).toMatch(new RegExp(` GET /repo/${objectPath(c, 'commit')} 200 ${size} \\d+ms$`));
    expect(log[3]).toMatch(/ GET \/api\/v1\/refs 401 \d+ \d+ms$/);
    expect(log.join('\n')).not.toContain(pusher);
  });
});
