import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportCommit } from '../src/checkout/export.js';
import { walkCommit } from '../src/checkout/walk.js';
import { RegistryError } from '../src/errors.js';
import { objectPath } from '../src/objects/index.js';
import type { ObjectStore } from '../src/store/object-store.js';
import { type OstreeRepo, ostreeRepo } from './helpers/checkout-ostree.js';
import {
  cleanup,
  comparable,
  copyRepo,
  isRoot,
  type Node,
  openRepo,
  snapshot,
  tempDir,
} from './helpers/checkout-tree.js';
import { unpackFixture, vectors } from './helpers/vectors.js';

const C1 = vectors.commits.c1.checksum;
const RANDOM_BIN = '1987df604de5678bc51488c8e1cf50416574991699835050d8f8ac274821a150';

const tree = unpackFixture('tree.tar');
const repo = unpackFixture('repo.tar');
const work = tempDir('export');
afterAll(() => cleanup(tree, repo, work));

async function exportToBuffer(
  objects: ObjectStore,
  commit: string,
  compression: 'none' | 'zstd' = 'none',
): Promise<{ bytes: Buffer; entries: number; reported: number }> {
  const parts: Buffer[] = [];
  // An async sink, as a file or socket writer is: the exporter must await it.
  const r = await exportCommit(
    objects,
    commit,
    async (c) => {
      parts.push(Buffer.from(c));
      await new Promise((res) => setImmediate(res));
    },
    { compression },
  );
  return { bytes: Buffer.concat(parts), entries: r.entries, reported: r.bytes };
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

let n = 0;
/** Extract with GNU tar as the brief says users will, and snapshot the result. */
function extract(tarBytes: Buffer): { dir: string; snap: Map<string, Node> } {
  const file = join(work, `x-${++n}.tar`);
  writeFileSync(file, tarBytes);
  const dir = join(work, `out-${n}`);
  mkdirSync(dir);
  // -p is what root gets by default; without it a non-root tar drops setuid and sticky bits.
  const p = isRoot ? [] : ['-p'];
  execFileSync('tar', [
    '-x',
    ...p,
    '--xattrs',
    '--xattrs-include=*',
    '--numeric-owner',
    '-f',
    file,
    '-C',
    dir,
  ]);
  return { dir, snap: snapshot(dir) };
}

describe('export of C1', () => {
  let plain: { bytes: Buffer; entries: number; reported: number };
  beforeAll(async () => {
    plain = await exportToBuffer(openRepo(repo), C1);
  });

  it('is deterministic: two exports give the same bytes, plain and zstd', async () => {
    const again = await exportToBuffer(openRepo(repo), C1);
    expect(sha(again.bytes)).toBe(sha(plain.bytes));
    const z1 = await exportToBuffer(openRepo(repo), C1, 'zstd');
    const z2 = await exportToBuffer(openRepo(repo), C1, 'zstd');
    expect(sha(z1.bytes)).toBe(sha(z2.bytes));
    // The zstd stream is the same tar inside, and a standard zstd reads it.
    expect(execFileSync('zstd', ['-dc'], { input: z1.bytes, maxBuffer: 1 << 30 }).equals(plain.bytes)).toBe(
      true,
    );
    expect(z1.bytes.length).toBeLessThan(plain.bytes.length);
    expect(z1.reported).toBe(z1.bytes.length);
    expect(plain.reported).toBe(plain.bytes.length);
    expect(plain.bytes.length % 10240).toBe(0);
  });

  it('`tar -tvf` lists the walk order, mtime 0, no hard links, numeric owners', async () => {
    const file = join(work, 'list.tar');
    writeFileSync(file, plain.bytes);
    const lines = execFileSync('tar', ['-tvf', file, '--numeric-owner', '--full-time'], {
      encoding: 'utf8',
      maxBuffer: 1 << 26,
    })
      .trimEnd()
      .split('\n');
    const walk: string[] = [];
    for await (const e of walkCommit(openRepo(repo), C1)) {
      walk.push(
        `${e.type === 'dir' ? 'd' : e.type === 'symlink' ? 'l' : '-'} ${e.path === '' ? '.' : e.path}`,
      );
    }
    // Type letter and path; the trailing '/' of directories is left out of the comparison because
    // the tar writer's pax `path` record (used for non-ASCII names like sort/é) carries none.
    const names = lines.map((l) => {
      const name = l
        .split(/\s+/)
        .slice(5)
        .join(' ')
        .replace(/ -> .*$/, '');
      return `${l[0]} ${name === './' ? '.' : name.replace(/\/$/, '')}`;
    });
    expect(names).toEqual(walk);
    expect(names[0]).toBe('d .');
    expect(lines[0]).toMatch(/ \.\/$/);
    expect(lines.find((l) => l.endsWith(' bin/'))).toMatch(/^d/);
    expect(plain.entries).toBe(walk.length);
    expect(lines.filter((l) => l.startsWith('h'))).toEqual([]);
    for (const l of lines) expect(l).toContain('1970-01-01 00:00:00');
    expect(lines.find((l) => l.endsWith(' bin/suid'))).toMatch(/^-rwsr-xr-x 0\/0 +20 /);
    expect(lines.find((l) => l.endsWith(' sticky/'))).toMatch(/^drwxrwxrwt 0\/0 /);
    expect(lines.find((l) => l.includes(' lib/link-rel '))).toMatch(
      /^lrwxrwxrwx 0\/0 .* -> \.\.\/hello\.txt$/,
    );
  });

  it('GNU tar extracts the input tree: contents, modes, symlinks, xattrs (binary too), owners', () => {
    const { snap } = extract(plain.bytes);
    // Modes as ostree recorded them (a non-root `tar -x` of the fixture loses setuid and sticky bits).
    const modes = new Map<string, number>();
    for (const o of vectors.objects) {
      if (o.type === 'dirtree') continue;
      for (const p of o.paths.c1 ?? []) modes.set(p === '/' ? '' : p.slice(1), o.mode! & 0o7777);
    }
    const expected = comparable(snapshot(tree), { owners: false });
    for (const [k, v] of Object.entries(expected)) v.mode = modes.get(k);
    if (isRoot) for (const v of Object.values(expected)) Object.assign(v, { uid: 0, gid: 0 });
    // The extraction root is our mkdir'd dir; tar applies './' to it.
    expect(comparable(snap, { owners: isRoot })).toEqual(expected);
    expect(snap.get('xattr.txt')!.xattrs['user.bin']).toBe('00ff00');
    expect(snap.get('sort')!.xattrs).toEqual({ 'user.dir': Buffer.from('dirvalue').toString('hex') });
    expect(snap.get('hl/one')!.sha).toBe(snap.get('hl/two')!.sha);
  });

  it('E_CORRUPT_OBJECT naming the object when content is damaged', async () => {
    const bad = copyRepo(repo);
    try {
      const f = join(bad, objectPath(RANDOM_BIN, 'file'));
      const b = readFileSync(f);
      b[b.length >> 1]! ^= 0x55;
      writeFileSync(f, b);
      for (const compression of ['none', 'zstd'] as const) {
        let err: unknown;
        try {
          await exportToBuffer(openRepo(bad), C1, compression);
        } catch (e) {
          err = e;
        }
        expect(err).toBeInstanceOf(RegistryError);
        expect((err as RegistryError).code).toBe('E_CORRUPT_OBJECT');
        expect((err as RegistryError).message).toContain(RANDOM_BIN);
      }
    } finally {
      cleanup(bad);
    }
  });

  it('a failing sink stops the export with its error (plain and zstd)', async () => {
    for (const compression of ['none', 'zstd'] as const) {
      const boom = new Error('disk full');
      let calls = 0;
      await expect(
        exportCommit(
          openRepo(repo),
          C1,
          () => {
            if (++calls === 2) throw boom;
          },
          { compression },
        ),
      ).rejects.toBe(boom);
    }
  });
});

describe('export of a commit made by the real ostree CLI, with files over 16 MiB', () => {
  let o: OstreeRepo;
  beforeAll(async () => {
    o = await ostreeRepo({ big: true });
  });
  afterAll(() => cleanup(o.tree, o.repo));

  it('extracts to the committed tree (zstd), and is deterministic', async () => {
    const a = await exportToBuffer(openRepo(o.repo), o.commit, 'zstd');
    const b = await exportToBuffer(openRepo(o.repo), o.commit, 'zstd');
    expect(sha(a.bytes)).toBe(sha(b.bytes));
    const { snap } = extract(execFileSync('zstd', ['-dc'], { input: a.bytes, maxBuffer: 1 << 30 }));
    const expected = comparable(snapshot(o.tree), { owners: false });
    if (isRoot) for (const v of Object.values(expected)) Object.assign(v, { uid: 0, gid: 0 });
    expect(comparable(snap, { owners: isRoot })).toEqual(expected);
  });
});
