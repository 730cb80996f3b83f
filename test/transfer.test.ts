/**
 * Unit tests of the transfer client, cache, remotes and argument handling. The HTTP behaviour
 * (retries, error bodies, timeouts) is tested against tiny node:http servers that misbehave on
 * purpose; push and pull against the real server are in push.test.ts and pull.test.ts.
 */

import { existsSync, mkdirSync, readdirSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { deflateRawSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import type { RegistryError } from '../src/errors.js';
import { contentChecksum, encodeDirMeta, type FileMeta, filezHeader, sha256 } from '../src/objects/index.js';
import { KIND, PackWriter } from '../src/pack/index.js';
import { parseBaseUrl, RegistryClient } from '../src/transfer/client.js';
import { defaultCacheDir, PackCache } from '../src/transfer/pack-cache.js';
import { parsePullSpec } from '../src/transfer/pull.js';
import { commitMetadata } from '../src/transfer/push.js';
import {
  addRemote,
  commandArgs,
  configDir,
  listRemotes,
  resolveRemote,
  resolveTarget,
} from '../src/transfer/remotes.js';
import { forEachLimit, TaskGroup } from '../src/transfer/tasks.js';
import { rejects } from './helpers/expect-code.js';
import { tempDir } from './helpers/repo.js';

const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

async function stub(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  const s = createServer(handler);
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
}

/** A port nothing listens on: bind, note the port, close. */
async function deadPort(): Promise<string> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return `http://127.0.0.1:${port}`;
}

const FAST = { baseDelayMs: 5, maxDelayMs: 20 };

function filezOf(content: string, meta: Partial<FileMeta> = {}): { checksum: string; filez: Buffer } {
  const m: FileMeta = { uid: 0, gid: 0, mode: 0o100644, symlinkTarget: '', xattrs: [], ...meta };
  const payload = Buffer.from(content);
  return {
    checksum: contentChecksum(m, payload),
    // A symlink's .filez has no payload bytes at all (FORMAT.md §3).
    filez: Buffer.concat([
      filezHeader(m, payload.length),
      m.symlinkTarget ? Buffer.alloc(0) : deflateRawSync(payload),
    ]),
  };
}

async function* chunks(b: Buffer, size = 7): AsyncGenerator<Buffer> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size);
}

describe('registry URLs', () => {
  it('puts the API under /api/v1 and OSTree under /repo, keeping a path prefix', () => {
    const c = new RegistryClient('http://127.0.0.1:8080/');
    expect(c.apiUrl('refs/a/b')).toBe('http://127.0.0.1:8080/api/v1/refs/a/b');
    expect(c.repoUrl('config')).toBe('http://127.0.0.1:8080/repo/config');
    expect(parseBaseUrl('https://example.org/sysroots//')).toBe('https://example.org/sysroots');
  });

  it('refuses other schemes, credentials in the URL (without echoing them), and junk', () => {
    expect(() => parseBaseUrl('ftp://x')).toThrow(/http or https/);
    try {
      parseBaseUrl('https://user:hunter2@example.org');
      expect.unreachable();
    } catch (e) {
      expect(JSON.stringify((e as RegistryError).toJSON())).not.toContain('hunter2');
    }
    expect(() => parseBaseUrl('not a url')).toThrow(/not a URL/);
  });
});

