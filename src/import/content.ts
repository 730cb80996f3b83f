/**
 * Content objects of one import: batches items for the worker pool, fills in the checksums of the
 * tree's file nodes, and counts what was written. With an FsBlobStore the workers write the objects
 * themselves; with any other store they only hash, the main thread asks the store which objects it
 * lacks, and only those are compressed (by the workers) and written (here, via createOnce).
 */
import { createReadStream } from 'node:fs';
import { mkdtemp, rm, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DeflateSettings } from '../compress/deflate.js';
import { RegistryError } from '../errors.js';
import {
  type Checksum,
  contentHashPrefix,
  type FileMeta,
  filezHeader,
  objectPath,
} from '../objects/index.js';
import { FsBlobStore } from '../store/fs-blob-store.js';
import type { ObjectStore } from '../store/object-store.js';
import { HeaderCache } from './headers.js';
import type { Hasher } from './native-pool.js';
import { HashPool, type ItemResult, type WorkerItem } from './pool.js';
import type { FileNode } from './tree.js';

/**
 * Files above this are streamed in CHUNK pieces, never held whole. 4 MiB, not more: each worker keeps a
 * read buffer and a deflate output of up to this size, and at 16 MiB importing /usr (5.6 GB) peaked at
 * 320 MB RSS. Above 4 MiB a second read (page cache) per new object costs little next to deflate.
 */
export const BIG = 4 * 1024 * 1024;
export const CHUNK = 1024 * 1024;
/**
 * A batch closes at 64 files or 4 MiB: 64 keeps per-message overhead (~50 us) under 5% for tiny files,
 * and 4 MiB (~40 ms of level-1 deflate) keeps the last batches short so both cores finish together.
 */
const BATCH_FILES = 64;
const BATCH_BYTES = 4 * 1024 * 1024;
/**
 * Tar payload bytes read ahead of the workers; beyond this the reader waits. 16 MiB covers what the
 * workers hold (2 x 2 batches of up to 4 MiB); 32 MiB was no faster and peaked 15 MB higher.
 */
const MAX_BUFFERED = 16 * 1024 * 1024;
/** Unacknowledged bytes of a streamed member in a worker's queue. */
const STREAM_WINDOW = 8 * 1024 * 1024;

interface Pending {
  /** Undefined for a streamed member, which has no worker item. */
  item: WorkerItem | undefined;
  node: FileNode;
  size: number;
}

/** The .filez header of a hash-only item: never read (the worker only hashes), one shared empty array. */
const NO_HEADER = new Uint8Array(0);

/**
 * Hash only (a push's first pass): the pool (made with `root: null`) hashes every file and nothing is
 * compressed or written; each item is handed to `onFile` with its checksum, so that the caller can
 * compress the ones the server lacks later with a `compress` request to the same pool.
 */
export interface HashOnly {
  pool: Hasher;
  /**
   * Every file once hashed (a content repeated in the tree comes once per path), in the order
   * batches finish. `filez` (valid until the returned promise settles: its memory is then reused)
   * comes with it when
   * `deflate` said so at the batch's submission; the import waits for a returned promise before it
   * hands on the next results (backpressure from the caller's upload).
   */
  onFile(checksum: Checksum, item: WorkerItem, filez?: Uint8Array): void | Promise<void>;
  /**
   * Asked as each batch is submitted: true makes the workers deflate what they hash (files up to
   * BIG; larger ones never come with a .filez). Given at all, items carry real .filez headers.
   */
  deflate?: () => boolean;
}

export interface ContentWriterOptions {
  deflate: DeflateSettings;
  hashOnly?: HashOnly;
  /** Called when a node's checksum has arrived (the directory import finishes directories with it). */
  onChecksum?: (node: FileNode) => void;
  onProgress?: (p: { files: number; bytes: number }) => void;
}

