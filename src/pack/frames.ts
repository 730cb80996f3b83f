/**
 * zstd frames of a pack: compress one frame, and decode a stream of them into raw regions that
 * never straddle a frame, with the frame table built on the way.
 *
 * zstd-napi only has synchronous calls; at 1 MiB per frame one call takes ~3 ms to compress (level
 * 3) and ~1 ms to decompress, short enough not to stall the event loop. A pull decodes on libuv's
 * pool instead when native/zstd is built (decodeFramesAhead, below).
 */
import zstd from 'zstd-napi/binding.js';
import { RegistryError } from '../errors.js';
import { loadAddon } from '../native-addon.js';
import { badPack, DEFAULT_LEVEL, FRAME_TARGET, type FrameInfo, STORE_LEVEL } from './format.js';

/** The zstd level for a writer's `level` option: 0 is store, anything else is zstd's own level. */
export function zstdLevel(level: number = DEFAULT_LEVEL): number {
  if (!Number.isInteger(level) || level < STORE_LEVEL || level > zstd.maxCLevel()) {
    throw new RegistryError(
      'E_USAGE',
      `pack compression level ${level} is not an integer in ${STORE_LEVEL}..${zstd.maxCLevel()}`,
      { found: String(level) },
    );
  }
  return level === 0 ? STORE_LEVEL : level;
}

/**
 * One pack frame at a time, single-threaded (so the bytes depend only on the input and the level),
 * with the content size and XXH64 checksum in every frame.
 */
export class FrameCompressor {
  private readonly cctx = new zstd.CCtx();
  private scratch: Buffer | undefined;
  /** Whole-frame buffers handed back by recycle(), compressed into again. */
  private readonly spare: Buffer[] = [];

  constructor(level: number) {
    this.cctx.setParameter(zstd.CParameter.compressionLevel, zstdLevel(level));
    this.cctx.setParameter(zstd.CParameter.checksumFlag, 1);
    this.cctx.setParameter(zstd.CParameter.contentSizeFlag, 1);
    this.cctx.setParameter(zstd.CParameter.nbWorkers, 0);
  }

  /** `raw` may be reused by the caller as soon as this returns. Scratch space is sized for FRAME_TARGET. */
  compress(raw: Uint8Array): Buffer {
    const bound = zstd.compressBound(raw.length);
    const out =
      this.scratch && this.scratch.length >= bound
        ? this.scratch
        : (this.spare.pop() ?? Buffer.allocUnsafe(Math.max(bound, FRAME_BOUND)));
    const n = this.cctx.compress2(out, raw);
    // Sinks may hold chunks a while (a socket's queue): a small frame is copied out so it does not pin
    // a 1 MiB buffer, a big one is handed over whole and the next frame gets a recycled buffer or a
    // new one.
    if (n < 0.75 * out.length) {
      if (out.length <= FRAME_BOUND) this.scratch = out;
      return Buffer.from(out.subarray(0, n));
    }
    this.scratch = undefined;
    return out.subarray(0, n);
  }

  /**
   * A frame compress() handed over whole, given back once its sink is done with it (written to a
   * socket): the next frames are compressed into it instead of into fresh memory. A push's ~55
   * frames of 1 MiB each were fresh buffers, ~25 MB of them alive or not yet collected at once.
   */
  recycle(frame: Uint8Array): void {
    const b = frame.buffer;
    if (
      frame.byteOffset === 0 &&
      b instanceof ArrayBuffer &&
      b.byteLength === FRAME_BOUND &&
      this.spare.length < 4
    )
      this.spare.push(Buffer.from(b));
  }
}

/** The compressed size bound of a whole frame: every buffer compress() hands over is this big. */
const FRAME_BOUND = zstd.compressBound(FRAME_TARGET);

/** Decompressed bytes of one frame; `offset` is where `bytes` starts in the frame's raw bytes. */
export interface Region {
  bytes: Buffer;
  frame: number;
  offset: number;
}

/**
 * Decode output buffer. Regions are slices of it that are never overwritten (consumers may keep
 * them), unless the caller asks for `reuse`.
 */
const OUT_SIZE = FRAME_TARGET;
/** Below this much room left, start a new output buffer rather than decode in tiny slivers. */
const MIN_ROOM = 128 * 1024;
/** 2^20 = FRAME_TARGET: a frame that asks for a larger window is refused before it allocates one. */
const WINDOW_LOG_MAX = 20;

