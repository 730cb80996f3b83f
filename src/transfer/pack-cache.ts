/**
 * The pull cache: packs as the server sent them, and what they hold.
 *
 *   <cache>/packs/                          <cache>: $SYSROOT_CACHE_DIR, else defaultCacheDir()
 *   ├── <sha>.pack                          a pack as received; <sha> is its end record's checksum
 *   ├── <sha>.idx                           its index (src/pack encodeIndex)
 *   ├── commits/<commit>.json               {commit, ref, timestamp, packs: [<sha>…]}: these packs
 *   │                                       together hold the commit's whole closure
 *   ├── checkouts/<sha256(realpath)>.json   {path, dev, ino, commit}: a checkout this cache made
 *   └── tmp/tmp-<pid>-<random>              being written; removed when <pid> is gone
 *
 * - A pack is streamed to tmp/ while readPack verifies every record, and renamed to `<sha>.pack`
 *   (after its `.idx`) only once the end record matched. Two processes receiving the same pack
 *   rename identical bytes onto one name, which is harmless, so no lock is needed anywhere.
 * - A commit is catalogued (write to tmp/, rename) only after a checkout found its whole tree in
 *   the packs: the catalogue never claims a closure that is not there.
 * - Nothing here is trusted blindly later: an `.idx` that does not decode, a pack whose frames fail
 *   zstd's checksum or do not match the index is E_BAD_PACK, and the pull evicts it (with every
 *   catalogue entry that lists it) and fetches again.
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, fstatSync, openSync, readFileSync, writeSync } from 'node:fs';
import { mkdir, readdir, readFile, realpath, rename, unlink, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { errnoCode, isRegistryError, RegistryError } from '../errors.js';
import { type Checksum, isChecksum } from '../objects/index.js';
import type { PackIndex } from '../pack/format.js';
import { decodeIndex, encodeIndex } from '../pack/index-file.js';
import type { PackFile } from '../pack/pack-file.js';
import { ioError } from '../store/fs-blob-store.js';
import type { PackSource } from './pack-source.js';

/** `$SYSROOT_CACHE_DIR`, else `${XDG_CACHE_HOME:-~/.cache}/sysroot-registry/objects`. */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.SYSROOT_CACHE_DIR) return resolve(env.SYSROOT_CACHE_DIR);
  const base = env.XDG_CACHE_HOME ? resolve(env.XDG_CACHE_HOME) : join(homedir(), '.cache');
  return join(base, 'sysroot-registry', 'objects');
}

export interface CommitEntry {
  commit: Checksum;
  ref: string | null;
  /** The commit's own timestamp (seconds): "newest" when choosing what to update from. */
  timestamp: number;
  /** Packs that together hold the closure: a full pack, then update packs. */
  packs: Checksum[];
}

export interface CheckoutRecord {
  path: string;
  dev: number;
  ino: number;
  commit: Checksum;
}

export class PackCache {
  private constructor(readonly dir: string) {}

  /** Open (creating if needed) the pack cache under `cacheDir`. */
  static async open(cacheDir: string = defaultCacheDir()): Promise<PackCache> {
    const dir = join(cacheDir, 'packs');
    try {
      for (const sub of ['commits', 'checkouts', 'tmp']) await mkdir(join(dir, sub), { recursive: true });
    } catch (e) {
      throw new RegistryError(
        'E_IO',
        `cannot create the pack cache ${dir}: ${(e as Error).message}`,
        { path: dir },
        'set SYSROOT_CACHE_DIR to a writable directory',
      );
    }
    const cache = new PackCache(dir);
    await cache.removeStaleTemps();
    return cache;
  }

  packPath(sha: Checksum): string {
    return join(this.dir, `${sha}.pack`);
  }

  indexPath(sha: Checksum): string {
    return join(this.dir, `${sha}.idx`);
  }

  /** A fresh temp name in tmp/ (tmp-<pid>-…, so a later open can tell a dead process's leftovers). */
  tempPath(): string {
    return join(this.dir, 'tmp', `tmp-${process.pid}-${randomBytes(8).toString('hex')}`);
  }

