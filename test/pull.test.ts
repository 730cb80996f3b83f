import { createHash, randomBytes } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import type { AddressInfo } from 'node:net';
import { basename, dirname, join } from 'node:path';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { type ServerType, serve } from '@hono/node-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../server/app.js';
import { TokenStore } from '../src/auth/tokens.js';
import { type Checksum, decodeDirTree, objectPath, parseFilezHeader } from '../src/objects/index.js';
import { Repository } from '../src/repo/repository.js';
import { remoteLog } from '../src/transfer/client.js';
import { pull } from '../src/transfer/pull.js';
import { push } from '../src/transfer/push.js';
import { sysrootAsync } from './helpers/cli.js';
import { rejects } from './helpers/expect-code.js';
import { type PackOptions, packResponse } from './helpers/pack-server.js';
import { tempDir } from './helpers/repo.js';

interface Registry {
  url: string;
  repo: Repository;
  tokens: TokenStore;
  requests: Array<{ method: string; path: string }>;
  /** Answer a request instead of the app (fault injection), or undefined to pass it on. */
  intercept?: (req: { method: string; path: string }) => Response | undefined;
  /**
   * Answer the pack routes from test/helpers/pack-server.ts instead of the server (which verifies
   * what it packs): a server whose store is damaged, or that tampers with a record.
   */
  packs?: PackOptions;
  close(): Promise<void>;
}

async function startRegistry(): Promise<Registry> {
  const repo = await Repository.init(join(tempDir('sysroot-pull-srv-'), 'repo'));
  const tokens = TokenStore.forRepo(repo);
  const app = createApp({ repo, tokens, anonymousPull: true });
  const reg = { repo, tokens, requests: [] } as unknown as Registry;
  const server: ServerType = await new Promise((resolve) => {
    const s = serve(
      {
        fetch: async (req: Request) => {
          const q = { method: req.method, path: new URL(req.url).pathname };
          reg.requests.push(q);
          const bad = reg.packs ? await packResponse(repo, q.path, reg.packs) : undefined;
          return reg.intercept?.(q) ?? bad ?? app.fetch(req);
        },
        hostname: '127.0.0.1',
        port: 0,
      },
      () => resolve(s),
    );
  });
  reg.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  reg.close = () =>
    new Promise<void>((r) => {
      server.close(() => r());
      repo.close();
    });
  return reg;
}

