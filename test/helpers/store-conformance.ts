/**
 * The BlobStore contract as tests: every adapter (FsBlobStore, S3BlobStore) runs this same suite, so
 * the repository code above it can rely on exactly these behaviours whatever the backend.
 */
import { createHash, randomBytes, randomFillSync } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isRegistryError } from '../../src/errors.js';
import { objectPath } from '../../src/objects/index.js';
import type { BlobStore } from '../../src/store/blob-store.js';
import { ObjectStore } from '../../src/store/object-store.js';

export interface StoreUnderTest {
  store: BlobStore;
  cleanup(): Promise<void>;
}

async function collect(s: AsyncIterable<Buffer> | undefined): Promise<Buffer | undefined> {
  if (!s) return undefined;
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c);
  return Buffer.concat(chunks);
}

async function keys(store: BlobStore, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const k of store.list(prefix)) out.push(k);
  return out.sort();
}

/** `n` MiB of random bytes, made 1 MiB at a time as it is read; `digest()` is their sha256 once read. */
function generatedBody(n: number, onChunk: () => void): { body: AsyncIterable<Buffer>; digest(): string } {
  const hash = createHash('sha256');
  async function* body(): AsyncGenerator<Buffer> {
    for (let i = 0; i < n; i++) {
      const chunk = randomFillSync(Buffer.allocUnsafe(1 << 20));
      hash.update(chunk);
      onChunk();
      yield chunk;
    }
  }
  return { body: body(), digest: () => hash.digest('hex') };
}

