/**
 * native/hashfiles (src/import/native-pool.ts) against the worker threads it replaces for a push
 * (hash-worker.js through HashPool): the same checksums, the same .filez bytes, the same errors.
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  rmSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inflateRawSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { deflateSettings } from '../src/compress/deflate.js';
import { RegistryError } from '../src/errors.js';
import { hashPool, NativeHashPool, nativeHashing } from '../src/import/native-pool.js';
import { HashPool, type ItemResult, type WorkerInit, type WorkerItem } from '../src/import/pool.js';
import { contentHashPrefix, type FileMeta, filezHeader, parseFilezHeader } from '../src/objects/index.js';
import { sha256 } from '../src/objects/metadata-object.js';

const dir = mkdtempSync(join(tmpdir(), 'native-pool-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const BIG = 64 * 1024;
const init: WorkerInit = { root: null, tmpDir: dir, deflate: deflateSettings(), big: BIG, chunk: 16 * 1024 };
const fileMeta: FileMeta = { uid: 0, gid: 0, mode: 0o100644, symlinkTarget: '', xattrs: [] };
const NO_HEADER = new Uint8Array(0);
const linkMeta: FileMeta = { uid: 0, gid: 0, mode: 0o120777, symlinkTarget: 'target', xattrs: [] };

/** Files of many sizes (empty, tiny, compressible, random, just under and over BIG) and a symlink. */
function tree(): { items: WorkerItem[]; contents: (Buffer | undefined)[] } {
  const root = join(dir, `tree-${randomBytes(4).toString('hex')}`);
  mkdirSync(root);
  const bodies = [
    Buffer.alloc(0),
    Buffer.from('hello\n'),
    Buffer.alloc(50_000, 'abc'),
    randomBytes(30_000),
    randomBytes(BIG),
    randomBytes(BIG + 1),
    Buffer.alloc(3 * BIG + 17, 7),
  ];
  const items: WorkerItem[] = [];
  const contents: (Buffer | undefined)[] = [];
  bodies.forEach((body, i) => {
    const path = join(root, `f${i}`);
    writeFileSync(path, body);
    items.push({
      kind: 'path',
      path,
      size: body.length,
      prefix: contentHashPrefix(fileMeta),
      header: filezHeader(fileMeta, body.length),
    });
    contents.push(body);
  });
  symlinkSync('target', join(root, 'link'));
  items.push({ kind: 'symlink', prefix: contentHashPrefix(linkMeta), header: filezHeader(linkMeta, 0) });
  contents.push(undefined);
  return { items, contents };
}

const hex = (r: ItemResult[]): (string | undefined)[] => r.map((x) => x.checksum);
const bytes = (r: ItemResult[]): (string | undefined)[] =>
  r.map((x) => (x.filez ? Buffer.from(x.filez).toString('hex') : undefined));