  private async removeStaleTemps(): Promise<void> {
    const names = await readdir(join(this.dir, 'tmp')).catch(() => [] as string[]);
    for (const name of names) {
      const m = /^tmp-(\d+)-/.exec(name);
      if (!m || Number(m[1]) === process.pid || pidAlive(Number(m[1]))) continue;
      await unlink(join(this.dir, 'tmp', name)).catch(() => {});
    }
  }

  /** Write `data` to `path` atomically: a temp file, then rename(2). */
  private async put(path: string, data: string | Buffer): Promise<void> {
    const tmp = this.tempPath();
    try {
      await writeFile(tmp, data, { flag: 'wx' });
      await rename(tmp, path);
    } catch (e) {
      await unlink(tmp).catch(() => {});
      throw ioError(e, path);
    }
  }

  // ---- the catalogue ----

  /** The catalogue entry of a commit whose closure is cached, or undefined. */
  async complete(commit: Checksum): Promise<CommitEntry | undefined> {
    const e = validEntry(await readJson<CommitEntry>(join(this.dir, 'commits', `${commit}.json`)));
    return e?.commit === commit ? e : undefined;
  }

  /** The newest cached complete commit of `ref` other than `not`, to ask for an update pack from. */
  async newestOf(ref: string, not: Checksum): Promise<CommitEntry | undefined> {
    let best: CommitEntry | undefined;
    const names = await readdir(join(this.dir, 'commits')).catch(() => [] as string[]);
    for (const name of names) {
      if (!name.endsWith('.json')) continue;
      const e = validEntry(await readJson<CommitEntry>(join(this.dir, 'commits', name)));
      if (!e || e.ref !== ref || e.commit === not) continue;
      if (!best || e.timestamp > best.timestamp) best = e;
    }
    return best;
  }

  async addCommit(entry: CommitEntry): Promise<void> {
    await this.put(join(this.dir, 'commits', `${entry.commit}.json`), `${JSON.stringify(entry)}\n`);
  }

  // ---- checkouts (for the no-op pull) ----

  private async checkoutKey(path: string): Promise<{ real: string; file: string }> {
    const real = await realpath(path);
    return {
      real,
      file: join(this.dir, 'checkouts', `${createHash('sha256').update(real).digest('hex')}.json`),
    };
  }

  /** Note that `path` (just renamed into place) is a checkout of `commit` made by this cache. */
  async recordCheckout(path: string, commit: Checksum, st: { dev: number; ino: number }): Promise<void> {
    const { real, file } = await this.checkoutKey(path);
    const rec: CheckoutRecord = { path: real, dev: st.dev, ino: st.ino, commit };
    await this.put(file, `${JSON.stringify(rec)}\n`);
  }

  /**
   * The commit `path` is an untouched checkout of, if this cache made it: the same directory (device
   * and inode) and its root's mtime still 0. Files below it are not inspected.
   */
  async checkoutAt(
    path: string,
    st: { dev: number; ino: number; mtimeMs: number },
  ): Promise<Checksum | undefined> {
    if (st.mtimeMs !== 0) return undefined;
    const { real, file } = await this.checkoutKey(path).catch(() => ({ real: '', file: '' }));
    if (!file) return undefined;
    const rec = await readJson<CheckoutRecord>(file);
    if (!rec || rec.path !== real || rec.dev !== st.dev || rec.ino !== st.ino) return undefined;
    return isChecksum(rec.commit) ? rec.commit : undefined;
  }

  // ---- packs ----

  /**
   * A temp file in tmp/ for a pack being received: write each chunk as it arrives, then `keep` it
   * once readPack verified the whole pack (its `.idx` is written first, then the pack renamed to
   * `<sha>.pack`), or `drop` it.
   */
  begin(): PackTemp {
    const tmp = this.tempPath();
    let fd: number | undefined;
    try {
      fd = openSync(tmp, 'wx');
    } catch (e) {
      throw ioError(e, tmp);
    }
    return new PackTemp(this, tmp, fd);
  }

