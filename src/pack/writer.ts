/**
 * PackWriter: records in, compressed pack bytes out to a sink, one frame (≤ 1 MiB raw) at a time.
 *
 * The sink is an async function called once per frame, in order; the writer waits for it before it
 * takes more than a few frames ahead (the one being filled, and two per pool worker being compressed
 * or waiting for the sink; without the pool, none), so a slow sink (an HTTP response, a file) holds
 * the writer back and memory stays at a few MiB whatever the pack's size. A server streams a pack as it is generated:
 *
 *   const body = new PassThrough();
 *   const pack = new PackWriter(writableSink(body), { level: 3 });
 *   (async () => { for (…) await pack.add(…); await pack.finish(); body.end(); })()
 *     .catch((e) => body.destroy(e));
 *   return new Response(Readable.toWeb(body));
 *
 * The writer trusts its caller: it does not verify payloads (the reader verifies everything). Calls
 * must not overlap (await each one). After an error — a sink that failed, a stream that did not have
 * the length it promised — the pack is unusable and every later call rejects with that error.
 */
import { createHash } from 'node:crypto';
import type { Writable } from 'node:stream';
import { RegistryError } from '../errors.js';
import { assertChecksum, type Checksum, contentHashPrefix, type FileMeta } from '../objects/index.js';
import {
  END_KIND,
  encodeRecordHeader,
  endHashCovers,
  FRAME_TARGET,
  type FrameInfo,
  isRecordKind,
  KIND,
  PACK_MAGIC,
  type PackIndex,
  type RecordInfo,
  type RecordKind,
  recordId,
} from './format.js';
import { FrameCompressor, zstdLevel } from './frames.js';
import { zstdPool } from './zstd-pool.js';

/** Receives each compressed frame, in order; the writer waits for the promise before going on. */
export type PackSink = (chunk: Buffer) => Promise<void>;

export interface PackWriterOptions {
  /**
   * zstd level of every frame: 1..22, or negative for zstd's fast levels; 0 means store (zstd's
   * fastest setting, see STORE_LEVEL). Default 3.
   */
  level?: number;
  /**
   * Compress frames in the process's shared worker pool (zstd-pool.ts) while this thread goes on
   * filling the next one. Default true; the bytes are the same either way.
   */
  threads?: boolean;
  /**
   * Keep every record's place for the summary's index (default true). A writer whose pack is sent
   * and never read back by index (a push) turns it off: the 1 GiB bench tree has 47,000 records.
   * The summary's `index.records` is then empty; its checksum and frames are still right.
   */
  index?: boolean;
}

export interface PackSummary {
  records: number;
  /** Compressed bytes: the size of the pack file. */
  bytes: number;
  /** Decompressed bytes, magic and end record included. */
  rawBytes: number;
  index: PackIndex;
}

/** A sink that writes to a Node stream and waits for 'drain' when its buffer is full. */
export function writableSink(stream: Writable): PackSink {
  return async (chunk) => {
    if (stream.destroyed || stream.writableEnded) {
      throw new RegistryError('E_IO', 'pack output stream is closed');
    }
    if (!stream.write(chunk)) {
      // 'close' without 'drain' means the stream was destroyed (the client went away): stop writing.
      await new Promise<void>((resolve) => {
        const done = (): void => {
          stream.off('drain', done);
          stream.off('close', done);
          resolve();
        };
        stream.on('drain', done);
        stream.on('close', done);
      });
      if (stream.destroyed) throw new RegistryError('E_IO', 'pack output stream closed while writing');
    }
  };
}

/**
 * Frames cut but not yet given to the sink, per pool worker: enough to keep the workers busy while
 * this thread fills the next frame, and a bound on memory (2 workers: 4 frames, ~6 MiB).
 */
const INFLIGHT_PER_WORKER = 2;