function makeTree(version: string): string {
  const dir = join(tempDir('sysroot-pull-src-'), 'tree');
  mkdirSync(join(dir, 'usr/lib'), { recursive: true });
  mkdirSync(join(dir, 'etc'), { recursive: true });
  mkdirSync(join(dir, 'var/empty'), { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, 'etc/os-release'), `VERSION=${version}\n`);
  writeFileSync(join(dir, 'etc/empty'), '');
  // 9 MiB of random bytes (incompressible): above push's 4 MiB and pull's 8 MiB in-memory limits, so
  // it is uploaded from a stream and verified while streaming into the cache.
  writeFileSync(join(dir, 'usr/lib/libbig.so'), randomBytes(9 * 1024 * 1024));
  writeFileSync(join(dir, 'usr/lib/libc.so.6'), Buffer.alloc(200_000, version.charCodeAt(0)));
  writeFileSync(join(dir, 'usr/bin-tool'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
  symlinkSync('libc.so.6', join(dir, 'usr/lib/libc.so'));
  for (let i = 0; i < 40; i++) writeFileSync(join(dir, `usr/lib/f${i}.txt`), `${version} ${i}\n`);
  return dir;
}

/** path → type, permission bits and content hash (or link target): what a pull must reproduce. */
function snapshot(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string): void => {
    const p = join(root, rel);
    const st = lstatSync(p);
    const perm = (st.mode & 0o7777).toString(8);
    if (st.isSymbolicLink()) out[rel] = `l ${readlinkSync(p)}`;
    else if (st.isFile())
      out[rel] = `f ${perm} ${createHash('sha256').update(readFileSync(p)).digest('hex')}`;
    else {
      out[rel] = `d ${perm}`;
      for (const name of readdirSync(p).sort()) walk(rel ? `${rel}/${name}` : name);
    }
  };
  walk('');
  return out;
}

/** The content checksum of the file at `path` in a server commit. */
async function fileObject(repo: Repository, commit: Checksum, path: string): Promise<Checksum> {
  let tree = (await repo.readCommit(commit)).rootTree;
  const parts = path.split('/');
  for (const dir of parts.slice(0, -1)) {
    const t = decodeDirTree(await repo.objects.getMetadata(tree, 'dirtree'));
    tree = t.dirs.find((d) => d.name === dir)!.tree;
  }
  const t = decodeDirTree(await repo.objects.getMetadata(tree, 'dirtree'));
  return t.files.find((f) => f.name === parts.at(-1))!.checksum;
}

/** What the pack cache holds: packs, indexes, catalogued commits, temp files. */
function cacheFiles(cacheDir: string): { packs: string[]; commits: string[]; tmp: string[] } {
  const dir = join(cacheDir, 'packs');
  const ls = (d: string): string[] => (existsSync(d) ? readdirSync(d).sort() : []);
  return {
    packs: ls(dir).filter((n) => n.endsWith('.pack') || n.endsWith('.idx')),
    commits: ls(join(dir, 'commits')),
    tmp: ls(join(dir, 'tmp')),
  };
}

async function cli(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = await sysrootAsync(args, env);
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const REF = 'stage3-sysroot/x86_64';
const FAST = { baseDelayMs: 5, maxDelayMs: 20 };
const newCache = (): string => join(tempDir('sysroot-pull-cache-'), 'cache');
const newDest = (): string => join(tempDir('sysroot-pull-dest-'), 'sysroot');

describe('pull', () => {
  let reg: Registry;
  let token: string;
  let v1: string;
  let v2: string;
  let src1: string;
  let src2: string;
  const saved = { ...process.env };
  const paths = (): string[] => reg.requests.map((q) => q.path);

  beforeAll(async () => {
    reg = await startRegistry();
    token = (await reg.tokens.create({ name: 'ci', scopes: ['push:stage3-sysroot/*'] })).token;
    process.env.SYSROOT_CACHE_DIR = newCache();
    process.env.SYSROOT_CONFIG_DIR = join(tempDir('sysroot-pull-cfg-'), 'cfg');
    delete process.env.SYSROOT_TOKEN;
    src1 = makeTree('1');
    src2 = makeTree('2');
    // Pushed from their own cache, so pulls start cold.
    v1 = (await push(reg.url, token, src1, { ref: REF, subject: 'v1' }, { ...FAST, cacheDir: newCache() }))
      .commit;
    v2 = (await push(reg.url, token, src2, { ref: REF, subject: 'v2' }, { ...FAST, cacheDir: newCache() }))
      .commit;
  });

  afterAll(async () => {
    process.env = saved;
    await reg?.close();
  });

  it('pulls a ref cold in 2 requests (the ref, one pack); a second pull needs only the ref', async () => {
    const cacheDir = newCache();
    const dest = newDest();
    reg.requests.length = 0;
    const r = await pull(reg.url, REF, dest, { ...FAST, cacheDir });
    expect(paths()).toEqual([`/api/v1/refs/${REF}`, `/api/v1/packs/${v2}`]);
    expect(r.commit).toBe(v2);
    expect(r.ref).toBe(REF);
    expect(r.cached).toBe(0);
    expect(r.fetched.objects).toBeGreaterThan(40);
    expect(snapshot(dest)).toEqual(snapshot(src2));
    const files = cacheFiles(cacheDir);
    expect(files.packs).toHaveLength(2);
    expect(files.commits).toEqual([`${v2}.json`]);
    expect(files.tmp).toEqual([]);

    reg.requests.length = 0;
    const again = await pull(reg.url, REF, newDest(), { ...FAST, cacheDir });
    expect(again.fetched).toEqual({ objects: 0, bytes: 0 });
    expect(again.cached).toBe(r.fetched.objects);
    expect(paths()).toEqual([`/api/v1/refs/${REF}`]);

    // A pinned SHA whose closure is cached needs no server at all.
    reg.requests.length = 0;
    const pinned = await pull(reg.url, v2, newDest(), { ...FAST, cacheDir });
    expect(pinned.commit).toBe(v2);
    expect(reg.requests).toEqual([]);
  });

  it('pulls REF@OLD, then the new head as an update pack from it, and a bare SHA', async () => {
    const cacheDir = newCache();
    const dest = newDest();
    const r = await pull(reg.url, `${REF}@${v1}`, dest, { ...FAST, cacheDir });
    expect(r.commit).toBe(v1);
    expect(snapshot(dest)).toEqual(snapshot(src1));

    // v2 differs from v1 in os-release, libbig.so, libc.so.6 and 40 small files, plus trees and the commit.
    reg.requests.length = 0;
    const upDest = newDest();
    const u = await pull(reg.url, REF, upDest, { ...FAST, cacheDir });
    expect(paths()).toEqual([`/api/v1/refs/${REF}`, `/api/v1/packs/${v1}..${v2}`]);
    expect(snapshot(upDest)).toEqual(snapshot(src2));
    expect(u.cached).toBeGreaterThan(0);
    expect(u.fetched.objects).toBeLessThan(r.fetched.objects);
    expect(u.fetched.bytes).toBeLessThan(r.fetched.bytes);
    expect(cacheFiles(cacheDir).commits).toEqual([`${v1}.json`, `${v2}.json`].sort());

    const byShaDest = newDest();
    const s = await pull(reg.url, v1, byShaDest, { ...FAST, cacheDir });
    expect(s.ref).toBeNull();
    expect(s.fetched.objects).toBe(0);
    expect(snapshot(byShaDest)).toEqual(snapshot(src1));
  });

  it('writes the same tree with file batches and the pack decoded ahead (native/files, native/zstd) and without either (SYSROOT_NATIVE_FILES=0, SYSROOT_NATIVE_ZSTD=0)', async () => {
    // Setuid and read-only files, a 0700 directory, symlinks, an empty file, a file bigger than a
    // batch copies (9 MiB, written by the checkout itself) and many small ones; cold and from the
    // cache, each way. Every entry's mtime is 0 either way.
    const src = makeTree('3');
    writeFileSync(join(src, 'usr/suid-tool'), '#!/bin/sh\n', { mode: 0o755 });
    chmodSync(join(src, 'usr/suid-tool'), 0o4755);
    writeFileSync(join(src, 'etc/read-only'), 'ro\n', { mode: 0o444 });
    for (let i = 0; i < 150; i++) symlinkSync(`f${i % 40}.txt`, join(src, `usr/lib/l${i}`));
    const ref = 'stage3-sysroot/batches';
    const c = (await push(reg.url, token, src, { ref, subject: 'b' }, { ...FAST, cacheDir: newCache() }))
      .commit;
    const mtimes = (root: string): number[] => {
      const out: number[] = [];
      const walk = (p: string): void => {
        const st = lstatSync(p);
        out.push(st.mtimeMs);
        if (st.isDirectory()) for (const n of readdirSync(p)) walk(join(p, n));
      };
      walk(root);
      return [...new Set(out)];
    };
    const before = [process.env.SYSROOT_NATIVE_FILES, process.env.SYSROOT_NATIVE_ZSTD];
    const set = (name: string, value: string | undefined) => {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    };
    try {
      for (const setting of [undefined, '0']) {
        set('SYSROOT_NATIVE_FILES', setting);
        set('SYSROOT_NATIVE_ZSTD', setting);
        const cacheDir = newCache();
        for (const from of ['the pack', 'the cache']) {
          const dest = newDest();
          const r = await pull(reg.url, ref, dest, { ...FAST, cacheDir });
          expect(r.commit, `${setting} ${from}`).toBe(c);
          expect(snapshot(dest), `SYSROOT_NATIVE_FILES=SYSROOT_NATIVE_ZSTD=${setting} from ${from}`).toEqual(
            snapshot(src),
          );
          expect(mtimes(dest)).toEqual([0]);
          expect(r.files + r.symlinks).toBe(
            Object.values(snapshot(src)).filter((v) => !v.startsWith('d')).length,
          );
        }
      }
    } finally {
      set('SYSROOT_NATIVE_FILES', before[0]);
      set('SYSROOT_NATIVE_ZSTD', before[1]);
    }
  });

  it('asks for the whole closure when the server does not have the cached commit complete', async () => {
    const cacheDir = newCache();
    await pull(reg.url, `${REF}@${v1}`, newDest(), { ...FAST, cacheDir });
    reg.intercept = (q) =>
      q.path === `/api/v1/packs/${v1}..${v2}`
        ? Response.json(
            { error: { code: 'E_NOT_FOUND', message: 'no', details: { commit: v1 } } },
            { status: 404 },
          )
        : undefined;
    try {
      reg.requests.length = 0;
      const dest = newDest();
      await pull(reg.url, REF, dest, { ...FAST, cacheDir });
      expect(paths()).toEqual([`/api/v1/refs/${REF}`, `/api/v1/packs/${v1}..${v2}`, `/api/v1/packs/${v2}`]);
      expect(snapshot(dest)).toEqual(snapshot(src2));
    } finally {
      reg.intercept = undefined;
    }
  });

  it('refuses a pin that was never a head of the ref, and a ref that does not exist', async () => {
    await push(reg.url, token, src1, { ref: 'stage3-sysroot/other', subject: 'o' }, FAST);
    const other = (await reg.repo.readRef('stage3-sysroot/other'))!;
    const dest = newDest();
    const e = await rejects(
      pull(reg.url, `${REF}@${other}`, dest, { ...FAST, cacheDir: newCache() }),
      'E_NOT_IN_HISTORY',
    );
    expect(e.message).toContain(other);
    await rejects(pull(reg.url, 'no/such-ref', dest, { ...FAST, cacheDir: newCache() }), 'E_REF_NOT_FOUND');
    expect(existsSync(dest)).toBe(false);
  });

  it('fails when the commit the server sends does not hash to the pin, naming both', async () => {
    // Plant v2's bytes under a name they do not hash to (what a substituted commit looks like).
    const fake = createHash('sha256').update('not a commit').digest('hex');
    const target = join(reg.repo.location, objectPath(fake, 'commit'));
    mkdirSync(dirname(target), { recursive: true });
    copyFileSync(join(reg.repo.location, objectPath(v2, 'commit')), target);
    const cacheDir = newCache();
    const dest = newDest();
    // The server checks what it packs; this one sends what it has, as a substituting server would.
    reg.packs = {};
    try {
      const e = await rejects(pull(reg.url, fake, dest, { ...FAST, cacheDir }), 'E_PIN_MISMATCH');
      expect(e.details).toMatchObject({ expected: fake, found: v2 });
      expect(e.message).toContain(fake);
      expect(e.message).toContain(v2);
      expect(existsSync(dest)).toBe(false);
      expect(cacheFiles(cacheDir)).toEqual({ packs: [], commits: [], tmp: [] });
    } finally {
      reg.packs = undefined;
    }
  });

  it('fails naming a corrupt object on the server: nothing at DEST, nothing cached (exit 4)', async () => {
    expect((await cli(['remote', 'add', 'corrupt', reg.url])).code).toBe(0);
    // A server that packs its objects unverified (the real one refuses to, naming the object).
    reg.packs = {};
    for (const file of ['usr/lib/libc.so.6', 'usr/lib/libbig.so']) {
      const bad = await fileObject(reg.repo, v2, file);
      const path = join(reg.repo.location, objectPath(bad, 'file'));
      const good = readFileSync(path);
      // The stored bytes of another payload under this name: one byte of the file flipped. (A byte
      // flipped in the deflate stream itself may decode to the same file: 200,000 equal bytes are
      // matches at distance 1, and a flip that makes it distance 2 copies the same bytes.)
      const h = parseFilezHeader(good)!;
      const payload = inflateRawSync(good.subarray(h.headerLength));
      payload[payload.length - 100]! ^= 0x55;
      const flipped = Buffer.concat([good.subarray(0, h.headerLength), deflateRawSync(payload)]);
      writeFileSync(path, flipped);
      try {
        const cacheDir = newCache();
        const dest = newDest();
        const e = await rejects(pull(reg.url, REF, dest, { ...FAST, cacheDir }), 'E_CORRUPT_OBJECT');
        expect(e.message).toContain(`${bad}.file`);
        expect(e.details.object).toBe(`${bad}.file`);
        expect(existsSync(dest)).toBe(false);
        expect(readdirSync(dirname(dest))).toEqual([]);
        expect(cacheFiles(cacheDir)).toEqual({ packs: [], commits: [], tmp: [] });

        const c = await cli(['pull', 'corrupt', REF, newDest()], { SYSROOT_CACHE_DIR: newCache() });
        expect(c.code).toBe(4);
        expect(c.stderr).toContain(`${bad}.file`);
      } finally {
        writeFileSync(path, good);
      }
    }
    reg.packs = undefined;
  });

  it('fails naming the object when the pack itself was tampered with, caching nothing', async () => {
    const victim = await fileObject(reg.repo, v2, 'usr/lib/f7.txt');
    reg.packs = { tamper: victim };
    try {
      const cacheDir = newCache();
      const dest = newDest();
      const e = await rejects(pull(reg.url, REF, dest, { ...FAST, cacheDir }), 'E_CORRUPT_OBJECT');
      expect(e.details.object).toBe(`${victim}.file`);
      expect(e.message).toContain(`${victim}.file`);
      expect(existsSync(dest)).toBe(false);
      expect(readdirSync(dirname(dest))).toEqual([]);
      expect(cacheFiles(cacheDir)).toEqual({ packs: [], commits: [], tmp: [] });
    } finally {
      reg.packs = undefined;
    }
  });

  it('retries 5xx answers, and a failed update pull resumes from what is cached', async () => {
    const cacheDir = newCache();
    const packPath = `/api/v1/packs/${v2}`;
    let failures = 0;
    reg.intercept = (q) => {
      if (q.path === packPath && failures < 2) {
        failures++;
        return new Response('busy', { status: 503 });
      }
      return undefined;
    };
    const retries: string[] = [];
    try {
      const r = await pull(reg.url, REF, newDest(), { ...FAST, cacheDir, onRetry: (w) => retries.push(w) });
      expect(r.commit).toBe(v2);
      expect(retries).toEqual([`GET ${packPath}`, `GET ${packPath}`]);

      // With v1 cached, the update pack is unavailable for good: the pull fails, v1 stays cached.
      const warm = newCache();
      await pull(reg.url, `${REF}@${v1}`, newDest(), { ...FAST, cacheDir: warm });
      const update = `/api/v1/packs/${v1}..${v2}`;
      reg.intercept = (q) => (q.path === update ? new Response('down', { status: 503 }) : undefined);
      const dest = newDest();
      const e = await rejects(pull(reg.url, REF, dest, { ...FAST, cacheDir: warm }), 'E_IO');
      expect(e.message).toContain(update.slice('/api/v1/'.length));
      expect(existsSync(dest)).toBe(false);
      expect(cacheFiles(warm).commits).toEqual([`${v1}.json`]);
      expect(cacheFiles(warm).tmp).toEqual([]);

      reg.intercept = undefined;
      reg.requests.length = 0;
      const resumed = await pull(reg.url, REF, dest, { ...FAST, cacheDir: warm });
      expect(paths()).toEqual([`/api/v1/refs/${REF}`, update]);
      expect(resumed.cached).toBeGreaterThan(0);
      expect(resumed.cached + resumed.fetched.objects).toBe(r.fetched.objects);
      expect(snapshot(dest)).toEqual(snapshot(src2));
    } finally {
      reg.intercept = undefined;
    }
  });

  it('fetches a pack again when the connection is cut halfway, leaving nothing behind', async () => {
    const packPath = `/api/v1/packs/${v2}`;
    const full = Buffer.from(await (await fetch(`${reg.url}${packPath}`)).arrayBuffer());
    let cuts = 0;
    reg.intercept = (q) => {
      if (q.path !== packPath || cuts > 0) return undefined;
      cuts++;
      const body = new ReadableStream<Uint8Array>({
        start(c) {
          c.enqueue(new Uint8Array(full.subarray(0, full.length >> 1)));
          setTimeout(() => c.error(new Error('cut')), 20);
        },
      });
      return new Response(body, { headers: { 'content-length': String(full.length) } });
    };
    try {
      const cacheDir = newCache();
      const dest = newDest();
      const retries: string[] = [];
      const r = await pull(reg.url, REF, dest, { ...FAST, cacheDir, onRetry: (w) => retries.push(w) });
      expect(retries).toEqual([`GET ${packPath}`]);
      expect(r.fetched.bytes).toBe(full.length);
      expect(snapshot(dest)).toEqual(snapshot(src2));
      expect(readdirSync(dirname(dest))).toEqual([basename(dest)]);
      expect(cacheFiles(cacheDir).tmp).toEqual([]);
    } finally {
      reg.intercept = undefined;
    }
  });

  it('evicts a damaged cached pack or index and fetches the pack again', async () => {
    for (const damage of ['pack', 'idx'] as const) {
      const cacheDir = newCache();
      await pull(reg.url, REF, newDest(), { ...FAST, cacheDir });
      const name = cacheFiles(cacheDir).packs.find((n) => n.endsWith(`.${damage}`))!;
      const file = join(cacheDir, 'packs', name);
      const bytes = readFileSync(file);
      bytes[Math.floor(bytes.length / 2)]! ^= 0x55;
      writeFileSync(file, bytes);
      const notes: string[] = [];
      const dest = newDest();
      reg.requests.length = 0;
      const r = await pull(reg.url, REF, dest, { ...FAST, cacheDir, onNote: (l) => notes.push(l) });
      expect(r.fetched.objects).toBeGreaterThan(40);
      expect(paths()).toEqual([`/api/v1/refs/${REF}`, `/api/v1/packs/${v2}`]);
      expect(notes.join('\n')).toContain(`pack ${name.slice(0, 64)} in the local cache is damaged`);
      expect(snapshot(dest)).toEqual(snapshot(src2));
      expect(readFileSync(file)).not.toEqual(bytes);
    }
  });

  it("does nothing when DEST already is this cache's checkout of the commit; refuses anything else", async () => {
    const cacheDir = newCache();
    const dest = newDest();
    await pull(reg.url, REF, dest, { ...FAST, cacheDir });
    reg.requests.length = 0;
    const r = await pull(reg.url, REF, dest, { ...FAST, cacheDir });
    expect(r).toMatchObject({ commit: v2, noop: true, fetched: { objects: 0, bytes: 0 }, files: 0 });
    expect(paths()).toEqual([`/api/v1/refs/${REF}`]);
    reg.requests.length = 0;
    expect((await pull(reg.url, v2, dest, { ...FAST, cacheDir })).noop).toBe(true);
    expect(reg.requests).toEqual([]);
    const c = await cli(['pull', '--url', reg.url, REF, dest], { SYSROOT_CACHE_DIR: cacheDir });
    expect({ code: c.code, stdout: c.stdout.trim() }).toEqual({ code: 0, stdout: v2 });
    expect(snapshot(dest)).toEqual(snapshot(src2));

    // Another commit, another cache, or a DEST someone touched: refused as before.
    await rejects(pull(reg.url, `${REF}@${v1}`, dest, { ...FAST, cacheDir }), 'E_DEST_NOT_EMPTY');
    await rejects(pull(reg.url, REF, dest, { ...FAST, cacheDir: newCache() }), 'E_DEST_NOT_EMPTY');
    utimesSync(dest, new Date(), new Date());
    await rejects(pull(reg.url, REF, dest, { ...FAST, cacheDir }), 'E_DEST_NOT_EMPTY');
  });

  it('lets several processes pull into one cache at once', async () => {
    const cacheDir = newCache();
    const dests = [newDest(), newDest(), newDest()];
    const runs = await Promise.all(
      dests.map((d) => cli(['pull', '--url', reg.url, REF, d], { SYSROOT_CACHE_DIR: cacheDir })),
    );
    expect(runs.map((r) => ({ code: r.code, stderr: r.code ? r.stderr : '' }))).toEqual(
      dests.map(() => ({ code: 0, stderr: '' })),
    );
    for (const d of dests) expect(snapshot(d)).toEqual(snapshot(src2));
    const files = cacheFiles(cacheDir);
    expect(files.packs).toHaveLength(2);
    expect(files.commits).toEqual([`${v2}.json`]);
    expect(files.tmp).toEqual([]);
    reg.requests.length = 0;
    await pull(reg.url, REF, newDest(), { ...FAST, cacheDir });
    expect(paths()).toEqual([`/api/v1/refs/${REF}`]);
  });

  it('refuses a non-empty DEST before downloading anything', async () => {
    const dest = newDest();
    mkdirSync(dest);
    writeFileSync(join(dest, 'keep'), 'mine');
    reg.requests.length = 0;
    await rejects(pull(reg.url, REF, dest, { ...FAST, cacheDir: newCache() }), 'E_DEST_NOT_EMPTY');
    expect(reg.requests).toEqual([]);
    expect(readdirSync(dest)).toEqual(['keep']);
  });

  it('pulls through the CLI with a remote, printing JSON; `log --url` shows the pins', async () => {
    const add = await cli(['remote', 'add', 'origin', reg.url]);
    expect(add.code).toBe(0);
    const list = await cli(['remote', 'list', '--json']);
    expect(JSON.parse(list.stdout)).toContainEqual({ name: 'origin', url: reg.url });

    const dest = newDest();
    const r = await cli(['pull', 'origin', `${REF}@${v1}`, dest, '--json'], {
      SYSROOT_CACHE_DIR: newCache(),
    });
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(j).toMatchObject({ commit: v1, ref: REF, dest, cached: 0 });
    expect(Object.keys(j).sort()).toEqual(['cached', 'commit', 'dest', 'fetched', 'files', 'ref']);
    expect(snapshot(dest)).toEqual(snapshot(src1));

    const unknown = await cli(['pull', 'nope', REF, newDest()]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/unknown remote "nope"[\s\S]*hint: known remotes: .*origin/);

    const log = await remoteLog(reg.url, REF);
    expect(log.map((x) => x.to).slice(0, 2)).toEqual([v2, v1]);
    const l = await cli(['log', '--url', reg.url, REF]);
    expect(l.code).toBe(0);
    expect(l.stdout).toContain(`${REF}@${v1}`);
  });

  it('accepts --url instead of a remote on the command line (push and pull)', async () => {
    const dest = newDest();
    const p = await cli(['pull', '--url', reg.url, REF, dest], { SYSROOT_CACHE_DIR: newCache() });
    expect({ code: p.code, stderr: p.code ? p.stderr : '' }).toEqual({ code: 0, stderr: '' });
    expect(p.stdout.trim()).toBe(v2);
    const q = await cli(['push', '--url', reg.url, '--ref', REF, '--token', token, src1]);
    expect({ code: q.code, stderr: q.code ? q.stderr : '' }).toEqual({ code: 0, stderr: '' });
  });
});