/**
 * Decode a pack's compressed bytes. Yields the raw stream as regions (each inside one frame, at most
 * 1 MiB) and appends each frame to `frames` once it has ended. Throws E_BAD_PACK for anything that
 * is not a sequence of non-empty zstd frames of at most FRAME_TARGET raw bytes, including a stream
 * cut inside a frame. Memory is bounded by the output buffers the consumer keeps: input is decoded
 * only as fast as regions are taken, so a frame of 1 MiB of zeros (~50 bytes) costs 1 MiB at a time.
 *
 * A region is yielded when its frame ends or its output buffer is full, not after every input
 * chunk: a network chunk (~64 KiB compressed) made regions of ~200 KB, and every record that
 * crossed one was copied whole by the reader (20 ms of a cold pull's main thread in a profile,
 * 2026-11-25). A region now ends only where a frame or a 1 MiB buffer does.
 *
 * With `reuse`, one output buffer is decoded into again and again, so a region is valid only until
 * the next one is asked for. A fresh 1 MiB buffer per frame is ~256 pages the kernel must back, and
 * external memory that makes V8 collect: on the VM of 2026-12-07 (10 µs per fresh page) decoding
 * the 116 MB pack of v1 took 166-208 ms into one buffer and 353 ms into fresh ones (14,400 faults).
 *
 * With `reuse` and native/zstd built, frames are decoded a frame ahead on libuv's pool instead
 * (decodeFramesAhead: whole frames, two buffers); SYSROOT_NATIVE_ZSTD=0 keeps them on this thread.
 * Without `reuse` (the server reading a push) they are always decoded here: its consumers keep
 * regions, so every frame would need a fresh buffer either way.
 */
export function decodeFrames(
  source: AsyncIterable<Uint8Array>,
  frames: FrameInfo[],
  opts: { reuse?: boolean } = {},
): AsyncGenerator<Region> {
  const addon = opts.reuse ? nativeZstd() : null;
  if (addon) return decodeFramesAhead(addon, source, frames);
  return decodeFramesHere(source, frames, opts);
}

async function* decodeFramesHere(
  source: AsyncIterable<Uint8Array>,
  frames: FrameInfo[],
  opts: { reuse?: boolean },
): AsyncGenerator<Region> {
  const dctx = new zstd.DCtx();
  dctx.setParameter(zstd.DParameter.windowLogMax, WINDOW_LOG_MAX);
  let out = Buffer.allocUnsafe(OUT_SIZE);
  let pos = 0;
  /** Where the region not yet yielded starts in `out`, and its offset in its frame's raw bytes. */
  let regionStart = 0;
  let regionOffset = 0;
  let consumedTotal = 0;
  let frameStart = 0;
  let frameRaw = 0;
  let inFrame = false;
  for await (const chunk of source) {
    let src = chunk;
    for (;;) {
      if (out.length - pos < MIN_ROOM) {
        if (pos > regionStart) {
          yield { bytes: out.subarray(regionStart, pos), frame: frames.length, offset: regionOffset };
        }
        // Resumed: the consumer is done with every region of `out` (with `reuse`, that is the rule).
        if (!opts.reuse) out = Buffer.allocUnsafe(OUT_SIZE);
        pos = 0;
        regionStart = 0;
        regionOffset = frameRaw;
      }
      const room = out.length - pos;
      let ret: number;
      let produced: number;
      let consumed: number;
      try {
        [ret, produced, consumed] = dctx.decompressStream(out.subarray(pos), src);
      } catch (e) {
        throw badPack(
          `frame ${frames.length} is not a valid zstd frame (${(e as Error).message})`,
          { frame: frames.length, offset: consumedTotal },
          e,
        );
      }
      src = src.subarray(consumed);
      consumedTotal += consumed;
      if (consumed > 0 || produced > 0) inFrame = true;
      if (produced > 0) {
        frameRaw += produced;
        if (frameRaw > FRAME_TARGET) {
          throw badPack(`frame ${frames.length} holds more than ${FRAME_TARGET} bytes`, {
            frame: frames.length,
            expected: `<= ${FRAME_TARGET} bytes`,
            found: `${frameRaw} bytes`,
          });
        }
        pos += produced;
      }
      if (ret === 0 && inFrame) {
        if (frameRaw === 0) {
          // A skippable frame, or an empty one: bytes no record accounts for.
          throw badPack(`frame ${frames.length} is empty`, { frame: frames.length, offset: frameStart });
        }
        if (pos > regionStart) {
          yield { bytes: out.subarray(regionStart, pos), frame: frames.length, offset: regionOffset };
        }
        regionStart = pos;
        regionOffset = 0;
        frames.push({
          compressedOffset: frameStart,
          compressedSize: consumedTotal - frameStart,
          rawSize: frameRaw,
        });
        frameStart = consumedTotal;
        frameRaw = 0;
        inFrame = false;
      }
      // A full output may leave decoded bytes inside the context even when the input is used up.
      if (src.length === 0 && produced < room) break;
    }
  }
  if (inFrame) {
    throw badPack(`truncated: the stream ends inside frame ${frames.length}`, {
      frame: frames.length,
      offset: consumedTotal,
    });
  }
}