export function blobStoreConformance(name: string, make: () => Promise<StoreUnderTest>): void {
  describe(`BlobStore conformance: ${name}`, () => {
    let t: StoreUnderTest;
    let store: BlobStore;

    beforeEach(async () => {
      t = await make();
      store = t.store;
    });
    afterEach(async () => {
      await t?.cleanup();
    });

    it('writes once: a second createOnce returns false and leaves the first bytes', async () => {
      expect(await store.createOnce('objects/ab/once.file', Buffer.from('first'))).toBe(true);
      expect(await store.createOnce('objects/ab/once.file', Buffer.from('second, longer'))).toBe(false);
      expect((await store.read('objects/ab/once.file'))?.toString()).toBe('first');
      expect((await store.stat('objects/ab/once.file'))?.size).toBe(5);
    });

    it('reads and stats what it wrote, and answers undefined (never throws) for a missing key', async () => {
      const bytes = randomBytes(3000);
      const before = Date.now();
      await store.createOnce('a/blob', bytes);
      expect((await store.read('a/blob'))?.equals(bytes)).toBe(true);
      expect((await collect(await store.readStream('a/blob')))?.equals(bytes)).toBe(true);
      const st = await store.stat('a/blob');
      expect(st?.size).toBe(3000);
      expect(typeof st?.etag).toBe('string');
      expect(st?.etag.length).toBeGreaterThan(0);
      // S3 stamps whole seconds; allow for that and for a little clock skew.
      expect(st?.mtimeMs).toBeGreaterThan(before - 5_000);
      expect((await store.stat('a/blob'))?.etag).toBe(st?.etag);
      for (const key of ['a/missing', 'missing/deeper/key', 'a/blob/below-a-blob']) {
        expect(await store.read(key)).toBeUndefined();
        expect(await store.stat(key)).toBeUndefined();
        expect(await store.readStream(key)).toBeUndefined();
        expect(await store.readStream(key, { start: 0, end: 10 })).toBeUndefined();
      }
      // A "directory" (a prefix of other keys) is not a blob.
      expect(await store.read('a')).toBeUndefined();
      expect(await store.stat('a')).toBeUndefined();
    });

    it('reads byte ranges [start, end), clamped to the size', async () => {
      const bytes = randomBytes(100_000);
      await store.createOnce('r/blob', bytes);
      const range = async (start: number, end: number) =>
        collect(await store.readStream('r/blob', { start, end }));
      expect((await range(0, 100_000))?.equals(bytes)).toBe(true);
      expect((await range(0, 1))?.equals(bytes.subarray(0, 1))).toBe(true);
      expect((await range(12_345, 67_890))?.equals(bytes.subarray(12_345, 67_890))).toBe(true);
      expect((await range(99_999, 100_000))?.equals(bytes.subarray(99_999))).toBe(true);
      expect((await range(90_000, 200_000))?.equals(bytes.subarray(90_000))).toBe(true);
      expect((await range(500, 500))?.length).toBe(0);
      expect((await range(100_000, 100_010))?.length).toBe(0);
      expect((await range(150_000, 160_000))?.length).toBe(0);
    });

    it('lists every key under a prefix, recursively, and nothing beside it', async () => {
      const all = ['p/a/1', 'p/a/b/2', 'p/a/b/c/3', 'p/ab/4', 'p/b/5', 'p/a-sibling'];
      await Promise.all(all.map((k) => store.createOnce(k, Buffer.from(k))));
      expect(await keys(store, 'p/a/')).toEqual(['p/a/1', 'p/a/b/2', 'p/a/b/c/3']);
      expect(await keys(store, 'p/a/b/')).toEqual(['p/a/b/2', 'p/a/b/c/3']);
      expect(await keys(store, 'p/')).toEqual([...all].sort());
      expect(await keys(store, 'p/none/')).toEqual([]);
      expect(await keys(store, 'nothing/')).toEqual([]);
    });

    it('lists more keys than one S3 page (1000)', async () => {
      const names = Array.from({ length: 1010 }, (_, i) => `many/${String(i).padStart(4, '0')}`);
      for (let i = 0; i < names.length; i += 100) {
        await Promise.all(names.slice(i, i + 100).map((k) => store.createOnce(k, Buffer.from('x'))));
      }
      expect(await keys(store, 'many/')).toEqual(names);
    }, 60_000);

    it('replaces unconditionally, creating the key if needed, with a new etag each time', async () => {
      expect(await store.replace('refs/heads/main', Buffer.from('one\n'))).toBe(true);
      const e1 = (await store.stat('refs/heads/main'))?.etag;
      expect(await store.replace('refs/heads/main', Buffer.from('two\n'))).toBe(true);
      const e2 = (await store.stat('refs/heads/main'))?.etag;
      expect((await store.read('refs/heads/main'))?.toString()).toBe('two\n');
      expect(e2).not.toBe(e1);
    });

    it('replaces with ifMatch only while the etag is current', async () => {
      await store.replace('refs/heads/r', Buffer.from('aaaa'));
      const e1 = (await store.stat('refs/heads/r'))!.etag;
      expect(await store.replace('refs/heads/r', Buffer.from('bbbb'), { ifMatch: e1 })).toBe(true);
      const e2 = (await store.stat('refs/heads/r'))!.etag;
      expect(e2).not.toBe(e1);
      expect(await store.replace('refs/heads/r', Buffer.from('cccc'), { ifMatch: e1 })).toBe(false);
      expect((await store.read('refs/heads/r'))?.toString()).toBe('bbbb');
      expect((await store.stat('refs/heads/r'))?.etag).toBe(e2);
      expect(await store.replace('refs/heads/r', Buffer.from('dddd'), { ifMatch: e2 })).toBe(true);
      expect((await store.read('refs/heads/r'))?.toString()).toBe('dddd');
    });

    it('never gives an old etag back: same size, replaced twice in a row, the first is stale', async () => {
      // Refs are always 65 bytes and replaced within milliseconds: size and a coarse mtime repeat.
      await store.replace('refs/heads/aba', Buffer.from('x1'));
      const e1 = (await store.stat('refs/heads/aba'))!.etag;
      expect(await store.replace('refs/heads/aba', Buffer.from('x2'), { ifMatch: e1 })).toBe(true);
      const e2 = (await store.stat('refs/heads/aba'))!.etag;
      expect(await store.replace('refs/heads/aba', Buffer.from('x3'), { ifMatch: e2 })).toBe(true);
      expect(await store.replace('refs/heads/aba', Buffer.from('x4'), { ifMatch: e1 })).toBe(false);
      expect(await store.replace('refs/heads/aba', Buffer.from('x4'), { ifMatch: e2 })).toBe(false);
      expect((await store.read('refs/heads/aba'))?.toString()).toBe('x3');
    });

    it('replaces with ifMatch null only when the key does not exist', async () => {
      expect(await store.replace('summary', Buffer.from('first'), { ifMatch: null })).toBe(true);
      expect(await store.replace('summary', Buffer.from('second'), { ifMatch: null })).toBe(false);
      expect((await store.read('summary'))?.toString()).toBe('first');
    });

    it('refuses ifMatch on a missing key and creates nothing', async () => {
      await store.replace('refs/heads/other', Buffer.from('x'));
      const etag = (await store.stat('refs/heads/other'))!.etag;
      expect(await store.replace('refs/heads/none', Buffer.from('x'), { ifMatch: etag })).toBe(false);
      expect(await store.stat('refs/heads/none')).toBeUndefined();
    });

    it('lets withLock(() => replace(…, { ifMatch })) run without waiting for itself', async () => {
      await store.replace('refs/heads/locked', Buffer.from('before'));
      const etag = (await store.stat('refs/heads/locked'))!.etag;
      const ok = await store.withLock(async () => {
        const a = await store.replace('refs/heads/locked', Buffer.from('after'), { ifMatch: etag });
        const b = await store.replace('summary-locked', Buffer.from('s'), { ifMatch: null });
        return a && b;
      });
      expect(ok).toBe(true);
      expect((await store.read('refs/heads/locked'))?.toString()).toBe('after');
    });

    it('lets exactly one of 20 concurrent createOnce calls win, and keeps its bytes', async () => {
      const writers = Array.from({ length: 20 }, (_, i) =>
        Buffer.from(`writer ${i} ${randomBytes(8).toString('hex')}`),
      );
      const results = await Promise.all(
        writers.map((w) => store.createOnce('sysroot/reflog/main/0001.json', w)),
      );
      expect(results.filter(Boolean)).toHaveLength(1);
      const winner = writers[results.indexOf(true)]!;
      expect((await store.read('sysroot/reflog/main/0001.json'))?.equals(winner)).toBe(true);
    });

    it('lets exactly one of 20 concurrent replaces from the same etag win, and keeps its bytes', async () => {
      await store.replace('refs/heads/race', Buffer.from('base'));
      const base = (await store.stat('refs/heads/race'))!.etag;
      const writers = Array.from({ length: 20 }, (_, i) =>
        Buffer.from(`writer ${String(i).padStart(2, '0')}`),
      );
      const results = await Promise.all(
        writers.map((w) => store.replace('refs/heads/race', w, { ifMatch: base })),
      );
      expect(results.filter(Boolean)).toHaveLength(1);
      const winner = writers[results.indexOf(true)]!;
      expect((await store.read('refs/heads/race'))?.equals(winner)).toBe(true);
      expect((await store.stat('refs/heads/race'))?.etag).not.toBe(base);
    });

    it('lets exactly one of 20 concurrent create-if-absent replaces win', async () => {
      const writers = Array.from({ length: 20 }, (_, i) => Buffer.from(`creator ${i}`));
      const results = await Promise.all(
        writers.map((w) => store.replace('refs/heads/new', w, { ifMatch: null })),
      );
      expect(results.filter(Boolean)).toHaveLength(1);
      expect((await store.read('refs/heads/new'))?.equals(writers[results.indexOf(true)]!)).toBe(true);
    });

    it('streams a 40 MB createOnce in flat memory, and reads it back streamed', async () => {
      const rss0 = process.memoryUsage().rss;
      let peak = rss0;
      const sample = () => {
        peak = Math.max(peak, process.memoryUsage().rss);
      };
      const timer = setInterval(sample, 20);
      try {
        const g = generatedBody(40, sample);
        expect(await store.createOnce('objects/big/forty.filez', g.body)).toBe(true);
        sample();
        const st = await store.stat('objects/big/forty.filez');
        expect(st?.size).toBe(40 << 20);
        const hash = createHash('sha256');
        for await (const c of (await store.readStream('objects/big/forty.filez'))!) {
          hash.update(c);
          sample();
        }
        expect(hash.digest('hex')).toBe(g.digest());
        // The body is 40 MiB; holding it (or a copy per part) would cost that much or more.
        expect(peak - rss0).toBeLessThan(64 << 20);
      } finally {
        clearInterval(timer);
      }
      // Write-once holds for the streamed path too, and the source is left unread.
      let pulled = 0;
      const again = generatedBody(40, () => pulled++);
      expect(await store.createOnce('objects/big/forty.filez', again.body)).toBe(false);
      expect(pulled).toBeLessThanOrEqual(40);
    }, 60_000);

    it('reports missing objects as such, through the ObjectStore', async () => {
      const objects = new ObjectStore(store);
      const csum = 'ab'.repeat(32);
      expect(await objects.has(csum, 'commit')).toBe(false);
      expect(await objects.getRaw(csum, 'dirtree')).toBeUndefined();
      const reads = [() => objects.getMetadata(csum, 'commit'), () => objects.readContentStream(csum)];
      for (const read of reads) {
        const e = await read().then(
          () => undefined,
          (err: unknown) => err,
        );
        expect(isRegistryError(e, 'E_OBJECT_MISSING')).toBe(true);
      }
      expect(await store.stat(objectPath(csum, 'file'))).toBeUndefined();
    });

    it('answers hasMany as has would, one answer per object in order, also past a worker batch', async () => {
      const objects = new ObjectStore(store);
      // More than one existence request of the directory store's worker (4096 keys); S3 asks with HEADs.
      const n = store.existsMany ? 4200 : 120;
      const refs = Array.from({ length: n }, (_, i) => ({
        checksum: createHash('sha256').update(`object ${i}`).digest('hex'),
        type: i % 3 === 0 ? ('dirtree' as const) : ('file' as const),
      }));
      const stored = new Set([0, 1, 7, 8, 64, n - 1]);
      for (const i of stored)
        await store.createOnce(objectPath(refs[i]!.checksum, refs[i]!.type), Buffer.from('x'));
      // The same checksum as another type is a different object.
      const otherType = { checksum: refs[1]!.checksum, type: 'dirmeta' as const };
      const answers = await objects.hasMany([...refs, otherType]);
      expect(answers).toEqual([...refs.map((_, i) => stored.has(i)), false]);
      for (const i of [0, 2, 7, n - 1])
        expect(await objects.has(refs[i]!.checksum, refs[i]!.type)).toBe(answers[i]);
      expect(await objects.hasMany([])).toEqual([]);
      if (store.existsMany) {
        // A "directory" (a prefix of stored keys) is no blob, as stat says.
        const dir = objectPath(refs[0]!.checksum, refs[0]!.type).split('/').slice(0, 2).join('/');
        expect(await store.stat(dir)).toBeUndefined();
        expect(await store.existsMany([dir, objectPath(refs[0]!.checksum, refs[0]!.type)])).toEqual([
          false,
          true,
        ]);
      }
    }, 60_000);

    it('serves a presigned GET when it offers one', async () => {
      if (!store.presignGet) return;
      await store.createOnce('presigned/blob', Buffer.from('public for a minute'));
      const url = await store.presignGet('presigned/blob', 60);
      const res = await fetch(url);
      expect(res.status).toBe(200);
      expect(await res.text()).toBe('public for a minute');
    });
  });
}