export class ContentWriter {
  written = 0;
  existing = 0;
  private files = 0;
  private bytes = 0;
  private batch: Pending[] = [];
  private batchBytes = 0;
  /** Payload bytes held by this thread for tar members not yet handed back by a worker. */
  private buffered = 0;
  private readonly inflight = new Set<Promise<void>>();
  private failure: { error: unknown } | undefined;
  private waiters: (() => void)[] = [];
  /** Other stores: checksums already checked or written in this import, so each is asked once. */
  private readonly seen = new Set<Checksum>();
  private readonly headers = new HeaderCache();

  private constructor(
    private readonly objects: ObjectStore,
    private readonly pool: Hasher,
    private readonly direct: boolean,
    private readonly spoolDir: string | undefined,
    private readonly opts: ContentWriterOptions,
  ) {}

  static async open(objects: ObjectStore, opts: ContentWriterOptions): Promise<ContentWriter> {
    if (opts.hashOnly) return new ContentWriter(objects, opts.hashOnly.pool, false, undefined, opts);
    const blobs = objects.blobs;
    if (blobs instanceof FsBlobStore) {
      // tempPath() makes <root>/tmp: the workers' temp files must be on the objects' filesystem for link(2).
      const tmp = await blobs.tempPath();
      const tmpDir = join(tmp, '..');
      const pool = new HashPool({ root: blobs.root, tmpDir, deflate: opts.deflate, big: BIG, chunk: CHUNK });
      return new ContentWriter(objects, pool, true, undefined, opts);
    }
    // Large compressed objects for a remote store are spooled here between compression and upload.
    const spoolDir = await mkdtemp(join(tmpdir(), 'sysroot-import-'));
    const pool = new HashPool({
      root: null,
      tmpDir: spoolDir,
      deflate: opts.deflate,
      big: BIG,
      chunk: CHUNK,
    });
    return new ContentWriter(objects, pool, false, spoolDir, opts);
  }

  /**
   * The headers a worker needs for a file: hashing needs only the content header, so in hash-only
   * mode no per-file .filez header is made (a push's pass 2 makes its own; push-source.ts).
   */
  private headersOf(meta: FileMeta, size: number): { prefix: Uint8Array; header: Uint8Array } {
    const hashOnly = this.opts.hashOnly;
    if (hashOnly && !hashOnly.deflate) return { prefix: this.headers.prefix(meta), header: NO_HEADER };
    return this.headers.get(meta, size);
  }

  /** A regular file on disk, read by a worker. `size` is from lstat and is checked again when read. */
  addPath(path: string, meta: FileMeta, size: number, node: FileNode): void {
    const item: WorkerItem = { kind: 'path', path, size, ...this.headersOf(meta, size) };
    if (size > BIG) this.submit([{ item, node, size }]);
    else this.push({ item, node, size }, size);
  }

  /** A whole small payload; `data` must own its ArrayBuffer, which is transferred to a worker. */
  addData(data: Uint8Array, meta: FileMeta, node: FileNode): void {
    if (data.byteOffset !== 0 || data.byteLength !== data.buffer.byteLength) {
      throw new RegistryError('E_INTERNAL', 'addData needs a buffer that owns its ArrayBuffer');
    }
    const size = data.length;
    this.buffered += size;
    const item: WorkerItem = { kind: 'data', data, ...this.headers.get(meta, size) };
    this.push({ item, node, size }, size);
  }

  addSymlink(meta: FileMeta, node: FileNode): void {
    this.push(
      {
        item: { kind: 'symlink', ...this.headersOf(meta, 0) },
        node,
        size: 0,
      },
      0,
    );
  }

