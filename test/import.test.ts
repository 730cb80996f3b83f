import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  chmodSync,
  createReadStream,
  existsSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type ErrorCode, isRegistryError, RegistryError } from '../src/errors.js';
import { HeaderCache } from '../src/import/headers.js';
import { importDirectory, importSource, importTarball } from '../src/import/index.js';
import {
  contentChecksum,
  contentHashPrefix,
  decodeDirTree,
  filezHeader,
  objectPath,
  S_IFREG,
} from '../src/objects/index.js';
import type { BlobStat, BlobStore } from '../src/store/blob-store.js';
import { FsBlobStore } from '../src/store/fs-blob-store.js';
import { ObjectStore, verifyFilez } from '../src/store/object-store.js';
import { chunked, type RawMember, rawTar } from './helpers/import-tar-builder.js';
import { unpackFixture, VECTORS_DIR, vectors } from './helpers/vectors.js';

const temps: string[] = [];
function temp(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), `sysroot-import-${prefix}-`));
  temps.push(d);
  return d;
}
afterAll(() => {
  for (const d of temps) rmSync(d, { recursive: true, force: true });
});

function freshStore(): { repo: string; objects: ObjectStore } {
  const repo = temp('repo');
  return { repo, objects: new ObjectStore(new FsBlobStore(repo)) };
}

const tree = unpackFixture('tree.tar');
temps.push(tree);
const TREE_TAR = join(VECTORS_DIR, 'tree.tar');
const c1 = vectors.commits.c1;
const c3 = vectors.commits.c3;

function objectsOf(commit: 'c1' | 'c3') {
  return vectors.objects.filter((o) => o.type !== ('commit' as string) && o.paths[commit] !== undefined);
}

/** Every .filez in the repository, each checked by inflating and re-hashing. */
function verifyAllFilez(repo: string): number {
  let n = 0;
  const root = join(repo, 'objects');
  if (!existsSync(root)) return 0;
  for (const xx of readdirSync(root)) {
    for (const f of readdirSync(join(root, xx))) {
      if (!f.endsWith('.filez')) continue;
      verifyFilez(xx + f.slice(0, -'.filez'.length), readFileSync(join(root, xx, f)));
      n++;
    }
  }
  return n;
}

/** After a failed import: nothing but objects/ and an empty tmp/ in the repository. */
function expectClean(repo: string): void {
  expect(readdirSync(repo).filter((e) => e !== 'objects' && e !== 'tmp')).toEqual([]);
  if (existsSync(join(repo, 'tmp'))) expect(readdirSync(join(repo, 'tmp'))).toEqual([]);
}

async function failure(p: Promise<unknown>): Promise<RegistryError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof RegistryError) return e;
    throw e;
  }
  throw new Error('expected the import to fail');
}

async function expectFails(p: Promise<unknown>, code: ErrorCode, mention: string): Promise<RegistryError> {
  const e = await failure(p);
  expect(isRegistryError(e, code), `${e.code}: ${e.message}`).toBe(true);
  expect(e.message).toContain(mention);
  return e;
}

async function rootFiles(objects: ObjectStore, rootTree: string) {
  return decodeDirTree(await objects.getMetadata(rootTree, 'dirtree')).files;
}