export class PackWriter {
  /** For frames compressed on this thread; made on first use. */
  private compressor: FrameCompressor | undefined;
  private readonly level: number;
  private readonly threads: boolean;
  private frame: Buffer = Buffer.allocUnsafe(FRAME_TARGET);
  /** Frame buffers back from the pool, to fill again. */
  private readonly spare: Buffer[] = [];
  /** Frames in order, compressed or being compressed, not yet given to the sink. */
  private readonly inflight: { frame: Promise<Buffer>; rawSize: number }[] = [];
  /** Frames cut so far, given to the sink or not: the number of the frame being filled. */
  private framesCut = 0;
  private fill = 0;
  /** The end checksum: the magic, record headers, and the payloads endHashCovers names. */
  private readonly hash = createHash('sha256').update(PACK_MAGIC);
  /** Whether the payload being put is hashed into the end checksum. */
  private hashPayload = false;
  private readonly frames: FrameInfo[] = [];
  private readonly records: RecordInfo[] = [];
  private readonly keepIndex: boolean;
  private recordCount = 0;
  /** Checksums put so far, by kind: the caller's own strings, no new key per record. */
  private readonly seen = new Map<RecordKind, Set<Checksum>>();
  private compressedBytes = 0;
  private rawBytes = 0;
  private busy = false;
  private finished = false;
  private failure: unknown;

  constructor(
    private readonly sink: PackSink,
    opts: PackWriterOptions = {},
  ) {
    this.level = zstdLevel(opts.level);
    this.threads = opts.threads ?? true;
    this.keepIndex = opts.index ?? true;
    PACK_MAGIC.copy(this.frame, 0);
    this.fill = PACK_MAGIC.length;
  }

  /** A whole record: `payload` as specified for `kind` (see format.ts), given as one buffer or parts. */
  add(kind: RecordKind, checksum: Checksum, payload: Uint8Array | readonly Uint8Array[]): Promise<void> {
    return this.run(async () => {
      const parts = payload instanceof Uint8Array ? [payload] : payload;
      let length = 0;
      for (const p of parts) length += p.length;
      await this.begin(kind, checksum, length);
      for (const p of parts) await this.put(p);
    });
  }

  /**
   * A content record (kind 5) from a file's metadata and bytes (none for a symlink), without
   * concatenating them: the payload is `contentHashPrefix(meta) ‖ data`.
   */
  addContent(checksum: Checksum, meta: FileMeta, data: Uint8Array = EMPTY): Promise<void> {
    return this.add(KIND.content, checksum, [contentHashPrefix(meta), data]);
  }

  /**
   * A record whose payload arrives in chunks (a large file): `length` must be exactly the number of
   * bytes `chunks` yields, else this throws E_USAGE and the pack is unusable.
   */
  addStream(
    kind: RecordKind,
    checksum: Checksum,
    length: number,
    chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  ): Promise<void> {
    return this.run(async () => {
      await this.begin(kind, checksum, length);
      let total = 0;
      const mismatch = (found: string) =>
        new RegistryError(
          'E_USAGE',
          `pack record ${recordId(kind, checksum)}: the stream does not have the ${length} bytes promised`,
          { object: recordId(kind, checksum), expected: `${length} bytes`, found },
        );
      for await (const c of chunks) {
        total += c.length;
        if (total > length) throw mismatch(`more than ${length} bytes`);
        await this.put(c);
      }
      if (total !== length) throw mismatch(`${total} bytes`);
    });
  }

  /**
   * A chunk this writer gave its sink, handed back once the sink is done with it (every byte of it
   * written out): its memory is compressed into again. Frames compressed on this thread only
   * (`threads: false`); anything else is ignored.
   */
  recycle(chunk: Uint8Array): void {
    this.compressor?.recycle(chunk);
  }

  /** Writes the end record and the last frame; the summary's index is the pack's PackIndex. */
  finish(): Promise<PackSummary> {
    return this.run(async () => {
      const digest = this.hash.digest();
      this.hashPayload = false;
      await this.put(encodeRecordHeader(END_KIND, digest, 0));
      if (this.fill > 0) await this.cutFrame();
      while (this.inflight.length > 0) await this.emit();
      this.finished = true;
      return {
        records: this.recordCount,
        bytes: this.compressedBytes,
        rawBytes: this.rawBytes,
        index: { checksum: digest.toString('hex'), frames: this.frames, records: this.records },
      };
    });
  }

