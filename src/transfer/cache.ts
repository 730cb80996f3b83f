/**
 * The local object cache of push: an OSTree archive-z2 repository layout (config, objects/XX/…)
 * under `${XDG_CACHE_HOME:-~/.cache}/sysroot-registry/objects/`, or $SYSROOT_CACHE_DIR. Pull keeps
 * the packs it receives beside it, in packs/ (pack-cache.ts).
 *
 * An object enters the cache only after it was verified against its name (metadata: sha256 of the
 * bytes and a normal-form decode; content: inflate and re-hash), and objects are write-once. So the
 * cache never holds a partial or wrong object that it believes in, and an interrupted pull resumes by
 * running it again: whatever is cached is not fetched twice.
 *
 * Unlike the registry's own store, the cache may drop an object: one that fails verification when it
 * is read back (disk damage, someone editing files) is evicted and fetched again.
 */
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, unlink } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { errnoCode, RegistryError } from '../errors.js';
import {
  type Checksum,
  decodeCommit,
  decodeDirMeta,
  decodeDirTree,
  type ObjectType,
  objectId,
  objectPath,
  sha256,
} from '../objects/index.js';
import { ARCHIVE_CONFIG, CONFIG_KEY } from '../repo/layout.js';
import { FsBlobStore, ioError } from '../store/fs-blob-store.js';
import { corrupt, inflateVerified, ObjectStore, verifyFilez } from '../store/object-store.js';

export type MetadataType = Exclude<ObjectType, 'file' | 'commitmeta'>;

/** `$SYSROOT_CACHE_DIR`, else `${XDG_CACHE_HOME:-~/.cache}/sysroot-registry/objects`. */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.SYSROOT_CACHE_DIR) return resolve(env.SYSROOT_CACHE_DIR);
  const base = env.XDG_CACHE_HOME ? resolve(env.XDG_CACHE_HOME) : join(homedir(), '.cache');
  return join(base, 'sysroot-registry', 'objects');
}

/** Decode a metadata object, which checks GVariant normal form and the object's own rules. */
function checkDecodes(checksum: Checksum, type: MetadataType, bytes: Buffer): void {
  const id = objectId(checksum, type);
  if (type === 'commit') decodeCommit(bytes, id);
  else if (type === 'dirtree') decodeDirTree(bytes, id);
  else decodeDirMeta(bytes, id);
}

export class ObjectCache {
  readonly objects: ObjectStore;

  private constructor(readonly blobs: FsBlobStore) {
    this.objects = new ObjectStore(blobs);
  }

  get dir(): string {
    return this.blobs.root;
  }

  /** Open (creating if needed) the cache in `dir`. */
  static async open(dir: string = defaultCacheDir()): Promise<ObjectCache> {
    const blobs = new FsBlobStore(dir);
    try {
      await mkdir(join(dir, 'objects'), { recursive: true });
      await mkdir(join(dir, 'tmp'), { recursive: true });
    } catch (e) {
      throw new RegistryError(
        'E_IO',
        `cannot create the object cache ${dir}: ${(e as Error).message}`,
        { path: dir },
        'set SYSROOT_CACHE_DIR to a writable directory',
      );
    }
    // A real archive repository, so `ostree fsck --repo` and `sysroot fsck` can inspect the cache.
    if (!(await blobs.read(CONFIG_KEY))) await blobs.replace(CONFIG_KEY, Buffer.from(ARCHIVE_CONFIG));
    const cache = new ObjectCache(blobs);
    await cache.removeStaleTemps();
    return cache;
  }

  /**
   * Temp files of pulls that were killed (tmp-<pid>-…, see FsBlobStore.tempPath) are never linked
   * into objects/, so they are garbage once their process is gone.
   */
  private async removeStaleTemps(): Promise<void> {
    let names: string[];
    try {
      names = await readdir(join(this.dir, 'tmp'));
    } catch {
      return;
    }
    for (const name of names) {
      const m = /^tmp-(\d+)-/.exec(name);
      if (!m || Number(m[1]) === process.pid || pidAlive(Number(m[1]))) continue;
      await unlink(join(this.dir, 'tmp', name)).catch(() => {});
    }
  }

