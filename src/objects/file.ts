/**
 * Content objects (regular files and symlinks).
 *
 *   checksum = sha256( BE32(len H) ‖ 00000000 ‖ H ‖ payload )
 *   H        = (uuuusa(ayay))  uid, gid, mode, rdev (all big-endian), symlink target, xattrs
 *
 * The payload is the file's bytes (nothing for a symlink); sizes and times are not hashed.
 *
 * In an archive repository the object is stored as `.filez`:
 *
 *   BE32(len Z) ‖ 00000000 ‖ Z ‖ raw-deflate(payload)
 *   Z = (tuuuusa(ayay))  uncompressed size (big-endian; 0 for symlinks), then the fields of H
 *
 * The file is named by the *uncompressed* checksum, so any valid deflate stream is acceptable.
 */
import { createHash } from 'node:crypto';
import { RegistryError } from '../errors.js';
import { decode, encode, GVariantError } from '../gvariant/index.js';
import type { Checksum } from './checksum.js';
import { bswap32, bswap64 } from './endian.js';
import { canonicalXattrs, isCanonicalXattrs, type Xattr, xattrsFromGv, xattrsToGv } from './xattrs.js';

export const S_IFMT = 0o170000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFDIR = 0o040000;
export const SYMLINK_MODE = 0o120777;

export interface FileMeta {
  uid: number;
  gid: number;
  /** Full st_mode including the type bits: 0o100644, 0o104755, 0o120777 ... */
  mode: number;
  /** '' for regular files. */
  symlinkTarget: string;
  /** Canonical: sorted by name, no empty values. */
  xattrs: Xattr[];
}

export function isSymlink(meta: FileMeta): boolean {
  return (meta.mode & S_IFMT) === S_IFLNK;
}

export function isRegular(meta: FileMeta): boolean {
  return (meta.mode & S_IFMT) === S_IFREG;
}

function checkMeta(meta: FileMeta): void {
  const type = meta.mode & S_IFMT;
  if (type === S_IFLNK ? meta.mode !== SYMLINK_MODE : type !== S_IFREG || meta.symlinkTarget !== '') {
    throw new RegistryError(
      'E_SPECIAL_FILE',
      `mode 0${meta.mode.toString(8)} is not a regular file or symlink`,
      {
        found: `0${meta.mode.toString(8)}`,
      },
    );
  }
}

const HEADER_TYPE = '(uuuusa(ayay))';
const FILEZ_TYPE = '(tuuuusa(ayay))';

/** H: the GVariant file header that is hashed. */
export function fileHeader(meta: FileMeta): Buffer {
  checkMeta(meta);
  return encode(HEADER_TYPE, [
    bswap32(meta.uid),
    bswap32(meta.gid),
    bswap32(meta.mode),
    0,
    meta.symlinkTarget,
    xattrsToGv(canonicalXattrs(meta.xattrs)),
  ]);
}

function framed(body: Buffer): Buffer {
  const out = Buffer.alloc(8 + body.length);
  out.writeUInt32BE(body.length, 0);
  body.copy(out, 8);
  return out;
}

/**
 * The prefixes of the memoised (frozen, shared) metadata that parsing hands out: verifying a .filez
 * hashes this prefix, and encoding it again for each of a push's 6,124 records was ~5% of the
 * server's main thread (CPU profile, 2026-12-06). Callers must not write into the returned bytes.
 */
const prefixMemo = new WeakMap<FileMeta, Buffer>();

/** The bytes hashed before the payload: BE32(len H) ‖ 00000000 ‖ H. */
export function contentHashPrefix(meta: FileMeta): Buffer {
  if (!Object.isFrozen(meta)) return framed(fileHeader(meta));
  let prefix = prefixMemo.get(meta);
  if (!prefix) {
    prefix = framed(fileHeader(meta));
    prefixMemo.set(meta, prefix);
  }
  return prefix;
}

/** The bytes of a `.filez` before its deflated payload. */
export function filezHeader(meta: FileMeta, size: number): Buffer {
  checkMeta(meta);
  return framed(
    encode(FILEZ_TYPE, [
      bswap64(BigInt(isSymlink(meta) ? 0 : size)),
      bswap32(meta.uid),
      bswap32(meta.gid),
      bswap32(meta.mode),
      0,
      meta.symlinkTarget,
      xattrsToGv(canonicalXattrs(meta.xattrs)),
    ]),
  );
}

export function contentChecksum(meta: FileMeta, payload: Uint8Array = Buffer.alloc(0)): Checksum {
  return createHash('sha256').update(contentHashPrefix(meta)).update(payload).digest('hex');
}

export interface FilezHeader {
  meta: FileMeta;
  /** Uncompressed payload size. */
  size: number;
  /** Bytes before the deflate stream starts. */
  headerLength: number;
}

/** Largest .filez header we accept: the header is tiny unless xattrs are huge (ostree caps metadata at 10 MiB). */
export const MAX_FILEZ_HEADER = 10 * 1024 * 1024;

/**
 * Split `BE32(len X) ‖ 00000000 ‖ X` off the front of `buf` and decode X as `type` in normal form.
 * Returns undefined if `buf` is too short to hold the whole header yet.
 */
function parseFramed(
  buf: Uint8Array,
  type: string,
  id: string,
  what: string,
): [unknown[], number] | undefined {
  if (buf.length < 8) return undefined;
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const len = b.readUInt32BE(0);
  if (len > MAX_FILEZ_HEADER || b.readUInt32BE(4) !== 0) {
    throw new RegistryError('E_CORRUPT_OBJECT', `${id}: bad ${what}`, { object: id });
  }
  if (b.length < 8 + len) return undefined;
  try {
    return [decode(type, b.subarray(8, 8 + len)) as unknown[], 8 + len];
  } catch (e) {
    if (e instanceof GVariantError) {
      throw new RegistryError('E_NOT_NORMAL_FORM', `${id}: ${what}: ${e.message}`, { object: id });
    }
    throw e;
  }
}

