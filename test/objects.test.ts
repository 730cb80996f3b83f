import { createHash } from 'node:crypto';
import { readFileSync, readlinkSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { inflateRawSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { isRegistryError } from '../src/errors.js';
import { decode, encode } from '../src/gvariant/index.js';
import {
  compareNames,
  contentChecksum,
  decodeCommit,
  decodeDirMeta,
  decodeDirTree,
  decodeSummary,
  encodeCommit,
  encodeDirMeta,
  encodeDirTree,
  encodeSummary,
  type FileMeta,
  filezHeader,
  parseFilezHeader,
  sha256,
} from '../src/objects/index.js';
import { unpackFixture, vectors } from './helpers/vectors.js';

const hex = (s: string) => Buffer.from(s, 'hex');
const tree = unpackFixture('tree.tar');
const repo = unpackFixture('repo.tar');
afterAll(() => {
  rmSync(tree, { recursive: true, force: true });
  rmSync(repo, { recursive: true, force: true });
});

describe('commits', () => {
  for (const [id, c] of Object.entries(vectors.commits)) {
    it(`decodes and re-encodes ${id} byte for byte, with ostree's checksum`, () => {
      const bytes = hex(c.bytes_hex);
      expect(sha256(bytes)).toBe(c.checksum);
      const commit = decodeCommit(bytes);
      expect(commit.subject).toBe(c.subject);
      expect(commit.body).toBe(c.body);
      expect(commit.timestamp).toBe(c.timestamp);
      expect(commit.parent).toBe(c.parent);
      expect(commit.rootTree).toBe(c.root_dirtree);
      expect(commit.rootMeta).toBe(c.root_dirmeta);
      expect(commit.metadata.map(([k]) => k)).toEqual(c.metadata_keys_in_order);
      expect(encodeCommit(commit).equals(bytes)).toBe(true);
    });
  }

  it('refuses a commit that is not in normal form, naming the object', () => {
    const bytes = Buffer.concat([hex(vectors.commits.c1.bytes_hex), Buffer.from([0])]);
    let err: unknown;
    try {
      decodeCommit(bytes, 'abc.commit');
    } catch (e) {
      err = e;
    }
    expect(isRegistryError(err, 'E_NOT_NORMAL_FORM')).toBe(true);
    expect((err as Error).message).toContain('abc.commit');
  });
});

describe('dirmeta and dirtree', () => {
  const dirmetas = vectors.objects.filter((o) => o.type === 'dirmeta');
  const dirtrees = vectors.objects.filter((o) => o.type === 'dirtree');

  it(`reproduces all ${dirmetas.length} dirmeta checksums from their fields`, () => {
    for (const o of dirmetas) {
      const bytes = encodeDirMeta({
        uid: o.uid!,
        gid: o.gid!,
        mode: o.mode!,
        xattrs: (o.xattrs ?? []).map((x) => ({ name: x.name, value: hex(x.value_hex) })),
      });
      expect(bytes.toString('hex')).toBe(o.bytes_hex);
      expect(sha256(bytes)).toBe(o.checksum);
      expect(decodeDirMeta(bytes).mode).toBe(o.mode);
    }
  });

  it(`reproduces all ${dirtrees.length} dirtree checksums, including 4-byte offsets`, () => {
    for (const o of dirtrees) {
      const e = o.entries!;
      const bytes = encodeDirTree({
        files: e.files.map(([name, checksum]) => ({ name, checksum })),
        dirs: e.dirs.map(([name, t, m]) => ({ name, tree: t, meta: m })),
      });
      expect(sha256(bytes)).toBe(o.checksum);
      const onDisk = readFileSync(
        join(repo, 'objects', o.checksum.slice(0, 2), `${o.checksum.slice(2)}.dirtree`),
      );
      expect(bytes.equals(onDisk)).toBe(true);
      expect(encodeDirTree(decodeDirTree(bytes)).equals(bytes)).toBe(true);
    }
    expect(dirtrees.some((o) => o.entries!.files.length >= 1700)).toBe(true);
  });

  it('writes a dirtree exactly as the generic GVariant codec does (1-, 2- and 4-byte offsets)', () => {
    // encodeDirTree writes the bytes itself; the codec's encode is the reference. Random trees:
    // sizes that cross each offset width, names of 1-300 characters, some outside ASCII.
    let seed = 7;
    const rand = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) & 0x7fffffff;
      return (seed >>> 8) % n;
    };
    const alphabet = ['a', 'Z', '0', '.', '-', 'é', '日', '\u{1f600}', '_'];
    const sum = (): string => {
      let h = '';
      for (let i = 0; i < 64; i++) h += '0123456789abcdef'[rand(16)];
      return h;
    };
    const widths = new Set<number>();
    for (const n of [0, 1, 2, 5, 40, 200, 1500, 2500]) {
      const names = new Set<string>();
      while (names.size < n) {
        let name = '';
        const len = 1 + (rand(10) === 0 ? rand(300) : rand(12));
        for (let i = 0; i < len; i++) name += alphabet[rand(alphabet.length)];
        names.add(name);
      }
      const all = [...names];
      const cut = rand(all.length + 1);
      const tree = {
        files: all.slice(0, cut).map((name) => ({ name, checksum: sum() })),
        dirs: all.slice(cut).map((name) => ({ name, tree: sum(), meta: sum() })),
      };
      // strcmp order, from the bytes themselves rather than compareNames.
      const sorted = <T extends { name: string }>(xs: T[]): T[] =>
        [...xs].sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)));
      const reference = encode('(a(say)a(sayay))', [
        sorted(tree.files).map((f) => [f.name, hex(f.checksum)]),
        sorted(tree.dirs).map((d) => [d.name, hex(d.tree), hex(d.meta)]),
      ]);
      const bytes = encodeDirTree(tree);
      expect(bytes.toString('hex'), `${n} entries`).toBe(reference.toString('hex'));
      widths.add(reference.length <= 0xff ? 1 : reference.length <= 0xffff ? 2 : 4);
    }
    expect([...widths].sort()).toEqual([1, 2, 4]);
    expect(() => encodeDirTree({ files: [{ name: 'a\0b', checksum: 'ab'.repeat(32) }], dirs: [] })).toThrow(
      /cannot contain NUL/,
    );
    expect(() => encodeDirTree({ files: [{ name: 'a', checksum: 'AB'.repeat(32) }], dirs: [] })).toThrow(
      /not a 64-character lower-case hex/,
    );
  });

  it('refuses a dirtree whose entries are not sorted', () => {
    // encodeDirTree always sorts, so build the unsorted bytes with the codec directly.
    const unsorted = encode('(a(say)a(sayay))', [
      [
        ['b', Buffer.alloc(32, 1)],
        ['a', Buffer.alloc(32, 2)],
      ],
      [],
    ]);
    expect(() => decodeDirTree(unsorted, 'x.dirtree')).toThrow(/x\.dirtree: entries not sorted at "a"/);
  });

  it('decodes damaged dirtrees exactly as the generic GVariant codec judges them', () => {
    // decodeDirTree parses dirtrees itself (parseDirTree) and leaves what it does not take to the
    // generic codec; it must never accept bytes the codec calls malformed or not in normal form,
    // and must read the same entries from bytes the codec accepts. Inputs: every vector dirtree (1-,
    // 2- and 4-byte offsets), names outside ASCII, and copies with bytes changed, cut or added.
    const samples: Buffer[] = dirtrees.map((o) =>
      readFileSync(join(repo, 'objects', o.checksum.slice(0, 2), `${o.checksum.slice(2)}.dirtree`)),
    );
    samples.push(
      encodeDirTree({ files: [], dirs: [] }),
      encodeDirTree({
        files: [{ name: 'é日本\u{1f600}', checksum: 'ab'.repeat(32) }],
        dirs: [{ name: 'd', tree: 'cd'.repeat(32), meta: 'ef'.repeat(32) }],
      }),
    );
    let seed = 42;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const outcome = (bytes: Buffer): string => {
      try {
        const t = decodeDirTree(bytes);
        return JSON.stringify(t);
      } catch (e) {
        return isRegistryError(e) ? e.code : `not a RegistryError: ${(e as Error).message}`;
      }
    };
    /** What the generic codec makes of the bytes, with decodeDirTree's checks on top. */
    const reference = (bytes: Buffer): string => {
      let v: [[string, Buffer][], [string, Buffer, Buffer][]];
      try {
        v = decode('(a(say)a(sayay))', bytes) as typeof v;
      } catch {
        return 'E_NOT_NORMAL_FORM';
      }
      const [files, dirs] = v;
      if ([...files.map((f) => f[1]), ...dirs.flatMap((d) => [d[1], d[2]])].some((c) => c.length !== 32))
        return 'E_CORRUPT_OBJECT';
      const names = [files.map((f) => f[0]), dirs.map((d) => d[0])];
      const bad = (n: string) => n === '' || n === '.' || n === '..' || n.includes('/');
      if (names.flat().some(bad)) return 'E_BAD_NAME';
      const sorted = (l: string[]) => l.every((n, i) => i === 0 || compareNames(l[i - 1]!, n) < 0);
      if (!names.every(sorted) || new Set(names.flat()).size !== names.flat().length)
        return 'E_CORRUPT_OBJECT';
      return JSON.stringify({
        files: files.map(([name, c]) => ({ name, checksum: c.toString('hex') })),
        dirs: dirs.map(([name, t, m]) => ({ name, tree: t.toString('hex'), meta: m.toString('hex') })),
      });
    };
    // Framing offsets wider than GVariant gives them (not normal form) that still parse: an entry,
    // a list or the whole tree ending near 255 bytes, with that one container's offsets 1, 2 or 4
    // wide and the others as GVariant makes them.
    const width = (body: number, n: number): number =>
      n === 0 ? 0 : body + n <= 0xff ? 1 : body + 2 * n <= 0xffff ? 2 : 4;
    const container = (parts: Buffer[], offsets: number[], w?: number): Buffer => {
      const body = Buffer.concat(parts);
      const k = w ?? width(body.length, offsets.length);
      const table = Buffer.alloc(k * offsets.length);
      // An offset too big for k is cut: wrong on purpose, and refused.
      for (const [i, o] of offsets.entries()) table.writeUIntLE(o % 256 ** k, i * k, k);
      return Buffer.concat([body, table]);
    };
    const list = (entries: Buffer[], w?: number): Buffer => {
      let end = 0;
      return container(
        entries,
        entries.map((e) => (end += e.length)),
        w,
      );
    };
    const constructed: Buffer[] = [];
    for (let len = 180; len <= 240; len++) {
      for (const w of [1, 2, 4]) {
        for (const at of ['file', 'dir', 'list', 'top'] as const) {
          const name = Buffer.from(`${'n'.repeat(len)}\0`);
          const file = container([name, Buffer.alloc(32, 7)], [name.length], at === 'file' ? w : undefined);
          const dir = container(
            [name, Buffer.alloc(32, 8), Buffer.alloc(32, 9)],
            [name.length + 32, name.length],
            at === 'dir' ? w : undefined,
          );
          const files = list(at === 'dir' ? [] : [file], at === 'list' ? w : undefined);
          const dirs = list(at === 'dir' ? [dir] : [], at === 'list' ? w : undefined);
          constructed.push(container([files, dirs], [files.length], at === 'top' ? w : undefined));
        }
      }
    }
    for (const c of constructed) expect(outcome(c), c.toString('hex')).toBe(reference(c));
    let accepted = 0;
    let refused = 0;
    for (const good of samples) {
      const variants: Buffer[] = [good, Buffer.concat([good, Buffer.from([0])])];
      for (let i = 0; i < 120; i++) {
        const m = Buffer.from(good);
        const at = rand(m.length);
        m[at] = rand(3) === 0 ? m[at]! ^ (1 << rand(8)) : rand(256);
        variants.push(m);
      }
      // The framing offsets are at the ends: change each of the last 16 bytes, and cut there.
      for (let back = 1; back <= Math.min(16, good.length); back++) {
        const m = Buffer.from(good);
        m[m.length - back] = (m[m.length - back]! + 1) & 0xff;
        variants.push(m, good.subarray(0, good.length - back));
      }
      for (const v of variants) {
        const expected = reference(v);
        expect(outcome(v), `bytes ${v.toString('hex').slice(0, 80)}…`).toBe(expected);
        if (expected.startsWith('{')) {
          // And encoding what was read gives back exactly the bytes.
          expect(encodeDirTree(JSON.parse(expected)).equals(v)).toBe(true);
          accepted++;
        } else refused++;
      }
    }
    // Both kinds of verdict were exercised (a changed checksum byte is still a valid dirtree).
    expect(accepted).toBeGreaterThan(100);
    expect(refused).toBeGreaterThan(100);
  });

  it('orders names as strcmp orders their UTF-8 bytes, astral characters included', () => {
    // Pieces around the edges where UTF-16 order and UTF-8 order part: surrogate pairs (U+10000 and
    // up) against U+E000-U+FFFF, and prefixes.
    const pieces = ['', 'a', 'z', '~', '\u007f', '\u0080', '\u07ff', '\u0800', '\ud7ff', '\ue000', '\uffff'];
    pieces.push('\u{10000}', '\u{1f600}', '\u{10ffff}', 'é', '日本');
    const names: string[] = [];
    for (const a of pieces) for (const b of pieces) names.push(a + b);
    let compared = 0;
    for (const a of names) {
      for (const b of names) {
        const bytes = Math.sign(Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8')));
        expect(Math.sign(compareNames(a, b)), `${JSON.stringify(a)} vs ${JSON.stringify(b)}`).toBe(bytes);
        compared++;
      }
    }
    expect(compared).toBe(names.length ** 2);
    // The case a UTF-16 comparison gets wrong: U+1F600 is above U+FFFF in code point and byte order.
    expect(compareNames('\u{1f600}', '\uffff')).toBeGreaterThan(0);
    expect('\u{1f600}' < '\uffff').toBe(true);
  });
});

