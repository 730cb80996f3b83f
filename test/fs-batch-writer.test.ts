/**
 * FsBatchWriter (src/store/fs-batch-writer.ts): write-once of many small blobs through the store's
 * write worker. Its callers hand it views of buffers they reuse at once (a pack reader decoding into
 * one buffer again and again), so each blob's bytes must be taken when write() is called.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
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
});
