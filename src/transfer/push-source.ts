/**
 * The tree a push sends, in two passes (push.ts drives them):
 *
 *   pass 1  hash   every file is read and hashed on the import worker pool, nothing is deflated or
 *                  written; dirtree and dirmeta objects are built exactly as `sysroot commit` builds
 *                  them (the same importer) and kept in memory. Enough to name the commit.
 *   pass 2  filez  only the files the server lacks are deflated (level 1, as the importer does), on
 *                  the same pool, and handed over in order as `.filez` bytes for the pack.
 *
 * For the Debian sysroot pass 1 costs ~0.1 s of sha256 and reads instead of ~0.3 s of deflate, and
 * a push of v2 on top of v1 deflates only the ~290 files that changed. A new ref's push (LiveFiles,
 * live-pack.ts) has pass 1 deflate as well and hand each distinct file on as it is hashed; pass 2
 * then makes only what that did not send.
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
import { sizedHeader } from '../import/headers.js';
import { importDirectory, importSource } from '../import/index.js';
import { hashPool } from '../import/native-pool.js';
import type { ItemResult, WorkerItem } from '../import/pool.js';
import { deflateOf, type ImportOptions, type ImportResult } from '../import/tree.js';
import { type Checksum, filezHeader, objectPath, parseContentHeader } from '../objects/index.js';
import { FsBlobStore } from '../store/fs-blob-store.js';
import { MemoryBlobStore } from '../store/memory-blob-store.js';
import { type ObjectRef, ObjectStore } from '../store/object-store.js';

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
  /**
   * Every object `commit` (made from `imported`) reaches: the commit, then every dirtree and dirmeta
   * and every distinct file. That is exactly what this import made, so it is listed, not walked:
   * walking decoded the ~800 dirtrees of a sysroot again, ~50 ms of a 0.7 s push of v2.
   */
  closure(commit: Checksum): Promise<ObjectRef[]>;
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

/**
 * Where a directory's pass 1 can send files it deflates as it hashes (a push of a new ref streams
 * them into its pack at once; push.ts). A file handed over here is still listed by the closure, and
 * `filez()` can make it again (the stream failed and the push falls back to the two passes).
 */
export interface LiveFiles {
  /** Asked as each batch of files is submitted: deflate them too, and hand them to `file`? */
  wanted(): boolean;
  /** A distinct file's .filez, once; the hash pass waits for the returned promise. */
  file(checksum: Checksum, filez: Buffer): Promise<void>;
}

/** Pass 1 over `source` (a directory, or a tarball spooled whole); see the top of this file. */
export async function hashSource(source: string, opts: ImportOptions, live?: LiveFiles): Promise<PushSource> {
  let isDir: boolean;
  try {
    isDir = (await stat(source)).isDirectory();
  } catch (e) {
    const code = errnoCode(e) === 'ENOENT' ? 'E_NOT_FOUND' : 'E_IO';
    throw new RegistryError(code, `${source}: ${(e as Error).message}`, { path: source }, undefined, e);
  }
  const spool = await mkdtemp(join(tmpdir(), 'sysroot-push-'));
  try {
    return isDir
      ? await directorySource(source, spool, opts, live)
      : await tarballSource(source, spool, opts);
  } catch (e) {
    await rm(spool, { recursive: true, force: true });
    throw e;
  }
}