describe('client', () => {
  it('retries 5xx with backoff and then succeeds; the token is sent as a Bearer header', async () => {
    let calls = 0;
    let auth: string | undefined;
    const url = await stub((req, res) => {
      calls++;
      auth = req.headers.authorization;
      if (calls < 3) {
        res.statusCode = 503;
        res.end('busy');
        return;
      }
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ ref: 'a', commit: 'a'.repeat(64) }));
    });
    const retries: number[] = [];
    const c = new RegistryClient(url, { ...FAST, token: 'srt_secret', onRetry: (_w, n) => retries.push(n) });
    expect(await c.getRef('a')).toBe('a'.repeat(64));
    expect(calls).toBe(3);
    expect(retries).toEqual([1, 2]);
    expect(auth).toBe('Bearer srt_secret');
    expect(JSON.stringify(c) + inspect(c, { showHidden: true })).not.toContain('srt_secret');
  });

  it('gives up after 5 tries on a dead server with E_IO, never naming the token', async () => {
    const url = await deadPort();
    const retries: string[] = [];
    const c = new RegistryClient(url, {
      ...FAST,
      token: 'srt_topsecret',
      onRetry: (_w, _n, why) => retries.push(why),
    });
    const e = await rejects(c.getRef('a'), 'E_IO');
    expect(retries).toHaveLength(4);
    expect(e.message).toContain('ECONNREFUSED');
    expect(JSON.stringify(e.toJSON()) + e.message + String(e.stack)).not.toContain('topsecret');
  });

  it('turns a JSON error body back into the server RegistryError, without retrying 4xx', async () => {
    let calls = 0;
    const url = await stub((_req, res) => {
      calls++;
      res.statusCode = 409;
      res.setHeader('content-type', 'application/json');
      res.end(
        JSON.stringify({
          error: { code: 'E_REF_CONFLICT', message: 'ref a moved', details: { ref: 'a', found: 'x' } },
        }),
      );
    });
    const e = await rejects(
      new RegistryClient(url, FAST).moveRef('a', null, 'b'.repeat(64)),
      'E_REF_CONFLICT',
    );
    expect(e.message).toBe('ref a moved');
    expect(e.details).toEqual({ ref: 'a', found: 'x' });
    expect(calls).toBe(1);
  });

  it('maps statuses of non-JSON errors, and a ref 404 to "no ref"', async () => {
    const url = await stub((req, res) => {
      if (req.url?.startsWith('/api/v1/refs/')) {
        res.statusCode = 404;
        res.end(JSON.stringify({ error: { code: 'E_REF_NOT_FOUND', message: 'no', details: {} } }));
      } else {
        res.statusCode = 401;
        res.end('go away');
      }
    });
    const c = new RegistryClient(url, FAST);
    expect(await c.getRef('nope')).toBeNull();
    await rejects(c.log('nope'), 'E_UNAUTHORIZED');
    await rejects(
      c.fetchObject('a'.repeat(64), 'commit', async () => 0),
      'E_UNAUTHORIZED',
    );
  });

  it('aborts an attempt that makes no progress for the idle timeout, then retries it', async () => {
    let calls = 0;
    const url = await stub((_req, res) => {
      calls++;
      if (calls === 1) return; // never answer
      res.end(JSON.stringify({ ref: 'a', commit: 'c'.repeat(64) }));
    });
    const c = new RegistryClient(url, { ...FAST, idleTimeoutMs: 200 });
    expect(await c.getRef('a')).toBe('c'.repeat(64));
    expect(calls).toBe(2);
  });

  it('streams a body from a factory, again on a retry, with its length', async () => {
    const seen: Array<{ len: string | undefined; bytes: number }> = [];
    const url = await stub((req, res) => {
      let n = 0;
      req.on('data', (c: Buffer) => {
        n += c.length;
      });
      req.on('end', () => {
        seen.push({ len: req.headers['content-length'], bytes: n });
        res.statusCode = seen.length === 1 ? 502 : 201;
        res.end();
      });
    });
    const data = Buffer.alloc(100_000, 7);
    const created = await new RegistryClient(url, FAST).putObject(
      'd'.repeat(64),
      'file',
      () => chunks(data, 4096),
      data.length,
    );
    expect(created).toBe(true);
    expect(seen).toEqual([
      { len: '100000', bytes: 100_000 },
      { len: '100000', bytes: 100_000 },
    ]);
  });

  it('names the object when the server lacks it', async () => {
    const url = await stub((_req, res) => {
      res.statusCode = 404;
      res.end();
    });
    const e = await rejects(
      new RegistryClient(url, FAST).fetchObject('e'.repeat(64), 'dirtree', async () => 0),
      'E_OBJECT_MISSING',
    );
    expect(e.details.object).toBe(`${'e'.repeat(64)}.dirtree`);
  });
});

describe('cache directory', () => {
  it('lives under $SYSROOT_CACHE_DIR or $XDG_CACHE_HOME/sysroot-registry/objects', () => {
    expect(defaultCacheDir({ SYSROOT_CACHE_DIR: '/x/y' })).toBe('/x/y');
    expect(defaultCacheDir({ XDG_CACHE_HOME: '/c' })).toBe('/c/sysroot-registry/objects');
  });
});

/** A small verified pack: its bytes and index, as PackWriter makes them. */
async function smallPack(text: string) {
  const chunks: Buffer[] = [];
  const w = new PackWriter(async (c) => void chunks.push(c), { threads: false });
  const dm = encodeDirMeta({ uid: 0, gid: 0, mode: 0o40755, xattrs: [] });
  await w.add(KIND.dirmeta, sha256(dm), dm);
  const f = filezOf(text);
  await w.addContent(
    f.checksum,
    { uid: 0, gid: 0, mode: 0o100644, symlinkTarget: '', xattrs: [] },
    Buffer.from(text),
  );
  const { index } = await w.finish();
  return { bytes: Buffer.concat(chunks), index };
}