describe('directory import reproduces ostree commit', () => {
  it('gives C1 root dirtree and dirmeta with owner 0:0, and stores every C1 object', async () => {
    const { repo, objects } = freshStore();
    const progress: number[] = [];
    const r = await importDirectory(objects, tree, {
      owner: { uid: 0, gid: 0 },
      onProgress: (p) => progress.push(p.files),
    });
    expect(r.rootTree).toBe(c1.root_dirtree);
    expect(r.rootMeta).toBe(c1.root_dirmeta);
    for (const o of objectsOf('c1')) {
      expect(await objects.has(o.checksum, o.type), `${o.type} ${o.checksum}`).toBe(true);
    }
    // 1747 files + symlinks in tree.tar (hard-linked pair counted twice), none skipped.
    expect(r.fileCount).toBe(
      vectors.objects
        .filter((o) => o.type === 'file' && o.paths.c1)
        .reduce((n, o) => n + o.paths.c1!.length, 0),
    );
    expect(r.skippedSpecial).toEqual([]);
    expect(progress.length).toBeGreaterThan(0);
    const distinct = objectsOf('c1').length;
    expect(r.objectsWritten).toBe(distinct);
    expect(verifyAllFilez(repo)).toBe(objectsOf('c1').filter((o) => o.type === 'file').length);
    expectClean(repo);
  });

  it('gives C3 root dirtree with canonicalPermissions', async () => {
    const { repo, objects } = freshStore();
    const r = await importDirectory(objects, tree, { canonicalPermissions: true });
    expect(r.rootTree).toBe(c3.root_dirtree);
    expect(r.rootMeta).toBe(c3.root_dirmeta);
    for (const o of objectsOf('c3')) expect(await objects.has(o.checksum, o.type)).toBe(true);
    verifyAllFilez(repo);
  });

  it('writes no new objects when the same tree is imported again', async () => {
    const { objects } = freshStore();
    const first = await importDirectory(objects, tree, { owner: { uid: 0, gid: 0 } });
    const again = await importDirectory(objects, tree, { owner: { uid: 0, gid: 0 } });
    expect(again.rootTree).toBe(first.rootTree);
    expect(again.objectsWritten).toBe(0);
    expect(again.objectsExisting).toBeGreaterThanOrEqual(first.objectsWritten);
  });

  it('gives the same objects at zlib levels 0, 1 and 9 (only the .filez bytes differ)', async () => {
    for (const zlibLevel of [0, 9]) {
      const { repo, objects } = freshStore();
      const r = await importDirectory(objects, tree, { owner: { uid: 0, gid: 0 }, zlibLevel });
      expect(r.rootTree).toBe(c1.root_dirtree);
      verifyAllFilez(repo);
    }
    await expectFails(
      importDirectory(freshStore().objects, tree, { zlibLevel: 10 }),
      'E_USAGE',
      'zlib level',
    );
  });

  it('importSource recognises a directory', async () => {
    const r = await importSource(freshStore().objects, tree, { owner: { uid: 0, gid: 0 } });
    expect(r.rootTree).toBe(c1.root_dirtree);
  });
});

describe('tarball import reproduces ostree commit', () => {
  const dir = temp('tarballs');
  const gz = join(dir, 'tree.tar.gz');
  const zst = join(dir, 'tree.tar.zst');
  writeFileSync(gz, execFileSync('gzip', ['-c', TREE_TAR], { maxBuffer: 64 << 20 }));
  execFileSync('zstd', ['-q', '-f', TREE_TAR, '-o', zst]);

  for (const [label, file] of [
    ['tar', TREE_TAR],
    ['tar.gz', gz],
    ['tar.zst', zst],
  ] as const) {
    it(`gives C1's root from ${label}`, async () => {
      const { repo, objects } = freshStore();
      const r = await importTarball(objects, file, { owner: { uid: 0, gid: 0 } });
      expect(r.rootTree).toBe(c1.root_dirtree);
      expect(r.rootMeta).toBe(c1.root_dirmeta);
      for (const o of objectsOf('c1')) expect(await objects.has(o.checksum, o.type)).toBe(true);
      verifyAllFilez(repo);
      expectClean(repo);
      const again = await importSource(objects, file, { owner: { uid: 0, gid: 0 } });
      expect(again.rootTree).toBe(c1.root_dirtree);
      expect(again.objectsWritten).toBe(0);
    });
  }

  it('gives C3 from the tarball with canonicalPermissions, from a stream of odd-sized chunks', async () => {
    const r = await importTarball(freshStore().objects, chunked(readFileSync(TREE_TAR)), {
      canonicalPermissions: true,
    });
    expect(r.rootTree).toBe(c3.root_dirtree);
  });

  it('agrees with the directory import on counts', async () => {
    const a = await importTarball(freshStore().objects, TREE_TAR, { owner: { uid: 0, gid: 0 } });
    const b = await importDirectory(freshStore().objects, tree, { owner: { uid: 0, gid: 0 } });
    expect(a.fileCount).toBe(b.fileCount);
    expect(a.totalSize).toBe(b.totalSize);
    expect(a.objectsWritten).toBe(b.objectsWritten);
  });

  it('importSource refuses a file that is not a tarball', async () => {
    const f = join(temp('junk'), 'junk.bin');
    writeFileSync(f, randomBytes(4096));
    await expectFails(importSource(freshStore().objects, f), 'E_BAD_ARCHIVE', 'not a tar archive');
    const xz = join(temp('junk'), 'x.tar.xz');
    writeFileSync(xz, Buffer.concat([Buffer.from('fd377a585a00', 'hex'), Buffer.alloc(600)]));
    await expectFails(importSource(freshStore().objects, xz), 'E_BAD_ARCHIVE', 'xz');
    await expectFails(importSource(freshStore().objects, join(tree, 'nope')), 'E_NOT_FOUND', 'nope');
  });
});

