/**
 * OSTree objects on a BlobStore: checksums and bytes, nothing about refs.
 *
 * Every read is verified: metadata objects by re-hashing their bytes, content objects by
 * inflating the payload and re-hashing header + payload. Every write is verified before the
 * blob is created, and an object that already exists is never replaced.
 */
import { createHash } from 'node:crypto';
import { createInflateRaw, type InflateRaw } from 'node:zlib';
import { InflateError, inflateMatches, inflateRaw } from '../compress/deflate.js';
import { RegistryError } from '../errors.js';
import { mapLimit } from '../map-limit.js';
import {
  type Checksum,
  contentHashPrefix,
  type FileMeta,
  type FilezHeader,
  isSymlink,
  type ObjectType,
  objectId,
  objectPath,
  parseFilezHeader,
  typeFromExt,
} from '../objects/index.js';
import type { BlobStore } from './blob-store.js';

export interface ContentObject {
  meta: FileMeta;
  size: number;
  payload: Buffer;
}

export interface ObjectRef {
  checksum: Checksum;
  type: ObjectType;
}

function sha256(b: Uint8Array): Checksum {
  return createHash('sha256').update(b).digest('hex');
}

export function corrupt(checksum: Checksum, type: ObjectType, found: string, why: string): RegistryError {
  const id = objectId(checksum, type);
  return new RegistryError(
    'E_CORRUPT_OBJECT',
    `object ${id} is corrupt: ${why}`,
    { object: id, expected: checksum, found },
    'the bytes in the store do not hash to their name; restore the object from a good copy',
  );
}

export function missing(checksum: Checksum, type: ObjectType): RegistryError {
  const id = objectId(checksum, type);
  return new RegistryError('E_OBJECT_MISSING', `object ${id} is missing`, { object: id });
}

/**
 * Where checkFilez inflates: one buffer, grown to the largest payload checked (at most
 * CHECK_SCRATCH_MAX). A push's ~5,400 .filez inflated into fresh buffers were ~120 MB of memory
 * the server touched once and left to the garbage collector.
 */
let checkScratch: Buffer | undefined;
const CHECK_SCRATCH_MAX = 16 * 1024 * 1024;

/**
 * verifyFilez for a caller that only needs the verdict (a pack's records, stored as they are):
 * the payload is inflated into a scratch buffer, not kept. `header`: parseFilezHeader's answer for
 * these bytes, when the caller has it already (the pack reader parses it to size the record).
 */
export function checkFilez(
  checksum: Checksum,
  filez: Buffer,
  header?: FilezHeader,
): { meta: FileMeta; size: number } {
  const h = header ?? parseFilezHeader(filez, objectId(checksum, 'file'));
  // The one-call check for a regular file (igzip); anything it refuses is checked again below,
  // which says what is wrong, with the evidence.
  if (h && !isSymlink(h.meta)) {
    sum.write(checksum, 'hex');
    if (inflateMatches(filez.subarray(h.headerLength), h.size, contentHashPrefix(h.meta), sum)) {
      return { meta: h.meta, size: h.size };
    }
  }
  const { meta, size } = verify(checksum, filez, true, h);
  return { meta, size };
}

/** checkFilez's expected checksum as bytes, written again for each call. */
const sum = Buffer.alloc(32);

/**
 * Check a complete `.filez` against its name: parse the header, inflate, re-hash. Returns the
 * decoded object. Used for every content object read or received.
 */
export function verifyFilez(checksum: Checksum, filez: Buffer): ContentObject {
  return verify(checksum, filez, false);
}

/** verifyFilez; with `scratch` the payload is a view of a buffer the next call overwrites. */
function verify(checksum: Checksum, filez: Buffer, scratch: boolean, header?: FilezHeader): ContentObject {
  const id = objectId(checksum, 'file');
  const h = header ?? parseFilezHeader(filez, id);
  if (!h) throw corrupt(checksum, 'file', 'truncated header', 'truncated .filez header');
  let payload: Buffer;
  if (isSymlink(h.meta)) {
    if (filez.length !== h.headerLength)
      throw corrupt(checksum, 'file', 'trailing bytes', 'symlink with a payload');
    payload = Buffer.alloc(0);
  } else {
    try {
      let into: Buffer | undefined;
      if (scratch && h.size <= CHECK_SCRATCH_MAX) {
        if (!checkScratch || checkScratch.length < h.size)
          checkScratch = Buffer.allocUnsafeSlow(Math.min(CHECK_SCRATCH_MAX, Math.max(h.size, 256 * 1024)));
        into = checkScratch;
      }
      payload = inflateRaw(filez.subarray(h.headerLength), h.size, into);
    } catch (e) {
      if (e instanceof InflateError) throw corrupt(checksum, 'file', e.found, e.message);
      throw e;
    }
  }
  const found = createHash('sha256').update(contentHashPrefix(h.meta)).update(payload).digest('hex');
  if (found !== checksum) throw corrupt(checksum, 'file', found, 'content checksum mismatch');
  return { meta: h.meta, size: h.size, payload };
}

