import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  listDir,
  readCommit,
  readFileContent,
  resolvePath,
  type TreeEntry,
  walkCommit,
} from '../src/checkout/walk.js';
import { RegistryError } from '../src/errors.js';
import { compareNames, objectPath } from '../src/objects/index.js';
import { type OstreeRepo, ostreeRepo } from './helpers/checkout-ostree.js';
import { cleanup, copyRepo, openRepo, snapshot } from './helpers/checkout-tree.js';
import { unpackFixture, vectors } from './helpers/vectors.js';

const C1 = vectors.commits.c1.checksum;
const HELLO = 'd54de4d5e87b6e23a70888c184728279c0e3a0d9ed8d4bb4fe2151e05f9599e8';
const RANDOM_BIN = '1987df604de5678bc51488c8e1cf50416574991699835050d8f8ac274821a150';

const tree = unpackFixture('tree.tar');
const repo = unpackFixture('repo.tar');
const objects = openRepo(repo);
afterAll(() => cleanup(tree, repo));

async function thrown(p: Promise<unknown>): Promise<RegistryError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof RegistryError) return e;
    throw e;
  }
  throw new Error('expected a RegistryError, got success');
}

async function collect(it: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of it) parts.push(c);
  return Buffer.concat(parts);
}

describe('readCommit and walkCommit on C1', () => {
  let entries: TreeEntry[];
  beforeAll(async () => {
    entries = [];
    for await (const e of walkCommit(objects, C1)) entries.push(e);
  });

  it('reads the commit, verified and decoded', async () => {
    const c = await readCommit(objects, C1);
    expect(c.rootTree).toBe(vectors.commits.c1.root_dirtree);
    expect(c.subject).toBe('stage3 sysroot v1');
  });

  it('yields every path of the input tree once, with its type', () => {
    const want = [...snapshot(tree)].map(([p, v]) => [p, v.type]).sort();
    expect(entries.map((e) => [e.path, e.type]).sort()).toEqual(want);
  });

  it('is depth first: root first, each directory before its contents, siblings in strcmp order', () => {
    expect(entries[0]).toEqual({
      path: '',
      type: 'dir',
      checksum: vectors.commits.c1.root_dirtree,
      metaChecksum: vectors.commits.c1.root_dirmeta,
    });
    const seen = new Set<string>();
    for (const e of entries.slice(1)) {
      const parent = e.path.includes('/') ? e.path.slice(0, e.path.lastIndexOf('/')) : '';
      expect(parent === '' || seen.has(parent)).toBe(true);
      seen.add(e.path);
    }
    // Siblings: the names under one directory appear in strcmp order (files and dirs merged).
    const byParent = new Map<string, string[]>();
    for (const e of entries.slice(1)) {
      const i = e.path.lastIndexOf('/');
      const parent = i < 0 ? '' : e.path.slice(0, i);
      byParent.set(parent, [...(byParent.get(parent) ?? []), e.path.slice(i + 1)]);
    }
    for (const names of byParent.values()) expect(names).toEqual([...names].sort(compareNames));
    const sortDir = ['1', 'B', 'Z', '_x', 'a', 'a b', 'a-b', 'a.b', 'aa', 'files', 'é'];
    expect(byParent.get('sort')).toEqual(sortDir);
    // Per directory, not whole-path strcmp: sort/a's contents come before sort/a b.
    const at = (p: string) => entries.findIndex((e) => e.path === p);
    expect(at('sort/a/f')).toBeLessThan(at('sort/a b'));
  });

  it('tells symlinks from files by the content header, and gives dirs their dirmeta', () => {
    const get = (p: string) => entries.find((e) => e.path === p)!;
    expect(get('lib/link-rel').type).toBe('symlink');
    expect(get('hello.txt')).toEqual({ path: 'hello.txt', type: 'file', checksum: HELLO });
    expect(get('bin').metaChecksum).toMatch(/^[0-9a-f]{64}$/);
  });
});

describe('resolvePath', () => {
  it('finds files, dirs and symlinks; "" and "/" are the root', async () => {
    expect(await resolvePath(objects, C1, 'hello.txt')).toEqual({
      path: 'hello.txt',
      type: 'file',
      checksum: HELLO,
    });
    expect(await resolvePath(objects, C1, '/hello.txt')).toEqual({
      path: 'hello.txt',
      type: 'file',
      checksum: HELLO,
    });
    expect((await resolvePath(objects, C1, 'lib/link-abs')).type).toBe('symlink');
    expect((await resolvePath(objects, C1, 'sort/é/')).type).toBe('dir');
    for (const root of ['', '/', '.']) {
      expect(await resolvePath(objects, C1, root)).toMatchObject({ path: '', type: 'dir' });
    }
  });

  it('E_NOT_FOUND naming the path for a missing entry or a path through a file', async () => {
    for (const p of ['no/such/file', 'hello.txt/x', 'lib/link-rel/x']) {
      const e = await thrown(resolvePath(objects, C1, p));
      expect(e.code).toBe('E_NOT_FOUND');
      expect(e.message).toContain(p);
      expect(e.details.path).toBe(p);
    }
  });

  it('refuses ".."', async () => {
    expect((await thrown(resolvePath(objects, C1, 'bin/../hello.txt'))).code).toBe('E_USAGE');
  });
});