describe('special files', () => {
  const isRoot = process.getuid?.() === 0;

  async function specialTree(): Promise<{ dir: string; expected: string[] }> {
    const dir = temp('special');
    mkdirSync(join(dir, 'dev'));
    writeFileSync(join(dir, 'ok.txt'), 'fine\n');
    execFileSync('mkfifo', [join(dir, 'dev', 'fifo')]);
    const expected = ['dev/fifo'];
    if (isRoot) {
      execFileSync('mknod', [join(dir, 'dev', 'null'), 'c', '1', '3']);
      expected.push('dev/null');
    }
    // A unix socket, too: ostree cannot store one either.
    const server = createServer();
    await new Promise<void>((r) => server.listen(join(dir, 'sock'), r));
    server.close();
    if (existsSync(join(dir, 'sock'))) expected.push('sock');
    return { dir, expected };
  }

  it('refuses a tree with a fifo and a device node, listing all of them', async () => {
    const { dir, expected } = await specialTree();
    const { repo, objects } = freshStore();
    const e = await expectFails(importDirectory(objects, dir), 'E_SPECIAL_FILE', 'dev/fifo');
    expect(e.details.paths).toEqual(expected);
    for (const p of expected) expect(e.message).toContain(p);
    expect(e.hint).toContain('--skip-special');
    expectClean(repo);
  });

  it('drops them with skipSpecial and reports them', async () => {
    const { dir, expected } = await specialTree();
    const r = await importDirectory(freshStore().objects, dir, { skipSpecial: true });
    expect(r.skippedSpecial).toEqual(expected);
    expect(r.fileCount).toBe(1);
  });

  it('does the same for device and fifo members of a tarball', async () => {
    const tar = rawTar([
      { name: 'dev/', type: 'dir' },
      { name: 'dev/null', type: 'chardev', devmajor: 1, devminor: 3 },
      { name: 'dev/sda', type: 'blockdev', devmajor: 8 },
      { name: 'run/fifo', type: 'fifo' },
      { name: 'etc/hostname', type: 'file', body: 'box\n' },
    ]);
    const { repo, objects } = freshStore();
    const e = await expectFails(importTarball(objects, chunked(tar)), 'E_SPECIAL_FILE', 'dev/null');
    expect(e.details.paths).toEqual(['dev/null', 'dev/sda', 'run/fifo']);
    expectClean(repo);
    const r = await importTarball(freshStore().objects, chunked(tar), { skipSpecial: true });
    expect(r.skippedSpecial).toEqual(['dev/null', 'dev/sda', 'run/fifo']);
    expect(r.fileCount).toBe(1);
  });
});

describe('hard links, modes and names', () => {
  it('hard links share one object; a setuid file keeps 04755', async () => {
    const dir = temp('links');
    writeFileSync(join(dir, 'a'), 'shared bytes\n');
    linkSync(join(dir, 'a'), join(dir, 'b'));
    writeFileSync(join(dir, 'suid'), '#!/bin/sh\n');
    chmodSync(join(dir, 'suid'), 0o4755);
    const { objects } = freshStore();
    const r = await importDirectory(objects, dir, { owner: { uid: 0, gid: 0 } });
    const files = await rootFiles(objects, r.rootTree);
    const sum = (n: string) => files.find((f) => f.name === n)!.checksum;
    expect(sum('a')).toBe(sum('b'));
    // 2 content objects (a=b, suid) + 1 dirtree + 1 dirmeta: the linked file was hashed once.
    expect(r.objectsWritten).toBe(4);
    expect(r.fileCount).toBe(3);
    expect(r.totalSize).toBe(13 * 2 + 10);
    const suid = await objects.getContent(sum('suid'));
    expect(suid.meta.mode).toBe(0o104755);
    expect(sum('suid')).toBe(
      contentChecksum(
        { uid: 0, gid: 0, mode: S_IFREG | 0o4755, symlinkTarget: '', xattrs: [] },
        Buffer.from('#!/bin/sh\n'),
      ),
    );
  });

  it('refuses a name that is not UTF-8, naming it', async () => {
    const dir = temp('badname');
    mkdirSync(join(dir, 'sub'));
    writeFileSync(Buffer.concat([Buffer.from(`${dir}/sub/caf`), Buffer.from([0xe9])]), 'latin-1 name');
    const { repo, objects } = freshStore();
    const e = await expectFails(importDirectory(objects, dir), 'E_BAD_NAME', 'sub/caf\\xe9');
    expect(e.message).toContain('UTF-8');
    expectClean(repo);
  });

  it('does not follow symlinks and stores their targets', async () => {
    const dir = temp('symlinks');
    mkdirSync(join(dir, 'real'));
    writeFileSync(join(dir, 'real', 'x'), 'x');
    symlinkSync('real', join(dir, 'alias'));
    symlinkSync('/etc/passwd', join(dir, 'passwd'));
    const { objects } = freshStore();
    const r = await importDirectory(objects, dir);
    const files = await rootFiles(objects, r.rootTree);
    expect(files.map((f) => f.name)).toEqual(['alias', 'passwd']);
    const link = await objects.getContent(files[1]!.checksum);
    expect(link.meta.symlinkTarget).toBe('/etc/passwd');
    expect(link.payload.length).toBe(0);
    expect(r.totalSize).toBe(1);
  });
});

