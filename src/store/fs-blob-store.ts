/**
 * BlobStore on a local directory.
 *
 * Write-once uses a temp file in `<root>/tmp/` (same filesystem) and link(2) to the final name:
 * link fails with EEXIST instead of replacing, so two writers of one object cannot clobber each
 * other and no reader ever sees a partial file. Mutable blobs use temp + rename(2).
 *
 * The write lock is `<root>/sysroot/lock`, holding the owner's pid from the moment it exists (a temp
 * file linked into place); a lock whose process is gone (kill -9 during a push) is broken after
 * checking the pid, so a crash never wedges the repository. Inside this process, waiters queue on an in-memory mutex instead of polling
 * the file, and an AsyncLocalStorage context marks the code running under withLock, so the lock is
 * re-entrant there: `withLock(() => replace(k, d, { ifMatch }))` does not wait for itself.
 *
 * Conditional replace (`ifMatch`) compares and renames while holding that lock (taken briefly unless
 * the caller already holds it), plus a per-directory in-process mutex: atomic across processes.
 * Unconditional replace only takes the mutex (last writer wins, as rename(2) always did).
 *
 * Etags are `<ino>.<size>.<mtime ns>` (base 36): a stat, never a read, because ObjectStore.has() and
 * the HTTP routes stat every object (6,129 in a Debian sysroot) and hashing them would cost reads.
 * Alone those three could repeat: ext4 stamps mtime from a coarse clock (one tick = 1-4 ms), refs are
 * always 65 bytes, and rename(2) frees the old inode number for the next temp file. So every replace
 * makes the new file's mtime later than the one it replaces (utimes +2 ms when the clock has not
 * moved on); an etag then never comes back once replaced by this code. Files that another program
 * (ostree) rewrites in place within one clock tick could repeat an etag: that does not happen to the
 * keys we replace.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomBytes } from 'node:crypto';
import { type BigIntStats, createReadStream } from 'node:fs';
import { link, mkdir, readdir, readFile, rename, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { errnoCode, noSpaceError, RegistryError } from '../errors.js';
import type { BlobStat, BlobStore, ReplaceOptions } from './blob-store.js';
import { existsInWorker } from './fs-batch-writer.js';

const LOCK_KEY = 'sysroot/lock';
/** Ref moves take milliseconds; 30 s of waiting for the lock means something is badly wrong. */
const LOCK_WAIT_MS = 30_000;

/** A FIFO mutex whose waiters give up at a deadline (a waiter that timed out leaves the queue). */
class Mutex {
  private locked = false;
  private readonly waiters: Array<() => void> = [];

  async acquire(deadline: number, what: string): Promise<() => void> {
    if (this.locked) {
      await new Promise<void>((resolveWait, reject) => {
        const wake = (): void => {
          clearTimeout(timer);
          resolveWait();
        };
        const timer = setTimeout(
          () => {
            const i = this.waiters.indexOf(wake);
            if (i >= 0) this.waiters.splice(i, 1);
            reject(new RegistryError('E_IO', `timed out waiting for ${what}`, { path: what }));
          },
          Math.max(0, deadline - Date.now()),
        );
        this.waiters.push(wake);
      });
    }
    this.locked = true;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiters.shift();
      // Hand the mutex straight to the next waiter: `locked` stays true, nobody can cut in.
      if (next) next();
      else this.locked = false;
    };
  }
}

/** In-process state shared by every FsBlobStore on one directory (a server may open several). */
interface DirState {
  /** Queue for the lock file: waiters in this process wait here instead of polling the file. */
  lock: Mutex;
  /** Serialises compare + rename of replace() in this process. */
  swap: Mutex;
}
const dirStates = new Map<string, DirState>();
function dirState(root: string): DirState {
  let s = dirStates.get(root);
  if (!s) {
    s = { lock: new Mutex(), swap: new Mutex() };
    dirStates.set(root, s);
  }
  return s;
}

/** The locks the current async context holds; `held` turns false on release (detached work loses it). */
interface HeldLock {
  root: string;
  held: boolean;
}
const heldLocks = new AsyncLocalStorage<readonly HeldLock[]>();
/**
 * Locks held in this process. When the last is released the storage is disabled: an enabled
 * AsyncLocalStorage makes Node run a hook for every promise made anywhere in the process (Node 20),
 * and `sysroot serve` takes the lock once at start (finishInterruptedMoves), which left the hooks on
 * for good: the server used 1.70 s of CPU for a push of v1 with them and 1.58 s without (medians of 6
 * alternating runs, 2026-12-06). The next withLock enables it again.
 */
let holders = 0;

/**
 * Chunk size for reading a large blob (a pack, a big object) to stream it: one read on libuv's pool,
 * one web-stream chunk and one socket write per MiB instead of per 64 KiB (Node's default), ~690
 * of each for the 44 MB pack of a sysroot. `sysroot serve` used 0.06 s of CPU instead of 0.155 s
 * per cold pull of v1 (medians of 8 alternating runs, 2026-12-07; the pull 1.055 → 1.01 s); small
 * objects are read as before.
 */
