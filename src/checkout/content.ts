/**
 * Verified object reads shared by checkout and export, with a fast path for local repositories.
 *
 * On an FsBlobStore the objects are read with synchronous syscalls on purpose. They are nearly always
 * in the page cache, where open + fstat + read + close take 10-20 µs, while the same four steps through
 * libuv's thread pool cost four round trips; on a 5000-file sysroot the async reads made checkout
 * 2-3x slower and took pool threads away from zlib. Any other BlobStore (S3) goes through the
 * ordinary async ObjectStore calls. The checks are the same as ObjectStore's: metadata by sha256 of
 * its bytes, content by inflating and hashing header + payload.
 */
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import { InflateError, inflateRaw, inflateRawAsync } from '../compress/deflate.js';
import { errnoCode, isRegistryError, RegistryError } from '../errors.js';
import {
  type Checksum,
  contentHashPrefix,
  type FileMeta,
  type FilezHeader,
  isSymlink,
  objectId,
  objectPath,
  parseFilezHeader,
  sha256,
} from '../objects/index.js';
import { FsBlobStore } from '../store/fs-blob-store.js';
import { corrupt, inflateVerified, missing, type ObjectStore } from '../store/object-store.js';
import { readContentHeader, WHOLE_FILE_LIMIT } from './walk.js';

// Below this zlib inflates on the main thread: handing a few KiB to the thread pool costs about as
// much (a round trip, ~20 µs) as inflating it. Measured on the 5000-file sysroot: 8-128 KiB all gave
// the same time within noise, 0 (everything to the pool) was 25% slower. igzip always inflates here.
const SYNC_INFLATE_LIMIT = 16 * 1024;

export function ioError(e: unknown, path: string, what?: string): RegistryError {
  if (e instanceof RegistryError) return e;
  const msg = (e as Error).message;
  return new RegistryError(
    'E_IO',
    what ? `${path}: ${what}: ${msg}` : `${path}: ${msg}`,
    { path, errno: errnoCode(e) },
    undefined,
    e,
  );
}

/** A verified dirtree or dirmeta (or commit): the bytes hash to `csum`. */
export async function readMetadata(
  objects: ObjectStore,
  csum: Checksum,
  type: 'dirtree' | 'dirmeta' | 'commit',
): Promise<Buffer> {
  const blobs = objects.blobs;
  if (!(blobs instanceof FsBlobStore)) return objects.getMetadata(csum, type);
  let bytes: Buffer;
  try {
    bytes = readFileSync(blobs.path(objectPath(csum, type)));
  } catch (e) {
    if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') throw missing(csum, type);
    throw ioError(e, objectPath(csum, type));
  }
  const found = sha256(bytes);
  if (found !== csum) throw corrupt(csum, type, found, 'checksum mismatch');
  return bytes;
}

/** The whole `.filez`, unverified, or undefined if it is bigger than WHOLE_FILE_LIMIT (stream it instead). */
async function readSmallObject(objects: ObjectStore, csum: Checksum): Promise<Buffer | undefined> {
  const key = objectPath(csum, 'file');
  const blobs = objects.blobs;
  if (!(blobs instanceof FsBlobStore)) {
    const st = await blobs.stat(key);
    if (!st) throw missing(csum, 'file');
    if (st.size > WHOLE_FILE_LIMIT) return undefined;
    const raw = await blobs.read(key);
    if (!raw) throw missing(csum, 'file');
    return raw;
  }
  const path = blobs.path(key);
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') throw missing(csum, 'file');
    throw ioError(e, key);
  }
  try {
    const size = fstatSync(fd).size;
    if (size > WHOLE_FILE_LIMIT) return undefined;
    const buf = Buffer.allocUnsafe(size);
    let off = 0;
    while (off < size) {
      const n = readSync(fd, buf, off, size - off, off);
      if (n === 0) break;
      off += n;
    }
    return off === size ? buf : buf.subarray(0, off);
  } catch (e) {
    throw ioError(e, key);
  } finally {
    closeSync(fd);
  }
}

/**
 * parseFilezHeader, with a header that does not decode reported as E_CORRUPT_OBJECT like any other
 * damage: the object is named by the hash of its header, so undecodable bytes cannot be that object.
 */