describe('hostile tarballs', () => {
  async function refuse(members: RawMember[], code: ErrorCode, mention: string): Promise<RegistryError> {
    const { repo, objects } = freshStore();
    const e = await expectFails(importTarball(objects, chunked(rawTar(members))), code, mention);
    expectClean(repo);
    return e;
  }

  it('refuses a member below a symlink member (lib -> /etc, then lib/passwd)', async () => {
    const e = await refuse(
      [
        { name: 'lib', type: 'symlink', linkname: '/etc' },
        { name: 'lib/passwd', type: 'file', body: 'root::0:0::/:/bin/sh\n' },
      ],
      'E_UNSAFE_PATH',
      'lib/passwd',
    );
    expect(e.details.path).toBe('lib/passwd');
  });

  it('refuses hard links to ../outside, /abs, a missing member, a directory or a symlink', async () => {
    await refuse([{ name: 'x', type: 'hardlink', linkname: '../outside' }], 'E_UNSAFE_PATH', '"x"');
    await refuse([{ name: 'y', type: 'hardlink', linkname: '/etc/shadow' }], 'E_UNSAFE_PATH', '"y"');
    await refuse(
      [
        { name: 'a', type: 'file', body: 'a' },
        { name: 'z', type: 'hardlink', linkname: 'missing' },
      ],
      'E_UNSAFE_PATH',
      '"z"',
    );
    await refuse(
      [
        { name: 'd/', type: 'dir' },
        { name: 'h', type: 'hardlink', linkname: 'd' },
      ],
      'E_UNSAFE_PATH',
      'non-file',
    );
    await refuse(
      [
        { name: 's', type: 'symlink', linkname: '/etc/passwd' },
        { name: 'h', type: 'hardlink', linkname: 's' },
      ],
      'E_UNSAFE_PATH',
      'non-file',
    );
    // A hard link may not name a later member either: tar would fail to create it.
    await refuse(
      [
        { name: 'h', type: 'hardlink', linkname: 'later' },
        { name: 'later', type: 'file', body: 'x' },
      ],
      'E_UNSAFE_PATH',
      '"h"',
    );
    // Nor go through a symlink member to reach a file.
    await refuse(
      [
        { name: 'real/f', type: 'file', body: 'x' },
        { name: 'via', type: 'symlink', linkname: 'real' },
        { name: 'h', type: 'hardlink', linkname: 'via/f' },
      ],
      'E_UNSAFE_PATH',
      '"h"',
    );
  });

  it('refuses a file/directory clash but lets a later member replace an earlier one', async () => {
    await refuse(
      [
        { name: 'etc/', type: 'dir' },
        { name: 'etc', type: 'file', body: 'x' },
      ],
      'E_BAD_ARCHIVE',
      '"etc"',
    );
    await refuse(
      [
        { name: 'bin', type: 'file', body: 'x' },
        { name: 'bin/sh', type: 'file', body: 'x' },
      ],
      'E_BAD_ARCHIVE',
      'bin/sh',
    );
    // The reader refuses a root that is not a directory before the importer sees it.
    await refuse([{ name: '.', type: 'symlink', linkname: 'elsewhere' }], 'E_UNSAFE_PATH', 'root');

    const { objects } = freshStore();
    const r = await importTarball(
      objects,
      chunked(
        rawTar([
          { name: 'f', type: 'file', body: 'old' },
          { name: 'g', type: 'hardlink', linkname: 'f' },
          { name: 'f', type: 'file', body: 'new!' },
          { name: 's', type: 'file', body: 'was a file' },
          { name: 's', type: 'symlink', linkname: 'f' },
        ]),
      ),
    );
    const files = await rootFiles(objects, r.rootTree);
    const content = async (n: string) =>
      (await objects.getContent(files.find((f) => f.name === n)!.checksum)).payload;
    expect((await content('f')).toString()).toBe('new!');
    // The hard link was made when 'f' still held the old bytes, as tar extraction would.
    expect((await content('g')).toString()).toBe('old');
    expect(r.fileCount).toBe(3);
    expect(r.totalSize).toBe(4 + 3);
  });

  it('gives implied directories 0755 root:root and takes the root metadata from "./"', async () => {
    const { objects } = freshStore();
    const r = await importTarball(objects, chunked(rawTar([{ name: 'a/b/c', type: 'file', body: 'deep' }])));
    // 446a0ef1…: the 12-byte dirmeta of a 0755 root:root directory (FORMAT.md §2).
    expect(r.rootMeta.startsWith('446a0ef11b7cc167')).toBe(true);
    const a = decodeDirTree(await objects.getMetadata(r.rootTree, 'dirtree')).dirs[0]!;
    expect(a.meta).toBe(r.rootMeta);
    const withRoot = await importTarball(
      freshStore().objects,
      chunked(
        rawTar([
          { name: './', type: 'dir', mode: 0o700, uid: 1000, gid: 1000 },
          { name: 'a/b/c', type: 'file', body: 'deep' },
        ]),
      ),
    );
    expect(withRoot.rootMeta).not.toBe(r.rootMeta);
    expect(withRoot.rootTree).toBe(r.rootTree);
    const owned = await importTarball(
      freshStore().objects,
      chunked(
        rawTar([
          { name: './', type: 'dir', mode: 0o755, uid: 1000, gid: 1000 },
          { name: 'a/b/c', type: 'file', body: 'deep' },
        ]),
      ),
      { owner: { uid: 0, gid: 0 } },
    );
    expect(owned.rootMeta).toBe(r.rootMeta);
  });

  it('refuses a truncated archive, leaving the repository clean', async () => {
    const tar = rawTar([{ name: 'big', type: 'file', body: randomBytes(100_000) }]);
    const { repo, objects } = freshStore();
    await expectFails(importTarball(objects, chunked(tar.subarray(0, 50_000))), 'E_BAD_ARCHIVE', 'truncated');
    expectClean(repo);
  });
});