describe('content objects', () => {
  const files = vectors.objects.filter((o) => o.type === 'file');

  it(`reproduces all ${files.length} content checksums from the input tree`, () => {
    for (const o of files) {
      // C2 changed hello.txt; every other object has a path in C1 or C3 that the unchanged tree holds.
      const path = (o.paths.c1 ?? o.paths.c3)?.[0];
      const meta: FileMeta = {
        uid: o.uid!,
        gid: o.gid!,
        mode: o.mode!,
        symlinkTarget: o.kind === 'symlink' ? o.symlink_target! : '',
        xattrs: (o.xattrs ?? []).map((x) => ({ name: x.name, value: hex(x.value_hex) })),
      };
      let payload: Buffer;
      if (path === undefined) payload = Buffer.from('Hello, OSTree! v2\n');
      else if (o.kind === 'symlink') {
        expect(readlinkSync(join(tree, path))).toBe(o.symlink_target);
        payload = Buffer.alloc(0);
      } else payload = readFileSync(join(tree, path));
      expect(contentChecksum(meta, payload), path).toBe(o.checksum);
    }
  });

  it('parses every .filez in the ostree repository and verifies it by inflating', () => {
    for (const o of files) {
      const filez = readFileSync(
        join(repo, 'objects', o.checksum.slice(0, 2), `${o.checksum.slice(2)}.filez`),
      );
      const h = parseFilezHeader(filez)!;
      expect(filezHeader(h.meta, h.size).equals(filez.subarray(0, h.headerLength))).toBe(true);
      const payload = h.meta.symlinkTarget ? Buffer.alloc(0) : inflateRawSync(filez.subarray(h.headerLength));
      expect(payload.length).toBe(h.size);
      expect(contentChecksum(h.meta, payload)).toBe(o.checksum);
    }
  });
});

describe('summary', () => {
  it('decodes ostree summary and re-encodes it byte for byte', () => {
    const bytes = hex(vectors.summary.bytes_hex);
    const s = decodeSummary(bytes);
    expect(Object.fromEntries(s.refs.map((r) => [r.name, r.checksum]))).toEqual(vectors.refs);
    expect(s.refs[0]!.version).toBe('2.0');
    expect(s.refs[0]!.commitSize).toBe(230);
    const ours = encodeSummary(s);
    // Same refs and values; metadata key order is GVariantDict hash order in ostree, so compare decoded.
    expect(decodeSummary(ours)).toEqual(s);
    expect(createHash('sha256').update(ours).digest('hex')).toMatch(/^[0-9a-f]{64}$/);
  });
});