describe('pack cache', () => {
  it('lives in packs/ of the cache directory; a pack enters under its name only when kept', async () => {
    const dir = join(tempDir(), 'cache');
    const cache = await PackCache.open(dir);
    expect(readdirSync(join(dir, 'packs')).sort()).toEqual(['checkouts', 'commits', 'tmp']);
    const { bytes, index } = await smallPack('hello');
    const t = cache.begin();
    t.write(bytes.subarray(0, 10));
    t.write(bytes.subarray(10));
    expect(readdirSync(join(dir, 'packs', 'tmp'))).toHaveLength(1);
    expect(await t.keep(index)).toBe(index.checksum);
    expect(
      readdirSync(join(dir, 'packs'))
        .filter((n) => n.includes('.'))
        .sort(),
    ).toEqual([`${index.checksum}.idx`, `${index.checksum}.pack`]);
    expect(readdirSync(join(dir, 'packs', 'tmp'))).toEqual([]);
    const dropped = cache.begin();
    dropped.write(bytes);
    await dropped.drop();
    expect(readdirSync(join(dir, 'packs', 'tmp'))).toEqual([]);
    const source = await cache.source([index.checksum]);
    expect(source.has(index.records[1]!.checksum, KIND.content)).toBe(true);
    await source.close();
  });

  it('catalogues complete commits, finds the newest of a ref, and evicts a pack with its entries', async () => {
    const cache = await PackCache.open(join(tempDir(), 'cache'));
    const [a, b, c, p, q] = ['a', 'b', 'c', 'd', 'e'].map((x) => x.repeat(64)) as [
      string,
      string,
      string,
      string,
      string,
    ];
    await cache.addCommit({ commit: a, ref: 'r/x', timestamp: 10, packs: [p] });
    await cache.addCommit({ commit: b, ref: 'r/x', timestamp: 20, packs: [p, q] });
    await cache.addCommit({ commit: c, ref: 'r/y', timestamp: 30, packs: [q] });
    expect((await cache.complete(b))?.packs).toEqual([p, q]);
    expect((await cache.newestOf('r/x', 'f'.repeat(64)))?.commit).toBe(b);
    expect((await cache.newestOf('r/x', b))?.commit).toBe(a);
    expect(await cache.newestOf('r/z', a)).toBeUndefined();
    // A damaged entry is no entry; a pack named by something other than a checksum is refused.
    writeFileSync(join(cache.dir, 'commits', `${a}.json`), '{"commit": "');
    expect(await cache.complete(a)).toBeUndefined();
    await cache.addCommit({ commit: a, ref: 'r/x', timestamp: 10, packs: ['../../etc'] });
    expect(await cache.complete(a)).toBeUndefined();
    await cache.evict(q);
    expect(await cache.complete(b)).toBeUndefined();
    expect(await cache.complete(c)).toBeUndefined();
    // A catalogued pack that is gone reads as damaged, naming it, so the pull fetches it again.
    const e = await rejects(cache.source([p]), 'E_BAD_PACK');
    expect(e.details.pack).toBe(p);
  });

  it('recognises its own untouched checkout by path, inode and mtime 0, and nothing else', async () => {
    const cache = await PackCache.open(join(tempDir(), 'cache'));
    const dest = join(tempDir(), 'co');
    mkdirSync(dest);
    writeFileSync(join(dest, 'f'), 'x');
    utimesSync(dest, 0, 0);
    const commit = 'c'.repeat(64);
    expect(await cache.checkoutAt(dest, statSync(dest))).toBeUndefined();
    await cache.recordCheckout(dest, commit, statSync(dest));
    expect(await cache.checkoutAt(dest, statSync(dest))).toBe(commit);
    expect(await cache.checkoutAt(dest, { ...statSync(dest), ino: statSync(dest).ino + 1 })).toBeUndefined();
    utimesSync(dest, 5, 5);
    expect(await cache.checkoutAt(dest, statSync(dest))).toBeUndefined();
  });

  it('removes temp files left by processes that are gone', async () => {
    const dir = join(tempDir(), 'cache');
    await PackCache.open(dir);
    const stale = join(dir, 'packs', 'tmp', 'tmp-999999999-0123');
    writeFileSync(stale, 'half a pack');
    await PackCache.open(dir);
    expect(existsSync(stale)).toBe(false);
  });
});