interface ZstdAddon {
  frameSize(bytes: Uint8Array, max: number): number;
  createDecoder(): object;
  decodeFrame(decoder: object, src: Uint8Array, dst: Uint8Array): Promise<number>;
}

/** zstd's error, as native/zstd rejects or throws it. */
interface ZstdFailure {
  code: number;
  name: string;
}

/**
 * native/zstd, loaded on a pull's first decode: this module is imported by every pack writer (a
 * push, the server) too, and loading the addon and libzstd took ~2.5 ms.
 */
let loaded: ZstdAddon | null | undefined;
function zstdAddon(): ZstdAddon | null {
  if (loaded === undefined) loaded = loadAddon('zstd').addon as ZstdAddon | null;
  return loaded;
}

/** native/zstd for decoding, unless SYSROOT_NATIVE_ZSTD=0 keeps frames on the JavaScript thread. */
function nativeZstd(): ZstdAddon | null {
  return process.env.SYSROOT_NATIVE_ZSTD !== '0' ? zstdAddon() : null;
}

/** Whether native/zstd loads (for the tests, which must run both decoders). */
export function zstdAddonBuilt(): boolean {
  return zstdAddon() !== null;
}

/**
 * Whole frames decoded one call each, for random access to a pack on disk (PackFile): on libuv's
 * pool through native/zstd when it is built, several at once (an idle decoder each, made as
 * needed), else on this thread through zstd-napi. SYSROOT_NATIVE_ZSTD=0 keeps them on this thread.
 *
 * Why: a pull of v2 with v1 cached decompressed ~110 frames of the cached pack on its main thread,
 * ~220 ms of ~1 s (perf, 2026-12-08), the thread that also drives the checkout.
 *
 * decode() rejects with an Error whose message is zstd's error name; the caller says which frame.
 */
export class FrameDecoder {
  private readonly addon = nativeZstd();
  private readonly idle: object[] = [];
  private dctx: InstanceType<typeof zstd.DCtx> | undefined;

  /** True when frames decode on the pool (for the tests). */
  get native(): boolean {
    return this.addon !== null;
  }

  /** Decompress the one frame `src` holds into `dst`: the bytes produced. Keep both until it settles. */
  async decode(src: Uint8Array, dst: Uint8Array): Promise<number> {
    if (!this.addon) {
      this.dctx ??= new zstd.DCtx();
      return this.dctx.decompress(dst, src);
    }
    // A decoder decodes one frame at a time; a settled job leaves it ready for the next (zstd
    // starts every ZSTD_decompressDCtx afresh, after an error too).
    const decoder = this.idle.pop() ?? this.addon.createDecoder();
    try {
      return await this.addon.decodeFrame(decoder, src, dst);
    } catch (e) {
      throw new Error((e as ZstdFailure).name ?? String(e));
    } finally {
      this.idle.push(decoder);
    }
  }
}

/** ZSTD_error_dstSize_tooSmall (zstd_errors.h): the frame holds more than its output buffer. */
const DST_TOO_SMALL = 70;

/**
 * Bytes a frame may take compressed: zstd's bound for FRAME_TARGET is 1 MiB + 4 KiB, so a stream that
 * runs on for 2 MiB without ending a frame is refused rather than buffered.
 */
const MAX_FRAME_INPUT = 2 * FRAME_TARGET;

/**
 * decodeFrames with `reuse`, one frame ahead on libuv's pool (native/zstd): while the consumer
 * reads frame K, frame K + 1 decodes into the other of two output buffers. The regions are whole
 * frames, each valid until the next one is asked for, as with `reuse` on the JavaScript thread.
 *
 * Why: a cold pull spent ~115 ms of its main thread in zstd (2026-12-07), the thread that also
 * verifies every record and drives the checkout, while the second core idled ~0.4 s of the pull.
 *
 * Each frame's compressed bytes are gathered into one buffer (zstd decodes a whole frame from
 * contiguous input): two input buffers alternate too, one being decoded while the next frame
 * arrives. The same checks as decodeFramesHere: a frame must hold 1..FRAME_TARGET bytes, and its
 * content checksum must match (zstd checks it); a cut stream is E_BAD_PACK.
 */
