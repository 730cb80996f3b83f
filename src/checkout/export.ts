/**
 * Export a commit as a tar archive (`sysroot export`), byte-for-byte reproducible.
 *
 * The same commit gives the same bytes on every run and every machine. The rules:
 *
 *  1. Members come in walk order: depth first, each directory before its contents, the entries of a
 *     directory (files and subdirectories together) in strcmp order of their UTF-8 names. This is
 *     per-directory order, as `tar --sort=name` writes it, not strcmp of whole paths ('a/x' comes
 *     before 'a-b').
 *  2. The root directory is the first member, named `./`. Every other member is named by its path
 *     relative to the root, without a leading `./` (the tar writer normalises names that way):
 *     `bin/`, `bin/sh`; directories end in '/'. (A name that needs a pax `path` record, non-ASCII or
 *     too long for ustar, is written there by the tar writer without the trailing '/'.)
 *  3. Owner and mode are the commit's: numeric uid and gid, mode & 07777 (setuid, setgid and sticky
 *     kept); uname and gname are empty; mtime is 0 (1970-01-01T00:00:00Z), as OSTree records no times.
 *  4. Symlinks are symlink members (target as stored, uncompressed size 0).
 *  5. Content shared by several paths is written as a separate regular file at each path. There are no
 *     hard-link members: OSTree does not record hard links, only identical content.
 *  6. Xattrs (as stored: sorted by name, none with an empty value) are pax `SCHILY.xattr.<name>`
 *     records with the raw value bytes, in a pax header before the member. A pax header is written
 *     only where ustar cannot hold a field (xattrs, long or non-ASCII names and link targets, big
 *     ids or sizes); its own records are sorted and its header is fixed (see src/tar/writer.ts).
 *  7. Format: POSIX ustar ("ustar\0" "00") with pax extensions, ending in two zero blocks, padded to a
 *     multiple of 10240 bytes (GNU tar's record size).
 *  8. Compression 'zstd': zstd level 3, single-threaded (nbWorkers 0, so the output depends on the
 *     input and level only), with a content checksum, as one frame. The compressed bytes depend on
 *     the zstd library version too (the one bundled in zstd-napi); the tar inside does not.
 *  9. Every content object is verified before any of it is written: payloads up to 16 MiB are inflated
 *     and hashed first; bigger ones are inflated and hashed once to check them, then streamed again
 *     (and checked again) into the archive.
 */
import type { Checksum, DirMeta, FileMeta } from '../objects/index.js';
import { decodeCommit, decodeDirMeta, decodeDirTree, isSymlink, objectId } from '../objects/index.js';
import type { ObjectStore } from '../store/object-store.js';
import { compressZstd } from '../tar/compression.js';
import { type TarWriteEntry, TarWriter } from '../tar/writer.js';
import { type Content, loadContent, readMetadata } from './content.js';
import { memo, mergedEntries } from './walk.js';

export interface ExportOptions {
  compression?: 'none' | 'zstd';
}

export interface ExportResult {
  /** Tar members: directories (the root included), files and symlinks; pax headers not counted. */
  entries: number;
  /** Bytes handed to the sink: the size of the archive as written (compressed, with 'zstd'). */
  bytes: number;
}

/** The zstd level of `compression: 'zstd'`, part of the reproducibility rules above. */
export const EXPORT_ZSTD_LEVEL = 3;

// Content objects read and verified ahead of the one being written, so inflation runs on the thread
// pool while the tar stream is produced. Each holds at most a 16 MiB payload: <= 256 MiB in the
// worst case, a few MiB on a real sysroot (median file ~4 KiB).
const READ_AHEAD = 16;

// Bytes queued between the tar writer and the zstd compressor before the writer waits.
const PIPE_LIMIT = 1024 * 1024;

type Item = { rel: string; dir: DirMeta } | { rel: string; content: Checksum };

/**
 * Write `commit` as a tar archive to `sink`, chunk by chunk; a sink that returns a promise is awaited
 * (backpressure). Every object is verified before it is written (E_CORRUPT_OBJECT names it); on an
 * error the archive is incomplete and the caller must discard what it received.
 */
export async function exportCommit(
  objects: ObjectStore,
  commit: Checksum,
  sink: (chunk: Buffer) => void | Promise<void>,
  opts: ExportOptions = {},
): Promise<ExportResult> {
  let bytes = 0;
  const counted = async (chunk: Buffer): Promise<void> => {
    bytes += chunk.length;
    await sink(chunk);
  };
  if ((opts.compression ?? 'none') === 'none') {
    const entries = await writeTar(objects, commit, counted);
    return { entries, bytes };
  }
  const pipe = new Pipe(PIPE_LIMIT);
  const producing = writeTar(objects, commit, (c) => pipe.push(c)).then(
    (n) => {
      pipe.close();
      return n;
    },
    (e: unknown) => {
      pipe.close(e);
      throw e;
    },
  );
  // Awaited below in every path; until then a failure must not count as an unhandled rejection.
  producing.catch(() => {});
  try {
    for await (const out of compressZstd(pipe, EXPORT_ZSTD_LEVEL)) await counted(out);
  } catch (e) {
    // The sink or the compressor failed: stop the producer, wait for it, report the first error.
    pipe.abort(e);
    await producing.catch(() => {});
    throw e;
  }
  return { entries: await producing, bytes };
}

