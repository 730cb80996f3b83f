/**
 * The lowest storage layer: named blobs (keys are repository-relative paths such as
 * `objects/ab/cdef….commit` or `refs/heads/stage3-sysroot/x86_64`). It knows nothing of OSTree.
 *
 * Two kinds of write, and nothing else — there is no delete:
 *   - createOnce: write-once; never replaces an existing blob (objects, ref-log records);
 *   - replace:    atomic swap of a small mutable blob (refs, summary, config), optionally conditional
 *                 on the blob's current etag (compare-and-swap) or on its absence.
 *
 * Several registry nodes may share one store (an S3 bucket). What keeps a ref move correct there is
 * not a lock — S3 has none — but the two conditional writes: createOnce of ref log record N+1 (only
 * one node can create it) and replace({ ifMatch }) of refs/heads/<ref> and the summary. withLock is a
 * real cross-process lock on a filesystem store and a no-op on S3, so code must be correct without it.
 *
 * Adapters: fs-blob-store.ts (a directory), s3-blob-store.ts (s3://bucket/prefix); open.ts picks one
 * from a location string. Both pass test/helpers/store-conformance.ts.
 */
export interface BlobStat {
  size: number;
  mtimeMs: number;
  /**
   * Opaque version token: equal etags mean the same stored bytes; a replace always yields a new one
   * (unless it wrote identical bytes, on S3). Pass it back as replace's `ifMatch`. Not an HTTP ETag:
   * adapters choose the form (S3: the object's ETag without quotes; filesystem: inode, size, mtime).
   */
  etag: string;
}

export interface ReplaceOptions {
  /**
   * A string: replace only if the blob's current etag equals it. null: create only if the key does
   * not exist. Absent: replace unconditionally.
   */
  ifMatch?: string | null;
}

export interface BlobStore {
  /** A human-readable location for messages: a directory path or an s3:// URL. */
  readonly location: string;
  /** The whole blob, or undefined if the key does not exist (never throws for a missing key). */
  read(key: string): Promise<Buffer | undefined>;
  /** Byte range [start, end) of a blob, streamed; clamped to the blob's size. Undefined if missing. */
  readStream(key: string, range?: { start: number; end: number }): Promise<AsyncIterable<Buffer> | undefined>;
  stat(key: string): Promise<BlobStat | undefined>;
  /**
   * Whether each of `keys` exists, as `stat` would say, for stores that answer many keys cheaper
   * than one stat each (a directory: synchronous stats on a worker thread). Optional: callers fall
   * back to `stat`.
   */
  existsMany?(keys: readonly string[]): Promise<boolean[]>;
  /** Write-once. Returns false, writing nothing, if the key exists already. */
  createOnce(key: string, data: Buffer | AsyncIterable<Buffer>): Promise<boolean>;
  /**
   * Atomically replace (or create) a small mutable blob. Readers see the old or the new bytes, never a
   * mix. Returns false, writing nothing, when `opts.ifMatch` is given and the condition does not hold;
   * true otherwise.
   */
  replace(key: string, data: Buffer, opts?: ReplaceOptions): Promise<boolean>;
  /** Every key under a prefix ending in '/', recursively, in no particular order. */
  list(prefix: string): AsyncIterable<string>;
  /**
   * Run `fn` holding the store's write lock: one ref move at a time, across processes, on a
   * filesystem. On S3 there is no lock and `fn` simply runs (see the note at the top).
   */
  withLock<T>(fn: () => Promise<T>): Promise<T>;
  /** A URL that serves the blob without credentials for `expiresSeconds` (S3 only). */
  presignGet?(key: string, expiresSeconds: number): Promise<string>;
}