describe('listDir', () => {
  it('/many has 1700 entries, all the same empty 0644 file', async () => {
    const l = await listDir(objects, C1, '/many');
    expect(l).toHaveLength(1700);
    expect(new Set(l.map((e) => `${e.type} ${e.mode.toString(8)} ${e.size} ${e.uid}:${e.gid}`))).toEqual(
      new Set(['file 100644 0 0:0']),
    );
    expect(l.map((e) => e.name)).toEqual(l.map((e) => e.name).sort(compareNames));
  });

  it('the root: names in strcmp order with modes, sizes and symlink targets', async () => {
    const l = await listDir(objects, C1, '');
    expect(l.map((e) => e.name)).toEqual([
      'bin',
      'empty',
      'emptydir',
      'hello.txt',
      'hl',
      'lib',
      'many',
      'private',
      'random.bin',
      'sort',
      'sticky',
      'xattr.txt',
    ]);
    const get = (name: string) => l.find((e) => e.name === name)!;
    expect(get('sticky')).toMatchObject({ type: 'dir', mode: 0o41777, uid: 0, gid: 0 });
    expect(get('private')).toMatchObject({ type: 'dir', mode: 0o40700 });
    expect(get('random.bin')).toMatchObject({
      type: 'file',
      mode: 0o100644,
      size: 1048576,
      checksum: RANDOM_BIN,
    });
    const lib = await listDir(objects, C1, 'lib');
    expect(lib.map((e) => [e.name, e.type, e.target, e.mode])).toEqual([
      ['link-abs', 'symlink', '/usr/bin/env', 0o120777],
      ['link-rel', 'symlink', '../hello.txt', 0o120777],
    ]);
    expect(await listDir(objects, C1, 'bin')).toContainEqual(
      expect.objectContaining({ name: 'suid', mode: 0o104755, size: 20 }),
    );
  });

  it('a file lists itself; a missing path is E_NOT_FOUND', async () => {
    expect(await listDir(objects, C1, 'hello.txt')).toEqual([
      { name: 'hello.txt', type: 'file', checksum: HELLO, mode: 0o100644, uid: 0, gid: 0, size: 15 },
    ]);
    expect((await thrown(listDir(objects, C1, 'nope'))).code).toBe('E_NOT_FOUND');
  });
});

describe('readFileContent', () => {
  it('returns the verified bytes', async () => {
    expect((await collect(await readFileContent(objects, C1, 'hello.txt'))).toString()).toBe(
      'Hello, OSTree!\n',
    );
    expect((await collect(await readFileContent(objects, C1, 'empty'))).length).toBe(0);
    const random = await collect(await readFileContent(objects, C1, 'random.bin'));
    expect(random.equals(readFileSync(join(tree, 'random.bin')))).toBe(true);
  });

  it('E_USAGE for a directory or a symlink, E_NOT_FOUND for a missing file', async () => {
    expect((await thrown(readFileContent(objects, C1, 'bin'))).code).toBe('E_USAGE');
    const link = await thrown(readFileContent(objects, C1, 'lib/link-rel'));
    expect(link.code).toBe('E_USAGE');
    expect(link.message).toContain('../hello.txt');
    expect((await thrown(readFileContent(objects, C1, 'missing.txt'))).code).toBe('E_NOT_FOUND');
  });

  it('E_CORRUPT_OBJECT, before any byte, for a damaged object', async () => {
    const bad = copyRepo(repo);
    try {
      const f = join(bad, objectPath(RANDOM_BIN, 'file'));
      const b = readFileSync(f);
      b[b.length >> 1]! ^= 1;
      writeFileSync(f, b);
      const e = await thrown(readFileContent(openRepo(bad), C1, 'random.bin'));
      expect(e.code).toBe('E_CORRUPT_OBJECT');
      expect(e.message).toContain(RANDOM_BIN);
    } finally {
      cleanup(bad);
    }
  });

  describe('over the 16 MiB limit (streamed, verified as it goes)', () => {
    let o: OstreeRepo;
    beforeAll(async () => {
      o = await ostreeRepo({ big: true });
    });
    afterAll(() => cleanup(o.tree, o.repo));

    it('streams a 17 MiB file in bounded chunks', async () => {
      const hash = createHash('sha256');
      let max = 0;
      for await (const c of await readFileContent(openRepo(o.repo), o.commit, 'usr/lib/big-random.bin')) {
        hash.update(c);
        max = Math.max(max, c.length);
      }
      const want = createHash('sha256')
        .update(readFileSync(join(o.tree, 'usr/lib/big-random.bin')))
        .digest('hex');
      expect(hash.digest('hex')).toBe(want);
      expect(max).toBeLessThanOrEqual(1024 * 1024);
    });
  });
});