async function writeTar(
  objects: ObjectStore,
  commit: Checksum,
  sink: (chunk: Buffer) => void | Promise<void>,
): Promise<number> {
  const items = await plan(objects, commit);
  const tar = new TarWriter(sink);

  // Loads shared by items in the read-ahead window that use the same object (1700 empty files in a row).
  const loads = new Map<Checksum, { p: Promise<Content>; users: number }>();
  const started: Array<Promise<Content> | undefined> = [];
  const start = (i: number): void => {
    const it = items[i];
    if (!it || !('content' in it)) return;
    const l = memo(loads, it.content, () => {
      const p = loadContent(objects, it.content);
      // Awaited in order below; until then a rejection must not count as unhandled.
      p.catch(() => {});
      return { p, users: 0 };
    });
    l.users++;
    started[i] = l.p;
  };
  for (let i = 0; i < READ_AHEAD; i++) start(i);

  for (let i = 0; i < items.length; i++) {
    start(i + READ_AHEAD);
    const it = items[i]!;
    if ('dir' in it) {
      await tar.add(entry(it.rel, 'dir', it.dir));
      continue;
    }
    const c = await started[i]!;
    started[i] = undefined;
    const l = loads.get(it.content)!;
    if (--l.users === 0) loads.delete(it.content);
    if (isSymlink(c.meta)) {
      await tar.add({ ...entry(it.rel, 'symlink', c.meta), linkname: c.meta.symlinkTarget });
    } else if (c.payload) {
      await tar.add({ ...entry(it.rel, 'file', c.meta), size: c.size }, c.payload);
    } else {
      // Too big to hold: check it whole before its first byte goes out, then stream it (checked again).
      for await (const _ of await c.open()) {
        // Reading to the end is the check.
      }
      await tar.add({ ...entry(it.rel, 'file', c.meta), size: c.size }, await c.open());
    }
  }
  await tar.finish();
  return items.length;
}

function entry(rel: string, type: TarWriteEntry['type'], m: DirMeta | FileMeta): TarWriteEntry {
  const e: TarWriteEntry = { path: rel === '' ? '.' : rel, type, mode: m.mode, uid: m.uid, gid: m.gid };
  if (m.xattrs.length > 0) e.xattrs = m.xattrs;
  return e;
}

/** Every member in walk order, with directories' metadata; all dirtrees and dirmetas verified. */
async function plan(objects: ObjectStore, commit: Checksum): Promise<Item[]> {
  const c = decodeCommit(await readMetadata(objects, commit, 'commit'), objectId(commit, 'commit'));
  const metas = new Map<Checksum, Promise<DirMeta>>();
  const meta = (m: Checksum): Promise<DirMeta> =>
    memo(metas, m, async () =>
      decodeDirMeta(await readMetadata(objects, m, 'dirmeta'), objectId(m, 'dirmeta')),
    );
  const items: Item[] = [{ rel: '', dir: await meta(c.rootMeta) }];
  const walk = async (tree: Checksum, dir: string): Promise<void> => {
    const t = decodeDirTree(await readMetadata(objects, tree, 'dirtree'), objectId(tree, 'dirtree'));
    for (const e of mergedEntries(t)) {
      const rel = dir === '' ? e.name : `${dir}/${e.name}`;
      if (e.file !== undefined) {
        items.push({ rel, content: e.file });
      } else if (e.dir) {
        items.push({ rel, dir: await meta(e.dir.meta) });
        await walk(e.dir.tree, rel);
      }
    }
  };
  await walk(c.rootTree, '');
  return items;
}

/**
 * A bounded queue from a push-style producer (the tar writer's sink) to a pull-style consumer (the
 * zstd compressor): push waits while more than `limit` bytes are queued, so memory stays bounded.
 */
class Pipe implements AsyncIterable<Buffer> {
  private readonly queue: Buffer[] = [];
  private queued = 0;
  private ended: { failed: boolean; error?: unknown } | undefined;
  private aborted: { error: unknown } | undefined;
  private wakeReader: (() => void) | undefined;
  private wakeWriter: (() => void) | undefined;

  constructor(private readonly limit: number) {}

  async push(chunk: Buffer): Promise<void> {
    this.throwIfAborted();
    this.queue.push(chunk);
    this.queued += chunk.length;
    this.wake('reader');
    while (this.queued > this.limit) {
      this.throwIfAborted();
      await new Promise<void>((r) => {
        this.wakeWriter = r;
      });
    }
    this.throwIfAborted();
  }

  private throwIfAborted(): void {
    if (this.aborted) throw this.aborted.error;
  }

  /** The producer is done (or failed with `error`). */
  close(error?: unknown): void {
    this.ended = { failed: error !== undefined, error };
    this.wake('reader');
  }

  /** The consumer failed: make the producer's current and next push throw. */
  abort(error: unknown): void {
    this.aborted = { error };
    this.wake('writer');
  }

  private wake(who: 'reader' | 'writer'): void {
    const w = who === 'reader' ? this.wakeReader : this.wakeWriter;
    if (who === 'reader') this.wakeReader = undefined;
    else this.wakeWriter = undefined;
    w?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Buffer> {
    for (;;) {
      const c = this.queue.shift();
      if (c) {
        this.queued -= c.length;
        if (this.queued <= this.limit) this.wake('writer');
        yield c;
        continue;
      }
      if (this.ended) {
        if (this.ended.failed) throw this.ended.error;
        return;
      }
      await new Promise<void>((r) => {
        this.wakeReader = r;
      });
    }
  }
}
