/**
 * The tree a push sends, in two passes (push.ts drives them):
 *
 *   pass 1  hash   every file is read and hashed on the import worker pool, nothing is deflated or
 *                  written; dirtree and dirmeta objects are built exactly as `sysroot commit` builds
 *                  them (the same importer) and kept in memory. Enough to name the commit.
 *   pass 2  filez  only the files the server lacks are deflated (level 1, as the importer does), on
 *                  the same pool, and handed over in order as `.filez` bytes for the pack.
 *
 * For the Debian sysroot pass 1 costs ~0.1 s of sha256 and reads instead of ~1 s of deflate, and a
 * push of v2 on top of v1 deflates only the ~290 files that changed.
 *
 * A tarball cannot be read again by path, so it takes one pass that hashes and deflates everything
 * (as `sysroot commit` does) into a temporary archive repository (a spool), removed at the end.
 */
import { createReadStream } from 'node:fs';
import { mkdtemp, rm, stat, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { errnoCode, RegistryError } from '../errors.js';
import { BIG, CHUNK } from '../import/content.js';
import { importDirectory, importSource } from '../import/index.js';
import { HashPool, type ItemResult, type WorkerItem } from '../import/pool.js';
import { type ImportOptions, type ImportResult, zlibLevel } from '../import/tree.js';
import { type Checksum, objectPath } from '../objects/index.js';
import { FsBlobStore } from '../store/fs-blob-store.js';
import { MemoryBlobStore } from '../store/memory-blob-store.js';
import { ObjectStore } from '../store/object-store.js';

/** One `.filez` for the pack: a Buffer, or a stream of `length` bytes (a large file). */
export interface FilezPayload {
  checksum: Checksum;
  length: number;
  body: Buffer | AsyncIterable<Buffer>;
}

export interface PushSource {
  /** dirtree, dirmeta and commit objects (and, for a tarball, the .filez objects too). */
  readonly objects: ObjectStore;
  readonly imported: ImportResult;
  /** The .filez of `files` (checksums from the tree), in that order. */
  filez(files: Checksum[]): AsyncGenerator<FilezPayload>;
  close(): Promise<void>;
}

/**
 * Compression batches in flight ahead of the pack: 2 per worker keeps both cores deflating while
 * the pack is written; each holds at most BATCH_BYTES of file data and its deflate output.
 */
const AHEAD_PER_WORKER = 2;
const BATCH_FILES = 64;
const BATCH_BYTES = 2 * 1024 * 1024;
/** Spooled .filez up to this size are read whole; larger ones are streamed into the pack. */
const WHOLE = 1024 * 1024;

/** Pass 1 over `source` (a directory, or a tarball spooled whole); see the top of this file. */
export async function hashSource(source: string, opts: ImportOptions): Promise<PushSource> {
  let isDir: boolean;
  try {
    isDir = (await stat(source)).isDirectory();
  } catch (e) {
    const code = errnoCode(e) === 'ENOENT' ? 'E_NOT_FOUND' : 'E_IO';
    throw new RegistryError(code, `${source}: ${(e as Error).message}`, { path: source }, undefined, e);
  }
  const spool = await mkdtemp(join(tmpdir(), 'sysroot-push-'));
  try {
    return isDir ? await directorySource(source, spool, opts) : await tarballSource(source, spool, opts);
  } catch (e) {
    await rm(spool, { recursive: true, force: true });
    throw e;
  }
}

async function directorySource(dir: string, spool: string, opts: ImportOptions): Promise<PushSource> {
  // root: null makes the workers hash only; `compress` requests deflate, spooling files over BIG.
  const pool = new HashPool({ root: null, tmpDir: spool, level: zlibLevel(opts), big: BIG, chunk: CHUNK });
  const objects = new ObjectStore(new MemoryBlobStore());
  /** What pass 2 needs to deflate a file: its path, size and headers (the first path of a content). */
  const items = new Map<Checksum, WorkerItem>();
  const close = async (): Promise<void> => {
    await pool.close();
    await rm(spool, { recursive: true, force: true });
  };
  let imported: ImportResult;
  try {
    imported = await importDirectory(objects, dir, {
      ...opts,
      hashOnly: {
        pool,
        onFile: (checksum, item) => {
          if (!items.has(checksum)) items.set(checksum, item);
        },
      },
    });
  } catch (e) {
    await close();
    throw e;
  }
  return {
    objects,
    imported,
    close,
    async *filez(files) {
      // Indexed by batch; a consumed batch's entry is cleared so its .filez buffers can be collected.
      const ahead: (Promise<ItemResult[]> | undefined)[] = [];
      const batches: WorkerItem[][] = [];
      let batch: WorkerItem[] = [];
      let batchBytes = 0;
      const cut = (): void => {
        if (batch.length > 0) batches.push(batch);
        batch = [];
        batchBytes = 0;
      };
      for (const checksum of files) {
        const item = items.get(checksum);
        if (!item) throw new RegistryError('E_INTERNAL', `push: no source for file object ${checksum}`);
        const size = item.kind === 'path' ? item.size : 0;
        if (size > BIG) cut();
        batch.push({ ...item, checksum });
        batchBytes += size;
        if (batch.length >= BATCH_FILES || batchBytes >= BATCH_BYTES || size > BIG) cut();
      }
      cut();
      const submit = (): void => {
        const b = batches[ahead.length];
        if (!b) return;
        // Symlinks need no worker: their .filez is the header alone.
        const p = b.every((i) => i.kind === 'symlink')
          ? Promise.resolve(b.map((i) => ({ filez: i.header })))
          : pool.run({ type: 'compress', items: b });
        p.catch(() => {});
        ahead.push(p);
      };
      // Stopping early (the upload failed) leaves spool files of batches compressed ahead: close()
      // removes the whole spool directory.
      while (ahead.length < Math.min(batches.length, pool.size * AHEAD_PER_WORKER)) submit();
      for (let done = 0; done < batches.length; done++) {
        const results = await ahead[done]!;
        ahead[done] = undefined;
        submit();
        const b = batches[done]!;
        for (let i = 0; i < b.length; i++) {
          const r = results[i]!;
          const checksum = b[i]!.checksum!;
          if (r.filez) {
            const filez = Buffer.from(r.filez.buffer, r.filez.byteOffset, r.filez.byteLength);
            yield { checksum, length: filez.length, body: filez };
          } else {
            yield* spooled(checksum, r.spool!);
          }
        }
      }
    },
  };
}

/** A deflated large file in the spool, streamed into the pack and then removed. */
async function* spooled(checksum: Checksum, path: string): AsyncGenerator<FilezPayload> {
  try {
    const { size } = await stat(path);
    yield { checksum, length: size, body: createReadStream(path, { highWaterMark: CHUNK }) };
  } finally {
    await unlink(path).catch(() => {});
  }
}

async function tarballSource(tarball: string, spool: string, opts: ImportOptions): Promise<PushSource> {
  const blobs = new FsBlobStore(join(spool, 'repo'));
  const objects = new ObjectStore(blobs);
  const imported = await importSource(objects, tarball, opts);
  return {
    objects,
    imported,
    close: () => rm(spool, { recursive: true, force: true }),
    async *filez(files) {
      for (const checksum of files) {
        const key = objectPath(checksum, 'file');
        const st = await blobs.stat(key);
        const missing = () =>
          new RegistryError('E_INTERNAL', `push: file object ${checksum} is not in the spool`);
        if (!st) throw missing();
        if (st.size <= WHOLE) {
          const filez = await blobs.read(key);
          if (!filez) throw missing();
          yield { checksum, length: filez.length, body: filez };
        } else {
          yield {
            checksum,
            length: st.size,
            body: createReadStream(blobs.path(key), { highWaterMark: CHUNK }),
          };
        }
      }
    },
  };
}
