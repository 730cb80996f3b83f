/**
 * The lowest storage layer: named blobs (keys are repository-relative paths such as
 * `objects/ab/cdef….commit` or `refs/heads/stage3-sysroot/x86_64`). It knows nothing of OSTree.
 *
 * Two kinds of write, and nothing else — there is no delete:
 *   - createOnce: write-once; never replaces an existing blob (objects, ref-log records);
 *   - replace:    atomic swap of a small mutable blob (refs, summary, config), only under withLock.
 *
 * The filesystem adapter is fs-blob-store.ts; an S3 adapter implements the same interface.
 */
export interface BlobStat {
  size: number;
  mtimeMs: number;
}

export interface BlobStore {
  /** A human-readable location for messages: a directory path or an s3:// URL. */
  readonly location: string;
  read(key: string): Promise<Buffer | undefined>;
  /** Byte range [start, end) of a blob, streamed. */
  readStream(key: string, range?: { start: number; end: number }): Promise<AsyncIterable<Buffer> | undefined>;
  stat(key: string): Promise<BlobStat | undefined>;
  /** Write-once. Returns false, writing nothing, if the key exists already. */
  createOnce(key: string, data: Buffer | AsyncIterable<Buffer>): Promise<boolean>;
  /** Atomically replace (or create) a small mutable blob. Readers see the old or the new bytes, never a mix. */
  replace(key: string, data: Buffer): Promise<void>;
  /** Every key under a prefix ending in '/', recursively, in no particular order. */
  list(prefix: string): AsyncIterable<string>;
  /** Run `fn` holding the repository's write lock: one ref move at a time, across processes. */
  withLock<T>(fn: () => Promise<T>): Promise<T>;
}