/** The fields shared by H and Z, checked as canonical: rdev 0, sorted xattrs, a representable mode. */
function metaFromFields(fields: unknown[], id: string): FileMeta {
  const [uid, gid, mode, rdev, symlinkTarget, xattrs] = fields as [
    number,
    number,
    number,
    number,
    string,
    never,
  ];
  const meta: FileMeta = {
    uid: bswap32(uid),
    gid: bswap32(gid),
    mode: bswap32(mode),
    symlinkTarget,
    xattrs: xattrsFromGv(xattrs),
  };
  if (rdev !== 0 || !isCanonicalXattrs(meta.xattrs)) {
    throw new RegistryError('E_CORRUPT_OBJECT', `${id}: non-canonical file header`, { object: id });
  }
  try {
    checkMeta(meta);
  } catch (e) {
    // A stored or uploaded header that claims a socket, fifo or device is a damaged object (OSTree
    // content objects hold only regular files and symlinks), not an input tree's special file.
    const found = `0${meta.mode.toString(8)}`;
    throw new RegistryError(
      'E_CORRUPT_OBJECT',
      `${id}: header mode ${found} is not a regular file or symlink`,
      { object: id, found, expected: 'a regular file (0100xxx) or a symlink (0120777)' },
      undefined,
      e,
    );
  }
  return meta;
}

/**
 * Parse the header of a `.filez` from its first bytes. Returns undefined if `buf` is too short to
 * hold the whole header yet (read more and call again).
 */
export function parseFilezHeader(buf: Uint8Array, id = 'content object'): FilezHeader | undefined {
  // The size is the first 8 bytes of the variant (offset 8 in the frame), big-endian (FORMAT.md §3):
  // the rest of the header is what repeats between files, and is the memo's key.
  const key = memoKey(buf, 16, 'z');
  const known = key === undefined ? undefined : filezMemo.get(key);
  let meta: FileMeta;
  let size: bigint;
  let headerLength: number;
  if (known) {
    meta = known;
    size = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength).readBigUInt64BE(8);
    headerLength = key!.length + 7;
  } else {
    const framed = parseFramed(buf, FILEZ_TYPE, id, '.filez header');
    if (!framed) return undefined;
    const [[le, ...fields], length] = framed as [[bigint, ...unknown[]], number];
    meta = remember(filezMemo, key, metaFromFields(fields, id));
    size = bswap64(le);
    headerLength = length;
  }
  if (size > BigInt(Number.MAX_SAFE_INTEGER))
    throw new RegistryError('E_CORRUPT_OBJECT', `${id}: size out of range`);
  return { meta, size: Number(size), headerLength };
}

/**
 * Decoded headers, by their bytes. A tree has a few dozen distinct (owner, mode) among thousands of
 * files, and decoding a header with its normal-form check (which encodes it again) allocated ~5 KB:
 * 16% of all a cold pull allocated, for its 6,000 content records. Only plain metadata is kept (no
 * symlink target, no xattrs: those are nearly unique), at most MEMO_MAX of each kind, and the
 * FileMeta handed out is frozen, because every caller shares it.
 */
const MEMO_MAX = 256;
const contentMemo = new Map<string, FileMeta>();
const filezMemo = new Map<string, FileMeta>();

/**
 * The header's frame as a latin1 string, `skip` bytes after the first 8 left out (a .filez's size),
 * with a kind prefix of one character; undefined while the frame is incomplete or unusually long.
 * Its length is the frame's, minus `skip - 8`, plus 1 (a content header: frame + 1; a .filez: frame - 7).
 */
function memoKey(buf: Uint8Array, skip: number, kind: string): string | undefined {
  if (buf.length < 8) return undefined;
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const end = 8 + b.readUInt32BE(0);
  if (end > 128 || b.length < end || end < skip) return undefined;
  return kind + b.toString('latin1', 0, 8) + b.toString('latin1', skip, end);
}

function remember(memo: Map<string, FileMeta>, key: string | undefined, meta: FileMeta): FileMeta {
  if (key === undefined || meta.symlinkTarget !== '' || meta.xattrs.length > 0) return meta;
  if (memo.size >= MEMO_MAX) memo.clear();
  const frozen = Object.freeze({ ...meta, xattrs: Object.freeze([]) as unknown as Xattr[] });
  memo.set(key, frozen);
  return frozen;
}

export interface ContentHeader {
  meta: FileMeta;
  /** Bytes of `contentHashPrefix(meta)`: the file's bytes start here in a content stream. */
  headerLength: number;
}

/**
 * The inverse of contentHashPrefix: parse `BE32(len H) ‖ 00000000 ‖ H` from the first bytes of a
 * content stream (the bytes a content object's checksum is computed over). The header must be in
 * normal form and canonical, so `contentHashPrefix(meta)` gives back exactly the bytes parsed.
 * Returns undefined if `buf` is too short to hold the whole header yet (read more and call again).
 */
export function parseContentHeader(buf: Uint8Array, id = 'content object'): ContentHeader | undefined {
  const key = memoKey(buf, 8, 'h');
  const known = key === undefined ? undefined : contentMemo.get(key);
  if (known) return { meta: known, headerLength: key!.length - 1 };
  const framed = parseFramed(buf, HEADER_TYPE, id, 'content header');
  if (!framed) return undefined;
  return { meta: remember(contentMemo, key, metaFromFields(framed[0], id)), headerLength: framed[1] };
}