async function* decodeFramesAhead(
  addon: ZstdAddon,
  source: AsyncIterable<Uint8Array>,
  frames: FrameInfo[],
): AsyncGenerator<Region> {
  const decoder = addon.createDecoder();
  const outs = [Buffer.allocUnsafe(OUT_SIZE), Buffer.allocUnsafe(OUT_SIZE)];
  let input = Buffer.allocUnsafe(MAX_FRAME_INPUT);
  let spare = Buffer.allocUnsafe(MAX_FRAME_INPUT);
  let length = 0;
  /** Where input[0] is in the pack. */
  let at = 0;
  /** The frame being decoded: its index, place and promise. */
  let pending:
    | { index: number; offset: number; size: number; out: Buffer; done: Promise<number> }
    | undefined;
  const it = source[Symbol.asyncIterator]();
  let ended = false;
  const sizeAt = (index: number): number => {
    try {
      return addon.frameSize(input.subarray(0, length), FRAME_TARGET);
    } catch (e) {
      throw badPack(`frame ${index} is not a valid zstd frame (${(e as ZstdFailure).name})`, {
        frame: index,
        offset: at,
      });
    }
  };
  const finish = async (p: NonNullable<typeof pending>): Promise<Region> => {
    let raw: number;
    try {
      raw = await p.done;
    } catch (e) {
      const f = e as ZstdFailure;
      if (f.code === DST_TOO_SMALL) {
        throw badPack(`frame ${p.index} holds more than ${FRAME_TARGET} bytes`, {
          frame: p.index,
          expected: `<= ${FRAME_TARGET} bytes`,
        });
      }
      throw badPack(`frame ${p.index} is not a valid zstd frame (${f.name})`, {
        frame: p.index,
        offset: p.offset,
      });
    }
    if (raw === 0) throw badPack(`frame ${p.index} is empty`, { frame: p.index, offset: p.offset });
    frames.push({ compressedOffset: p.offset, compressedSize: p.size, rawSize: raw });
    return { bytes: p.out.subarray(0, raw), frame: p.index, offset: 0 };
  };
  try {
    for (let index = 0; ; index++) {
      let size = 0;
      // A frame that cannot be, found while the one before decodes: thrown once that one is read,
      // as the JavaScript decoder does (bytes after the end record are the reader's to report).
      let failure: unknown;
      try {
        size = length > 0 ? sizeAt(index) : 0;
        while (size === 0 && !ended) {
          if (length >= MAX_FRAME_INPUT) {
            throw badPack(`frame ${index} does not end within ${MAX_FRAME_INPUT} bytes`, {
              frame: index,
              offset: at,
            });
          }
          const next = await it.next();
          if (next.done) {
            ended = true;
            break;
          }
          const chunk = next.value;
          if (length + chunk.length > input.length) {
            const bigger = Buffer.allocUnsafe(length + chunk.length);
            input.copy(bigger, 0, 0, length);
            input = bigger;
          }
          input.set(chunk, length);
          length += chunk.length;
          size = sizeAt(index);
        }
      } catch (e) {
        // sizeAt or the read threw before `size` was set: it is still 0.
        failure = e;
      }
      // The frame before is decoded: its input buffer is free, and its region goes out below.
      const before = pending ? await finish(pending) : undefined;
      pending = undefined;
      if (failure !== undefined) {
        if (before) yield before;
        throw failure;
      }
      if (size > 0) {
        // The consumer is done with frame index - 2 (it asked for index - 1): its buffer is free.
        const frame = input.subarray(0, size);
        const rest = length - size;
        if (spare.length < rest) spare = Buffer.allocUnsafe(rest);
        input.copy(spare, 0, size, length);
        const done = addon.decodeFrame(decoder, frame, outs[index % 2]!);
        // Awaited by finish(); this keeps a consumer that stops early from an unhandled rejection.
        done.catch(() => {});
        pending = { index, offset: at, size, out: outs[index % 2]!, done };
        [input, spare] = [spare, input];
        length = rest;
        at += size;
      }
      if (before) yield before;
      if (!pending) break;
    }
    if (length > 0) {
      throw badPack(`truncated: the stream ends inside frame ${frames.length}`, {
        frame: frames.length,
        offset: at + length,
      });
    }
  } finally {
    if (!ended) await it.return?.();
  }
}