/** Inflated chunks handed out by inflateVerified: 128 KiB keeps syscalls per MiB low (8) and memory small. */
const STREAM_CHUNK = 128 * 1024;

/**
 * Verify a `.filez` as a stream (bounded memory for large files): returns an async iterable of the
 * inflated payload chunks that throws at the end if the checksum does not match. Consumers must
 * not trust (rename into place) what they wrote until iteration finished without error.
 *
 * Memory stays bounded whatever the compression ratio: the inflater is read one chunk at a time
 * (its readable side holds at most ~STREAM_CHUNK), so it stops inflating until the consumer asks for
 * more, and the source is only read while the inflater accepts input. An invalid deflate stream or a
 * failing source ends the iteration with an error; it never leaves it waiting. Stopping early
 * (break/throw in the consumer) closes the source.
 */
export async function* inflateVerified(
  checksum: Checksum,
  source: AsyncIterable<Buffer>,
  onHeader?: (h: { meta: FileMeta; size: number }) => void,
): AsyncGenerator<Buffer> {
  const it = source[Symbol.asyncIterator]();
  let inflate: InflateRaw | undefined;
  try {
    const id = objectId(checksum, 'file');
    let head: Buffer = Buffer.alloc(0);
    let header: ReturnType<typeof parseFilezHeader>;
    for (;;) {
      try {
        header = parseFilezHeader(head, id);
      } catch (e) {
        // As corrupt as a checksum mismatch: the object is named by the hash of this header.
        if (e instanceof RegistryError && e.code === 'E_NOT_NORMAL_FORM') {
          throw corrupt(checksum, 'file', 'undecodable header', e.message);
        }
        throw e;
      }
      if (header) break;
      const n = await it.next();
      if (n.done) throw corrupt(checksum, 'file', 'truncated header', 'truncated .filez header');
      head = head.length === 0 ? n.value : Buffer.concat([head, n.value]);
    }
    const hash = createHash('sha256').update(contentHashPrefix(header.meta));
    onHeader?.({ meta: header.meta, size: header.size });
    const rest = head.subarray(header.headerLength);
    if (isSymlink(header.meta)) {
      let extra = rest.length;
      for (let n = await it.next(); !n.done && extra === 0; n = await it.next()) extra += n.value.length;
      if (extra > 0) throw corrupt(checksum, 'file', 'payload', 'symlink with a payload');
    } else {
      const inf = createInflateRaw({ chunkSize: STREAM_CHUNK });
      inflate = inf;
      let sourceError: { error: unknown } | undefined;
      let fed = rest.length;
      // Source bytes that arrived after the deflate stream had ended.
      let trailing = 0;
      // Feeds the inflater concurrently with the loop below, which drains it. Once the inflater is gone
      // (stream end, error, or the consumer stopped) it only looks for bytes that should not be there.
      const feed = async (): Promise<void> => {
        try {
          if (rest.length > 0 && !inf.write(rest)) await drainedOrClosed(inf);
          for (let n = await it.next(); !n.done; n = await it.next()) {
            if (inf.destroyed) {
              trailing += n.value.length;
              if (trailing > 0) return;
              continue;
            }
            fed += n.value.length;
            if (!inf.write(n.value)) await drainedOrClosed(inf);
          }
          if (!inf.destroyed) inf.end();
        } catch (e) {
          sourceError = { error: e };
          inf.destroy(e as Error);
        }
      };
      const feeding = feed();
      let total = 0;
      try {
        for await (const c of inf as AsyncIterable<Buffer>) {
          total += c.length;
          if (total > header.size) {
            throw corrupt(checksum, 'file', `> ${header.size} bytes`, 'payload longer than its header says');
          }
          hash.update(c);
          yield c;
        }
      } catch (e) {
        if (sourceError) throw sourceError.error;
        if (e instanceof RegistryError) throw e;
        throw corrupt(checksum, 'file', 'invalid deflate stream', (e as Error).message);
      }
      if (total !== header.size) {
        throw corrupt(
          checksum,
          'file',
          `${total} bytes`,
          `payload is ${total} bytes, header says ${header.size}`,
        );
      }
      // As verifyFilez: zlib ignores what follows the end of the deflate stream, and bytes stored and
      // served unverified make the object corrupt. Needs the rest of the source, so wait for the feeder.
      await feeding;
      if (sourceError) throw sourceError.error;
      const extra = trailing + fed - inf.bytesWritten;
      if (extra > 0)
        throw corrupt(checksum, 'file', `${extra} trailing bytes`, 'bytes after the deflate stream');
    }
    const found = hash.digest('hex');
    if (found !== checksum) throw corrupt(checksum, 'file', found, 'content checksum mismatch');
  } finally {
    inflate?.destroy();
    // Not awaited: a generator source that is inside next() (a stalled HTTP body) would hold us here.
    it.return?.().catch(() => {});
  }
}

