import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  linkSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { deflateRawSync } from 'node:zlib';
import { type ServerType, serve } from '@hono/node-server';
import { setAttributeSync } from '@napi-rs/xattr';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createApp } from '../server/app.js';
import { TokenStore } from '../src/auth/tokens.js';
import { Variant } from '../src/gvariant/index.js';
import { importSource } from '../src/import/index.js';
import { contentHashPrefix, encodeCommit, type FileMeta, filezHeader, sha256 } from '../src/objects/index.js';
import { KIND, PackWriter } from '../src/pack/index.js';
import { commitClosure, commitStats } from '../src/repo/closure.js';
import { fsck } from '../src/repo/fsck.js';
import { Repository } from '../src/repo/repository.js';
import { RegistryClient } from '../src/transfer/client.js';
import { push } from '../src/transfer/push.js';
import { addRemote } from '../src/transfer/remotes.js';
import { sysrootAsync } from './helpers/cli.js';
import { rejects } from './helpers/expect-code.js';
import { tempDir } from './helpers/repo.js';

interface Registry {
  url: string;
  repo: Repository;
  tokens: TokenStore;
  requests: Array<{ method: string; path: string }>;
  /** Runs before the server sees a request: lets a test move a ref "concurrently", deterministically. */
  beforeRequest?: (req: { method: string; path: string }) => Promise<void>;
  close(): Promise<void>;
}