export function parseHeader(buf: Buffer, csum: Checksum): FilezHeader | undefined {
  try {
    return parseFilezHeader(buf, objectId(csum, 'file'));
  } catch (e) {
    if (isRegistryError(e, 'E_NOT_NORMAL_FORM')) throw corrupt(csum, 'file', 'undecodable header', e.message);
    throw e;
  }
}

/** A weighted semaphore over payload bytes; a request over the whole budget waits until it is alone. */
export class Budget {
  private used = 0;
  private readonly waiting: Array<{ n: number; go: () => void }> = [];

  constructor(private readonly total: number) {}

  async acquire(n: number): Promise<void> {
    const need = Math.min(n, this.total);
    if (this.waiting.length === 0 && this.used + need <= this.total) {
      this.used += need;
      return;
    }
    await new Promise<void>((go) => this.waiting.push({ n: need, go }));
  }

  release(n: number): void {
    this.used -= Math.min(n, this.total);
    while (this.waiting.length > 0 && this.used + this.waiting[0]!.n <= this.total) {
      const w = this.waiting.shift()!;
      this.used += w.n;
      w.go();
    }
  }
}

/**
 * A content object, ready to write. Either `payload` holds the whole verified payload (empty for a
 * symlink), or the object is too big to hold and `open()` gives its payload as a stream that is
 * verified as it goes: it throws E_CORRUPT_OBJECT at the end if the checksum does not match, so a
 * consumer must not trust what it wrote until the iteration has finished.
 */
export type Content =
  | { meta: FileMeta; size: number; payload: Buffer; open?: undefined }
  | { meta: FileMeta; size: number; payload?: undefined; open: () => Promise<AsyncIterable<Buffer>> };

/**
 * Read and verify a content object. Payloads up to WHOLE_FILE_LIMIT are inflated (on the thread pool
 * unless tiny) and hashed here; `budget`, if given, is acquired for the payload's size before
 * inflating, and the caller releases `size` when done with the payload (not for streamed objects).
 */
export async function loadContent(objects: ObjectStore, csum: Checksum, budget?: Budget): Promise<Content> {
  const raw = await readSmallObject(objects, csum);
  if (raw === undefined) {
    const h = await readContentHeader(objects, csum);
    return {
      meta: h.meta,
      size: isSymlink(h.meta) ? 0 : h.size,
      open: async () => inflateVerified(csum, await objects.readContentStream(csum)),
    };
  }
  const h = parseHeader(raw, csum);
  if (!h) throw corrupt(csum, 'file', 'truncated header', 'truncated .filez header');
  if (isSymlink(h.meta)) {
    if (raw.length !== h.headerLength)
      throw corrupt(csum, 'file', 'trailing bytes', 'symlink with a payload');
    const found = sha256(contentHashPrefix(h.meta));
    if (found !== csum) throw corrupt(csum, 'file', found, 'content checksum mismatch');
    return { meta: h.meta, size: 0, payload: Buffer.alloc(0) };
  }
  if (h.size > WHOLE_FILE_LIMIT) {
    // Small on disk but big inflated (zeros, a sparse image): stream it too, to keep memory bounded.
    return {
      meta: h.meta,
      size: h.size,
      open: async () =>
        inflateVerified(
          csum,
          (async function* () {
            yield raw;
          })(),
        ),
    };
  }
  await budget?.acquire(h.size);
  try {
    const deflated = raw.subarray(h.headerLength);
    let payload: Buffer;
    try {
      payload =
        deflated.length <= SYNC_INFLATE_LIMIT
          ? inflateRaw(deflated, h.size)
          : await inflateRawAsync(deflated, h.size);
    } catch (e) {
      if (e instanceof InflateError) throw corrupt(csum, 'file', e.found, e.message);
      throw e;
    }
    const found = createHash('sha256').update(contentHashPrefix(h.meta)).update(payload).digest('hex');
    if (found !== csum) throw corrupt(csum, 'file', found, 'content checksum mismatch');
    return { meta: h.meta, size: h.size, payload };
  } catch (e) {
    budget?.release(h.size);
    throw e;
  }
}