  private async run<T>(op: () => Promise<T>): Promise<T> {
    if (this.failure !== undefined) throw this.failure;
    if (this.finished) throw new RegistryError('E_USAGE', 'pack writer: the pack is already finished');
    if (this.busy) throw new RegistryError('E_USAGE', 'pack writer: calls must not overlap (await each one)');
    this.busy = true;
    try {
      return await op();
    } catch (e) {
      this.failure = e;
      throw e;
    } finally {
      this.busy = false;
    }
  }

  private async begin(kind: RecordKind, checksum: Checksum, length: number): Promise<void> {
    if (!isRecordKind(kind)) {
      throw new RegistryError('E_USAGE', `pack writer: unknown record kind ${kind}`, { found: String(kind) });
    }
    assertChecksum(checksum, `pack record checksum`);
    if (!Number.isSafeInteger(length) || length < 0) {
      throw new RegistryError('E_USAGE', `pack writer: bad payload length ${length}`, {
        found: String(length),
      });
    }
    let seen = this.seen.get(kind);
    if (!seen) {
      seen = new Set();
      this.seen.set(kind, seen);
    }
    if (seen.has(checksum)) {
      throw new RegistryError('E_USAGE', `pack writer: ${recordId(kind, checksum)} is already in the pack`, {
        object: recordId(kind, checksum),
      });
    }
    seen.add(checksum);
    this.recordCount++;
    if (this.keepIndex)
      this.records.push({ kind, checksum, frame: this.framesCut, offset: this.fill, length });
    const header = encodeRecordHeader(kind, Buffer.from(checksum, 'hex'), length);
    this.hash.update(header);
    this.hashPayload = false;
    await this.put(header);
    this.hashPayload = endHashCovers(kind);
  }

  /** Copy into the current frame, cutting a frame each time it reaches FRAME_TARGET bytes. */
  private async put(bytes: Uint8Array): Promise<void> {
    if (this.hashPayload) this.hash.update(bytes);
    let at = 0;
    while (at < bytes.length) {
      const n = Math.min(bytes.length - at, FRAME_TARGET - this.fill);
      this.frame.set(at === 0 && n === bytes.length ? bytes : bytes.subarray(at, at + n), this.fill);
      this.fill += n;
      at += n;
      if (this.fill === FRAME_TARGET) await this.cutFrame();
    }
  }

  /**
   * Compress the frame in the shared pool if a worker is ready (the buffer goes with it) or here,
   * and queue it for the sink.
   */
  private async cutFrame(): Promise<void> {
    const raw = this.frame.subarray(0, this.fill);
    const rawSize = raw.length;
    const pool = this.threads ? zstdPool() : undefined;
    const job = pool?.compress(raw, this.level);
    let frame: Promise<Buffer>;
    if (job) {
      this.frame = this.spare.pop() ?? Buffer.allocUnsafe(FRAME_TARGET);
      frame = job.then((r) => {
        this.spare.push(r.raw);
        return r.frame;
      });
      // Awaited in order by emit(); until then a failure must not count as unhandled.
      frame.catch(() => {});
    } else {
      this.compressor ??= new FrameCompressor(this.level);
      frame = Promise.resolve(this.compressor.compress(raw));
    }
    this.inflight.push({ frame, rawSize });
    this.framesCut++;
    this.fill = 0;
    // Without the pool every frame is compressed here and ready: it goes to the sink at once (held,
    // it would only hold memory: 2 more 1 MiB frames per push).
    while (this.inflight.length > (pool ? INFLIGHT_PER_WORKER * Math.max(1, pool.size) : 0))
      await this.emit();
  }

  /** The oldest frame to the sink, once compressed. */
  private async emit(): Promise<void> {
    const { frame, rawSize } = this.inflight.shift()!;
    const compressed = await frame;
    this.frames.push({ compressedOffset: this.compressedBytes, compressedSize: compressed.length, rawSize });
    this.compressedBytes += compressed.length;
    this.rawBytes += rawSize;
    await this.sink(compressed);
  }
}

const EMPTY = Buffer.alloc(0);
