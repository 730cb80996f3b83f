/**
 * The closure check of a ref move stays correct while the index lets it skip work: a commit with a
 * missing object is refused wherever the object is, whatever the index knows or has forgotten, and
 * the figures (total size, file count) equal a plain walk of the tree.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { createApp } from '../server/app.js';
import { TokenStore } from '../src/auth/tokens.js';
import {
  type Checksum,
  contentChecksum,
  decodeDirTree,
  encodeCommit,
  encodeDirMeta,
  encodeDirTree,
  type FileMeta,
  filezHeader,
  objectId,
  sha256,
} from '../src/objects/index.js';
import { checkClosure, commitStats } from '../src/repo/closure.js';
import { INDEX_FILE } from '../src/repo/layout.js';
import { Repository } from '../src/repo/repository.js';
import { rejects } from './helpers/expect-code.js';
import { tempRepo } from './helpers/repo.js';

/** A directory: a string is a regular file's content, `{ symlink }` a symlink, anything else a directory. */
interface Dir {
  [name: string]: string | { symlink: string } | Dir;
}

interface Stored {
  rootTree: Checksum;
  rootMeta: Checksum;
  /** Content object checksums by path ('usr/lib/libc.so'). */
  files: Record<string, Checksum>;
  /** Dirtree checksums by path ('' for the root). */
  trees: Record<string, Checksum>;
}

const FILE: FileMeta = { uid: 0, gid: 0, mode: 0o100644, symlinkTarget: '', xattrs: [] };

function filez(entry: string | { symlink: string }): { checksum: Checksum; bytes: Buffer } {
  if (typeof entry !== 'string') {
    const meta: FileMeta = { ...FILE, mode: 0o120777, symlinkTarget: entry.symlink };
    return { checksum: contentChecksum(meta), bytes: filezHeader(meta, 0) };
  }
  const payload = Buffer.from(entry);
  return {
    checksum: contentChecksum(FILE, payload),
    bytes: Buffer.concat([filezHeader(FILE, payload.length), deflateRawSync(payload)]),
  };
}

/**
 * Store a tree's objects, bottom-up, except those named in `skip` (paths of files, of dirtrees with
 * a trailing '/', or 'meta:' + a directory path for its dirmeta): they are referenced but absent.
 */
async function storeDir(repo: Repository, root: Dir, skip: string[] = []): Promise<Stored> {
  const out: Stored = { rootTree: '', rootMeta: '', files: {}, trees: {} };
  const visit = async (dir: Dir, path: string): Promise<{ tree: Checksum; meta: Checksum }> => {
    const files: Array<{ name: string; checksum: Checksum }> = [];
    const dirs: Array<{ name: string; tree: Checksum; meta: Checksum }> = [];
    for (const [name, entry] of Object.entries(dir)) {
      const p = path ? `${path}/${name}` : name;
      if (typeof entry === 'string' || 'symlink' in entry) {
        const f = filez(entry as string | { symlink: string });
        if (!skip.includes(p)) await repo.objects.putFilez(f.checksum, f.bytes);
        files.push({ name, checksum: f.checksum });
        out.files[p] = f.checksum;
      } else dirs.push({ name, ...(await visit(entry as Dir, p)) });
    }
    // Each directory its own mode, so that a dirmeta can be left out of one directory alone.
    const metaBytes = encodeDirMeta({ uid: 0, gid: 0, mode: 0o40700 + (path.length % 0o55), xattrs: [] });
    const meta = skip.includes(`meta:${path}`)
      ? sha256(metaBytes)
      : await repo.objects.putMetadata('dirmeta', metaBytes);
    const treeBytes = encodeDirTree({ files, dirs });
    const tree = skip.includes(`${path}/`)
      ? sha256(treeBytes)
      : await repo.objects.putMetadata('dirtree', treeBytes);
    out.trees[path] = tree;
    return { tree, meta };
  };
  const r = await visit(root, '');
  out.rootTree = r.tree;
  out.rootMeta = r.meta;
  return out;
}

