/**
 * Packs: many OSTree objects in one streamed, zstd-compressed file, so a transfer is one request
 * instead of one per object (6,100 for a Debian sysroot).
 *
 *   pack file   [ zstd frame 0 ][ zstd frame 1 ][ zstd frame 2 ] … [ zstd frame N-1 ]
 *                 1 MiB raw        1 MiB raw       1 MiB raw          ≤ 1 MiB raw
 *                      ╲               │               │                 ╱
 *   raw stream   OSTPACK1 │ record │ record │ reco|rd │ big pay|load … │ record │ end record
 *                (8 bytes)                      ↑ records run on across frame boundaries
 *
 *   record       0      1                        33                  41
 *                ┌──────┬────────────────────────┬───────────────────┬──────────────────┐
 *                │ kind │ checksum, 32 raw bytes │ length, u64 BE    │ payload (length) │
 *                └──────┴────────────────────────┴───────────────────┴──────────────────┘
 *
 *   end record   kind 0 │ sha256 of the magic, every record header, commitmeta and filez payloads │ length 0
 *
 *   kind  payload                                      verified by
 *   1     commit, its bytes as stored                  sha256(payload) = checksum, decodes in normal form
 *   2     dirtree, idem                                idem
 *   3     dirmeta, idem                                idem
 *   4     commitmeta, named by its commit's checksum   decodes in normal form (not content-addressed)
 *   5     content: contentHashPrefix(meta) ‖ file     sha256(payload) = checksum, canonical header
 *         bytes (a symlink has no file bytes)
 *   6     filez: an archive-z2 `.filez` as stored      inflate, then hash header ‖ file (verifyFilez)
 *
 * - The file is a sequence of independent zstd frames, so it is also one valid multi-frame zstd
 *   stream: `zstd -dc x.pack` prints the raw stream.
 * - The writer cuts the raw stream into frames of exactly FRAME_TARGET bytes (the last one is
 *   shorter); a reader refuses a frame over FRAME_TARGET. Frames are cut without regard to records,
 *   so memory stays bounded whatever the size of a file, and any frame decompresses on its own
 *   (random access through a PackIndex, see index-file.ts).
 * - Frames carry their content size and zstd's XXH64 content checksum: a damaged frame fails to
 *   decompress even where nothing re-hashes the records (PackFile).
 * - Nothing follows the end record; a stream that stops before it is truncated. Both are E_BAD_PACK.
 * - The end checksum hashes each byte at most once with the records' own checks: it covers the
 *   magic, every record's 41-byte header (kind, checksum, length) in order, and the payloads that
 *   their checksum does not cover byte for byte (commitmeta: not hashed; filez: its checksum is the
 *   inflated content's). Every other payload is verified against the checksum in its header, so the
 *   headers bind those bytes, and the chain of headers binds their order: a record reordered,
 *   dropped, duplicated or inserted changes it. See endHashCovers.
 */
import { RegistryError } from '../errors.js';
import { type Checksum, type ObjectType, objectId } from '../objects/index.js';

export const PACK_MAGIC = Buffer.from('OSTPACK1', 'latin1');

/** Raw bytes per zstd frame: 1 MiB keeps frame buffers small and random reads cheap (~0.3 ms each). */
export const FRAME_TARGET = 1024 * 1024;

/** kind (1) + checksum (32) + length (8). */
export const RECORD_HEADER_SIZE = 41;

export const KIND = {
  commit: 1,
  dirtree: 2,
  dirmeta: 3,
  commitmeta: 4,
  content: 5,
  filez: 6,
} as const;

export type KindName = keyof typeof KIND;
export type RecordKind = (typeof KIND)[KindName];

/** The end record's kind byte. */
export const END_KIND = 0;

/**
 * Whether the end checksum covers a record's payload (its header is always covered): only when the
 * record's own checksum does not verify those exact bytes.
 */
export function endHashCovers(kind: RecordKind): boolean {
  return kind === KIND.commitmeta || kind === KIND.filez;
}

const NAMES: Record<RecordKind, KindName> = {
  1: 'commit',
  2: 'dirtree',
  3: 'dirmeta',
  4: 'commitmeta',
  5: 'content',
  6: 'filez',
};

export function isRecordKind(k: number): k is RecordKind {
  return Number.isInteger(k) && k >= 1 && k <= 6;
}

export function kindName(kind: RecordKind): KindName {
  return NAMES[kind];
}

/** The OSTree object a record carries: content and filez are both `file` objects. */
export function objectTypeOf(kind: RecordKind): ObjectType {
  if (kind === KIND.content || kind === KIND.filez) return 'file';
  return NAMES[kind] as Exclude<KindName, 'content' | 'filez'>;
}

/** `<checksum>.<type>`, as every message that names an object. */
export function recordId(kind: RecordKind, checksum: Checksum): string {
  return objectId(checksum, objectTypeOf(kind));
}

/** OSTree caps every metadata object at 10 MiB (OSTREE_MAX_METADATA_SIZE); a larger record is refused. */
export const MAX_METADATA_RECORD = 10 * 1024 * 1024;

export const DEFAULT_LEVEL = 3;

/**
 * What `level: 0` means: "store". Frames stay zstd frames (so `zstd -dc` still works) at zstd's
 * fastest setting, which keeps matches rare and literals raw: 120 MB of a sysroot in 14 ms, 96% of
 * its size. `.filez` records are already deflated, and zstd detects that at any level (level 3 costs
 * 23 ms on the same 56 MB of deflate and saves 2%), so store is for local copies where bytes are free.
 */
export const STORE_LEVEL = -1000;

export interface FrameInfo {
  /** Where the frame starts in the pack file. */
  compressedOffset: number;
  compressedSize: number;
  /** Decompressed bytes: FRAME_TARGET except in the last frame(s). */
  rawSize: number;
}

export interface RecordInfo {
  kind: RecordKind;
  checksum: Checksum;
  /** The frame holding the record's first byte (its kind). */
  frame: number;
  /** Where the record starts in that frame's decompressed bytes; it may run on into later frames. */
  offset: number;
  /** Payload bytes (the 41-byte record header is not counted). */
  length: number;
}

export interface PackIndex {
  /**
   * The end record's checksum: sha256 of the magic, the record headers and the commitmeta and filez
   * payloads, in stream order (see endHashCovers). Names the pack.
   */
  checksum: Checksum;
  frames: FrameInfo[];
  /** In pack order. */
  records: RecordInfo[];
}

export function encodeRecordHeader(
  kind: RecordKind | typeof END_KIND,
  checksum: Buffer,
  length: number,
): Buffer {
  const h = Buffer.allocUnsafe(RECORD_HEADER_SIZE);
  h[0] = kind;
  checksum.copy(h, 1);
  h.writeBigUInt64BE(BigInt(length), 33);
  return h;
}

const PACK_HINT = 'the pack is damaged or was not written by a pack writer; fetch or build it again';

/** The pack as a whole is not well formed (as opposed to one object in it being corrupt). */
export function badPack(
  message: string,
  details: Record<string, unknown> = {},
  cause?: unknown,
): RegistryError {
  return new RegistryError('E_BAD_PACK', `bad pack: ${message}`, details, PACK_HINT, cause);
}

/** A record whose payload does not verify: names the object, with what was expected and found. */
export function corruptRecord(
  kind: RecordKind,
  checksum: Checksum,
  found: string,
  why: string,
): RegistryError {
  const id = recordId(kind, checksum);
  return new RegistryError(
    'E_CORRUPT_OBJECT',
    `pack record ${id} is corrupt: ${why}`,
    { object: id, expected: checksum, found },
    PACK_HINT,
  );
}