async function directorySource(
  dir: string,
  spool: string,
  opts: ImportOptions,
  live: LiveFiles | undefined,
): Promise<PushSource> {
  // root: null makes the workers hash only; `compress` requests deflate, spooling files over BIG.
  const pool = hashPool({ root: null, tmpDir: spool, deflate: deflateOf(opts), big: BIG, chunk: CHUNK });
  const objects = new ObjectStore(new MemoryBlobStore());
  /** What pass 2 needs to deflate each distinct file (the first path of a content). */
  const items = new Map<Checksum, PendingFile>();
  const headers = new FilezHeaders();
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
        onFile: (checksum, item, filez) => {
          if (items.has(checksum)) return;
          if (item.kind === 'data')
            throw new RegistryError('E_INTERNAL', 'push: a directory gave a data item');
          const file =
            item.kind === 'path'
              ? new PendingFile(item.path, item.size, item.prefix)
              : new PendingFile(undefined, 0, item.prefix);
          items.set(checksum, file);
          if (filez)
            return live?.file(checksum, Buffer.from(filez.buffer, filez.byteOffset, filez.byteLength));
        },
        ...(live ? { deflate: () => live.wanted() } : {}),
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
    closure: async (commit) => {
      const out = await treeObjects(objects, commit);
      for (const checksum of items.keys()) out.push({ checksum, type: 'file' });
      return out;
    },
    async *filez(files) {
      // Batches are cut as they are submitted, at most AHEAD_PER_WORKER per worker ahead of the
      // pack, and dropped once their .filez are handed on: pass 2 holds a few batches, not the tree.
      let next = 0;
      const cutBatch = (): WorkerItem[] => {
        const batch: WorkerItem[] = [];
        let bytes = 0;
        while (next < files.length) {
          const checksum = files[next]!;
          const pending = items.get(checksum);
          if (!pending) throw new RegistryError('E_INTERNAL', `push: no source for file object ${checksum}`);
          // A big file goes alone: the worker spools its deflate output instead of returning it.
          if (pending.size > BIG && batch.length > 0) break;
          batch.push(pending.item(checksum, headers));
          next++;
          bytes += pending.size;
          if (batch.length >= BATCH_FILES || bytes >= BATCH_BYTES || pending.size > BIG) break;
        }
        return batch;
      };
      const ahead: Array<{ batch: WorkerItem[]; results: Promise<ItemResult[]> }> = [];
      const submit = (): void => {
        const batch = cutBatch();
        if (batch.length === 0) return;
        // Symlinks need no worker: their .filez is the header alone.
        const results = batch.every((i) => i.kind === 'symlink')
          ? Promise.resolve(batch.map((i) => ({ filez: i.header })))
          : pool.run({ type: 'compress', items: batch });
        results.catch(() => {});
        ahead.push({ batch, results });
      };
      // Stopping early (the upload failed) leaves spool files of batches compressed ahead: close()
      // removes the whole spool directory.
      for (let i = 0; i < pool.size * AHEAD_PER_WORKER; i++) submit();
      for (let cur = ahead.shift(); cur; cur = ahead.shift()) {
        const results = await cur.results;
        submit();
        for (let i = 0; i < cur.batch.length; i++) {
          const r = results[i]!;
          const checksum = cur.batch[i]!.checksum!;
          if (r.filez) {
            const filez = Buffer.from(r.filez.buffer, r.filez.byteOffset, r.filez.byteLength);
            yield { checksum, length: filez.length, body: filez };
          } else {
            yield* spooled(checksum, r.spool!);
          }
        }
        // The pack has every .filez of the batch now: their arenas go back to the workers.
        pool.recycle(results);
      }
    },
  };
}

/**
 * A file pass 2 may have to deflate, as small as it can be: the 1 GiB bench tree (42,000 distinct
 * files) held ~1.3 KB per file as WorkerItems (a .filez header Buffer each, with its own
 * ArrayBuffer, and a hidden class per object); this is its path, its size and the content header,
 * which is shared by every file of the same owner and mode (import/headers.ts).
 */
class PendingFile {
  constructor(
    /** Undefined for a symlink: its .filez is the header alone. */
    readonly path: string | undefined,
    readonly size: number,
    readonly prefix: Uint8Array,
  ) {}

  item(checksum: Checksum, headers: FilezHeaders): WorkerItem {
    const prefix = this.prefix;
    return this.path === undefined
      ? { kind: 'symlink', prefix, header: headers.get(prefix, 0), checksum }
      : {
          kind: 'path',
          path: this.path,
          size: this.size,
          prefix,
          header: headers.get(prefix, this.size),
          checksum,
        };
  }
}

/**
 * `.filez` headers made again from content headers (the same metadata in the other GVariant
 * layout, with the size): one template per content-header object, which the importer shares
 * between the files of one owner and mode, then a copy with the size patched in.
 */
class FilezHeaders {
  private readonly templates = new WeakMap<Uint8Array, Buffer>();

  get(prefix: Uint8Array, size: number): Buffer {
    let template = this.templates.get(prefix);
    if (!template) {
      const h = parseContentHeader(prefix, 'content header');
      if (!h || h.headerLength !== prefix.length) {
        throw new RegistryError('E_INTERNAL', 'push: a content header does not parse back');
      }
      template = filezHeader(h.meta, 0);
      this.templates.set(prefix, template);
    }
    return sizedHeader(template, size);
  }
}

/**
 * `commit`, then the dirtrees and dirmetas of `objects` (and its file objects with `files`): a
 * store that holds one import and the commits made of it (a rebase leaves older ones; their
 * signatures, if any, travel apart).
 */
async function treeObjects(objects: ObjectStore, commit: Checksum, files = false): Promise<ObjectRef[]> {
  const out: ObjectRef[] = [{ checksum: commit, type: 'commit' }];
  for await (const o of objects.list()) {
    if (o.type === 'dirtree' || o.type === 'dirmeta' || (files && o.type === 'file')) out.push(o);
  }
  return out;
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
    // The spool is a repository of this import alone: its file objects are the tree's.
    closure: (commit) => treeObjects(objects, commit, true),
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