describe('large files are streamed', () => {
  // 20 MiB: over the 16 MiB limit for reading a file whole. Half random, half zeros, so deflate has work.
  const big = Buffer.concat([randomBytes(10 << 20), Buffer.alloc(10 << 20)]);
  const meta = { uid: 0, gid: 0, mode: S_IFREG | 0o644, symlinkTarget: '', xattrs: [] };
  const expected = contentChecksum(meta, big);

  it('from a directory and from a tarball, with the right checksum', async () => {
    const dir = temp('big');
    writeFileSync(join(dir, 'big.bin'), big);
    writeFileSync(join(dir, 'small'), 'x');
    const { repo, objects } = freshStore();
    const r = await importDirectory(objects, dir, { owner: { uid: 0, gid: 0 } });
    const files = await rootFiles(objects, r.rootTree);
    expect(files.find((f) => f.name === 'big.bin')!.checksum).toBe(expected);
    expect(verifyAllFilez(repo)).toBe(2);
    expect(r.totalSize).toBe(big.length + 1);
    const again = await importDirectory(objects, dir, { owner: { uid: 0, gid: 0 } });
    expect(again.objectsWritten).toBe(0);

    const tar = rawTar([
      { name: 'small', type: 'file', body: 'x' },
      { name: 'big.bin', type: 'file', body: big },
    ]);
    const t = freshStore();
    const fromTar = await importTarball(t.objects, chunked(tar, 1 << 16));
    expect(fromTar.rootTree).toBe(r.rootTree);
    expect(verifyAllFilez(t.repo)).toBe(2);
    expectClean(t.repo);
  });
});

