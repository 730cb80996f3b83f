/**
 * PackFile: random access to the records of a pack on disk, through its PackIndex.
 *
 * A record is found in the index, and only the frames it spans are read and decompressed; the last
 * FRAME_CACHE decompressed frames are kept (4 × 1 MiB), so reading records in pack order decompresses
 * each frame once. Concurrent reads of one frame share one decompression.
 *
 * Frames decompress on libuv's pool when native/zstd is built (FrameDecoder), and reading forward
 * starts the next frame before it is asked for: when a read first takes frame K and K is past every
 * frame taken before, frame K + 1 is loaded too. A checkout of cached content reads in pack order,
 * so its JavaScript thread finds each frame decoded instead of waiting ~2 ms for it (a pull of v2
 * with v1 cached: ~110 frames, ~220 ms of its main thread, 2026-12-08). Random reads seldom move
 * forward frame by frame, and a frame loaded for nothing costs one decompression off this thread.
 *
 * With `recycle` (a checkout reading the pull cache), a frame's buffer is decompressed into again
 * once the frame has left the cache and no read holds it: the caller is then done with a chunk
 * from stream() when it asks for the next one, from any stream of this file. Without it every
 * frame is a fresh 1 MiB, and a checkout of a cached sysroot took ~25,000 page faults (10 µs each
 * on the VM of 2026-12-07). The compressed bytes are read into reused buffers either way.
 *
 * Nothing is re-verified here: the caller decides (the pack was verified by readPack when it was
 * received; a server serving a record can pass it on and let the client check it). What is checked is
 * cheap: every frame's zstd checksum (XXH64, in each frame the writer makes) and, for every record
 * read, that its 41-byte header in the pack says the kind, checksum and length the index says — so
 * an index that belongs to another pack is caught instead of serving the wrong bytes.
 */
import { type FileHandle, open } from 'node:fs/promises';
import { RegistryError } from '../errors.js';
import type { Checksum } from '../objects/index.js';
import {
  badPack,
  FRAME_TARGET,
  type PackIndex,
  RECORD_HEADER_SIZE,
  type RecordInfo,
  type RecordKind,
  recordId,
} from './format.js';
import { FrameDecoder } from './frames.js';

/** Decompressed frames kept: reading in pack order needs 2 (a record straddling a boundary). */
const FRAME_CACHE = 4;

/** A cached frame: its bytes once decompressed, and the reads that hold it (see `recycle`). */
interface Frame {
  bytes: Promise<Buffer>;
  /** The whole buffer `bytes` is a view of, once decompressed (for reuse). */
  buffer?: Buffer;
  users: number;
  evicted: boolean;
  /** Taken by a read at least once (a frame loaded ahead is not, until a read gets to it). */
  taken: boolean;
}

export interface PackFileOptions {
  /** Decompress into the buffers of frames no longer cached nor held (see the top of this file). */
  recycle?: boolean;
}
/** Compressed bytes are read into buffers at least this big (a stored 1 MiB frame is a little more). */
const INPUT_SIZE = FRAME_TARGET + 64 * 1024;
/** read() holds a whole payload; beyond this, stream() it. */
export const MAX_READ = 16 * 1024 * 1024;

export class PackFile {
  private readonly records = new Map<string, RecordInfo>();
  /** Frame number -> the frame; Map order is the LRU order (oldest first). */
  private readonly cache = new Map<number, Frame>();
  private readonly decoder = new FrameDecoder();
  /** The highest frame a read has taken: a read that first takes a frame past it loads the next. */
  private furthest = -1;
  /** Frame buffers free to decompress into (recycle), and buffers for compressed bytes. */
  private readonly spareFrames: Buffer[] = [];
  private readonly spareInput: Buffer[] = [];
  /** With `recycle`: where view() gathers a record that spans frames (grown to the largest, ≤ MAX_READ). */
  private gathered: Buffer | undefined;

  private constructor(
    private readonly fh: FileHandle,
    readonly path: string,
    readonly index: PackIndex,
    private readonly recycle: boolean,
  ) {
    for (const r of index.records) {
      const key = r.kind + r.checksum;
      if (!this.records.has(key)) this.records.set(key, r);
    }
  }

  /** Opens the pack; E_BAD_PACK if its size is not what the index's frames add up to. */
  static async open(path: string, index: PackIndex, opts: PackFileOptions = {}): Promise<PackFile> {
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
      return new PackFile(fh, path, index, opts.recycle === true);
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
    return this.gather(this.find(checksum, kind), false);
  }

  /**
   * The record's payload as stored: the slice of its frame when it lies in one (read it, do not
   * modify it; with `recycle`, valid until the next read), else gathered into a new Buffer (with
   * `recycle`, into one this file keeps and gathers into again: also valid until the next read).
   */
  async view(checksum: Checksum, kind: RecordKind): Promise<Buffer> {
    return this.gather(this.find(checksum, kind), true);
  }

