import { createHash, randomBytes } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { type ServerType, serve } from '@hono/node-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../server/app.js';
import { TokenStore } from '../src/auth/tokens.js';
import { type Checksum, decodeDirTree, objectPath } from '../src/objects/index.js';
import { Repository } from '../src/repo/repository.js';
import { ObjectCache } from '../src/transfer/cache.js';
import { remoteLog } from '../src/transfer/client.js';
import { pull } from '../src/transfer/pull.js';
import { push } from '../src/transfer/push.js';
import { sysrootAsync } from './helpers/cli.js';
import { rejects } from './helpers/expect-code.js';
import { tempDir } from './helpers/repo.js';

interface Registry {
  url: string;
  repo: Repository;
  tokens: TokenStore;
  requests: Array<{ method: string; path: string }>;
  /** Answer a request instead of the app (fault injection), or undefined to pass it on. */
  intercept?: (req: { method: string; path: string }) => Response | undefined;
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
        fetch: (req: Request) => {
          const q = { method: req.method, path: new URL(req.url).pathname };
          reg.requests.push(q);
          return reg.intercept?.(q) ?? app.fetch(req);
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

  it('pulls a ref: the checked-out tree equals what was pushed; a second pull fetches nothing', async () => {
    const cacheDir = newCache();
    const dest = newDest();
    const r = await pull(reg.url, REF, dest, { ...FAST, cacheDir });
    expect(r.commit).toBe(v2);
    expect(r.ref).toBe(REF);
    expect(r.cached).toBe(0);
    expect(r.fetched.objects).toBeGreaterThan(40);
    expect(snapshot(dest)).toEqual(snapshot(src2));

    reg.requests.length = 0;
    const again = await pull(reg.url, REF, newDest(), { ...FAST, cacheDir });
    expect(again.fetched).toEqual({ objects: 0, bytes: 0 });
    expect(again.cached).toBe(r.fetched.objects);
    expect(reg.requests.filter((q) => q.path.startsWith('/repo/'))).toEqual([]);
  });

  it('pulls REF@OLD after two pushes, and a bare SHA, fetching only what the cache lacks', async () => {
    const cacheDir = newCache();
    const dest = newDest();
    const r = await pull(reg.url, `${REF}@${v1}`, dest, { ...FAST, cacheDir });
    expect(r.commit).toBe(v1);
    expect(snapshot(dest)).toEqual(snapshot(src1));

    // v2 differs from v1 in os-release, libbig.so, libc.so.6 and 40 small files, plus trees and the commit.
    const byShaDest = newDest();
    const s = await pull(reg.url, v2, byShaDest, { ...FAST, cacheDir });
    expect(s.ref).toBeNull();
    expect(snapshot(byShaDest)).toEqual(snapshot(src2));
    expect(s.cached).toBeGreaterThan(0);
    expect(s.fetched.objects).toBeLessThan(r.fetched.objects);
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
    const e = await rejects(pull(reg.url, fake, dest, { ...FAST, cacheDir }), 'E_PIN_MISMATCH');
    expect(e.details).toMatchObject({ expected: fake, found: v2 });
    expect(e.message).toContain(fake);
    expect(e.message).toContain(v2);
    expect(existsSync(dest)).toBe(false);
    expect(await (await ObjectCache.open(cacheDir)).has(fake, 'commit')).toBe(false);
  });

  it('fails naming a corrupt object on the server: nothing at DEST, the object not cached (exit 4)', async () => {
    expect((await cli(['remote', 'add', 'corrupt', reg.url])).code).toBe(0);
    // One object verified in memory, one (9 MiB) streamed through a temp file.
    for (const file of ['usr/lib/libc.so.6', 'usr/lib/libbig.so']) {
      const bad = await fileObject(reg.repo, v2, file);
      const path = join(reg.repo.location, objectPath(bad, 'file'));
      const good = readFileSync(path);
      const flipped = Buffer.from(good);
      flipped[flipped.length - 100]! ^= 0x55;
      writeFileSync(path, flipped);
      try {
        const cacheDir = newCache();
        const dest = newDest();
        const e = await rejects(pull(reg.url, REF, dest, { ...FAST, cacheDir }), 'E_CORRUPT_OBJECT');
        expect(e.message).toContain(`${bad}.file`);
        expect(e.details.object).toBe(`${bad}.file`);
        expect(existsSync(dest)).toBe(false);
        expect(readdirSync(dirname(dest))).toEqual([]);
        const cache = await ObjectCache.open(cacheDir);
        expect(await cache.has(bad, 'file')).toBe(false);
        expect(readdirSync(join(cacheDir, 'tmp'))).toEqual([]);

        const c = await cli(['pull', 'corrupt', REF, newDest()], { SYSROOT_CACHE_DIR: newCache() });
        expect(c.code).toBe(4);
        expect(c.stderr).toContain(`${bad}.file`);
      } finally {
        writeFileSync(path, good);
      }
    }
  });

  it('retries 5xx answers, and resumes an interrupted pull fetching only what is missing', async () => {
    const cacheDir = newCache();
    const flaky = await fileObject(reg.repo, v2, 'etc/os-release');
    const flakyPath = `/repo/${objectPath(flaky, 'file')}`;
    let failures = 0;
    reg.intercept = (q) => {
      if (q.path === flakyPath && failures < 2) {
        failures++;
        return new Response('busy', { status: 503 });
      }
      return undefined;
    };
    const retries: string[] = [];
    try {
      const r = await pull(reg.url, REF, newDest(), { ...FAST, cacheDir, onRetry: (w) => retries.push(w) });
      expect(r.commit).toBe(v2);
      expect(retries).toEqual([`GET ${flakyPath}`, `GET ${flakyPath}`]);

      // Now the object is unavailable for good: the pull fails, but everything else was cached.
      const cold = newCache();
      reg.intercept = (q) => (q.path === flakyPath ? new Response('down', { status: 503 }) : undefined);
      const dest = newDest();
      const e = await rejects(pull(reg.url, REF, dest, { ...FAST, cacheDir: cold }), 'E_IO');
      expect(e.message).toContain(flakyPath.slice('/repo/'.length));
      expect(existsSync(dest)).toBe(false);

      reg.intercept = undefined;
      const resumed = await pull(reg.url, REF, dest, { ...FAST, cacheDir: cold });
      // What the failed pull had verified stays cached; the rerun fetches only the rest.
      const total = r.fetched.objects + r.cached;
      expect(resumed.cached).toBeGreaterThan(0);
      expect(resumed.cached + resumed.fetched.objects).toBe(total);
      expect(snapshot(dest)).toEqual(snapshot(src2));
    } finally {
      reg.intercept = undefined;
    }
  });

  it('evicts an object damaged in the local cache and fetches it again', async () => {
    const cacheDir = newCache();
    await pull(reg.url, REF, newDest(), { ...FAST, cacheDir });
    const victim = await fileObject(reg.repo, v2, 'usr/lib/libc.so.6');
    const cached = join(cacheDir, objectPath(victim, 'file'));
    const bytes = readFileSync(cached);
    bytes[bytes.length - 50]! ^= 0x55;
    writeFileSync(cached, bytes);
    const notes: string[] = [];
    const dest = newDest();
    const r = await pull(reg.url, REF, dest, { ...FAST, cacheDir, onNote: (l) => notes.push(l) });
    expect(r.fetched.objects).toBe(1);
    expect(notes.join('\n')).toContain(`${victim}.file in the local cache is damaged`);
    expect(snapshot(dest)).toEqual(snapshot(src2));
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