async function storeCommit(repo: Repository, parent: Checksum | null, s: Stored, subject: string) {
  return repo.objects.putMetadata(
    'commit',
    encodeCommit({
      metadata: [],
      parent,
      related: [],
      subject,
      body: '',
      timestamp: 1704067200,
      rootTree: s.rootTree,
      rootMeta: s.rootMeta,
    }),
  );
}

/** The figures by a plain walk: every path, each file's size from its verified content. */
async function walkFigures(repo: Repository, commit: Checksum) {
  const walk = async (tree: Checksum): Promise<{ totalSize: number; fileCount: number }> => {
    const t = decodeDirTree(await repo.objects.getMetadata(tree, 'dirtree'));
    const r = { totalSize: 0, fileCount: t.files.length };
    for (const f of t.files) r.totalSize += (await repo.objects.getContent(f.checksum)).size;
    for (const d of t.dirs) {
      const sub = await walk(d.tree);
      r.totalSize += sub.totalSize;
      r.fileCount += sub.fileCount;
    }
    return r;
  };
  return walk((await repo.readCommit(commit)).rootTree);
}

/** Close the repository, delete its index (as a lost or fresh node would have none) and reopen it. */
async function forgetIndex(repo: Repository): Promise<Repository> {
  repo.close();
  for (const ext of ['', '-wal', '-shm']) rmSync(join(repo.location, `${INDEX_FILE}${ext}`), { force: true });
  return Repository.open(repo.location);
}

const V1: Dir = {
  etc: { 'os-release': 'VERSION=1\n', hostname: 'sysroot\n' },
  usr: {
    bin: { sh: '#!sh\n'.repeat(40), 'sh.link': { symlink: 'sh' } },
    lib: { 'libc.so.6': 'libc 1\n'.repeat(300), 'libm.so.6': 'libm 1\n'.repeat(100) },
    // The same subtree at two paths: one dirtree, counted at both paths.
    lib64: { 'libc.so.6': 'libc 1\n'.repeat(300), 'libm.so.6': 'libm 1\n'.repeat(100) },
  },
};

/** V1 plus a subtree shared with nothing, with a file deep down in it. */
const V2: Dir = {
  ...V1,
  etc: { 'os-release': 'VERSION=2\n', hostname: 'sysroot\n' },
  opt: { vendor: { tool: { share: { 'data.bin': 'only in v2\n'.repeat(50), README: 'readme\n' } } } },
};
const DEEP = 'opt/vendor/tool/share/data.bin';

async function setup() {
  const repo = await tempRepo();
  const tokens = TokenStore.forRepo(repo);
  const app = createApp({ repo, tokens, anonymousPull: true });
  const token = (await tokens.create({ name: 'ci', scopes: ['push:*'] })).token;
  const put = (path: string, body: BodyInit) =>
    app.request(path, { method: 'PUT', headers: { authorization: `Bearer ${token}` }, body });
  const moveRef = (from: Checksum, to: Checksum) => put('/api/v1/refs/r', JSON.stringify({ from, to }));
  const v1 = await storeDir(repo, V1);
  const c1 = await repo.commit({ ref: 'r', rootTree: v1.rootTree, rootMeta: v1.rootMeta, subject: 'v1' });
  return { repo, put, moveRef, v1, c1 };
}

