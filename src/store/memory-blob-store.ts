/**
 * BlobStore in memory, for short-lived stores that never touch a disk: a push keeps the dirtree,
 * dirmeta and commit objects it builds here (~1,400 objects, ~1 MB for a Debian sysroot) between
 * hashing the tree and uploading what the server lacks. Same write-once and replace rules as the
 * other adapters; nothing survives the process.
 */
import type { BlobStat, BlobStore, ReplaceOptions } from './blob-store.js';

export class MemoryBlobStore implements BlobStore {
  readonly location = 'memory:';
  private readonly blobs = new Map<string, { data: Buffer; etag: string; mtimeMs: number }>();
  private version = 0;

  async read(key: string): Promise<Buffer | undefined> {
    return this.blobs.get(key)?.data;
  }

  async readStream(
    key: string,
    range?: { start: number; end: number },
  ): Promise<AsyncIterable<Buffer> | undefined> {
    const b = this.blobs.get(key);
    if (!b) return undefined;
    const data = range ? b.data.subarray(range.start, Math.max(range.start, range.end)) : b.data;
    return (async function* () {
      if (data.length > 0) yield data;
    })();
  }

  async stat(key: string): Promise<BlobStat | undefined> {
    const b = this.blobs.get(key);
    return b && { size: b.data.length, mtimeMs: b.mtimeMs, etag: b.etag };
  }

  async createOnce(key: string, data: Buffer | AsyncIterable<Buffer>): Promise<boolean> {
    const bytes = Buffer.isBuffer(data) ? data : await collect(data);
    if (this.blobs.has(key)) return false;
    this.set(key, bytes);
    return true;
  }

  async replace(key: string, data: Buffer, opts?: ReplaceOptions): Promise<boolean> {
    const current = this.blobs.get(key);
    if (opts?.ifMatch === null && current) return false;
    if (typeof opts?.ifMatch === 'string' && current?.etag !== opts.ifMatch) return false;
    this.set(key, data);
    return true;
  }

  async *list(prefix: string): AsyncIterable<string> {
    for (const key of [...this.blobs.keys()]) if (key.startsWith(prefix)) yield key;
  }

  async withLock<T>(fn: () => Promise<T>): Promise<T> {
    return fn();
  }

  private set(key: string, data: Buffer): void {
    // An own copy: the caller may reuse its buffer.
    this.blobs.set(key, { data: Buffer.from(data), etag: String(++this.version), mtimeMs: Date.now() });
  }
}

async function collect(source: AsyncIterable<Buffer>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of source) chunks.push(c);
  return Buffer.concat(chunks);
}