  private async gather(r: RecordInfo, slice: boolean): Promise<Buffer> {
    if (r.length > MAX_READ) {
      throw new RegistryError(
        'E_USAGE',
        `pack record ${recordId(r.kind, r.checksum)} is ${r.length} bytes; stream() it`,
        {
          object: recordId(r.kind, r.checksum),
          found: `${r.length} bytes`,
          expected: `<= ${MAX_READ} bytes`,
        },
      );
    }
    let first: Buffer | undefined;
    let out: Buffer | undefined;
    // The cached pack of the Debian sysroot (v1) has 103 records that span frames, 38.2 MB: each
    // gathered into fresh memory, malloc's heap grew and the kernel zeroed its new pages under the
    // main thread of a pull of v2 (perf, 2026-12-08: clear_page under malloc 272 → 47 samples).
    if (slice && this.recycle) {
      if (!this.gathered || this.gathered.length < r.length)
        this.gathered = Buffer.allocUnsafe(Math.max(r.length, FRAME_TARGET));
      out = this.gathered.subarray(0, r.length);
    }
    let at = 0;
    // Each chunk is copied before the stream is asked for the next (with `recycle` its frame may be
    // decompressed into again after that); only a first chunk that is the whole payload is kept.
    for await (const c of this.payload(r)) {
      if (slice && first === undefined && c.length === r.length) {
        first = c;
        continue;
      }
      out ??= Buffer.allocUnsafe(r.length);
      at += c.copy(out, at);
    }
    return first ?? out ?? Buffer.alloc(0);
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
    let held: Frame | undefined;
    try {
      while (left > 0) {
        if (held) this.release(held);
        held = this.frame(frame);
        const raw = await held.bytes;
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
    } finally {
      if (held) this.release(held);
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

  /** Frame `i`, held by the caller until release(): its buffer is not reused before. */
  private frame(i: number): Frame {
    let f = this.cache.get(i);
    if (f) {
      this.cache.delete(i);
      this.cache.set(i, f);
    } else {
      f = this.start(i);
    }
    f.users++;
    if (!f.taken) {
      f.taken = true;
      if (i > this.furthest) {
        this.furthest = i;
        // Loaded ahead, held by no read: the LRU may drop it again before a read gets to it.
        if (i + 1 < this.index.frames.length && !this.cache.has(i + 1)) this.start(i + 1);
      }
    }
    return f;
  }

  /** A cache entry for frame `i`, its load begun (and the oldest frames evicted past FRAME_CACHE). */
  private start(i: number): Frame {
    // load() sets the entry's buffer, so the entry exists before its bytes do.
    const entry = { users: 0, evicted: false, taken: false } as Frame;
    entry.bytes = this.load(i, entry);
    // A read awaits it; a frame loaded ahead that fails is only dropped (a read that gets to it
    // loads it again and gets the error).
    entry.bytes.catch(() => {
      if (this.cache.get(i) === entry) this.cache.delete(i);
    });
    this.cache.set(i, entry);
    while (this.cache.size > FRAME_CACHE) {
      const [oldest, old] = this.cache.entries().next().value!;
      this.cache.delete(oldest);
      old.evicted = true;
      this.reuse(old);
    }
    return entry;
  }

  private release(f: Frame): void {
    f.users--;
    this.reuse(f);
  }

  /** A frame out of the cache and held by no read gives its buffer back (with `recycle`). */
  private reuse(f: Frame): void {
    if (this.recycle && f.evicted && f.users === 0 && f.buffer) {
      this.spareFrames.push(f.buffer);
      f.buffer = undefined;
    }
  }

  private async load(i: number, entry: Frame): Promise<Buffer> {
    const f = this.index.frames[i];
    if (!f) throw badPack(`${this.path}: a record runs past the last frame`, { path: this.path, frame: i });
    // The compressed bytes are needed only until decompressed: a buffer of a few, used again.
    let src = this.spareInput.pop();
    if (!src || src.length < f.compressedSize)
      src = Buffer.allocUnsafe(Math.max(f.compressedSize, INPUT_SIZE));
    try {
      const { bytesRead } = await this.fh.read(src, 0, f.compressedSize, f.compressedOffset);
      if (bytesRead !== f.compressedSize) {
        throw badPack(`${this.path}: frame ${i} is cut short`, { path: this.path, frame: i });
      }
      let raw = this.recycle ? this.spareFrames.pop() : undefined;
      if (!raw || raw.length < f.rawSize)
        raw = Buffer.allocUnsafe(this.recycle ? Math.max(f.rawSize, FRAME_TARGET) : f.rawSize);
      let n: number;
      try {
        n = await this.decoder.decode(src.subarray(0, f.compressedSize), raw);
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
      entry.buffer = raw;
      return raw.subarray(0, n);
    } finally {
      this.spareInput.push(src);
    }
  }
}