  /** A large payload that arrives as a stream (a tar member): hashed and deflated as it flows. */
  async addStream(
    meta: FileMeta,
    size: number,
    body: AsyncIterable<Buffer>,
    node: FileNode,
    what: string,
  ): Promise<void> {
    this.check();
    const stream = this.pool.openStream(contentHashPrefix(meta), filezHeader(meta, size), size);
    let unacked = 0;
    let failed = false;
    let wake: (() => void) | undefined;
    stream.onAck((n) => {
      unacked -= n;
      wake?.();
    });
    const done = stream.done.catch((e: unknown) => {
      failed = true;
      wake?.();
      throw e;
    });
    done.catch(() => {});
    const stop = async (e: unknown): Promise<never> => {
      if (!failed) stream.abort();
      await done.catch(() => {});
      throw e;
    };
    // Tar chunks are views into the reader's buffers; copy them into 1 MiB buffers we own and transfer.
    let acc = new Uint8Array(CHUNK);
    let used = 0;
    let total = 0;
    const send = (): void => {
      if (used === 0) return;
      const out = used === acc.length ? acc : acc.slice(0, used);
      unacked += out.length;
      stream.send(out);
      acc = new Uint8Array(CHUNK);
      used = 0;
    };
    try {
      for await (const chunk of body) {
        total += chunk.length;
        if (total > size) break;
        for (let off = 0; off < chunk.length; ) {
          const n = Math.min(chunk.length - off, acc.length - used);
          acc.set(chunk.subarray(off, off + n), used);
          used += n;
          off += n;
          if (used === acc.length) send();
        }
        while (unacked > STREAM_WINDOW && !failed) {
          await new Promise<void>((r) => {
            wake = r;
          });
        }
        if (failed) break;
      }
    } catch (e) {
      return stop(e);
    }
    if (!failed && total !== size) {
      return stop(
        new RegistryError('E_BAD_ARCHIVE', `${what}: body is ${total} bytes, header says ${size}`, {
          path: what,
        }),
      );
    }
    if (!failed) {
      send();
      stream.end();
    }
    let results: ItemResult[];
    try {
      results = await done;
    } catch (e) {
      this.fail(e);
      throw e;
    }
    await this.onResults([{ item: undefined, node, size }], results);
  }

  /** Resolves when there is room for more tar payload; throws the first failure so the import stops. */
  async throttle(): Promise<void> {
    this.check();
    // Batches queued in the pool, and batches not done with (a hash-only import's onFile can hold
    // them up: the upload they go to is slower than the hashing). One that deflates holds each
    // batch's .filez until then: 2 per worker keep both busy, and the 1 GiB push's peak RSS was
    // 232-239 MB instead of 270-275 MB with 8, at the same speed (push v1 2.07 s against 2.08 s,
    // medians of 4 alternating runs).
    const ahead = this.pool.size * 8;
    const held = this.opts.hashOnly?.deflate ? this.pool.size * 2 : ahead;
    while (this.buffered > MAX_BUFFERED || this.pool.pending > ahead || this.inflight.size > held) {
      await new Promise<void>((r) => this.waiters.push(r));
      this.check();
    }
  }

  /** Send the last partial batch and wait for everything; throws the first failure. */
  async finish(): Promise<void> {
    this.flushBatch();
    while (this.inflight.size > 0) await Promise.all([...this.inflight]);
    this.check();
  }

  /** Stop: wait for work already in a worker (it cleans up its temp files) and stop the workers. */
  async close(): Promise<void> {
    this.pool.cancelQueued(new RegistryError('E_INTERNAL', 'import cancelled'));
    await Promise.allSettled([...this.inflight]);
    // A hash-only pool belongs to the caller, who has more work for it.
    if (!this.opts.hashOnly) await this.pool.close();
    if (this.spoolDir) await rm(this.spoolDir, { recursive: true, force: true });
  }

  private check(): void {
    if (this.failure) throw this.failure.error;
  }

  private fail(e: unknown): void {
    if (!this.failure) this.failure = { error: e };
    this.pool.cancelQueued(e);
    this.wakeWaiters();
  }

