import { existsSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { createApp } from '../server/app.js';
import { fromWebStream } from '../server/body-stream.js';
import { streamLogger } from '../server/logger.js';
import { PACK_MEDIA_TYPE } from '../server/pack-routes.js';
import { TokenStore } from '../src/auth/tokens.js';
import { importDirectory } from '../src/import/index.js';
import {
  type Checksum,
  type DirTree,
  decodeCommit,
  decodeDirTree,
  encodeCommit,
  objectPath,
} from '../src/objects/index.js';
import { closureSets, writeCommitRecords } from '../src/pack/generate.js';
import { objectTypeOf, PackWriter, readPack } from '../src/pack/index.js';
import { commitClosure } from '../src/repo/closure.js';
import { packKey } from '../src/repo/layout.js';
import { CommitPacks } from '../src/repo/packs.js';
import type { Repository } from '../src/repo/repository.js';
import { sysroot } from './helpers/cli.js';
import { tempDir, tempRepo } from './helpers/repo.js';

const REF = 'stage3-sysroot/x86_64';

async function setup(o: { anonymousPull?: boolean } = {}) {
  const repo = await tempRepo();
  const tokens = TokenStore.forRepo(repo);
  const log: string[] = [];
  const app = createApp({
    repo,
    tokens,
    anonymousPull: o.anonymousPull ?? true,
    logger: streamLogger((l) => log.push(l)),
  });
  const make = async (name: string, scope: string) => (await tokens.create({ name, scopes: [scope] })).token;
  return {
    repo,
    app,
    log,
    admin: await make('admin', 'admin'),
    pusher: await make('release-ci', 'push:stage3-sysroot/*'),
    puller: await make('builder', 'pull'),
  };
}

const auth = (token: string) => ({ authorization: `Bearer ${token}` });

/** A small tree on disk: nested directories, a shared file, an identical subtree twice, a symlink. */
function writeTree(root: string, files: Record<string, string>, links: Record<string, string> = {}): string {
  for (const [rel, content] of Object.entries(files)) {
    mkdirSync(join(root, rel, '..'), { recursive: true });
    writeFileSync(join(root, rel), content);
  }
  for (const [rel, target] of Object.entries(links)) {
    mkdirSync(join(root, rel, '..'), { recursive: true });
    symlinkSync(target, join(root, rel));
  }
  return root;
}

const V1_FILES = {
  'etc/os-release': 'v1\n',
  'etc/hostname': 'sysroot\n',
  'usr/bin/tool': '#!/bin/sh\necho v1\n',
  'usr/lib/a/libx.so': 'x'.repeat(5000),
  'usr/lib/b/libx.so': 'x'.repeat(5000),
  'usr/share/doc/a/README': 'same\n',
  'usr/share/doc/b/README': 'same\n',
  'usr/share/zoneinfo/UTC': 'utc\n',
};

/** v2 changes one file under etc/ and adds one under usr/bin; everything else is identical. */
const V2_FILES = { ...V1_FILES, 'etc/os-release': 'v2\n', 'usr/bin/new-tool': 'new\n' };

async function importCommit(
  repo: Repository,
  dir: string,
  subject: string,
  parent: Checksum | null,
): Promise<Checksum> {
  const r = await importDirectory(repo.objects, dir, { owner: { uid: 0, gid: 0 } });
  // Stored but not on a ref: what a push has uploaded before it moves the ref.
  return repo.objects.putMetadata(
    'commit',
    encodeCommit({
      metadata: [],
      parent,
      related: [],
      subject,
      body: '',
      timestamp: 1704067200,
      rootTree: r.rootTree,
      rootMeta: r.rootMeta,
    }),
  );
}

/** v1 on the ref (a local commit), v2 stored on top of it, not yet on the ref. */
async function twoVersions(repo: Repository): Promise<{ v1: Checksum; v2: Checksum }> {
  const base = tempDir();
  const v1dir = writeTree(join(base, 'v1'), V1_FILES, { 'usr/lib/libx.so': 'a/libx.so' });
  const v2dir = writeTree(join(base, 'v2'), V2_FILES, { 'usr/lib/libx.so': 'a/libx.so' });
  const r1 = await importDirectory(repo.objects, v1dir, { owner: { uid: 0, gid: 0 } });
  const v1 = await repo.commit({ ref: REF, ...r1, subject: 'v1', timestamp: 1704067200, actor: 'test' });
  const v2 = await importCommit(repo, v2dir, 'v2', v1);
  return { v1, v2 };
}

async function* chunks(b: Buffer): AsyncGenerator<Buffer> {
  yield b;
}

interface Rec {
  kind: string;
  id: string;
}

async function readRecords(body: AsyncIterable<Uint8Array>): Promise<Rec[]> {
  const out: Rec[] = [];
  let current: Rec | undefined;
  let ended = false;
  for await (const e of readPack(body as AsyncIterable<Buffer>)) {
    if (e.type === 'record') {
      const type = objectTypeOf(e.kind);
      current = {
        kind: ['', 'commit', 'dirtree', 'dirmeta', 'commitmeta', 'content', 'filez'][e.kind]!,
        id: `${e.checksum}.${type}`,
      };
    } else if (e.type === 'verified') out.push(current!);
    else if (e.type === 'end') ended = true;
  }
  expect(ended).toBe(true);
  return out;
}

async function closureIds(repo: Repository, commit: Checksum): Promise<Set<string>> {
  const ids = new Set<string>();
  for await (const o of commitClosure(repo.objects, commit)) ids.add(`${o.checksum}.${o.type}`);
  return ids;
}

/**
 * The documented order (docs/format.md, "Commit packs"), written out independently: commit; dirmeta
 * then dirtree of each directory, breadth first; files depth first, a directory's before its
 * subdirectories'; each object once, none of `exclude`.
 */
async function expectedOrder(repo: Repository, to: Checksum, exclude = new Set<string>()): Promise<string[]> {
  const seen = new Set(exclude);
  const out: string[] = [];
  const once = (id: string) => {
    if (seen.has(id)) return false;
    seen.add(id);
    out.push(id);
    return true;
  };
  const c = decodeCommit((await repo.objects.getRaw(to, 'commit'))!);
  once(`${to}.commit`);
  const trees = new Map<Checksum, DirTree>();
  let level = [{ tree: c.rootTree, meta: c.rootMeta }];
  while (level.length) {
    const next: typeof level = [];
    for (const d of level) {
      once(`${d.meta}.dirmeta`);
      if (!once(`${d.tree}.dirtree`)) continue;
      const t = decodeDirTree((await repo.objects.getRaw(d.tree, 'dirtree'))!);
      trees.set(d.tree, t);
      next.push(...t.dirs);
    }
    level = next;
  }
  const files = (tree: Checksum): void => {
    const t = trees.get(tree);
    if (!t) return;
    trees.delete(tree);
    for (const f of t.files) once(`${f.checksum}.file`);
    for (const d of t.dirs) files(d.tree);
  };
  files(c.rootTree);
  return out;
}

async function errorOf(res: Response) {
  return (
    (await res.json()) as { error: { code: string; message: string; details: Record<string, unknown> } }
  ).error;
}

async function waitFor(path: string, ms = 20_000): Promise<void> {
  for (const end = Date.now() + ms; Date.now() < end; await sleep(20)) if (existsSync(path)) return;
  throw new Error(`${path} did not appear within ${ms} ms`);
}

describe('GET /api/v1/packs/{to}', () => {
  it('answers the whole closure, every object once, verified, in the documented order', async () => {
    const { repo, app } = await setup();
    const { v1 } = await twoVersions(repo);
    const res = await app.request(`/api/v1/packs/${v1}`);
    expect(res.status).toBe(200);
    const body = Buffer.from(await res.arrayBuffer());
    const records = await readRecords(chunks(body));
    const ids = records.map((r) => r.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(new Set(ids)).toEqual(await closureIds(repo, v1));
    expect(ids).toEqual(await expectedOrder(repo, v1));
    // Files come inflated (content records), after every piece of metadata.
    const firstContent = records.findIndex((r) => r.kind === 'content');
    expect(records.slice(firstContent).every((r) => r.kind === 'content')).toBe(true);
    expect(records.some((r) => r.kind === 'filez')).toBe(false);
    // Stored where the layout says, and what was served is what is stored.
    expect(readFileSync(join(repo.location, packKey(v1)))).toEqual(body);
  });

  it('serves a stored pack without generating it again, with caching headers, ETag/304 and HEAD', async () => {
    const { repo, app } = await setup();
    const { v1 } = await twoVersions(repo);
    const first = await app.request(`/api/v1/packs/${v1}`);
    const bytes = Buffer.from(await first.arrayBuffer());
    expect(first.headers.get('content-type')).toBe(PACK_MEDIA_TYPE);
    expect(first.headers.get('content-length')).toBe(String(bytes.length));
    expect(first.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
    const etag = first.headers.get('etag')!;
    expect(etag).toMatch(/^"[^W].*"$/);
    const file = join(repo.location, packKey(v1));
    const before = statSync(file);

    await sleep(20);
    const again = await app.request(`/api/v1/packs/${v1}`);
    expect(Buffer.from(await again.arrayBuffer())).toEqual(bytes);
    expect(again.headers.get('etag')).toBe(etag);
    // A fresh server (another process) serves the stored file as it is.
    const other = new CommitPacks(repo);
    const stored = await other.get(v1);
    expect(stored).toMatchObject({ generated: false, key: packKey(v1) });
    expect(other.generations).toBe(0);
    const after = statSync(file);
    expect([after.ino, after.mtimeMs]).toEqual([before.ino, before.mtimeMs]);

    const cached = await app.request(`/api/v1/packs/${v1}`, { headers: { 'if-none-match': etag } });
    expect(cached.status).toBe(304);
    expect(cached.headers.get('etag')).toBe(etag);
    expect(await cached.text()).toBe('');

    const head = await app.request(`/api/v1/packs/${v1}`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe(String(bytes.length));
    expect(head.headers.get('content-type')).toBe(PACK_MEDIA_TYPE);
    expect((await head.arrayBuffer()).byteLength).toBe(0);

    const range = await app.request(`/api/v1/packs/${v1}`, { headers: { range: 'bytes=10-' } });
    expect(range.status).toBe(206);
    expect(Buffer.from(await range.arrayBuffer())).toEqual(bytes.subarray(10));
  });

  it('shares one generation between concurrent requests', async () => {
    const repo = await tempRepo();
    const { v1 } = await twoVersions(repo);
    const packs = new CommitPacks(repo);
    const [a, b] = await Promise.all([packs.get(v1), packs.get(v1)]);
    expect(a).toBe(b);
    expect(packs.generations).toBe(1);
  });

  it('lets two nodes generate one pack at once: the write-once create keeps one, the same bytes', async () => {
    const repo = await tempRepo();
    const { v1, v2 } = await twoVersions(repo);
    const nodes = [new CommitPacks(repo), new CommitPacks(repo)];
    const [a, b] = await Promise.all(nodes.map((n) => n.get(v2, v1)));
    expect(nodes.map((n) => n.generations)).toEqual([1, 1]);
    expect(a!.stat.size).toBe(b!.stat.size);
    // The bytes depend on nothing but the objects and the level: on the worker pool or not.
    const bytes = async (threads: boolean): Promise<Buffer> => {
      const parts: Buffer[] = [];
      const w = new PackWriter(async (c) => void parts.push(c), { level: 3, threads });
      await writeCommitRecords(repo.objects, w, v2, await closureSets(repo.objects, v1));
      await w.finish();
      return Buffer.concat(parts);
    };
    const stored = readFileSync(join(repo.location, packKey(v2, v1)));
    expect(await bytes(false)).toEqual(stored);
    expect(await bytes(true)).toEqual(stored);
  });

  it('answers 404 for an unknown commit and for an incomplete one, naming what is missing', async () => {
    const { repo, app } = await setup();
    const { v2 } = await twoVersions(repo);
    const unknown = 'ab'.repeat(32);
    const res = await app.request(`/api/v1/packs/${unknown}`);
    expect(res.status).toBe(404);
    expect(await errorOf(res)).toMatchObject({ code: 'E_NOT_FOUND', details: { commit: unknown } });

    // A commit whose root dirtree was never uploaded.
    const c = decodeCommit((await repo.objects.getRaw(v2, 'commit'))!);
    const partial = await repo.objects.putMetadata(
      'commit',
      encodeCommit({ ...c, subject: 'partial', rootTree: 'cd'.repeat(32) }),
    );
    const inc = await app.request(`/api/v1/packs/${partial}`);
    expect(inc.status).toBe(404);
    expect(await errorOf(inc)).toMatchObject({
      code: 'E_OBJECT_MISSING',
      details: { object: `${'cd'.repeat(32)}.dirtree` },
    });
    expect(existsSync(join(repo.location, packKey(partial)))).toBe(false);

    const bad = await app.request('/api/v1/packs/xyz');
    expect(bad.status).toBe(400);
  });

  it('fails with a JSON E_CORRUPT_OBJECT naming a damaged object, and stores no pack', async () => {
    const { repo, app, log } = await setup();
    const { v1 } = await twoVersions(repo);
    const r1 = decodeDirTree(
      (await repo.objects.getRaw(
        decodeCommit((await repo.objects.getRaw(v1, 'commit'))!).rootTree,
        'dirtree',
      ))!,
    );
    const etc = decodeDirTree(
      (await repo.objects.getRaw(r1.dirs.find((d) => d.name === 'etc')!.tree, 'dirtree'))!,
    );
    const victim = etc.files[0]!.checksum;
    // Another object's bytes under the victim's name: a well-formed .filez that hashes wrong.
    const path = join(repo.location, objectPath(victim, 'file'));
    writeFileSync(path, readFileSync(join(repo.location, objectPath(etc.files[1]!.checksum, 'file'))));
    const res = await app.request(`/api/v1/packs/${v1}`);
    expect(res.status).toBe(500);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(await errorOf(res)).toMatchObject({
      code: 'E_CORRUPT_OBJECT',
      details: { object: `${victim}.file`, expected: victim },
    });
    expect(existsSync(join(repo.location, packKey(v1)))).toBe(false);
    expect(log.join('\n')).toContain(`${victim}.file`);
  });

  it('needs the read scope when anonymous pulls are off', async () => {
    const { repo, app, puller, pusher } = await setup({ anonymousPull: false });
    const { v1 } = await twoVersions(repo);
    const anon = await app.request(`/api/v1/packs/${v1}`);
    expect(anon.status).toBe(401);
    expect((await app.request(`/api/v1/packs/${v1}`, { headers: auth(puller) })).status).toBe(200);
    expect((await app.request(`/api/v1/packs/${v1}`, { headers: auth(pusher) })).status).toBe(200);
    expect((await app.request(`/api/v1/packs/${v1}`, { headers: auth(`${puller}x`) })).status).toBe(401);
  });
});

describe('GET /api/v1/packs/{from}..{to}', () => {
  it('answers exactly closure(to) less closure(from), in the documented order, smaller than the full pack', async () => {
    const { repo, app } = await setup();
    const { v1, v2 } = await twoVersions(repo);
    const res = await app.request(`/api/v1/packs/${v1}..${v2}`);
    expect(res.status).toBe(200);
    const update = Buffer.from(await res.arrayBuffer());
    const ids = (await readRecords(chunks(update))).map((r) => r.id);
    const from = await closureIds(repo, v1);
    const want = [...(await closureIds(repo, v2))].filter((id) => !from.has(id));
    expect(new Set(ids)).toEqual(new Set(want));
    expect(ids).toHaveLength(want.length);
    expect(ids).toEqual(await expectedOrder(repo, v2, from));
    // v2 changed etc/os-release and added usr/bin/new-tool: two files, and the trees above them.
    expect(ids.filter((id) => id.endsWith('.file'))).toHaveLength(2);
    const full = Buffer.from(await (await app.request(`/api/v1/packs/${v2}`)).arrayBuffer());
    expect(update.length).toBeLessThan(full.length);
    expect(readFileSync(join(repo.location, packKey(v2, v1)))).toEqual(update);
  });

  it('answers 404 E_NOT_FOUND naming "from" when it is unknown or incomplete here', async () => {
    const { repo, app } = await setup();
    const { v1, v2 } = await twoVersions(repo);
    const unknown = 'ef'.repeat(32);
    const res = await app.request(`/api/v1/packs/${unknown}..${v2}`);
    expect(res.status).toBe(404);
    expect(await errorOf(res)).toMatchObject({ code: 'E_NOT_FOUND', details: { commit: unknown } });

    const c = decodeCommit((await repo.objects.getRaw(v1, 'commit'))!);
    const partial = await repo.objects.putMetadata(
      'commit',
      encodeCommit({ ...c, subject: 'partial', rootTree: '01'.repeat(32) }),
    );
    const inc = await app.request(`/api/v1/packs/${partial}..${v2}`);
    expect(inc.status).toBe(404);
    expect(await errorOf(inc)).toMatchObject({ code: 'E_NOT_FOUND', details: { commit: partial } });
    expect(existsSync(join(repo.location, packKey(v2, partial)))).toBe(false);
  });
});

describe('eager generation', () => {
  it('generates the new head and the update from its parent after a push, and after a reset', async () => {
    const { repo, app, pusher, admin, log } = await setup();
    const { v1, v2 } = await twoVersions(repo);
    const res = await app.request(`/api/v1/refs/${REF}`, {
      method: 'PUT',
      headers: { ...auth(pusher), 'content-type': 'application/json' },
      body: JSON.stringify({ from: v1, to: v2 }),
    });
    expect(res.status).toBe(200);
    await waitFor(join(repo.location, packKey(v2)));
    await waitFor(join(repo.location, packKey(v2, v1)));
    // v1 was committed locally, never through the API: no pack yet, until a reset makes it the head.
    expect(existsSync(join(repo.location, packKey(v1)))).toBe(false);
    const reset = await app.request(`/api/v1/reset/${REF}`, {
      method: 'POST',
      headers: { ...auth(admin), 'content-type': 'application/json' },
      body: JSON.stringify({ to: v1, reason: 'v2 breaks gcc' }),
    });
    expect(reset.status).toBe(200);
    await waitFor(join(repo.location, packKey(v1)));
    expect(log.filter((l) => / (warn|error) /.test(l))).toEqual([]);
  });
});

describe('a real repository of a few hundred files', () => {
  it('packs every object once, streams a file too big to hold, and verifies on the way back', async () => {
    const { repo, app } = await setup();
    const files: Record<string, string> = {};
    for (let d = 0; d < 12; d++) {
      for (let f = 0; f < 25; f++)
        files[`usr/lib/pkg${d}/sub${f % 3}/file${f}.txt`] = `${d}/${f}\n`.repeat(f * 40 + 1);
    }
    const links: Record<string, string> = {};
    for (let i = 0; i < 20; i++) links[`usr/bin/link${i}`] = `../lib/pkg${i % 12}/sub0/file0.txt`;
    const dir = writeTree(join(tempDir(), 'tree'), files, links);
    // 17 MiB: over the 16 MiB a pack generator holds in memory, so it streams into the pack.
    const big = Buffer.alloc(17 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i);
    writeFileSync(join(dir, 'usr/lib/big.bin'), big);
    const r = await importDirectory(repo.objects, dir, { owner: { uid: 0, gid: 0 } });
    const commit = await repo.commit({
      ref: REF,
      ...r,
      subject: 'big',
      timestamp: 1704067200,
      actor: 'test',
    });

    const res = await app.request(`/api/v1/packs/${commit}`);
    expect(res.status).toBe(200);
    const ids = (await readRecords(fromWebStream(res.body))).map((x) => x.id);
    expect(new Set(ids)).toEqual(await closureIds(repo, commit));
    expect(ids).toHaveLength(new Set(ids).size);
    expect(ids).toEqual(await expectedOrder(repo, commit));
    expect(ids.filter((id) => id.endsWith('.file')).length).toBeGreaterThan(300);
  });
});

describe('sysroot pack', () => {
  it('generates and stores a pack and an update pack, prints the key and size, and exits', async () => {
    const repo = await tempRepo();
    const { v1, v2 } = await twoVersions(repo);
    repo.close();
    const full = sysroot(['pack', '--repo', repo.location, `${REF}@${v1}`]);
    expect(full.status, full.stderr).toBe(0);
    const size = statSync(join(repo.location, packKey(v1))).size;
    expect(full.stdout).toBe(`${packKey(v1)} ${size}\n`);
    const update = sysroot(['pack', '--repo', repo.location, v2, '--from', v1, '--json']);
    expect(update.status, update.stderr).toBe(0);
    expect(JSON.parse(update.stdout)).toMatchObject({ key: packKey(v2, v1), generated: true });
    const again = sysroot(['pack', '--repo', repo.location, v2, '--from', v1, '--json']);
    expect(JSON.parse(again.stdout)).toMatchObject({ key: packKey(v2, v1), generated: false });
    const missing = sysroot(['pack', '--repo', repo.location, v2, '--from', '12'.repeat(32)]);
    expect(missing.status).not.toBe(0);
    expect(missing.stderr).toContain('12'.repeat(32));
  });
});
