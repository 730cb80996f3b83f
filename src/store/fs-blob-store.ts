/**
 * BlobStore on a local directory.
 *
 * Write-once uses a temp file in `<root>/tmp/` (same filesystem) and link(2) to the final name:
 * link fails with EEXIST instead of replacing, so two writers of one object cannot clobber each
 * other and no reader ever sees a partial file. Mutable blobs use temp + rename(2).
 *
 * The write lock is `<root>/sysroot/lock`, created with O_EXCL and holding the owner's pid; a lock
 * whose process is gone (kill -9 during a push) is broken after checking the pid, so a crash never
 * wedges the repository.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { link, mkdir, open, readdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { errnoCode, RegistryError } from '../errors.js';
import type { BlobStat, BlobStore } from './blob-store.js';

const LOCK_KEY = 'sysroot/lock';

export class FsBlobStore implements BlobStore {
  readonly location: string;
  private readonly madeDirs = new Set<string>();

  constructor(readonly root: string) {
    this.location = root;
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
    if (!(await this.stat(key))) return undefined;
    if (range && range.end <= range.start) return (async function* () {})();
    return createReadStream(this.path(key), range ? { start: range.start, end: range.end - 1 } : {});
  }

  async stat(key: string): Promise<BlobStat | undefined> {
    try {
      const s = await stat(this.path(key));
      return s.isFile() ? { size: s.size, mtimeMs: s.mtimeMs } : undefined;
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

  async replace(key: string, data: Buffer): Promise<void> {
    const tmp = await this.tempPath();
    const dest = this.path(key);
    try {
      await writeFile(tmp, data);
      await this.ensureDir(dirname(dest));
      await rename(tmp, dest);
    } catch (e) {
      await unlink(tmp).catch(() => {});
      throw ioError(e, key);
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
    const lockPath = this.path(LOCK_KEY);
    await this.ensureDir(dirname(lockPath));
    // Ref moves take milliseconds; 30 s of waiting means something is badly wrong.
    const deadline = Date.now() + 30_000;
    for (let delay = 2; ; delay = Math.min(delay * 2, 100)) {
      try {
        const fh = await open(lockPath, 'wx');
        await fh.writeFile(`${process.pid}\n`);
        await fh.close();
        break;
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
    try {
      return await fn();
    } finally {
      await unlink(lockPath).catch(() => {});
    }
  }
}

/** Remove the lock if the process that holds it no longer exists. */
async function breakStaleLock(lockPath: string): Promise<boolean> {
  let pid: number;
  try {
    pid = Number.parseInt(await readFile(lockPath, 'utf8'), 10);
  } catch {
    return false; // being created or released right now
  }
  if (!Number.isFinite(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return false;
  } catch (e) {
    if (errnoCode(e) !== 'ESRCH') return false;
  }
  // Rename first so that two breakers cannot both delete a lock a third process just took.
  const stale = `${lockPath}.stale-${process.pid}`;
  try {
    await rename(lockPath, stale);
    const again = Number.parseInt(await readFile(stale, 'utf8'), 10);
    if (again !== pid) {
      await rename(stale, lockPath).catch(() => {});
      return false;
    }
    await unlink(stale);
    return true;
  } catch {
    return false;
  }
}

export function ioError(e: unknown, key: string): RegistryError {
  if (e instanceof RegistryError) return e;
  return new RegistryError(
    'E_IO',
    `${key}: ${(e as Error).message}`,
    { path: key, errno: errnoCode(e) },
    undefined,
    e,
  );
}