describe('remotes', () => {
  it('adds, replaces, lists and resolves remotes in $SYSROOT_CONFIG_DIR/remotes.json', async () => {
    const file = join(tempDir(), 'cfg', 'remotes.json');
    await addRemote('origin', 'http://127.0.0.1:1/', file);
    await addRemote('backup', 'https://b.example.org/sysroots', file);
    await addRemote('origin', 'http://127.0.0.1:2', file);
    expect(await listRemotes(file)).toEqual([
      { name: 'backup', url: 'https://b.example.org/sysroots' },
      { name: 'origin', url: 'http://127.0.0.1:2' },
    ]);
    expect(await resolveRemote('origin', file)).toBe('http://127.0.0.1:2');
    const e = await rejects(resolveRemote('nope', file), 'E_USAGE');
    expect(e.hint).toContain('backup, origin');
    await rejects(addRemote('-bad', 'http://x', file), 'E_USAGE');
    await rejects(addRemote('ok', 'file:///x', file), 'E_USAGE');
    expect(configDir({ XDG_CONFIG_HOME: '/h/.cfg' })).toBe('/h/.cfg/sysroot-registry');
  });

  it('reads the first positional as a remote only when --url is absent and the count says so', async () => {
    const file = join(tempDir(), 'remotes.json');
    await addRemote('prod', 'http://10.0.0.1:8080', file);
    expect(await resolveTarget(['src'], 'http://h:1', 1, 'u', file)).toEqual({
      url: 'http://h:1',
      args: ['src'],
    });
    expect(await resolveTarget(['prod', 'src'], undefined, 1, 'u', file)).toEqual({
      url: 'http://10.0.0.1:8080',
      args: ['src'],
    });
    await rejects(resolveTarget(['src'], undefined, 1, 'u', file), 'E_USAGE');
    await rejects(resolveTarget(['prod', 'src'], 'http://h:1', 1, 'u', file), 'E_USAGE');
    await rejects(resolveTarget(['nope', 'a', 'b'], undefined, 2, 'u', file), 'E_USAGE');
  });

  it('splits commander action arguments into positionals and flags', () => {
    expect(commandArgs([undefined, 'src', { url: 'u' }, {}])).toEqual({
      positionals: ['src'],
      flags: { url: 'u' },
    });
    expect(commandArgs([['r', 'a', 'b'], { json: true }])).toEqual({
      positionals: ['r', 'a', 'b'],
      flags: { json: true },
    });
  });
});

describe('specs, metadata and tasks', () => {
  it('parses REF, REF@SHA and SHA', () => {
    const sha = 'a'.repeat(64);
    expect(parsePullSpec('x/y')).toEqual({ ref: 'x/y', pin: null });
    expect(parsePullSpec(`x/y@${sha}`)).toEqual({ ref: 'x/y', pin: sha });
    expect(parsePullSpec(sha)).toEqual({ ref: null, pin: sha });
    expect(() => parsePullSpec('x@abc')).toThrow(/64-character/);
  });

  it('orders commit metadata as Repository.commit does and refuses duplicate keys', () => {
    const m = commitMetadata('r', [], ['/dev/null'], true);
    expect(m.map(([k]) => k)).toEqual(['sysroot.skipped-special', 'ostree.ref-binding']);
    expect(() => commitMetadata('r', m, [], true)).toThrow(/more than once/);
  });

  it('bounds concurrency and reports the first failure after everything settled', async () => {
    let running = 0;
    let peak = 0;
    const done: number[] = [];
    await forEachLimit([...Array(50).keys()], 4, async (i) => {
      running++;
      peak = Math.max(peak, running);
      await new Promise((r) => setTimeout(r, 1));
      running--;
      done.push(i);
    });
    expect(peak).toBe(4);
    expect(done).toHaveLength(50);

    const g = new TaskGroup(2);
    let settled = 0;
    for (let i = 0; i < 10; i++) {
      g.spawn(() =>
        g.slot(async () => {
          await new Promise((r) => setTimeout(r, 2));
          settled++;
          if (i === 1) throw new Error('boom');
        }),
      );
    }
    await expect(g.wait()).rejects.toThrow('boom');
    expect(running).toBe(0);
    expect(settled).toBeLessThan(10);
  });
});
