/**
 * Compression around tar streams: sniffing, streaming decompression (gzip, zstd) and zstd compression.
 *
 * zstd goes through zstd-napi's low-level streaming context rather than its Transform streams: as an async
 * generator the consumer pulls each 128 KiB output buffer, so a zstd bomb (one RLE block expands 4 bytes
 * to 128 KiB) cannot pile up decompressed data in memory ahead of the tar reader.
 */
import { pipeline, Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import zstd from 'zstd-napi/binding.js';
import { RegistryError } from '../errors.js';

export type Compression = 'none' | 'gzip' | 'zstd';

const EMPTY = Buffer.alloc(0);
// gzip output per input slice is bounded by deflate's ~1032:1 ratio: 16 KiB in, at most ~16 MiB out.
const GZIP_SLICE = 16 * 1024;

export function detectCompression(firstBytes: Buffer): Compression {
  if (firstBytes.length >= 2 && firstBytes[0] === 0x1f && firstBytes[1] === 0x8b) return 'gzip';
  if (
    firstBytes.length >= 4 &&
    firstBytes[0] === 0x28 &&
    firstBytes[1] === 0xb5 &&
    firstBytes[2] === 0x2f &&
    firstBytes[3] === 0xfd
  ) {
    return 'zstd';
  }
  return 'none';
}

function toBuffer(chunk: Buffer | Uint8Array): Buffer {
  return Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
}

function corrupt(format: Compression, cause: unknown): RegistryError {
  const why = cause instanceof Error ? cause.message : String(cause);
  return new RegistryError('E_BAD_ARCHIVE', `corrupt ${format} stream: ${why}`, {}, undefined, cause);
}

/** Marks errors raised by the source so they pass through unchanged instead of becoming E_BAD_ARCHIVE. */
class SourceFailure {
  constructor(readonly error: unknown) {}
}

/** The source's chunks as Buffers, with errors wrapped in SourceFailure. */
async function* guarded(head: Buffer[], it: AsyncIterator<Buffer | Uint8Array>): AsyncGenerator<Buffer> {
  yield* head;
  try {
    for (;;) {
      let r: IteratorResult<Buffer | Uint8Array>;
      try {
        r = await it.next();
      } catch (e) {
        throw new SourceFailure(e);
      }
      if (r.done) return;
      if (r.value.length > 0) yield toBuffer(r.value);
    }
  } finally {
    await it.return?.();
  }
}

function unwrap(e: unknown, format: Compression): unknown {
  if (e instanceof SourceFailure) return e.error;
  if (e instanceof RegistryError) return e;
  return corrupt(format, e);
}

/**
 * Compression bombs: past `floorBytes` of output, a compressed stream may expand at most `maxRatio`
 * times the compressed bytes read so far, else E_LIMIT. A Debian sysroot expands ~3x (128 MB from
 * 41.8 MB of zstd -3); gzip cannot exceed ~1032x, but zstd reaches ~32,000x (1 MB of input makes
 * 32 GB of zeros), which hashing and deflating would take many minutes to wade through. 100x past
 * the first 64 MiB refuses such a bomb within 64 MiB of output, in well under a second, with nothing
 * written but the objects of its first members (write-once, harmless). A tree that really is mostly
 * zeros (disk images) can raise or drop the limit (`sysroot commit --max-expansion`).
 */
export interface ExpansionLimit {
  /** 0: no limit. */
  maxRatio: number;
  floorBytes: number;
}

export const DEFAULT_EXPANSION: ExpansionLimit = { maxRatio: 100, floorBytes: 64 * 1024 * 1024 };

/** Counts what `chunks` hand on (the compressed side) into `count.in`. */
async function* countIn(chunks: AsyncGenerator<Buffer>, count: { in: number }): AsyncGenerator<Buffer> {
  for await (const c of chunks) {
    count.in += c.length;
    yield c;
  }
}

/** The decompressed side, checked against the limit after every chunk. */
async function* limited(
  out: AsyncGenerator<Buffer>,
  count: { in: number },
  limit: ExpansionLimit,
  format: Compression,
): AsyncGenerator<Buffer> {
  let produced = 0;
  for await (const c of out) {
    produced += c.length;
    if (limit.maxRatio > 0 && produced > limit.floorBytes && produced > limit.maxRatio * count.in) {
      throw new RegistryError(
        'E_LIMIT',
        `the ${format} stream expands more than ${limit.maxRatio}x (${produced} bytes from ${count.in}): ` +
          'refused as a compression bomb',
        {
          expected: `<= ${limit.maxRatio}x past ${limit.floorBytes} bytes`,
          found: `${produced} from ${count.in} bytes`,
        },
        'if the tree really is mostly zeros, raise the limit with --max-expansion RATIO (0: none)',
      );
    }
    yield c;
  }
}

/** Sniffs the first bytes and decompresses gzip or zstd; anything else passes through untouched. */
export async function* decompressStream(
  source: AsyncIterable<Buffer>,
  limit: ExpansionLimit = DEFAULT_EXPANSION,
): AsyncGenerator<Buffer> {
  const it = (source as AsyncIterable<Buffer | Uint8Array>)[Symbol.asyncIterator]();
  const head: Buffer[] = [];
  let have = 0;
  let ended = false;
  // Four bytes tell zstd's magic; keep pulling tiny chunks until we have them or the stream ends.
  while (have < 4) {
    const r = await it.next();
    if (r.done) {
      ended = true;
      break;
    }
    if (r.value.length === 0) continue;
    const b = toBuffer(r.value);
    head.push(b);
    have += b.length;
  }
  const first = head.length === 1 ? head[0]! : Buffer.concat(head);
  const format = detectCompression(first);
  if (ended) {
    if (format !== 'none') throw corrupt(format, new Error('stream ended inside the header'));
    if (first.length > 0) yield first;
    return;
  }
  const chunks = guarded(head, it);
  const count = { in: 0 };
  try {
    if (format === 'none') yield* chunks;
    else if (format === 'gzip') yield* limited(gunzip(countIn(chunks, count)), count, limit, format);
    else yield* limited(unzstd(countIn(chunks, count)), count, limit, format);
  } catch (e) {
    throw unwrap(e, format);
  }
}

async function* gunzip(chunks: AsyncGenerator<Buffer>): AsyncGenerator<Buffer> {
  async function* sliced(): AsyncGenerator<Buffer> {
    for await (const c of chunks) {
      for (let i = 0; i < c.length; i += GZIP_SLICE) yield c.subarray(i, i + GZIP_SLICE);
    }
  }
  const gz = createGunzip();
  // pipeline forwards errors from either side into gz, where the iteration below picks them up.
  pipeline(Readable.from(sliced(), { objectMode: false }), gz, () => {});
  for await (const out of gz as AsyncIterable<Buffer>) yield out;
}

async function* unzstd(chunks: AsyncGenerator<Buffer>): AsyncGenerator<Buffer> {
  const dctx = new zstd.DCtx();
  const outSize = zstd.dStreamOutSize();
  let out = Buffer.allocUnsafe(outSize);
  // Non-zero while a frame is open: EOF then means the stream was cut short.
  let pending = 0;
  for await (const chunk of chunks) {
    let src = chunk;
    for (;;) {
      const [ret, produced, consumed] = dctx.decompressStream(out, src);
      pending = ret;
      src = src.subarray(consumed);
      if (produced > 0) {
        // A small result is copied out so the 128 KiB buffer can be reused instead of pinned by the slice.
        if (produced < outSize / 4) yield Buffer.from(out.subarray(0, produced));
        else {
          yield out.subarray(0, produced);
          out = Buffer.allocUnsafe(outSize);
        }
      }
      // A full output buffer may leave more decoded data inside the context even with no input left.
      if (src.length === 0 && produced < outSize) break;
    }
  }
  if (pending !== 0) throw corrupt('zstd', new Error('stream ended in the middle of a frame'));
}

/** zstd, single-threaded (nbWorkers 0) so the output is a function of the input bytes and level alone. */
export async function* compressZstd(source: AsyncIterable<Buffer>, level = 3): AsyncGenerator<Buffer> {
  if (!Number.isInteger(level) || level < zstd.minCLevel() || level > zstd.maxCLevel()) {
    throw new RegistryError(
      'E_USAGE',
      `zstd level ${level} is outside ${zstd.minCLevel()}..${zstd.maxCLevel()}`,
    );
  }
  const cctx = new zstd.CCtx();
  cctx.setParameter(zstd.CParameter.compressionLevel, level);
  cctx.setParameter(zstd.CParameter.nbWorkers, 0);
  cctx.setParameter(zstd.CParameter.checksumFlag, 1);
  const outSize = zstd.cStreamOutSize();
  let out = Buffer.allocUnsafe(outSize);
  const drain = function* (src: Buffer, end: boolean): Generator<Buffer> {
    for (;;) {
      const [ret, produced, consumed] = cctx.compressStream2(
        out,
        src,
        end ? zstd.EndDirective.end : zstd.EndDirective.continue,
      );
      src = src.subarray(consumed);
      if (produced > 0) {
        yield out.subarray(0, produced);
        out = Buffer.allocUnsafe(outSize);
      }
      if (end ? ret === 0 : src.length === 0) return;
    }
  };
  for await (const chunk of source as AsyncIterable<Buffer | Uint8Array>) {
    if (chunk.length > 0) yield* drain(toBuffer(chunk), false);
  }
  yield* drain(EMPTY, true);
}