  has(checksum: Checksum, type: ObjectType): Promise<boolean> {
    return this.objects.has(checksum, type);
  }

  /**
   * A cached metadata object, verified, or undefined if it is not cached. A cached copy that fails
   * verification is evicted (and reported as not cached) so that the caller fetches a good one.
   */
  async readMetadata(checksum: Checksum, type: MetadataType): Promise<Buffer | undefined> {
    const bytes = await this.blobs.read(objectPath(checksum, type));
    if (!bytes) return undefined;
    try {
      if (sha256(bytes) !== checksum) throw corrupt(checksum, type, sha256(bytes), 'checksum mismatch');
      checkDecodes(checksum, type, bytes);
      return bytes;
    } catch (e) {
      if (!(e instanceof RegistryError)) throw e;
      await this.evict(checksum, type);
      return undefined;
    }
  }

  /** Verify a metadata object received from elsewhere, then store it. Throws E_CORRUPT_OBJECT on a mismatch. */
  async putMetadata(checksum: Checksum, type: MetadataType, bytes: Buffer): Promise<void> {
    const found = sha256(bytes);
    if (found !== checksum)
      throw corrupt(checksum, type, found, 'the received bytes do not hash to its name');
    checkDecodes(checksum, type, bytes);
    await this.objects.putMetadata(type, bytes, checksum);
  }

  /** Verify a complete `.filez`, then store it. Returns true if it was written, false if it was cached. */
  async putFilez(checksum: Checksum, filez: Buffer): Promise<boolean> {
    verifyFilez(checksum, filez);
    return this.blobs.createOnce(objectPath(checksum, 'file'), filez);
  }

  /**
   * Store a `.filez` arriving as a stream, in bounded memory: the bytes go to a temp file while being
   * inflated and hashed, and the file is linked into objects/ only if the hash matched. Any failure
   * (corruption, a connection cut halfway) leaves nothing behind.
   */
  async putFilezStream(checksum: Checksum, source: AsyncIterable<Uint8Array>): Promise<boolean> {
    const tmp = await this.blobs.tempPath();
    try {
      const file = createWriteStream(tmp, { flags: 'wx' });
      let fileError: unknown;
      file.on('error', (e) => {
        fileError = e;
      });
      const tee = (async function* (): AsyncGenerator<Buffer> {
        for await (const c of source) {
          const b = Buffer.from(c.buffer, c.byteOffset, c.byteLength);
          if (fileError) throw ioError(fileError, tmp);
          if (!file.write(b)) await new Promise<void>((r) => file.once('drain', () => r()));
          yield b;
        }
      })();
      try {
        for await (const _ of inflateVerified(checksum, tee)) {
          // Only the verdict matters here; the checkout inflates again from the cache.
        }
      } finally {
        // inflateVerified stops reading at the first bad byte without closing its source; closing it
        // here cancels the HTTP body, so the connection is released instead of left hanging.
        await tee.return(undefined).catch(() => undefined);
        await new Promise<void>((r) => file.end(r));
      }
      if (fileError) throw ioError(fileError, tmp);
      return await this.blobs.linkInto(tmp, objectPath(checksum, 'file'));
    } finally {
      await unlink(tmp).catch(() => {});
    }
  }

  /** Drop a cached object that failed verification. Renamed first so readers never see it half-gone. */
  async evict(checksum: Checksum, type: ObjectType): Promise<void> {
    const path = this.blobs.path(objectPath(checksum, type));
    const aside = await this.blobs.tempPath();
    try {
      await rename(path, aside);
      await unlink(aside);
    } catch (e) {
      if (errnoCode(e) !== 'ENOENT') throw ioError(e, objectPath(checksum, type));
    }
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