const READ_CHUNK = 1024 * 1024;

export class FsBlobStore implements BlobStore {
  readonly location: string;
  private readonly madeDirs = new Set<string>();
  /** The absolute directory: the key of the in-process lock state. */
  private readonly dirKey: string;

  constructor(readonly root: string) {
    this.location = root;
    this.dirKey = resolve(root);
  }

  path(key: string): string {
    return join(this.root, key);
  }

  async read(key: string): Promise<Buffer | undefined> {
    try {
      return await readFile(this.path(key));
    } catch (e) {
      // A key that names a directory (refs/heads/a when a/b exists) is not a blob.
      if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR' || errnoCode(e) === 'EISDIR')
        return undefined;
      throw ioError(e, key);
    }
  }

  async readStream(
    key: string,
    range?: { start: number; end: number },
  ): Promise<AsyncIterable<Buffer> | undefined> {
    const st = await this.stat(key);
    if (!st) return undefined;
    if (range && range.end <= range.start) return (async function* () {})();
    const size = range ? range.end - range.start : st.size;
    return createReadStream(this.path(key), {
      ...(range ? { start: range.start, end: range.end - 1 } : {}),
      ...(size > READ_CHUNK ? { highWaterMark: READ_CHUNK } : {}),
    });
  }

  async stat(key: string): Promise<BlobStat | undefined> {
    const s = await this.statFile(key, this.path(key));
    return s && { size: Number(s.size), mtimeMs: Number(s.mtimeNs) / 1e6, etag: etagOf(s) };
  }

  existsMany(keys: readonly string[]): Promise<boolean[]> {
    return existsInWorker(this.root, keys);
  }

  /** lstat-free stat of a regular file, undefined if absent or not a file. */
  private async statFile(key: string, path: string): Promise<BigIntStats | undefined> {
    try {
      const s = await stat(path, { bigint: true });
      return s.isFile() ? s : undefined;
    } catch (e) {
      if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') return undefined;
      throw ioError(e, key);
    }
  }

  private async ensureDir(dir: string): Promise<void> {
    if (this.madeDirs.has(dir)) return;
    await mkdir(dir, { recursive: true });
    this.madeDirs.add(dir);
  }

  /** A fresh temp path under tmp/; the caller renames or links it away, or unlinks it. */
  async tempPath(): Promise<string> {
    const dir = join(this.root, 'tmp');
    await this.ensureDir(dir);
    return join(dir, `tmp-${process.pid}-${randomBytes(8).toString('hex')}`);
  }

  async createOnce(key: string, data: Buffer | AsyncIterable<Buffer>): Promise<boolean> {
    const tmp = await this.tempPath();
    try {
      await writeFile(tmp, data);
      return await this.linkInto(tmp, key);
    } finally {
      await unlink(tmp).catch(() => {});
    }
  }

  /** Link an already written temp file to `key`, never replacing. The caller removes `tmp`. */
  async linkInto(tmp: string, key: string): Promise<boolean> {
    const dest = this.path(key);
    await this.ensureDir(dirname(dest));
    try {
      await link(tmp, dest);
      return true;
    } catch (e) {
      if (errnoCode(e) === 'EEXIST') return false;
      throw ioError(e, key);
    }
  }

  async replace(key: string, data: Buffer, opts?: ReplaceOptions): Promise<boolean> {
    const tmp = await this.tempPath();
    const dest = this.path(key);
    const ifMatch = opts?.ifMatch;
    // Written before any lock is taken: the lock is held only for a stat, maybe a utimes, a rename.
    const swap = async (): Promise<boolean> => {
      const release = await dirState(this.dirKey).swap.acquire(
        Date.now() + LOCK_WAIT_MS,
        `${dest} (replace)`,
      );
      try {
        const current = await this.statFile(key, dest);
        if (ifMatch === null && current) return false;
        if (typeof ifMatch === 'string' && (!current || etagOf(current) !== ifMatch)) return false;
        if (current) await mtimeAfter(tmp, current);
        await rename(tmp, dest);
        return true;
      } finally {
        release();
      }
    };
    try {
      await writeFile(tmp, data);
      await this.ensureDir(dirname(dest));
      return ifMatch === undefined ? await swap() : await this.withLock(swap);
    } catch (e) {
      throw ioError(e, key);
    } finally {
      // After a rename there is nothing left to remove; after a failed condition the temp file is.
      await unlink(tmp).catch(() => {});
    }
  }

  async *list(prefix: string): AsyncIterable<string> {
    const walk = async function* (dir: string, rel: string): AsyncGenerator<string> {
      let entries: import('node:fs').Dirent[];
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (e) {
        if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') return;
        throw e;
      }
      for (const ent of entries) {
        if (ent.isDirectory()) yield* walk(join(dir, ent.name), `${rel}${ent.name}/`);
        else if (ent.isFile()) yield `${rel}${ent.name}`;
      }
    };
    yield* walk(this.path(prefix), prefix);
  }

