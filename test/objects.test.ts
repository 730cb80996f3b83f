import { createHash } from 'node:crypto';
import { readFileSync, readlinkSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { inflateRawSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { isRegistryError } from '../src/errors.js';
import { encode } from '../src/gvariant/index.js';
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
