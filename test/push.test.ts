import { mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { type ServerType, serve } from '@hono/node-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../server/app.js';
import { TokenStore } from '../src/auth/tokens.js';
import { Variant } from '../src/gvariant/index.js';
import { importSource } from '../src/import/index.js';
import { fsck } from '../src/repo/fsck.js';
import { Repository } from '../src/repo/repository.js';
import { ObjectCache } from '../src/transfer/cache.js';
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
    const r = await push(reg.url, token, src, opts, FAST);
    expect(r.parent).toBeNull();
    expect(r.rebased).toBe(0);
    expect(await reg.repo.readRef(REF)).toBe(r.commit);
    const log = await reg.repo.log(REF);
    expect(log).toHaveLength(1);
    expect(log[0]).toMatchObject({ action: 'push', to: r.commit, from: null, reason: 'stage3 v1' });

    // The very same commit as a local commit of the same tree with the same options.
    const local = await Repository.init(join(tempDir(), 'local'));
    const imported = await importSource(local.objects, src, {});
    const localCommit = await local.commit({
      ...opts,
      rootTree: imported.rootTree,
      rootMeta: imported.rootMeta,
      actor: 't',
    });
    local.close();
    expect(r.commit).toBe(localCommit);

    const report = await fsck(reg.repo);
    expect(report.problems ?? []).toEqual([]);
  });

  it('pushes v2 on top of v1, uploading only the new objects', async () => {
    const v1 = await reg.repo.readRef(REF);
    reg.requests.length = 0;
    const src = makeTree('2');
    const r = await push(reg.url, token, src, { ref: REF, subject: 'v2', timestamp: 1_704_067_300 }, FAST);
    expect(r.parent).toBe(v1);
    expect((await reg.repo.readCommit(r.commit)).parent).toBe(v1);
    const puts = reg.requests.filter((q) => q.method === 'PUT' && q.path.startsWith('/api/v1/objects/'));
    // etc/os-release changed: its content object, the etc dirtree, the root dirtree and the commit.
    // libc.so.6, README, the symlink, the usr tree and every dirmeta are already on the server.
    expect(puts.map((p) => p.path.split('.').pop()).sort()).toEqual(['commit', 'dirtree', 'dirtree', 'file']);
    expect(r.uploaded.objects).toBe(4);
    expect(r.present).toBeGreaterThan(4);
  });

  it('pushing the same tree again makes a new commit and uploads only that commit', async () => {
    reg.requests.length = 0;
    const r = await push(reg.url, token, makeTree('2'), { ref: REF, subject: 'v2 again' }, FAST);
    const puts = reg.requests.filter((q) => q.method === 'PUT' && q.path.startsWith('/api/v1/objects/'));
    expect(puts).toHaveLength(1);
    expect(puts[0]!.path).toBe(`/api/v1/objects/${r.commit}.commit`);
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

  it('keeps imported objects in the shared cache, so a re-push imports nothing new', async () => {
    const cache = await ObjectCache.open();
    const src = makeTree('cache');
    await push(reg.url, token, src, { ref: REF }, FAST);
    const again = await importSource(cache.objects, src, {});
    expect(again.objectsWritten).toBe(0);
    rmSync(src, { recursive: true });
  });
});