  async withLock<T>(fn: () => Promise<T>): Promise<T> {
    const outer = heldLocks.getStore() ?? [];
    // Re-entrant: this async context already holds the lock on this directory.
    if (outer.some((h) => h.held && h.root === this.dirKey)) return fn();
    const lockPath = this.path(LOCK_KEY);
    const deadline = Date.now() + LOCK_WAIT_MS;
    const release = await dirState(this.dirKey).lock.acquire(deadline, lockPath);
    const held: HeldLock = { root: this.dirKey, held: true };
    holders++;
    try {
      await this.takeLockFile(lockPath, deadline);
      try {
        return await heldLocks.run([...outer, held], fn);
      } finally {
        held.held = false;
        await unlink(lockPath).catch(() => {});
      }
    } finally {
      release();
      if (--holders === 0) heldLocks.disable();
    }
  }

  /**
   * The cross-process half of withLock: the lock file appears with its owner's pid already in it
   * (written to tmp/, then link(2), which fails with EEXIST if another process holds the lock), so
   * a process killed at any moment leaves either no lock or one naming it. Creating the file with
   * O_EXCL and then writing the pid left an empty lock when the kill fell between the two, which no
   * one could ever break (the crash test found it once in ~100 server kills). Polls while another
   * process has the lock.
   */
  private async takeLockFile(lockPath: string, deadline: number): Promise<void> {
    await this.ensureDir(dirname(lockPath));
    const mine = await this.tempPath();
    try {
      await writeFile(mine, `${process.pid}\n`);
      for (let delay = 2; ; delay = Math.min(delay * 2, 100)) {
        try {
          await link(mine, lockPath);
          return;
        } catch (e) {
          if (errnoCode(e) !== 'EEXIST') throw ioError(e, LOCK_KEY);
          if (await breakStaleLock(lockPath)) continue;
          if (Date.now() > deadline) {
            throw new RegistryError('E_IO', `timed out waiting for the repository lock ${lockPath}`, {
              path: lockPath,
            });
          }
          await sleep(delay);
        }
      }
    } finally {
      await unlink(mine).catch(() => {});
    }
  }
}

function etagOf(s: BigIntStats): string {
  return `${s.ino.toString(36)}.${s.size.toString(36)}.${s.mtimeNs.toString(36)}`;
}

/**
 * Make `tmp`'s mtime later than `current`'s, so that the replacement's etag differs even when it
 * reuses the inode number and size within one coarse clock tick (see the note at the top). +2 ms, not
 * +1 ns: utimes takes seconds as a double, which at 1.7e9 s resolves ~0.24 µs, and a whole extra
 * millisecond keeps the result above `current` whatever its sub-millisecond part.
 */
async function mtimeAfter(tmp: string, current: BigIntStats): Promise<void> {
  const mine = await stat(tmp, { bigint: true });
  if (mine.mtimeNs > current.mtimeNs) return;
  const seconds = (Number(current.mtimeNs / 1_000_000n) + 2) / 1000;
  await utimes(tmp, seconds, seconds);
}

/** Remove the lock if the process that holds it no longer exists. */
async function breakStaleLock(lockPath: string): Promise<boolean> {
  let pid: number;
  try {
    pid = Number.parseInt(await readFile(lockPath, 'utf8'), 10);
  } catch {
    return false; // being created or released right now
  }
  if (!Number.isFinite(pid) || pid <= 0) {
    // No pid: left by a version that wrote the pid after creating the file, killed in between
    // (this one never makes such a file). Given a few seconds to be written, then broken.
    if (!(await olderThan(lockPath, PIDLESS_LOCK_MS))) return false;
    pid = Number.NaN;
  } else {
    try {
      process.kill(pid, 0);
      return false;
    } catch (e) {
      if (errnoCode(e) !== 'ESRCH') return false;
    }
  }
  // Rename first so that two breakers cannot both delete a lock a third process just took.
  const stale = `${lockPath}.stale-${process.pid}`;
  try {
    await rename(lockPath, stale);
    const again = Number.parseInt(await readFile(stale, 'utf8'), 10);
    // Object.is: a pid-less lock (NaN) must still be pid-less after the rename.
    if (!Object.is(again, pid)) {
      await rename(stale, lockPath).catch(() => {});
      return false;
    }
    await unlink(stale);
    return true;
  } catch {
    return false;
  }
}

/** How long a lock file without a pid may stay before it counts as stale. */
const PIDLESS_LOCK_MS = 5_000;

async function olderThan(path: string, ms: number): Promise<boolean> {
  try {
    return Date.now() - (await stat(path)).mtimeMs > ms;
  } catch {
    return false;
  }
}

export function ioError(e: unknown, key: string): RegistryError {
  if (e instanceof RegistryError) return e;
  const full = noSpaceError(e, key);
  if (full) return full;
  return new RegistryError(
    'E_IO',
    `${key}: ${(e as Error).message}`,
    { path: key, errno: errnoCode(e) },
    undefined,
    e,
  );
}
