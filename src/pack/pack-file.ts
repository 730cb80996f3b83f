/**
 * PackFile: random access to the records of a pack on disk, through its PackIndex.
 *
 * A record is found in the index, and only the frames it spans are read and decompressed; the last
 * FRAME_CACHE decompressed frames are kept (4 × 1 MiB), so reading records in pack order decompresses
 * each frame once. Concurrent reads of one frame share one decompression.
 *
 * Nothing is re-verified here: the caller decides (the pack was verified by readPack when it was
 * received; a server serving a record can pass it on and let the client check it). What is checked is
 * cheap: every frame's zstd checksum (XXH64, in each frame the writer makes) and, for every record
 * read, that its 41-byte header in the pack says the kind, checksum and length the index says — so
 * an index that belongs to another pack is caught instead of serving the wrong bytes.
 */
import { type FileHandle, open } from 'node:fs/promises';
import zstd from 'zstd-napi/binding.js';
import { RegistryError } from '../errors.js';
import type { Checksum } from '../objects/index.js';
import {
  badPack,
  type PackIndex,
  RECORD_HEADER_SIZE,
  type RecordInfo,
  type RecordKind,
  recordId,
} from './format.js';

/** Decompressed frames kept: reading in pack order needs 2 (a record straddling a boundary). */
const FRAME_CACHE = 4;
/** read() holds a whole payload; beyond this, stream() it. */
export const MAX_READ = 16 * 1024 * 1024;

export class PackFile {
  private readonly records = new Map<string, RecordInfo>();
  /** Frame number -> its raw bytes; Map order is the LRU order (oldest first). */
  private readonly cache = new Map<number, Promise<Buffer>>();
  private readonly dctx = new zstd.DCtx();

  private constructor(
    private readonly fh: FileHandle,
    readonly path: string,
    readonly index: PackIndex,
  ) {
    for (const r of index.records) {
      const key = r.kind + r.checksum;
      if (!this.records.has(key)) this.records.set(key, r);
    }
  }

  /** Opens the pack; E_BAD_PACK if its size is not what the index's frames add up to. */
  static async open(path: string, index: PackIndex): Promise<PackFile> {
    const fh = await open(path, 'r');
    try {
      const size = (await fh.stat()).size;
      const last = index.frames.at(-1);
      const expected = last ? last.compressedOffset + last.compressedSize : 0;
      if (size !== expected) {
        throw badPack(`${path} does not match its index`, {
          path,
          expected: `${expected} bytes`,
          found: `${size} bytes`,
        });
      }
      return new PackFile(fh, path, index);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  has(checksum: Checksum, kind: RecordKind): boolean {
    return this.records.has(kind + checksum);
  }

  /** The record's payload as stored in the pack (for content: header ‖ file bytes), in a new Buffer. */
  async read(checksum: Checksum, kind: RecordKind): Promise<Buffer> {
    const r = this.find(checksum, kind);
    if (r.length > MAX_READ) {
      throw new RegistryError(
        'E_USAGE',
        `pack record ${recordId(kind, checksum)} is ${r.length} bytes; stream() it`,
        { object: recordId(kind, checksum), found: `${r.length} bytes`, expected: `<= ${MAX_READ} bytes` },
      );
    }
    const out = Buffer.allocUnsafe(r.length);
    let at = 0;
    for await (const c of this.payload(r)) {
      c.copy(out, at);
      at += c.length;
    }
    return out;
  }

  /**
   * The record's payload as stored, in chunks of at most 1 MiB that are slices of cached frames:
   * read them, do not modify them.
   */
  stream(checksum: Checksum, kind: RecordKind): AsyncGenerator<Buffer> {
    return this.payload(this.find(checksum, kind));
  }

  async close(): Promise<void> {
    this.cache.clear();
    await this.fh.close();
  }

  private find(checksum: Checksum, kind: RecordKind): RecordInfo {
    const r = this.records.get(kind + checksum);
    if (!r) {
      const id = recordId(kind, checksum);
      throw new RegistryError('E_OBJECT_MISSING', `${id} is not in pack ${this.path}`, {
        object: id,
        path: this.path,
      });
    }
    return r;
  }

  private async *payload(r: RecordInfo): AsyncGenerator<Buffer> {
    let frame = r.frame;
    let offset = r.offset;
    let left = RECORD_HEADER_SIZE + r.length;
    const head: Buffer[] = [];
    let headLeft = RECORD_HEADER_SIZE;
    while (left > 0) {
      const raw = await this.frameBytes(frame);
      if (offset >= raw.length) {
        frame++;
        offset = 0;
        continue;
      }
      let chunk = raw.subarray(offset, offset + Math.min(left, raw.length - offset));
      offset += chunk.length;
      left -= chunk.length;
      if (headLeft > 0) {
        const h = chunk.subarray(0, headLeft);
        head.push(h);
        headLeft -= h.length;
        chunk = chunk.subarray(h.length);
        if (headLeft === 0) this.checkHeader(r, Buffer.concat(head));
      }
      if (chunk.length > 0) yield chunk;
    }
  }

  private checkHeader(r: RecordInfo, h: Buffer): void {
    if (
      h[0] !== r.kind ||
      h.toString('hex', 1, 33) !== r.checksum ||
      h.readBigUInt64BE(33) !== BigInt(r.length)
    ) {
      throw badPack(`${this.path} does not match its index at record ${recordId(r.kind, r.checksum)}`, {
        path: this.path,
        object: recordId(r.kind, r.checksum),
        frame: r.frame,
        offset: r.offset,
      });
    }
  }

  private frameBytes(i: number): Promise<Buffer> {
    const hit = this.cache.get(i);
    if (hit) {
      this.cache.delete(i);
      this.cache.set(i, hit);
      return hit;
    }
    const p = this.load(i);
    this.cache.set(i, p);
    p.catch(() => this.cache.delete(i));
    while (this.cache.size > FRAME_CACHE) this.cache.delete(this.cache.keys().next().value!);
    return p;
  }

  private async load(i: number): Promise<Buffer> {
    const f = this.index.frames[i];
    if (!f) throw badPack(`${this.path}: a record runs past the last frame`, { path: this.path, frame: i });
    const src = Buffer.allocUnsafe(f.compressedSize);
    const { bytesRead } = await this.fh.read(src, 0, f.compressedSize, f.compressedOffset);
    if (bytesRead !== f.compressedSize) {
      throw badPack(`${this.path}: frame ${i} is cut short`, { path: this.path, frame: i });
    }
    const raw = Buffer.allocUnsafe(f.rawSize);
    let n: number;
    try {
      n = this.dctx.decompress(raw, src);
    } catch (e) {
      throw badPack(
        `${this.path}: frame ${i} does not decompress (${(e as Error).message})`,
        { path: this.path, frame: i },
        e,
      );
    }
    if (n !== f.rawSize) {
      throw badPack(`${this.path}: frame ${i} decompresses to ${n} bytes, the index says ${f.rawSize}`, {
        path: this.path,
        frame: i,
        expected: `${f.rawSize} bytes`,
        found: `${n} bytes`,
      });
    }
    return raw;
  }
}