/** Resolves on 'drain', or on 'close' if the stream was destroyed meanwhile (else it would wait forever). */
function drainedOrClosed(s: InflateRaw): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      s.off('drain', done);
      s.off('close', done);
      resolve();
    };
    s.on('drain', done);
    s.on('close', done);
  });
}

/** Stats in flight for hasMany on a store without existsMany (S3: HEAD requests). */
const HAS_CONCURRENCY = 32;

export class ObjectStore {
  constructor(readonly blobs: BlobStore) {}

  async has(checksum: Checksum, type: ObjectType): Promise<boolean> {
    return (await this.blobs.stat(objectPath(checksum, type))) !== undefined;
  }

  /** has() for many objects: in one go where the store can (BlobStore.existsMany), else 32 stats at a time. */
  async hasMany(objects: readonly { checksum: Checksum; type: ObjectType }[]): Promise<boolean[]> {
    if (this.blobs.existsMany)
      return this.blobs.existsMany(objects.map((o) => objectPath(o.checksum, o.type)));
    return mapLimit(objects, HAS_CONCURRENCY, (o) => this.has(o.checksum, o.type));
  }

  /** The stored bytes, unverified: for serving and for fsck, which verify themselves. */
  async getRaw(checksum: Checksum, type: ObjectType): Promise<Buffer | undefined> {
    return this.blobs.read(objectPath(checksum, type));
  }

  /** A metadata object (commit, dirtree, dirmeta), verified against its checksum; commitmeta unhashed. */
  async getMetadata(checksum: Checksum, type: Exclude<ObjectType, 'file'>): Promise<Buffer> {
    const bytes = await this.blobs.read(objectPath(checksum, type));
    if (!bytes) throw missing(checksum, type);
    if (type !== 'commitmeta') {
      const found = sha256(bytes);
      if (found !== checksum) throw corrupt(checksum, type, found, 'checksum mismatch');
    }
    return bytes;
  }

  /** A whole content object, verified. For large files use readContentStream. */
  async getContent(checksum: Checksum): Promise<ContentObject> {
    const filez = await this.blobs.read(objectPath(checksum, 'file'));
    if (!filez) throw missing(checksum, 'file');
    return verifyFilez(checksum, filez);
  }

  /**
   * The header of a content object (its mode, owner and uncompressed size), read from the object's
   * first bytes and not verified against the checksum: for figures such as a tree's size, never to
   * trust the payload. Undefined if the object is missing.
   */
  async readFileHeader(checksum: Checksum): Promise<FilezHeader | undefined> {
    const key = objectPath(checksum, 'file');
    const id = objectId(checksum, 'file');
    // Headers are 8 bytes + a GVariant of ~50 bytes, plus xattrs: 4 KiB almost always holds one.
    const stream = await this.blobs.readStream(key, { start: 0, end: 4096 });
    if (!stream) return undefined;
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    const header = parseFilezHeader(Buffer.concat(chunks), id);
    if (header) return header;
    const whole = await this.blobs.read(key);
    if (!whole) return undefined;
    const h = parseFilezHeader(whole, id);
    if (!h) throw corrupt(checksum, 'file', 'truncated header', 'truncated .filez header');
    return h;
  }

  async readContentStream(checksum: Checksum): Promise<AsyncIterable<Buffer>> {
    const s = await this.blobs.readStream(objectPath(checksum, 'file'));
    if (!s) throw missing(checksum, 'file');
    return s;
  }

  /**
   * Store a metadata object. Its checksum is computed here (commitmeta needs `checksum`: it is named
   * after its commit). If it exists, the existing bytes must be identical: a mismatch means the store
   * holds a corrupt copy, which we report rather than replace.
   */
  async putMetadata(
    type: Exclude<ObjectType, 'file'>,
    bytes: Buffer,
    checksum?: Checksum,
  ): Promise<Checksum> {
    const name = type === 'commitmeta' ? checksum! : sha256(bytes);
    if (checksum && name !== checksum)
      throw corrupt(checksum, type, name, 'uploaded bytes do not match their name');
    const key = objectPath(name, type);
    if (await this.blobs.createOnce(key, bytes)) return name;
    if (type === 'commitmeta') return name;
    const existing = await this.blobs.read(key);
    if (!existing?.equals(bytes))
      throw corrupt(name, type, existing ? sha256(existing) : 'nothing', 'existing copy differs');
    return name;
  }

  /** Store a complete `.filez`, verifying it first. Returns true if it was written, false if it existed. */
  async putFilez(checksum: Checksum, filez: Buffer): Promise<boolean> {
    checkFilez(checksum, filez);
    return this.blobs.createOnce(objectPath(checksum, 'file'), filez);
  }

  /** Every object in the store. */
  async *list(): AsyncGenerator<ObjectRef> {
    for await (const key of this.blobs.list('objects/')) {
      const m = /^objects\/([0-9a-f]{2})\/([0-9a-f]{62})\.([a-z]+)$/.exec(key);
      const type = m ? typeFromExt(m[3]!) : undefined;
      if (m && type) yield { checksum: m[1]! + m[2]!, type };
    }
  }
}