  private wakeWaiters(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  private push(p: Pending, bytes: number): void {
    this.check();
    this.batch.push(p);
    this.batchBytes += bytes;
    if (this.batch.length >= BATCH_FILES || this.batchBytes >= BATCH_BYTES) this.flushBatch();
  }

  private flushBatch(): void {
    if (this.batch.length === 0) return;
    const batch = this.batch;
    this.batch = [];
    this.batchBytes = 0;
    this.submit(batch);
  }

  private submit(batch: Pending[]): void {
    const items = batch.map((b) => b.item!);
    const deflate = this.opts.hashOnly?.deflate?.() ?? false;
    const p = this.pool
      .run({ type: 'batch', items, ...(deflate ? { deflate } : {}) }, dataBuffers(items))
      .then((results) => this.onResults(batch, results))
      .catch((e) => this.fail(e));
    this.track(p);
  }

  private track(p: Promise<void>): void {
    this.inflight.add(p);
    void p.finally(() => {
      this.inflight.delete(p);
      this.wakeWaiters();
    });
  }

  private async onResults(batch: Pending[], results: ItemResult[]): Promise<void> {
    const hashOnly = this.opts.hashOnly;
    if (hashOnly) {
      for (let i = 0; i < batch.length; i++) {
        const item = batch[i]!.item;
        if (!item) throw new RegistryError('E_INTERNAL', 'hash-only import of a streamed member');
        const r = results[i]!;
        await hashOnly.onFile(r.checksum!, item, r.filez);
      }
      // onFile is done with every .filez (its promise waited for them to be used).
      hashOnly.pool.recycle(results);
    } else if (!this.direct) results = await this.storeMissing(batch, results);
    for (let i = 0; i < batch.length; i++) {
      const r = results[i]!;
      const p = batch[i]!;
      if (p.item?.kind === 'data') this.buffered -= p.size;
      p.node.checksum = r.checksum;
      this.opts.onChecksum?.(p.node);
      if (r.status === 'written') this.written++;
      else this.existing++;
      this.files++;
      this.bytes += p.size;
    }
    this.opts.onProgress?.({ files: this.files, bytes: this.bytes });
  }

  /** Other stores: ask which hashed objects are missing, have only those compressed, and write them. */
  private async storeMissing(batch: Pending[], results: ItemResult[]): Promise<ItemResult[]> {
    const out: ItemResult[] = results.map((r) => ({ checksum: r.checksum, status: 'existing' }));
    const missing: { i: number; item: WorkerItem }[] = [];
    await Promise.all(
      results.map(async (r, i) => {
        const checksum = r.checksum!;
        // Identical content seen earlier in this import: that item writes it (and finish() awaits it).
        const first = !this.seen.has(checksum);
        this.seen.add(checksum);
        if (r.spool) {
          const wrote =
            first && !(await this.objects.has(checksum, 'file')) && (await this.upload(checksum, r.spool));
          if (!wrote) await unlink(r.spool).catch(() => {});
          out[i] = { checksum, status: wrote ? 'written' : 'existing' };
          return;
        }
        if (!first || (await this.objects.has(checksum, 'file'))) return;
        const item = batch[i]!.item!;
        missing.push({
          i,
          item: item.kind === 'data' ? { ...item, data: r.data!, checksum } : { ...item, checksum },
        });
      }),
    );
    if (missing.length === 0) return out;
    const items = missing.map((m) => m.item);
    const compressed = await this.pool.run({ type: 'compress', items }, dataBuffers(items));
    await Promise.all(
      missing.map(async ({ i }, k) => {
        const r = compressed[k]!;
        const checksum = results[i]!.checksum!;
        const filez = r.filez
          ? Buffer.from(r.filez.buffer, r.filez.byteOffset, r.filez.byteLength)
          : undefined;
        const wrote = filez
          ? await this.objects.blobs.createOnce(objectPath(checksum, 'file'), filez)
          : await this.upload(checksum, r.spool!);
        out[i] = { checksum, status: wrote ? 'written' : 'existing' };
      }),
    );
    return out;
  }

  /** Stream a spooled .filez into the store and remove the spool file. */
  private async upload(checksum: Checksum, spool: string): Promise<boolean> {
    try {
      return await this.objects.blobs.createOnce(objectPath(checksum, 'file'), createReadStream(spool));
    } finally {
      await unlink(spool).catch(() => {});
    }
  }
}

function dataBuffers(items: WorkerItem[]): ArrayBuffer[] {
  const list: ArrayBuffer[] = [];
  for (const item of items) {
    if (item.kind === 'data' && item.data.buffer instanceof ArrayBuffer && item.data.byteLength > 0) {
      list.push(item.data.buffer);
    }
  }
  return list;
}
