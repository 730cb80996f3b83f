/**
 * Check a commit out into a directory, atomically and verifying every object on the way.
 *
 * The tree is built in a temp directory beside DEST (`.<name>.sysroot-tmp-<random>`, same parent so
 * the final rename(2) cannot cross filesystems) and renamed to DEST only when complete: readers see
 * nothing or the whole tree, and on any failure the temp tree is removed and DEST is left as it was.
 *
 * Order of work:
 *   1. read and verify every dirtree and dirmeta (breadth first, in parallel), create the
 *      directories owner-writable (0700) so that they can be filled whatever their final mode;
 *   2. write the files: one task per distinct content object (read once, inflated once, verified
 *      once), which then writes a separate copy at every path that uses it — never a hard link, so
 *      editing one checked-out file cannot change another;
 *   3. give the directories their final owner, xattrs, mode and mtime, deepest first (a parent's
 *      mtime would move if a child were still being created in it);
 *   4. rename the temp tree to DEST.
 *
 * On each file: write, then chown (root only), then xattrs, then chmod, then the mtime. chown(2)
 * clears setuid/setgid and drops security.capability, so both must come after it; xattrs come before
 * chmod because setting user.* needs write access, which a 0444 file would not give a non-root user.
 */
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  closeSync,
  fchmodSync,
  fchownSync,
  constants as fsc,
  futimesSync,
  lchownSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readFileSync,
  symlinkSync,
  utimesSync,
  writeSync,
} from 'node:fs';
import { chmod, copyFile, type FileHandle, lstat, mkdir, open, readdir, rename, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { getAttributeSync, setAttributeSync } from '@napi-rs/xattr';
import { errnoCode, RegistryError } from '../errors.js';
import { mapLimit } from '../map-limit.js';
import { GarbageMeter } from '../minor-gc.js';
import {
  type Checksum,
  type DirMeta,
  decodeCommit,
  decodeDirMeta,
  decodeDirTree,
  type FileMeta,
  isSymlink,
  objectId,
  type Xattr,
} from '../objects/index.js';
import { ObjectStore } from '../store/object-store.js';
import { Budget, type Content, ioError, loadContent, readMetadata } from './content.js';
import { type FileBatches, fileBatches, MAX_BATCH_BYTES } from './file-batch.js';
import type { CheckoutSource } from './source.js';
import { memo, mergedEntries } from './walk.js';

/**
 * The mtime (and atime) of every checked-out file, directory and symlink: 0, i.e.
 * 1970-01-01T00:00:00Z. OSTree records no times at all (they are in no checksum). It uses 0 itself:
 * objects in its bare repositories, which its checkouts hard-link, have mtime 0, and `ostree checkout`
 * (2022.7) gives directories mtime 0. One fixed value makes two checkouts of one commit identical, so
 * make and ninja see no change between them and archives made from a checkout are reproducible.
 */
export const CHECKOUT_MTIME = 0;

export interface CheckoutOptions {
  onProgress?: (p: { files: number; bytes: number }) => void;
}

export interface CheckoutResult {
  /** Regular files written (each path counts, also when several share one object). */
  files: number;
  /** Directories, the root included. */
  dirs: number;
  symlinks: number;
  /** Bytes of regular-file content written. */
  bytes: number;
  /** False when not running as root: everything is then owned by the caller. */
  ownershipApplied: boolean;
}

// Distinct objects in flight. Each holds at most one payload and, while writing, one descriptor.
// 32 keeps libuv's 4 pool threads (zlib) and the main thread busy on 2 cores; 16, 48 and 128 measured
// the same within noise on the 5000-file sysroot, 128 with 20% more memory.
const CONCURRENCY = 32;

// Payload bytes held in memory at once (streamed files aside): at most ~256 MiB even if every object
// in flight were a 16 MiB file.
const MEMORY_BUDGET = 256 * 1024 * 1024;

const O_CREATE_NEW = fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW;

/**
 * A minor GC per this many payload bytes written (src/minor-gc.js): each payload is garbage once
 * written, and V8 let ~60 MB of them pile up before collecting. Cold pull of v1 on the VM of
 * 2026-12-06 (medians of 4 alternating runs): peak RSS 123 → 107 MB, page faults 21,100 → 17,300,
 * 1.30 → 1.22 s. Every 1 MB saved ~1,500 faults more but ran ~120 scavenges; 16 MB saved nothing.
 */
const GC_EVERY = 4 * 1024 * 1024;

/**
 * Check out `commit` into `dest`, which must not exist or be an empty directory (E_DEST_NOT_EMPTY).
 * From an ObjectStore every object is verified before use (E_CORRUPT_OBJECT names the object); a
 * CheckoutSource serves objects it already trusts (source.ts). Nothing appears at `dest` unless the
 * whole tree was written.
 */
export async function checkoutCommit(
  objects: ObjectStore | CheckoutSource,
  commit: Checksum,
  dest: string,
  opts: CheckoutOptions = {},
): Promise<CheckoutResult> {
  const target = resolve(dest);
  await checkDest(target);
  const tmp = join(dirname(target), `.${basename(target)}.sysroot-tmp-${randomBytes(6).toString('hex')}`);
  try {
    await mkdir(tmp, { mode: 0o700 });
  } catch (e) {
    throw ioError(e, tmp, 'cannot create the temp directory beside the destination');
  }
  try {
    const result = await build(objects, commit, tmp, opts);
    try {
      // rename(2) replaces an empty directory atomically, and fails if one appeared with content.
      await rename(tmp, target);
    } catch (e) {
      const code = errnoCode(e);
      if (code === 'ENOTEMPTY' || code === 'EEXIST' || code === 'ENOTDIR' || code === 'EISDIR') {
        throw destNotEmpty(target);
      }
      throw ioError(e, target);
    }
    return result;
  } catch (e) {
    await removeTree(tmp);
    throw e;
  }
}

async function checkDest(target: string): Promise<void> {
  let isDir: boolean;
  try {
    isDir = (await lstat(target)).isDirectory();
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return;
    throw ioError(e, target);
  }
  if (!isDir || (await readdir(target)).length > 0) throw destNotEmpty(target);
}

function destNotEmpty(target: string): RegistryError {
  return new RegistryError(
    'E_DEST_NOT_EMPTY',
    `destination ${target} exists and is not an empty directory`,
    { path: target },
    'check out into a new path, or remove the existing one first',
  );
}

interface DirJob {
  rel: string;
  meta: DirMeta;
}

interface Counters {
  files: number;
  symlinks: number;
  bytes: number;
}

async function build(
  objects: ObjectStore | CheckoutSource,
  commit: Checksum,
  root: string,
  opts: CheckoutOptions,
): Promise<CheckoutResult> {
  const asRoot = process.getuid?.() === 0;
  const store = objects instanceof ObjectStore ? objects : undefined;
  const source = objects instanceof ObjectStore ? undefined : objects;
  const read = (csum: Checksum, type: 'commit' | 'dirtree' | 'dirmeta'): Promise<Buffer> =>
    store ? readMetadata(store, csum, type) : source!.readMetadata(csum, type);
  const c = decodeCommit(await read(commit, 'commit'), objectId(commit, 'commit'));

  // 1. Directories, level by level: a level's dirtrees are fetched in parallel (for remote stores),
  // and parents exist before their children.
  const metas = new Map<Checksum, Promise<DirMeta>>();
  const meta = (m: Checksum): Promise<DirMeta> =>
    memo(metas, m, async () => decodeDirMeta(await read(m, 'dirmeta'), objectId(m, 'dirmeta')));
  const dirs: DirJob[] = [{ rel: '', meta: await meta(c.rootMeta) }];
  // Content object -> every path that uses it, in walk order.
  const files = new Map<Checksum, string[]>();
  let level: Array<{ rel: string; tree: Checksum }> = [{ rel: '', tree: c.rootTree }];
  while (level.length > 0) {
    const trees = await mapLimit(level, CONCURRENCY, async (d) =>
      source?.readDirTree
        ? source.readDirTree(d.tree)
        : decodeDirTree(await read(d.tree, 'dirtree'), objectId(d.tree, 'dirtree')),
    );
    const nextLevel: Array<{ rel: string; tree: Checksum }> = [];
    for (let i = 0; i < level.length; i++) {
      const d = level[i]!;
      for (const e of mergedEntries(trees[i]!)) {
        const rel = d.rel === '' ? e.name : `${d.rel}/${e.name}`;
        if (e.file !== undefined) {
          const paths = files.get(e.file);
          if (paths) paths.push(rel);
          else files.set(e.file, [rel]);
        } else if (e.dir) {
          const m = await meta(e.dir.meta);
          try {
            mkdirSync(join(root, rel), 0o700);
          } catch (err) {
            throw ioError(err, rel);
          }
          dirs.push({ rel, meta: m });
          nextLevel.push({ rel, tree: e.dir.tree });
        }
      }
    }
    level = nextLevel;
  }

  // 2. Files.
  const counters: Counters = { files: 0, symlinks: 0, bytes: 0 };
  const budget = new Budget(MEMORY_BUDGET);
  const garbage = new GarbageMeter(GC_EVERY);
  const owner = asRoot ? ownerOfNewFiles(root) : undefined;
  // Batches for a pull's sources only. From a repository the objects are read, inflated and
  // hashed 32 at a time on this thread; batches made that no faster (checkout of v1 1.38 s either
  // way, medians of 5) and held more memory (137 MB against 113 MB at the peak).
  const batches = source ? fileBatches(CHECKOUT_MTIME, ioError) : undefined;
  const writer = new Writer(root, owner, creationMask(root), counters, opts.onProgress, batches);
  const write = async (paths: string[], content: Content, held: Budget | undefined): Promise<void> => {
    if (isSymlink(content.meta)) {
      for (const p of paths) await writer.symlink(p, content.meta);
    } else if (content.payload) {
      const { payload, size } = content;
      // The payload is freed once its last path is written (by a batch, perhaps later).
      let left = paths.length;
      const done = (): void => {
        if (--left > 0) return;
        held?.release(size);
        garbage.dropped(size);
        garbage.collect();
      };
      for (const p of paths) await writer.file(p, content.meta, payload, done);
    } else {
      await writer.streamedFile(paths, content.meta, await content.open());
    }
  };
  try {
    if (store) {
      await mapLimit([...files], CONCURRENCY, async ([csum, paths]) =>
        write(paths, await loadContent(store, csum, budget), budget),
      );
    } else {
      // One object at a time, in the source's order: a pack is read front to back, and the writes
      // are synchronous syscalls or batches (see Writer).
      for await (const { checksum, content } of source!.contents([...files.keys()])) {
        await write(files.get(checksum)!, content, undefined);
      }
    }
    await batches?.flush();
  } catch (e) {
    // Nothing may still be writing into the tree the caller is about to remove.
    await batches?.settle();
    throw e;
  }

  // 3. Directories' final metadata, deepest first (the list is breadth first, so reversed works).
  // Synchronous for the reason given on Writer: ~800 directories x 3 calls took 100 ms through the pool.
  for (let i = dirs.length - 1; i >= 0; i--) {
    const d = dirs[i]!;
    const path = d.rel === '' ? root : join(root, d.rel);
    try {
      // As for files: a directory we made is owned as `owner` says (~800 chowns fewer for a sysroot).
      if (owner && (owner.uid !== d.meta.uid || owner.gid !== d.meta.gid))
        chownSync(path, d.meta.uid, d.meta.gid);
      setXattrs(path, d.rel, d.meta.xattrs);
      chmodSync(path, d.meta.mode & 0o7777);
      utimesSync(path, CHECKOUT_MTIME, CHECKOUT_MTIME);
    } catch (e) {
      throw ioError(e, d.rel === '' ? '/' : d.rel);
    }
  }
  return { ...counters, dirs: dirs.length, ownershipApplied: asRoot };
}

/**
 * The bits open(2) will take off the mode of a file created under `root`: the process's umask (from
 * /proc, since reading it through process.umask() means setting it, for every thread), or undefined
 * when that is not the rule: no /proc, or a default ACL on `root`, which every directory of the
 * checkout inherits and which replaces the umask.
 */
function creationMask(root: string): number | undefined {
  try {
    if (getAttributeSync(root, 'system.posix_acl_default')) return undefined;
    const m = /^Umask:\s+([0-7]+)$/m.exec(readFileSync('/proc/self/status', 'latin1'));
    return m ? Number.parseInt(m[1]!, 8) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The owner of the files this process creates under `root`: its euid, and its egid unless `root`
 * is setgid (inherited from DEST's parent), in which case new files take the directory's group.
 * Every directory below `root` is ours and 0700 (plus an inherited setgid) until the end.
 */
function ownerOfNewFiles(root: string): { uid: number; gid: number } {
  const st = lstatSync(root);
  return { uid: process.geteuid!(), gid: st.mode & 0o2000 ? st.gid : process.getegid!() };
}

/**
 * Creates the entries. In a pull (a CheckoutSource), plain files of up to 2 MiB and symlinks (no
 * xattrs, no chown) go to FileBatches when the native/files addon is built: written on a pool
 * thread, ~64 per round trip, while this thread decodes the next. The rest, a checkout from a
 * repository, and everything without the addon use synchronous syscalls on purpose: each is a few
 * µs on a page-cache write, while an async call costs a thread-pool round trip and competes with
 * zlib for the pool; a 5000-file sysroot makes ~25 000 of them (writing through fs.promises
 * measured 2.3x slower).
 */
class Writer {
  constructor(
    private readonly root: string,
    /** Undefined when not root (no chown at all); else who owns the files we create (to skip fchowns). */
    private readonly created: { uid: number; gid: number } | undefined,
    /** What open(2) takes off a new file's mode (creationMask), or undefined if that is not known. */
    private readonly umask: number | undefined,
    private readonly counters: Counters,
    private readonly onProgress: CheckoutOptions['onProgress'],
    /**
     * Where plain entries go (a pull, with the addon built). Their payloads are the source's, valid
     * until the next is asked for (CheckoutSource), so the batches copy them.
     */
    private readonly batches: FileBatches | undefined,
  ) {}

  /** True if `meta` needs nothing a batch does not do: no xattrs, no chown. */
  private plain(meta: FileMeta): boolean {
    const c = this.created;
    return meta.xattrs.length === 0 && (!c || (c.uid === meta.uid && c.gid === meta.gid));
  }

  private progress(): void {
    this.onProgress?.({ files: this.counters.files, bytes: this.counters.bytes });
  }

  /**
   * Writes a regular file, or queues it; `done` runs once its payload is no longer needed. A promise
   * returned is backpressure: wait for it before queueing more.
   */
  file(rel: string, meta: FileMeta, payload: Buffer, done: () => void): Promise<void> | undefined {
    // rel comes from dirtree names (no '/', '.' or '..'), so no normalising join is needed.
    const path = `${this.root}/${rel}`;
    const perms = meta.mode & 0o7777;
    // Created with its final permissions when open(2) gives exactly those (no setuid, setgid or
    // sticky bit, nothing the umask takes off): one fchmod less per file, ~5,000 in a sysroot. Its
    // directory stays 0700 until the end, so the file is no more reachable than at 0600.
    const exact = this.umask !== undefined && (perms & (0o7000 | this.umask)) === 0;
    // A payload bigger than a batch holds is written here rather than copied (see FileBatches).
    if (this.batches && this.plain(meta) && payload.length <= MAX_BATCH_BYTES) {
      const size = payload.length;
      const wait = this.batches.file(
        path,
        rel,
        exact ? perms : 0o600,
        exact ? undefined : perms,
        payload,
        () => {
          this.counters.files++;
          this.counters.bytes += size;
          this.progress();
        },
      );
      // The batch holds a copy.
      done();
      return wait;
    }
    let fd: number | undefined;
    try {
      fd = openSync(path, O_CREATE_NEW, exact ? perms : 0o600);
      for (let off = 0; off < payload.length; ) off += writeSync(fd, payload, off, payload.length - off);
      this.finishFd(fd, path, rel, meta, exact);
    } catch (e) {
      throw ioError(e, rel);
    } finally {
      if (fd !== undefined) closeSync(fd);
      done();
    }
    this.counters.files++;
    this.counters.bytes += payload.length;
    this.progress();
    return undefined;
  }

  private finishFd(fd: number, path: string, rel: string, meta: FileMeta, exactMode = false): void {
    const c = this.created;
    // Nearly every file of a sysroot is root:root, as the files we create already are: no syscall then.
    // (A chown clears only the setuid and setgid bits, which an exact mode never has.)
    if (c && (c.uid !== meta.uid || c.gid !== meta.gid)) fchownSync(fd, meta.uid, meta.gid);
    setXattrs(path, rel, meta.xattrs);
    if (!exactMode) fchmodSync(fd, meta.mode & 0o7777);
    futimesSync(fd, CHECKOUT_MTIME, CHECKOUT_MTIME);
  }

  symlink(rel: string, meta: FileMeta): Promise<void> | undefined {
    const path = join(this.root, rel);
    if (this.batches && this.plain(meta)) {
      this.counters.symlinks++;
      return this.batches.symlink(path, rel, meta.symlinkTarget);
    }
    try {
      symlinkSync(meta.symlinkTarget, path);
      const c = this.created;
      if (c && (c.uid !== meta.uid || c.gid !== meta.gid)) lchownSync(path, meta.uid, meta.gid);
      setXattrs(path, rel, meta.xattrs);
      lutimesSync(path, CHECKOUT_MTIME, CHECKOUT_MTIME);
    } catch (e) {
      throw ioError(e, rel);
    }
    this.counters.symlinks++;
    return undefined;
  }

  /** Writes the first path from the stream, then copies it for the others. */
  async streamedFile(paths: string[], meta: FileMeta, chunks: AsyncIterable<Buffer>): Promise<void> {
    let size = 0;
    for (let i = 0; i < paths.length; i++) {
      const rel = paths[i]!;
      const path = join(this.root, rel);
      // A random suffix: the directory may hold a real entry of any fixed name.
      const partial = join(
        dirname(path),
        `.${basename(path)}.sysroot-partial-${randomBytes(6).toString('hex')}`,
      );
      try {
        let fh: FileHandle;
        if (i === 0) {
          fh = await open(partial, O_CREATE_NEW, 0o600);
          try {
            for await (const c of chunks) {
              for (let off = 0; off < c.length; )
                off += (await fh.write(c, off, c.length - off)).bytesWritten;
              size += c.length;
            }
          } catch (e) {
            await fh.close();
            throw e;
          }
        } else {
          // The first copy is verified and final: copy it (copy_file_range, or a reflink where possible).
          await copyFile(join(this.root, paths[0]!), partial, fsc.COPYFILE_EXCL | fsc.COPYFILE_FICLONE);
          fh = await open(partial, 'r+');
        }
        try {
          this.finishFd(fh.fd, partial, rel, meta);
        } finally {
          await fh.close();
        }
        await rename(partial, path);
      } catch (e) {
        throw ioError(e, rel);
      }
      this.counters.files++;
      this.counters.bytes += size;
      this.progress();
    }
  }
}

function setXattrs(path: string, rel: string, xattrs: readonly Xattr[]): void {
  for (const x of xattrs) {
    try {
      setAttributeSync(path, x.name, x.value);
    } catch (e) {
      // The binding's error has no errno; the kernel refuses user.* on symlinks (EPERM), for instance.
      throw new RegistryError(
        'E_IO',
        `${rel === '' ? '/' : rel}: cannot set extended attribute ${x.name}: ${(e as Error).message}`,
        { path: rel === '' ? '/' : rel, xattr: x.name },
        'the destination filesystem must support the extended attributes the commit records',
      );
    }
  }
}

/** Remove a (partial) temp tree, even one whose directories were already made read-only. */
async function removeTree(path: string): Promise<void> {
  try {
    await rm(path, { recursive: true, force: true });
    return;
  } catch {
    // EACCES as non-root on a 0555 directory: make the directories writable, then retry.
  }
  const walk = async (dir: string): Promise<void> => {
    await chmod(dir, 0o700).catch(() => {});
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    for (const e of entries) if (e.isDirectory()) await walk(join(dir, e.name));
  };
  await walk(path);
  await rm(path, { recursive: true, force: true }).catch(() => {});
}