async function startRegistry(): Promise<Registry> {
  const repo = await Repository.init(join(tempDir('sysroot-push-srv-'), 'repo'));
  const tokens = TokenStore.forRepo(repo);
  const app = createApp({ repo, tokens, anonymousPull: true });
  const requests: Registry['requests'] = [];
  const reg = { repo, tokens, requests } as Registry;
  const server: ServerType = await new Promise((resolve) => {
    const s = serve(
      {
        fetch: async (req: Request) => {
          const q = { method: req.method, path: new URL(req.url).pathname };
          requests.push(q);
          await reg.beforeRequest?.(q);
          return app.fetch(req);
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

/** A commit made directly on the server (another writer), reusing the head's tree. */
async function commitOnServer(reg: Registry, subject: string): Promise<string> {
  const head = await reg.repo.readRef(REF);
  const c = await reg.repo.readCommit(head!);
  return reg.repo.commit({ ref: REF, rootTree: c.rootTree, rootMeta: c.rootMeta, subject, actor: 'racer' });
}

/** A small tree: a few files, a subdirectory, a symlink, an executable. */
function makeTree(version: string, extra: Record<string, string> = {}): string {
  const dir = join(tempDir('sysroot-push-src-'), 'tree');
  mkdirSync(join(dir, 'usr/lib'), { recursive: true });
  mkdirSync(join(dir, 'etc'), { recursive: true });
  writeFileSync(join(dir, 'etc/os-release'), `VERSION=${version}\n`);
  writeFileSync(join(dir, 'usr/lib/libc.so.6'), Buffer.alloc(200_000, 1));
  writeFileSync(join(dir, 'usr/lib/README'), 'unchanged\n');
  writeFileSync(join(dir, 'usr/bin-tool'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
  symlinkSync('libc.so.6', join(dir, 'usr/lib/libc.so'));
  for (const [p, content] of Object.entries(extra)) {
    mkdirSync(join(dir, p, '..'), { recursive: true });
    writeFileSync(join(dir, p), content);
  }
  return dir;
}

/** `src` committed by a local repository (`sysroot commit`), as `opts` ask; the caller closes it. */
async function commitLocally(
  src: string,
  opts: Omit<Parameters<Repository['commit']>[0], 'rootTree' | 'rootMeta' | 'actor'>,
): Promise<{ local: Repository; commit: string }> {
  const local = await Repository.init(join(tempDir(), 'local'));
  const imported = await importSource(local.objects, src, {});
  const commit = await local.commit({
    ...opts,
    rootTree: imported.rootTree,
    rootMeta: imported.rootMeta,
    actor: 't',
  });
  return { local, commit };
}

async function cli(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = await sysrootAsync(args, env);
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const REF = 'stage3-sysroot/x86_64';
const FAST = { baseDelayMs: 5, maxDelayMs: 20 };

describe('push', () => {
  let reg: Registry;
  let token: string;
  const saved = { ...process.env };

  beforeAll(async () => {
    reg = await startRegistry();
    token = (await reg.tokens.create({ name: 'ci', scopes: ['push:stage3-sysroot/*'] })).token;
    process.env.SYSROOT_CACHE_DIR = join(tempDir('sysroot-push-cache-'), 'cache');
    process.env.SYSROOT_CONFIG_DIR = join(tempDir('sysroot-push-cfg-'), 'cfg');
    delete process.env.SYSROOT_TOKEN;
  });

  afterAll(async () => {
    process.env = saved;
    await reg?.close();
  });

  it('pushes a new ref: the same commit a local `sysroot commit` makes, no parent, logged on the server', async () => {
    const src = makeTree('1');
    const opts = {
      ref: REF,
      subject: 'stage3 v1',
      body: 'first',
      timestamp: 1_704_067_200,
      metadata: [['version', new Variant('s', '1')]] as Array<[string, Variant]>,
      bindRef: true,
    };
    reg.requests.length = 0;
    const r = await push(reg.url, token, src, opts, FAST);
    // A new ref: the ref, one pack sent while the tree is hashed (nothing asked first), the ref move.
    expect(reg.requests.map((q) => `${q.method} ${q.path}`)).toEqual([
      `GET /api/v1/refs/${REF}`,
      'POST /api/v1/packs',
      `PUT /api/v1/refs/${REF}`,
    ]);
    expect(r.uploaded.objects).toBeGreaterThan(5);
    expect(r.parent).toBeNull();
    expect(r.rebased).toBe(0);
    expect(await reg.repo.readRef(REF)).toBe(r.commit);
    const log = await reg.repo.log(REF);
    expect(log).toHaveLength(1);
    expect(log[0]).toMatchObject({ action: 'push', to: r.commit, from: null, reason: 'stage3 v1' });

    // The very same commit as a local commit of the same tree with the same options.
    const { local, commit: localCommit } = await commitLocally(src, opts);
    local.close();
    expect(r.commit).toBe(localCommit);

    const report = await fsck(reg.repo);
    expect(report.problems ?? []).toEqual([]);
  });

  it.each([
    ['native/hashfiles', '', undefined],
    ['worker threads (SYSROOT_NATIVE_HASH=0)', '-w', '0'],
  ])(
    'pass 2 deflates what pass 1 hashed: big files alone, many batches, xattrs, modes, symlinks, hard links; hashed by %s',
    async (_how, tag, setting) => {
      // The push keeps a small record per file between its passes and makes each .filez header again
      // from the content header (push-source.ts); the server re-hashes every .filez it receives, and
      // the commit must be the one a local `sysroot commit` makes of the same tree (hashed by worker
      // threads writing into a repository, the path the native one replaces for a push).
      // Each way gets a tree of its own (`tag` in every file and link), so each sends all of it.
      vi.stubEnv('SYSROOT_NATIVE_HASH', setting ?? '');
      const src = tempDir('push-mixed-');
      mkdirSync(join(src, 'bin'));
      mkdirSync(join(src, 'lib'));
      writeFileSync(join(src, 'lib/big-1.bin'), randomBytes(5 * 1024 * 1024)); // > BIG (4 MiB): spooled
      writeFileSync(join(src, 'lib/big-2.bin'), randomBytes(4 * 1024 * 1024 + 1));
      for (let i = 0; i < 150; i++)
        writeFileSync(join(src, `lib/f${i}.txt`), `file ${i}${tag}\n`.repeat(i + 1));
      writeFileSync(join(src, 'bin/suid'), `suid${tag}\n`, { mode: 0o4755 });
      writeFileSync(join(src, 'bin/ro'), `read only${tag}\n`, { mode: 0o444 });
      writeFileSync(join(src, 'bin/xattr'), `with an xattr${tag}\n`);
      setAttributeSync(join(src, 'bin/xattr'), 'user.note', Buffer.from('kept'));
      // Xattrs on a file in a batch, on one sent alone (over BIG), and two on one file (sorted by name).
      setAttributeSync(join(src, 'lib/big-1.bin'), 'user.big', Buffer.from('big'));
      setAttributeSync(join(src, 'lib/f7.txt'), 'user.z', Buffer.from('last'));
      setAttributeSync(join(src, 'lib/f7.txt'), 'user.a', Buffer.from('first'));
      linkSync(join(src, 'bin/suid'), join(src, 'bin/suid-link'));
      for (let i = 0; i < 70; i++) symlinkSync(`../lib/f${i}.txt${tag}`, join(src, `bin/l${i}`));
      const ref = `stage3-sysroot/mixed${tag}`;
      const opts = { ref, subject: 'mixed', timestamp: 1_704_067_200 };
      const { local, commit: localCommit } = await commitLocally(src, opts);
      // What the server lacks (an earlier test may have stored a dirmeta): what the push must send.
      let lacking = 0;
      for await (const o of commitClosure(local.objects, localCommit)) {
        if (!(await reg.repo.objects.has(o.checksum, o.type))) lacking++;
      }
      local.close();
      // 155 regular files (the hard link is the same object), 70 symlinks, 3 dirtrees, the commit,
      // and the dirmetas the server lacks.
      expect(lacking).toBeGreaterThanOrEqual(155 + 70 + 3 + 1);

      // The two passes (what a ref with a head gets): asked first, only what is lacking is sent.
      reg.requests.length = 0;
      const r = await push(reg.url, token, src, opts, { ...FAST, stream: false });
      expect(r.commit).toBe(localCommit);
      expect(r.uploaded.objects).toBe(lacking);
      expect(reg.requests.map((q) => `${q.method} ${q.path}`)).toEqual([
        `GET /api/v1/refs/${ref}`,
        'POST /api/v1/objects/missing',
        'POST /api/v1/packs',
        `PUT /api/v1/refs/${ref}`,
      ]);
      expect((await fsck(reg.repo)).problems ?? []).toEqual([]);

      // The same tree to a new ref, streamed while hashed (live-pack.ts): every object of the closure
      // goes in the one pack (the files in batches as hashed, the ones over BIG after the walk), the
      // server keeps what it had, and the commit is the same as a local one's.
      reg.requests.length = 0;
      const opts2 = { ...opts, ref: `${ref}-live` };
      const { local: local2, commit: localCommit2 } = await commitLocally(src, opts2);
      let closure = 0;
      for await (const _ of commitClosure(local2.objects, localCommit2)) closure++;
      local2.close();
      const live = await push(reg.url, token, src, opts2, FAST);
      expect(live.commit).toBe(localCommit2);
      expect(reg.requests.map((q) => `${q.method} ${q.path}`)).toEqual([
        `GET /api/v1/refs/${opts2.ref}`,
        'POST /api/v1/packs',
        `PUT /api/v1/refs/${opts2.ref}`,
      ]);
      expect(live.uploaded.objects).toBe(closure);
      // All of it was there: same tree, and the same commit (same options, no ref binding, no parent).
      expect(live.commit).toBe(r.commit);
      expect(live.present).toBe(closure);
      // A head asked for already (the CLI asks before it loads the importer) is not asked again.
      reg.requests.length = 0;
      const opts3 = { ...opts, ref: `${ref}-asked` };
      const asked = await push(reg.url, token, src, opts3, { ...FAST, head: Promise.resolve(null) });
      expect(asked.parent).toBeNull();
      expect(await reg.repo.readRef(opts3.ref)).toBe(asked.commit);
      expect(reg.requests.map((q) => `${q.method} ${q.path}`)).toEqual([
        'POST /api/v1/packs',
        `PUT /api/v1/refs/${opts3.ref}`,
      ]);
      expect((await fsck(reg.repo)).problems ?? []).toEqual([]);
      vi.unstubAllEnvs();
    },
  );

  it('a dead server stops the push while it hashes: the connection error, no spool left behind', async () => {
    // The ref is asked for beside the hash pass (push.ts); its failure aborts the hashing.
    const src = tempDir('push-dead-');
    for (let d = 0; d < 20; d++) {
      mkdirSync(join(src, `d${d}`));
      for (let i = 0; i < 100; i++) writeFileSync(join(src, `d${d}/f${i}`), `${d}/${i}\n`);
    }
    const dead = createServer();
    await new Promise<void>((r) => dead.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(dead.address() as AddressInfo).port}`;
    await new Promise<void>((r) => dead.close(() => r()));
    // A private TMPDIR (os.tmpdir() reads it on each call): the run's TMPDIR (test/setup/global.ts)
    // is shared by the test files beside this one, whose pushes make and remove spools in it (CI
    // once saw one vanish mid-test).
    const privateTmp = tempDir('push-dead-tmp-');
    vi.stubEnv('TMPDIR', privateTmp);
    try {
      const e = await rejects(push(url, token, src, { ref: REF, subject: 'never' }, FAST), 'E_IO');
      expect(e.message).toContain('ECONNREFUSED');
    } finally {
      vi.unstubAllEnvs();
    }
    expect(readdirSync(privateTmp)).toEqual([]);
  });

  it('pushes v2 on top of v1, uploading only the new objects', async () => {
    const v1 = await reg.repo.readRef(REF);
    reg.requests.length = 0;
    const src = makeTree('2');
    const r = await push(reg.url, token, src, { ref: REF, subject: 'v2', timestamp: 1_704_067_300 }, FAST);
    expect(r.parent).toBe(v1);
    expect((await reg.repo.readCommit(r.commit)).parent).toBe(v1);
    expect(reg.requests.map((q) => `${q.method} ${q.path}`)).toEqual([
      `GET /api/v1/refs/${REF}`,
      'POST /api/v1/objects/missing',
      'POST /api/v1/packs',
      `PUT /api/v1/refs/${REF}`,
    ]);
    // etc/os-release changed: its content object, the etc dirtree, the root dirtree and the commit
    // (the server's count of the pack's records). libc.so.6, README, the symlink, the usr tree and
    // every dirmeta are already on the server.
    expect(r.uploaded.objects).toBe(4);
    expect(r.present).toBeGreaterThan(4);

    // The same commit as a local `sysroot commit` of the same tree on top of the same parent.
    const local = await Repository.init(join(tempDir(), 'local'));
    const imported = await importSource(local.objects, src, {});
    local.close();
    const localCommit = encodeCommit({
      metadata: [],
      parent: v1 ?? null,
      related: [],
      subject: 'v2',
      body: '',
      timestamp: 1_704_067_300,
      rootTree: imported.rootTree,
      rootMeta: imported.rootMeta,
    });
    expect(r.commit).toBe(sha256(localCommit));
  });

  it('the ref move after a pack reads back none of the dirtrees it brought, and indexes the right figures', async () => {
    // The pack reader's decoded dirtrees are kept (Repository.noteStored) for the closure check:
    // the server reads none of them back. Every object of this tree is new to the server (its own
    // directory mode, so its own dirmeta): nothing in the pack is read to compare with a stored copy.
    const src = tempDir('push-figures-');
    for (const [p, content] of Object.entries({ 'a/b/c/deep': 'deep\n', 'a/one': '1\n', 'd/two': '22\n' })) {
      mkdirSync(join(src, p, '..'), { recursive: true });
      writeFileSync(join(src, p), `${content}${randomBytes(8).toString('hex')}`);
    }
    for (const d of ['', 'a', 'a/b', 'a/b/c', 'd']) chmodSync(join(src, d), 0o711);
    const touched: string[] = [];
    const blobs = reg.repo.blobs as unknown as Record<string, (key: string, ...rest: unknown[]) => unknown>;
    const saved = Object.fromEntries(['read', 'readStream', 'stat'].map((m) => [m, blobs[m]!]));
    for (const m of Object.keys(saved)) {
      const real = saved[m]!.bind(reg.repo.blobs);
      blobs[m] = (key, ...rest) => {
        if (/\.(dirtree|dirmeta|filez)$/.test(key)) touched.push(key);
        return real(key, ...rest);
      };
    }
    let r: Awaited<ReturnType<typeof push>>;
    try {
      r = await push(reg.url, token, src, { ref: 'stage3-sysroot/figures' }, FAST);
    } finally {
      Object.assign(blobs, saved);
    }
    expect(touched).toEqual([]);
    const row = (await reg.repo.index()).getCommit(r.commit);
    expect(row).toMatchObject(await commitStats(reg.repo.objects, r.commit));
  });

  it('pushing the same tree again makes a new commit and uploads only that commit', async () => {
    reg.requests.length = 0;
    const r = await push(reg.url, token, makeTree('2'), { ref: REF, subject: 'v2 again' }, FAST);
    expect(reg.requests.filter((q) => q.path === '/api/v1/packs')).toHaveLength(1);
    // One record in the pack: the commit; no file record, no tree.
    expect(r.uploaded.objects).toBe(1);
    expect(await reg.repo.objects.has(r.commit, 'commit')).toBe(true);
  });

  it('two concurrent pushes to one ref both land in a linear history (one rebased)', async () => {
    const head = await reg.repo.readRef(REF);
    const notes: string[] = [];
    const [a, b] = await Promise.all([
      push(
        reg.url,
        token,
        makeTree('3a', { 'a.txt': 'a' }),
        { ref: REF, subject: 'a' },
        {
          ...FAST,
          onNote: (l) => notes.push(l),
        },
      ),
      push(
        reg.url,
        token,
        makeTree('3b', { 'b.txt': 'b' }),
        { ref: REF, subject: 'b' },
        {
          ...FAST,
          onNote: (l) => notes.push(l),
        },
      ),
    ]);
    expect(a.rebased + b.rebased).toBe(1);
    const [first, second] = a.rebased ? [b, a] : [a, b];
    expect(first.parent).toBe(head);
    expect(second.parent).toBe(first.commit);
    expect(await reg.repo.readRef(REF)).toBe(second.commit);
    const log = await reg.repo.log(REF);
    expect(log.slice(0, 2).map((x) => x.to)).toEqual([second.commit, first.commit]);
    expect(notes.join('\n')).toMatch(/concurrent push.*rebuilding/);
    expect((await fsck(reg.repo)).problems ?? []).toEqual([]);
  });

  it('rebases when the ref moves between reading the head and moving it', async () => {
    // Another writer moves the ref just before our first PUT of the ref: deterministic, unlike a race.
    let racer: string | undefined;
    let mark = 0;
    reg.beforeRequest = async (req) => {
      if (racer === undefined && req.method === 'PUT' && req.path.startsWith('/api/v1/refs/')) {
        racer = await commitOnServer(reg, 'racer');
        mark = reg.requests.length;
      }
    };
    const notes: string[] = [];
    const r = await push(
      reg.url,
      token,
      makeTree('5'),
      { ref: REF, subject: 'late' },
      {
        ...FAST,
        onNote: (l) => notes.push(l),
      },
    );
    reg.beforeRequest = undefined;
    expect(r.rebased).toBe(1);
    expect(r.parent).toBe(racer);
    expect(await reg.repo.readRef(REF)).toBe(r.commit);
    expect(notes.join('\n')).toContain(`moved to ${racer}`);
    // After the conflict only the rebuilt commit was uploaded, not the tree again.
    const later = reg.requests
      .slice(mark)
      .filter((q) => q.method === 'PUT' && q.path.startsWith('/api/v1/objects/'));
    expect(later.map((q) => q.path)).toEqual([`/api/v1/objects/${r.commit}.commit`]);
  });

  it('fails with a clear conflict (exit 5) when the ref keeps moving', async () => {
    reg.beforeRequest = async (req) => {
      if (req.method === 'PUT' && req.path.startsWith('/api/v1/refs/')) await commitOnServer(reg, 'always');
    };
    const cfg = process.env.SYSROOT_CONFIG_DIR!;
    await addRemote('busy', reg.url, join(cfg, 'remotes.json'));
    try {
      const e = await rejects(
        push(reg.url, token, makeTree('6'), { ref: REF }, { ...FAST, onNote: () => {} }),
        'E_REF_CONFLICT',
      );
      expect(e.message).toContain(REF);
      const c = await cli(['push', 'busy', makeTree('7'), '--ref', REF, '--token', token]);
      expect(c.code).toBe(5);
      expect(c.stderr).toMatch(/rebase 3 of 3[\s\S]*error: .*moved/);
    } finally {
      reg.beforeRequest = undefined;
    }
  });

  describe('auth through the CLI (exit code 7, ref unchanged)', () => {
    it('refuses a push without a token, with a wrong token, and with a token for another ref glob', async () => {
      const cfg = process.env.SYSROOT_CONFIG_DIR!;
      await addRemote('test', reg.url, join(cfg, 'remotes.json'));
      const head = await reg.repo.readRef(REF);
      const src = makeTree('nope');

      const none = await cli(['push', 'test', src, '--ref', REF]);
      expect(none.code).toBe(7);
      expect(none.stderr).toMatch(/token/);

      const wrong = await cli(['push', 'test', src, '--ref', REF, '--token', 'srt_00000000_notavalidsecret']);
      expect(wrong.code).toBe(7);
      expect(wrong.stderr).not.toContain('notavalidsecret');

      const other = (await reg.tokens.create({ name: 'other', scopes: ['push:other/*'] })).token;
      const forbidden = await cli(['push', 'test', src, '--ref', REF, '--token', other, '--json']);
      expect(forbidden.code).toBe(7);
      expect(forbidden.stderr).toContain('E_FORBIDDEN');
      expect(forbidden.stderr).not.toContain(other.slice(-12));

      expect(await reg.repo.readRef(REF)).toBe(head);
    });

    it('the server itself refuses anonymous uploads and ref moves (the CLI refuses before importing)', async () => {
      const head = (await reg.repo.readRef(REF))!;
      const anon = new RegistryClient(reg.url, { ...FAST, token: '' });
      await rejects(anon.putObject(head, 'commit', Buffer.from('x')), 'E_UNAUTHORIZED');
      await rejects(anon.moveRef(REF, head, head), 'E_UNAUTHORIZED');
      expect(await reg.repo.readRef(REF)).toBe(head);
    });

    it('prints the new commit as the last line of stdout, or JSON with --json', async () => {
      const src = makeTree('cli');
      const plain = await cli(['push', 'test', src, '--ref', REF, '--token', token, '--subject', 'cli']);
      expect(plain.code).toBe(0);
      const last = plain.stdout.trim().split('\n').pop();
      expect(last).toBe(await reg.repo.readRef(REF));
      expect(plain.stderr).toContain(`pin: ${REF}@${last}`);

      process.env.SYSROOT_TOKEN = token;
      try {
        const j = await cli([
          'push',
          'test',
          makeTree('cli2'),
          '--ref',
          REF,
          '--json',
          '--meta',
          'build:t=7',
        ]);
        expect(j.code).toBe(0);
        const parsed = JSON.parse(j.stdout) as { commit: string; parent: string };
        expect(parsed.parent).toBe(last);
        expect(parsed.commit).toBe(await reg.repo.readRef(REF));
      } finally {
        delete process.env.SYSROOT_TOKEN;
      }
    });

    it('refuses an unknown remote with a hint', async () => {
      const r = await cli(['push', 'nosuch', makeTree('x'), '--ref', REF, '--token', token]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/unknown remote "nosuch"[\s\S]*hint:.*test/);
    });
  });

  it('pushes a tarball in one pack: the same tree as a local import of it', async () => {
    const src = makeTree('tar');
    const tarball = join(tempDir(), 'tree.tar.gz');
    await new Promise<void>((resolve, reject) =>
      spawn('tar', ['-czf', tarball, '-C', src, '.'], { stdio: 'ignore' }).on('close', (c) =>
        c === 0 ? resolve() : reject(new Error(`tar exited ${c}`)),
      ),
    );
    reg.requests.length = 0;
    const r = await push(reg.url, token, tarball, { ref: REF, subject: 'tar' }, FAST);
    expect(reg.requests.map((q) => `${q.method} ${q.path}`)).toEqual([
      `GET /api/v1/refs/${REF}`,
      'POST /api/v1/objects/missing',
      'POST /api/v1/packs',
      `PUT /api/v1/refs/${REF}`,
    ]);
    const local = await Repository.init(join(tempDir(), 'local'));
    const imported = await importSource(local.objects, tarball, {});
    local.close();
    expect((await reg.repo.readCommit(r.commit)).rootTree).toBe(imported.rootTree);
    expect((await fsck(reg.repo)).problems ?? []).toEqual([]);
  });

  it('pushes a 40 MiB incompressible file with the memory of client and server bounded', async () => {
    const src = makeTree('big');
    const big = randomBytes(40 * 1024 * 1024);
    writeFileSync(join(src, 'usr/lib/big.bin'), big);
    const checksum = sha256(Buffer.concat([contentHashPrefix(fileMeta(0o100644, big.length)), big]));
    // Warm up the server's lazily started parts (the store's write worker, the index) first.
    await push(reg.url, token, makeTree('warm'), { ref: REF }, FAST);
    // Server (this process): sampled while the push runs, after a minor GC each time, so what is
    // measured is what it holds, not the inflated chunks it dropped and V8 has not collected yet.
    // The client is the CLI in its own process: its peak RSS (VmHWM).
    const before = process.memoryUsage().rss;
    let serverPeak = before;
    const sample = setInterval(() => {
      minorGc?.();
      serverPeak = Math.max(serverPeak, process.memoryUsage().rss);
    }, 10);
    reg.requests.length = 0;
    const child = spawn(
      process.execPath,
      [BIN, 'push', '--url', reg.url, '--ref', REF, '--token', token, src],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let clientPeakKb = 0;
    const poll = setInterval(() => {
      try {
        const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
        if (m) clientPeakKb = Math.max(clientPeakKb, Number(m[1]));
      } catch {
        // exited
      }
    }, 5);
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (c: string) => {
      stderr += c;
    });
    const code = await new Promise<number>((r) => child.on('close', (c) => r(c ?? -1)));
    clearInterval(sample);
    clearInterval(poll);
    expect(code, stderr).toBe(0);
    // The CLI asks for the ref's head before it loads the importer, and push() takes that answer:
    // the ref is asked once.
    expect(reg.requests.map((q) => `${q.method} ${q.path}`)).toEqual([
      `GET /api/v1/refs/${REF}`,
      'POST /api/v1/objects/missing',
      'POST /api/v1/packs',
      `PUT /api/v1/refs/${REF}`,
    ]);
    expect(await reg.repo.objects.has(checksum, 'file')).toBe(true);
    // Neither side holds the file: 40 MiB of incompressible data would show at least once in each.
    expect((serverPeak - before) / 2 ** 20).toBeLessThan(34);
    expect(clientPeakKb / 1024).toBeLessThan(180);
  });
});

const BIN = fileURLToPath(new URL('../bin/sysroot.js', import.meta.url));

/** V8's gc(), minor collections only (as src/import/hash-worker.js gets it); undefined if refused. */
const minorGc: (() => void) | undefined = (() => {
  try {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as ((o: { type: 'minor' }) => void) | undefined;
    return typeof gc === 'function' ? () => gc({ type: 'minor' }) : undefined;
  } catch {
    return undefined;
  }
})();

function fileMeta(mode: number, _size: number): FileMeta {
  return { uid: 0, gid: 0, mode, symlinkTarget: '', xattrs: [] };
}

/** The .filez of `data` as a regular file owned by root, and its checksum. */
function filezOf(data: Buffer): { checksum: string; filez: Buffer } {
  const meta = fileMeta(0o100644, data.length);
  const checksum = sha256(Buffer.concat([contentHashPrefix(meta), data]));
  return { checksum, filez: Buffer.concat([filezHeader(meta, data.length), deflateRawSync(data)]) };
}

async function packOf(build: (w: PackWriter) => Promise<void>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const w = new PackWriter(
    async (c) => {
      chunks.push(c);
    },
    { level: 0, threads: false },
  );
  await build(w);
  await w.finish();
  return Buffer.concat(chunks);
}

describe('POST /api/v1/packs', () => {
  let reg: Registry;
  let token: string;

  beforeAll(async () => {
    reg = await startRegistry();
    token = (await reg.tokens.create({ name: 'ci', scopes: ['push:stage3-sysroot/*'] })).token;
  });

  afterAll(async () => {
    await reg?.close();
  });

  const post = (body: Buffer | ReadableStream<Uint8Array>, auth = token) =>
    fetch(`${reg.url}/api/v1/packs`, {
      method: 'POST',
      body: Buffer.isBuffer(body) ? new Uint8Array(body) : body,
      headers: auth ? { authorization: `Bearer ${auth}` } : {},
      ...(body instanceof ReadableStream ? { duplex: 'half' as const } : {}),
    });

  it('stores every verified record write-once and says what it did', async () => {
    const a = filezOf(Buffer.from('a\n'));
    const b = filezOf(Buffer.alloc(3 * 1024 * 1024, 7));
    const pack = await packOf(async (w) => {
      await w.add(KIND.filez, a.checksum, a.filez);
      await w.add(KIND.filez, b.checksum, b.filez);
    });
    const first = await post(pack);
    expect(first.status).toBe(200);
    expect(await first.json()).toEqual({
      records: 2,
      stored: 2,
      existing: 0,
      bytes: a.filez.length + b.filez.length,
    });
    expect(await reg.repo.objects.has(b.checksum, 'file')).toBe(true);
    const again = await post(pack);
    expect(await again.json()).toMatchObject({ records: 2, stored: 0, existing: 2 });
  });

  it('refuses a record that does not hash to its name (E_CORRUPT_OBJECT, expected/found) and stores nothing under it', async () => {
    const good = filezOf(Buffer.from('good\n'));
    const bad = filezOf(Buffer.from('bad\n'));
    const liar = 'ab'.repeat(32);
    const pack = await packOf(async (w) => {
      await w.add(KIND.filez, good.checksum, good.filez);
      await w.add(KIND.filez, liar, bad.filez);
    });
    const res = await post(pack);
    expect(res.status).toBe(400);
    const e = (await res.json()) as { error: { code: string; details: Record<string, unknown> } };
    expect(e.error.code).toBe('E_CORRUPT_OBJECT');
    expect(e.error.details).toMatchObject({ object: `${liar}.file`, expected: liar, found: bad.checksum });
    expect(await reg.repo.objects.has(liar, 'file')).toBe(false);
    // Verified before the failure: stored, and harmless (write-once, correct).
    expect(await reg.repo.objects.has(good.checksum, 'file')).toBe(true);
  });

  it('refuses what is not a pack (E_BAD_PACK) and content records (E_USAGE)', async () => {
    const res = await post(Buffer.from('this is not a pack at all'));
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('E_BAD_PACK');

    const meta = fileMeta(0o100644, 2);
    const data = Buffer.from('c\n');
    const checksum = sha256(Buffer.concat([contentHashPrefix(meta), data]));
    const content = await packOf((w) => w.addContent(checksum, meta, data));
    const refused = await post(content);
    expect(refused.status).toBe(400);
    const e = (await refused.json()) as { error: { code: string; message: string } };
    expect(e.error.code).toBe('E_USAGE');
    expect(e.error.message).toContain('content records');
    expect(await reg.repo.objects.has(checksum, 'file')).toBe(false);
  });

  it('needs a push or admin scope, and says so before reading the body', async () => {
    const reader = (await reg.tokens.create({ name: 'reader', scopes: ['pull'] })).token;
    // A body that would never end: the answer must come without it.
    let sent = 0;
    const endless = () =>
      new ReadableStream<Uint8Array>({
        pull(controller) {
          sent += 65536;
          controller.enqueue(new Uint8Array(65536));
        },
      });
    const none = await post(endless(), '');
    expect(none.status).toBe(401);
    expect(((await none.json()) as { error: { code: string } }).error.code).toBe('E_UNAUTHORIZED');
    const forbidden = await post(endless(), reader);
    expect(forbidden.status).toBe(403);
    expect(((await forbidden.json()) as { error: { code: string } }).error.code).toBe('E_FORBIDDEN');
    expect(sent).toBeLessThan(1024 ** 3);
  });
});
