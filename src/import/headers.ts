/**
 * Content-object headers for many files with few distinct metadata. A Debian tree has ~5000 regular
 * files but a dozen (uid, gid, mode) combinations; encoding two GVariant headers per file was ~20% of
 * the main thread's time, the thread that also walks the tree and feeds both workers.
 *
 * The .filez header depends on the size only through its first field, a fixed-width big-endian u64
 * (FORMAT.md §3), so one encoded template per metadata serves every size: copy, patch 8 bytes.
 */
import { contentHashPrefix, type FileMeta, filezHeader } from '../objects/index.js';

/** Offset of the size in a framed .filez header: BE32 length, 4 zero bytes, then Z = (t…). */
const SIZE_OFFSET = 8;

interface Cached {
  prefix: Buffer;
  template: Buffer;
}

export class HeaderCache {
  private readonly cache = new Map<string, Cached>();

  get(meta: FileMeta, size: number): { prefix: Buffer; header: Buffer } {
    // Symlink targets and xattrs make metadata nearly unique: not worth a key.
    if (!cacheable(meta)) return { prefix: contentHashPrefix(meta), header: filezHeader(meta, size) };
    const c = this.entry(meta);
    return { prefix: c.prefix, header: sizedHeader(c.template, size) };
  }

  /** The content header alone: all that hashing needs (a push's first pass makes no .filez). */
  prefix(meta: FileMeta): Buffer {
    return cacheable(meta) ? this.entry(meta).prefix : contentHashPrefix(meta);
  }

  private entry(meta: FileMeta): Cached {
    const key = `${meta.uid}:${meta.gid}:${meta.mode}`;
    let c = this.cache.get(key);
    if (!c) {
      c = { prefix: contentHashPrefix(meta), template: filezHeader(meta, 0) };
      this.cache.set(key, c);
    }
    return c;
  }
}

function cacheable(meta: FileMeta): boolean {
  return meta.symlinkTarget === '' && meta.xattrs.length === 0;
}

/** A .filez header for `size` bytes from the metadata's template (its header for size 0). */
export function sizedHeader(template: Buffer, size: number): Buffer {
  // allocUnsafeSlow, not Buffer.from: a view into Node's shared 8 KiB pool would make postMessage
  // clone the whole pool slab with every header.
  const header = Buffer.allocUnsafeSlow(template.length);
  template.copy(header);
  header.writeBigUInt64BE(BigInt(size), SIZE_OFFSET);
  return header;
}