describe('native/hashfiles', () => {
  it('is built, and a push uses it (else install-test-deps.sh and npm rebuild)', () => {
    expect(nativeHashing(init)).toBe(true);
    expect(hashPool(init)).toBeInstanceOf(NativeHashPool);
    // Only a hash-only pool with igzip: a store's root, or zlib, keeps the workers.
    expect(nativeHashing({ ...init, root: dir })).toBe(false);
    expect(nativeHashing({ ...init, deflate: deflateSettings(1) })).toBe(false);
  });

  it('hashes and deflates as the workers do, byte for byte', async () => {
    const { items, contents } = tree();
    const native = new NativeHashPool(init);
    const workers = new HashPool(init);
    try {
      for (const deflate of [false, true]) {
        const a = await native.run({ type: 'batch', items, deflate });
        const b = await workers.run({ type: 'batch', items, deflate });
        expect(hex(a)).toEqual(hex(b));
        expect(bytes(a)).toEqual(bytes(b));
        expect(a.map((r) => r.status)).toEqual(items.map(() => 'hashed'));
        contents.forEach((body, i) => {
          const expected = sha256(Buffer.concat([items[i]!.prefix, body ?? Buffer.alloc(0)]));
          expect(a[i]!.checksum).toBe(expected);
          const filez = a[i]!.filez;
          // Deflated when asked, up to BIG: a larger file comes without (pass 2 spools it).
          if (!deflate || (body && body.length > BIG)) expect(filez).toBeUndefined();
          else {
            expect(filez).toBeDefined();
            const h = parseFilezHeader(filez!)!;
            if (body) expect(inflateRawSync(filez!.subarray(h.headerLength))).toEqual(body);
            else expect(filez!.length).toBe(h.headerLength);
          }
        });
        native.recycle(a);
        workers.recycle(b);
      }
      // compress: read again and checked against the checksum; a big file goes to the workers,
      // which spool its .filez.
      const hashed = await native.run({ type: 'batch', items });
      const withSums = items.map((item, i) => ({ ...item, checksum: hashed[i]!.checksum! }));
      const a = await native.run({ type: 'compress', items: withSums });
      const b = await workers.run({ type: 'compress', items: withSums });
      expect(bytes(a)).toEqual(bytes(b));
      expect(a.filter((r) => r.spool)).toHaveLength(2);
    } finally {
      await native.close();
      await workers.close();
    }
  });

  it('refuses a file that changed since it was hashed, or is gone, as the workers do', async () => {
    const { items } = tree();
    const native = new NativeHashPool(init);
    const workers = new HashPool(init);
    try {
      const hashed = await native.run({ type: 'batch', items });
      const small = items.flatMap((item, i) =>
        item.kind === 'path' && item.size > 0 && item.size <= BIG
          ? [{ ...item, checksum: hashed[i]!.checksum! }]
          : [],
      );
      const victim = small[1]!;
      if (victim.kind !== 'path') throw new Error('not a path');
      // Same size, other bytes: only the checksum tells.
      writeFileSync(victim.path, Buffer.alloc(victim.size, 1));
      for (const pool of [native, workers]) {
        const e = await pool.run({ type: 'compress', items: small }).catch((x: unknown) => x);
        expect(e).toBeInstanceOf(RegistryError);
        expect((e as RegistryError).code).toBe('E_IO');
        expect((e as RegistryError).message).toBe(`${victim.path}: changed while being imported`);
      }
      // Another size: refused when hashed too.
      writeFileSync(victim.path, 'shorter');
      for (const pool of [native, workers]) {
        const e = await pool.run({ type: 'batch', items: small }).catch((x: unknown) => x);
        expect((e as RegistryError).message).toBe(`${victim.path}: changed while being imported`);
      }
      rmSync(victim.path);
      for (const pool of [native, workers]) {
        const e = (await pool.run({ type: 'batch', items: small }).catch((x: unknown) => x)) as RegistryError;
        expect(e.code).toBe('E_IO');
        expect(e.details.errno).toBe('ENOENT');
        expect(e.details.path).toBe(victim.path);
        expect(e.message).toContain('ENOENT');
      }
    } finally {
      await native.close();
      await workers.close();
    }
  });

  it('leaves a file of 2 GiB or more to the workers (sizes cross in an Int32Array)', async () => {
    const path = join(dir, 'sparse-2g');
    // Sparse: 2 GiB + 5 bytes of zeros that take no room on disk, hashed by one worker (~1.5 s).
    const size = 2 ** 31 + 5;
    closeSync(openSync(path, 'w'));
    truncateSync(path, size);
    const item: WorkerItem = {
      kind: 'path',
      path,
      size,
      prefix: contentHashPrefix(fileMeta),
      header: NO_HEADER,
    };
    const native = new NativeHashPool(init);
    try {
      const [r] = await native.run({ type: 'batch', items: [item] });
      const zeros = Buffer.alloc(1024 * 1024);
      const h = createHash('sha256').update(item.prefix);
      for (let left = size; left > 0; left -= Math.min(left, zeros.length))
        h.update(zeros.subarray(0, Math.min(left, zeros.length)));
      expect(r!.checksum).toBe(h.digest('hex'));
      expect(native.pending).toBe(0);
    } finally {
      await native.close();
      rmSync(path);
    }
  });

  it('runs at most `size` batches at once, and the rest in order as they free up', async () => {
    const { items } = tree();
    const native = new NativeHashPool(init, 2);
    try {
      const runs = Array.from({ length: 6 }, () => native.run({ type: 'batch', items, deflate: true }));
      expect(native.pending).toBe(6);
      const results = await Promise.all(runs);
      for (const r of results) expect(hex(r)).toEqual(hex(results[0]!));
      expect(native.pending).toBe(0);
      for (const r of results) native.recycle(r);
      // Cancelled before they run: rejected with the reason.
      const queued = Array.from({ length: 4 }, () => native.run({ type: 'batch', items }));
      native.cancelQueued(new RegistryError('E_INTERNAL', 'stop'));
      const settled = await Promise.allSettled(queued);
      expect(settled.filter((s) => s.status === 'rejected')).toHaveLength(2);
    } finally {
      await native.close();
    }
  });
});
