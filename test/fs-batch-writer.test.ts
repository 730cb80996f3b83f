/**
 * FsBatchWriter (src/store/fs-batch-writer.ts): write-once of many small blobs through the store's
 * write worker. Its callers hand it views of buffers they reuse at once (a pack reader decoding into
 * one buffer again and again), so each blob's bytes must be taken when write() is called.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { FsBatchWriter } from '../src/store/fs-batch-writer.js';
import { FsBlobStore } from '../src/store/fs-blob-store.js';
import { tempDir } from './helpers/repo.js';

describe('FsBatchWriter', () => {
  it('stores the bytes a blob had when write() was called, whatever the caller does with its buffer after', async () => {
    const root = tempDir('sysroot-batch-');
    const writer = new FsBatchWriter(new FsBlobStore(root));
    // One buffer filled again for every blob, as readPack's `reuse` does; sizes from 0 bytes to over
    // the 3 MiB batch buffer (a blob of its own), across several batches.
    const scratch = Buffer.alloc(4 * 1024 * 1024);
    const sizes = [0, 1, 100, 4096, 300_000, 1024 * 1024, 3.5 * 1024 * 1024];
    for (let i = 0; i < 150; i++) sizes.push(1 + ((i * 7919) % 60_000));
    const expected = new Map<string, Buffer>();
    const writes: Promise<boolean>[] = [];
    sizes.forEach((size, i) => {
      const bytes = randomBytes(size);
      bytes.copy(scratch);
      const key = `objects/${String(i % 256).padStart(2, '0')}/blob-${i}.file`;
      expected.set(key, bytes);
      writes.push(writer.write(key, scratch.subarray(0, size)));
      scratch.fill(i & 0xff);
    });
    await writer.flush();
    expect(await Promise.all(writes)).toEqual(sizes.map(() => true));
    for (const [key, bytes] of expected) expect(readFileSync(join(root, key)).equals(bytes), key).toBe(true);
    // Write-once: the same key again is "existed", and the first bytes stay.
    const again = writer.write([...expected.keys()][3]!, Buffer.from('other bytes'));
    await writer.flush();
    expect(await again).toBe(false);
    expect(readFileSync(join(root, [...expected.keys()][3]!)).equals([...expected.values()][3]!)).toBe(true);
  });

  it.each([
    ['native/files writeOnce (the loop in C, renameat2 RENAME_NOREPLACE)', undefined],
    ['link and unlink (SYSROOT_NATIVE_FILES=0)', '0'],
  ])('the write worker puts each blob in place once, by %s, and leaves no temp file', async (_, setting) => {
    const root = tempDir('sysroot-worker-');
    const tmpDir = join(root, 'tmp');
    mkdirSync(tmpDir, { recursive: true });
    const env = { ...process.env };
    if (setting === undefined) delete env.SYSROOT_NATIVE_FILES;
    else env.SYSROOT_NATIVE_FILES = setting;
    const w = new Worker(new URL('../src/store/fs-write-worker.js', import.meta.url), { env });
    const send = (keys: string[], blobs: Buffer[]) =>
      new Promise<unknown[]>((resolve, reject) => {
        const all = Buffer.concat(blobs);
        const buf = all.buffer.slice(all.byteOffset, all.byteOffset + all.length);
        let at = 0;
        const ends = blobs.map((b) => (at += b.length));
        w.once('message', (m: { results: unknown[] }) => resolve(m.results));
        w.once('error', reject);
        w.postMessage({ id: 1, root, tmpDir, keys, ends, buf }, [buf]);
      });
    try {
      const blobs = [randomBytes(10), randomBytes(5000), Buffer.alloc(0)];
      const keys = ['objects/aa/one.file', 'objects/bb/two.file', 'objects/aa/three.file'];
      expect(await send(keys, blobs)).toEqual([true, true, true]);
      // Again, with other bytes: each exists, nothing is replaced.
      expect(await send(keys, [Buffer.from('x'), Buffer.from('y'), Buffer.from('z')])).toEqual([
        false,
        false,
        false,
      ]);
      for (const [i, k] of keys.entries())
        expect(readFileSync(join(root, k)).equals(blobs[i]!), k).toBe(true);
      // A key under a file cannot be stored: that blob fails with the errno, the others go on.
      const mixed = await send(
        ['objects/aa/one.file/under', 'objects/cc/four.file'],
        [Buffer.from('a'), Buffer.from('b')],
      );
      // (ENOTDIR from the rename in C; EEXIST from Node's recursive mkdir of the file's path.)
      const failed = mixed[0] as { code: string; message: string };
      expect(failed.code).toMatch(/^(ENOTDIR|EEXIST)$/);
      expect(failed.message).toContain(failed.code);
      expect(mixed[1]).toBe(true);
      expect(readFileSync(join(root, 'objects/cc/four.file'), 'utf8')).toBe('b');
      expect(readdirSync(tmpDir)).toEqual([]);
    } finally {
      await w.terminate();
    }
  });
});