/** A BlobStore that is not an FsBlobStore: the import must go through has/createOnce. */
class MemoryBlobStore implements BlobStore {
  readonly location = 'memory:';
  readonly blobs = new Map<string, Buffer>();
  creates = 0;
  async read(key: string) {
    return this.blobs.get(key);
  }
  async readStream(key: string) {
    const b = this.blobs.get(key);
    return b
      ? (async function* () {
          yield b;
        })()
      : undefined;
  }
  async stat(key: string): Promise<BlobStat | undefined> {
    const b = this.blobs.get(key);
    return b ? { size: b.length, mtimeMs: 0, etag: createHash('sha256').update(b).digest('hex') } : undefined;
  }
  async createOnce(key: string, data: Buffer | AsyncIterable<Buffer>) {
    this.creates++;
    if (this.blobs.has(key)) return false;
    const chunks: Buffer[] = [];
    if (Buffer.isBuffer(data)) chunks.push(data);
    else for await (const c of data) chunks.push(c);
    this.blobs.set(key, Buffer.concat(chunks));
    return true;
  }
  async replace(key: string, data: Buffer) {
    this.blobs.set(key, data);
    return true;
  }
  async *list(prefix: string) {
    for (const k of this.blobs.keys()) if (k.startsWith(prefix)) yield k;
  }
  async withLock<T>(fn: () => Promise<T>) {
    return fn();
  }
}

describe('stores other than FsBlobStore', () => {
  it('gives the same root and objects, and compresses only what the store lacks', async () => {
    const blobs = new MemoryBlobStore();
    const objects = new ObjectStore(blobs);
    const r = await importDirectory(objects, tree, { owner: { uid: 0, gid: 0 } });
    expect(r.rootTree).toBe(c1.root_dirtree);
    for (const o of objectsOf('c1')) expect(await objects.has(o.checksum, o.type)).toBe(true);
    for (const [key, bytes] of blobs.blobs) {
      if (key.endsWith('.filez')) verifyFilez(key.slice(8, 10) + key.slice(11, -6), bytes);
    }
    expect(r.objectsWritten).toBe(objectsOf('c1').length);
    const creates = blobs.creates;
    const again = await importTarball(objects, createReadStream(TREE_TAR), { owner: { uid: 0, gid: 0 } });
    expect(again.rootTree).toBe(c1.root_dirtree);
    expect(again.objectsWritten).toBe(0);
    expect(blobs.creates).toBe(creates);
  });

  it('streams large files through a spool file', async () => {
    const big = Buffer.concat([randomBytes(9 << 20), Buffer.alloc(9 << 20)]);
    const dir = temp('bigmem');
    writeFileSync(join(dir, 'big'), big);
    const objects = new ObjectStore(new MemoryBlobStore());
    const r = await importDirectory(objects, dir);
    const t = await importTarball(
      new ObjectStore(new MemoryBlobStore()),
      chunked(
        rawTar([{ name: 'big', type: 'file', body: big, uid: process.getuid!(), gid: process.getgid!() }]),
        1 << 20,
      ),
    );
    expect(t.rootTree).toBe(r.rootTree);
    const sum = (await rootFiles(objects, r.rootTree))[0]!.checksum;
    const got = await objects.getContent(sum);
    expect(createHash('sha256').update(got.payload).digest('hex')).toBe(
      createHash('sha256').update(big).digest('hex'),
    );
    expect(await objects.has(sum, 'file')).toBe(true);
    expect(objectPath(sum, 'file')).toContain(sum.slice(2));
  });
});

describe('header cache', () => {
  it('patches only the size into a cached .filez header, matching filezHeader for every size', () => {
    const cache = new HeaderCache();
    const metas = [
      { uid: 0, gid: 0, mode: S_IFREG | 0o644, symlinkTarget: '', xattrs: [] },
      { uid: 1000, gid: 100, mode: S_IFREG | 0o4755, symlinkTarget: '', xattrs: [] },
      {
        uid: 0,
        gid: 0,
        mode: S_IFREG | 0o600,
        symlinkTarget: '',
        xattrs: [{ name: 'user.a', value: Buffer.from('v') }],
      },
    ];
    for (const meta of metas) {
      for (const size of [0, 1, 255, 65_536, 2 ** 32 + 7, Number.MAX_SAFE_INTEGER]) {
        const h = cache.get(meta, size);
        expect(h.header.equals(filezHeader(meta, size))).toBe(true);
        expect(h.prefix.equals(contentHashPrefix(meta))).toBe(true);
      }
    }
  });
});