  /**
   * Open packs for reading. An `.idx` that is missing or does not decode, or does not belong to its
   * pack, is E_BAD_PACK with `details.pack`; a missing pack too (the catalogue lists it, so it was
   * there: someone removed it).
   */
  async source(packs: readonly Checksum[]): Promise<PackSource> {
    // Loaded on first use: a no-op pull never reads a pack (zstd's binding is part of it).
    const { PackFile } = await import('../pack/pack-file.js');
    const { PackSource } = await import('./pack-source.js');
    const files: PackFile[] = [];
    try {
      for (const sha of packs) {
        let index: PackIndex;
        try {
          index = decodeIndex(readFileSync(this.indexPath(sha)));
          if (index.checksum !== sha) {
            throw new RegistryError('E_BAD_PACK', `bad pack: ${sha}.idx indexes pack ${index.checksum}`, {
              expected: sha,
              found: index.checksum,
            });
          }
          // recycle: the checkout is done with each payload before it asks for the next
          // (CheckoutSource), so frames are decompressed into the same few buffers.
          files.push(await PackFile.open(this.packPath(sha), index, { recycle: true }));
        } catch (e) {
          if (isRegistryError(e, 'E_BAD_PACK')) {
            throw new RegistryError(e.code, e.message, { ...e.details, pack: sha }, e.hint, e);
          }
          if (errnoCode(e) === 'ENOENT') {
            throw new RegistryError('E_BAD_PACK', `bad pack: ${sha} is gone from the cache`, { pack: sha });
          }
          throw ioError(e, this.packPath(sha));
        }
      }
    } catch (e) {
      await Promise.all(files.map((f) => f.close()));
      throw e;
    }
    return new PackSource(files, packs);
  }

  /** Drop a damaged pack and every catalogue entry that lists it. Renamed first: readers see all or nothing. */
  async evict(sha: Checksum): Promise<void> {
    const names = await readdir(join(this.dir, 'commits')).catch(() => [] as string[]);
    for (const name of names) {
      const path = join(this.dir, 'commits', name);
      const e = await readJson<CommitEntry>(path);
      if (!Array.isArray(e?.packs) || e.packs.includes(sha)) await unlink(path).catch(() => {});
    }
    for (const path of [this.packPath(sha), this.indexPath(sha)]) {
      const aside = this.tempPath();
      try {
        await rename(path, aside);
        await unlink(aside);
      } catch (e) {
        if (errnoCode(e) !== 'ENOENT') throw ioError(e, path);
      }
    }
  }
}

/** The entry if it has the expected shape (pack names end up in paths: they must be checksums). */
function validEntry(e: CommitEntry | undefined): CommitEntry | undefined {
  if (!e || typeof e !== 'object' || !isChecksum(e.commit) || typeof e.timestamp !== 'number')
    return undefined;
  if (!Array.isArray(e.packs) || e.packs.length === 0 || !e.packs.every((p) => isChecksum(p)))
    return undefined;
  return e;
}

export class PackTemp {
  bytes = 0;
  private open = true;

  constructor(
    private readonly cache: PackCache,
    readonly tmp: string,
    private readonly fd: number,
  ) {}

  write(c: Uint8Array): void {
    try {
      for (let off = 0; off < c.length; ) off += writeSync(this.fd, c, off, c.length - off);
    } catch (e) {
      throw ioError(e, this.tmp);
    }
    this.bytes += c.length;
  }

  private close(): void {
    if (this.open) closeSync(this.fd);
    this.open = false;
  }

  /** Store the verified pack under its name; returns the name. */
  async keep(index: PackIndex): Promise<Checksum> {
    const sha = index.checksum;
    try {
      if (fstatSync(this.fd).size !== this.bytes) throw new Error(`short write (${this.bytes} bytes sent)`);
      this.close();
      await writeFile(`${this.tmp}.idx`, encodeIndex(index), { flag: 'wx' });
      await rename(`${this.tmp}.idx`, this.cache.indexPath(sha));
      await rename(this.tmp, this.cache.packPath(sha));
    } catch (e) {
      await this.drop();
      throw ioError(e, this.cache.packPath(sha));
    }
    return sha;
  }

  async drop(): Promise<void> {
    this.close();
    await unlink(this.tmp).catch(() => {});
    await unlink(`${this.tmp}.idx`).catch(() => {});
  }
}

/** A small JSON file, or undefined if it is missing or not JSON (a damaged entry is no entry). */
async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return errnoCode(e) === 'EPERM';
  }
}