describe('the closure check of a ref move', () => {
  it('refuses a commit missing a file deep in a new subtree with 422 E_OBJECT_MISSING naming it, though its parent is complete and known so', async () => {
    const { repo, put, moveRef, v1, c1 } = await setup();
    const db = await repo.index();
    expect(db.completeTree(v1.rootTree)).toEqual(await walkFigures(repo, c1));

    const v2 = await storeDir(repo, V2, [DEEP]);
    const c2 = await storeCommit(repo, c1, v2, 'v2');
    const res = await moveRef(c1, c2);
    expect(res.status).toBe(422);
    const { error } = (await res.json()) as { error: { code: string; details: Record<string, unknown> } };
    expect(error).toMatchObject({
      code: 'E_OBJECT_MISSING',
      details: { object: objectId(v2.files[DEEP]!, 'file'), missing: 1 },
    });
    expect(await repo.readRef('r')).toBe(c1);
    // Nothing on that path was marked complete; the rest of the commit was.
    expect(db.completeTree(v2.trees['opt/vendor/tool/share']!)).toBeUndefined();
    expect(db.completeTree(v2.rootTree)).toBeUndefined();
    expect(db.completeTree(v2.trees.etc!)).toBeDefined();

    // Asking again gives the same answer: the facts learnt from the refusal do not cover the gap.
    expect((await moveRef(c1, c2)).status).toBe(422);

    const f = filez('only in v2\n'.repeat(50));
    expect(f.checksum).toBe(v2.files[DEEP]);
    expect((await put(`/api/v1/objects/${f.checksum}.file`, new Uint8Array(f.bytes))).status).toBe(201);
    expect((await moveRef(c1, c2)).status).toBe(200);
    expect(db.getCommit(c2)).toMatchObject(await walkFigures(repo, c2));
    repo.close();
  });

  it('names a missing dirtree or dirmeta deep down just the same', async () => {
    const { repo, v1, c1 } = await setup();
    const noTree = await storeDir(repo, V2, ['opt/vendor/tool/']);
    const c2 = await storeCommit(repo, c1, noTree, 'no dirtree');
    const e1 = await rejects(
      repo.moveRef({ ref: 'r', expected: c1, to: c2, action: 'push', reason: '' }),
      'E_OBJECT_MISSING',
    );
    expect(e1.details.object).toBe(objectId(noTree.trees['opt/vendor/tool']!, 'dirtree'));
    expect(await repo.readRef('r')).toBe(c1);
    expect((await repo.index()).completeTree(v1.rootTree)).toBeDefined();
    repo.close();

    const other = await setup();
    const noMeta = await storeDir(other.repo, V2, ['meta:opt/vendor/tool/share']);
    const c3 = await storeCommit(other.repo, other.c1, noMeta, 'no dirmeta');
    const e2 = await rejects(
      other.repo.moveRef({ ref: 'r', expected: other.c1, to: c3, action: 'push', reason: '' }),
      'E_OBJECT_MISSING',
    );
    expect(e2.details.object).toMatch(/\.dirmeta$/);
    expect(await other.repo.readRef('r')).toBe(other.c1);
    other.repo.close();
  });

  it('gives the same answers with the index deleted between moves', async () => {
    const first = await setup();
    const v2 = await storeDir(first.repo, V2, [DEEP]);
    const c2 = await storeCommit(first.repo, first.c1, v2, 'v2');

    let repo = await forgetIndex(first.repo);
    const e = await rejects(
      repo.moveRef({ ref: 'r', expected: first.c1, to: c2, action: 'push', reason: '' }),
      'E_OBJECT_MISSING',
    );
    expect(e.details.object).toBe(objectId(v2.files[DEEP]!, 'file'));

    // Stored by someone else (another node, or the importer) after this index was rebuilt: the index
    // has never heard of it.
    repo = await forgetIndex(repo);
    await repo.index();
    const f = filez('only in v2\n'.repeat(50));
    await repo.objects.putFilez(f.checksum, f.bytes);
    expect((await repo.index()).storedObject(f.checksum, 'file')).toBeUndefined();
    await repo.moveRef({ ref: 'r', expected: first.c1, to: c2, action: 'push', reason: '' });
    expect((await repo.index()).getCommit(c2)).toMatchObject(await walkFigures(repo, c2));

    repo = await forgetIndex(repo);
    const db = await repo.index();
    expect(db.getCommit(first.c1)).toMatchObject(await walkFigures(repo, first.c1));
    expect(db.getCommit(c2)).toMatchObject(await walkFigures(repo, c2));
    repo.close();
  });

  it('reads only what a child changed once its parent is known complete', async () => {
    const { repo, c1 } = await setup();
    const v2 = await storeDir(repo, V2);
    const c2 = await storeCommit(repo, c1, v2, 'v2');
    const check = await checkClosure(repo.objects, c2, await repo.index(), { sizes: true });
    // Dirtrees: the root, etc/ and the four new ones under opt/; usr/ is v1's, complete and known.
    // Objects: os-release, data.bin, README and the 3 new dirmeta (opt/vendor, …/tool, …/share).
    expect(check.work).toEqual({ treesRead: 6, objectsLookedUp: 6 });
    expect(check.stats).toEqual(await walkFigures(repo, c2));
    repo.close();
  });

  it('after a push, the ref move asks the store nothing about the objects uploaded', async () => {
    const { repo, put, moveRef, c1 } = await setup();
    // What a push uploads: the objects v2 adds (made in a scratch repository).
    const scratch = await tempRepo();
    const c2 = await storeCommit(scratch, c1, await storeDir(scratch, V2), 'v2');
    let uploaded = 0;
    for await (const o of scratch.objects.list()) {
      if (await repo.objects.has(o.checksum, o.type)) continue;
      const bytes = (await scratch.objects.getRaw(o.checksum, o.type))!;
      expect((await put(`/api/v1/objects/${o.checksum}.${o.type}`, new Uint8Array(bytes))).status).toBe(201);
      uploaded++;
    }
    // os-release, data.bin, README; 3 dirmeta; 6 dirtrees; the commit.
    expect(uploaded).toBe(3 + 3 + 6 + 1);

    const touched: string[] = [];
    const blobs = repo.blobs as unknown as Record<string, (key: string, ...rest: unknown[]) => unknown>;
    for (const m of ['read', 'readStream', 'stat']) {
      const real = blobs[m]!.bind(repo.blobs);
      blobs[m] = (key, ...rest) => {
        if (/\.(dirtree|dirmeta|filez)$/.test(key)) touched.push(key);
        return real(key, ...rest);
      };
    }
    expect((await moveRef(c1, c2)).status).toBe(200);
    expect(touched).toEqual([]);
    expect((await repo.index()).getCommit(c2)).toMatchObject(await walkFigures(repo, c2));
    repo.close();
    scratch.close();
  });

  it('keeps the figures right when a commit brings its own (sizes unread) and the next needs them', async () => {
    const repo = await tempRepo();
    const v1 = await storeDir(repo, V1);
    const known = await commitStats(repo.objects, await storeCommit(repo, null, v1, 'probe'));
    // An import knows its figures: the check then only proves existence and reads no sizes.
    const c1 = await repo.commit({ ref: 'r', ...pick(v1), subject: 'v1', stats: known });
    expect((await repo.index()).completeTree(v1.rootTree)).toMatchObject({ totalSize: null });
    const v2 = await storeDir(repo, V2);
    const c2 = await repo.commit({ ref: 'r', ...pick(v2), subject: 'v2' });
    const expected = await walkFigures(repo, c2);
    expect(expected).toEqual({
      fileCount: 10,
      totalSize: 2 * (7 * 300 + 7 * 100) + 5 * 40 + 10 + 8 + 11 * 50 + 7,
    });
    expect((await repo.index()).getCommit(c2)).toMatchObject(expected);
    expect((await repo.index()).getCommit(c1)).toMatchObject(await walkFigures(repo, c1));
    expect(await commitStats(repo.objects, c2)).toEqual(expected);
    expect(await repo.commitStats(c2)).toEqual(expected);
    await repo.reindex();
    expect((await repo.index()).getCommit(c2)).toMatchObject(expected);
    repo.close();
  });
});

function pick(s: Stored): { rootTree: Checksum; rootMeta: Checksum } {
  return { rootTree: s.rootTree, rootMeta: s.rootMeta };
}
