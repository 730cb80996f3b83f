// @ts-check
/**
 * Raw deflate and inflate of `.filez` payloads: Intel ISA-L's igzip when its addon is built
 * (native/igzip, see scripts/build-native.mjs), else Node's zlib.
 *
 * OSTree names a `.filez` by the checksum of the *uncompressed* file and reads any raw-deflate
 * stream, so the compressor is ours to choose. Measured on the Debian sysroot (5,236 files,
 * 120 MB, one stream per file, one thread, 2026-12-06):
 *
 *   deflate   zlib level 1   1.52 s of CPU   55.9 MB
 *             igzip level 1  0.33 s          56.9 MB
 *             zlib level 6   2.84 s          52.5 MB   (what `ostree commit` uses)
 *   inflate   zlib           0.37 s
 *             igzip          0.20 s          (either engine reads the other's streams)
 *
 * Deflating was most of a push's CPU, on the same 2 cores as the server's checks.
 *
 * Plain JavaScript, like the import worker that uses it (Node 20 cannot start a worker from .ts).
 * SYSROOT_DEFLATE=zlib turns igzip off (to compare, or to rule it out).
 */

import { deflateRawSync, inflateRawSync, inflateRaw as inflateRawZlib, constants as zc } from 'node:zlib';
import { loadAddon } from '../native-addon.js';

/** @typedef {'igzip' | 'zlib'} Engine */
/** How to deflate: the engine and its level (igzip 0-3, zlib 0-9). */
/** @typedef {{ engine: Engine, level: number }} DeflateSettings */

/**
 * @typedef {{
 *   deflateRaw(input: Uint8Array, level: number, final: boolean): Buffer,
 *   deflateInto(input: Uint8Array, output: Uint8Array, level: number, final: boolean): number,
 *   inflateInto(input: Uint8Array, output: Uint8Array, facts: Uint8Array): number,
 *   inflateMatches(input: Uint8Array, size: number, prefix: Uint8Array, sum: Uint8Array): boolean,
 * }} Igzip
 */

/** @returns {{ addon: Igzip | null, why: string }} */
function loadIgzip() {
  if (process.env.SYSROOT_DEFLATE === 'zlib') return { addon: null, why: 'SYSROOT_DEFLATE=zlib' };
  const { addon, error } = loadAddon('igzip');
  if (addon) return { addon: /** @type {Igzip} */ (addon), why: '' };
  return {
    addon: null,
    // Built but not loadable (libisal.so.2 removed since): say so rather than "not built".
    why: error
      ? `native/igzip did not load: ${error.message}`
      : 'native/igzip is not built (it needs ISA-L: on Debian, apt-get install libisal-dev, then npm rebuild)',
  };
}

const loaded = loadIgzip();
const igzip = loaded.addon;

/** The engine `deflateSettings()` picks: igzip if its addon loaded. */
export const engine = /** @type {Engine} */ (igzip ? 'igzip' : 'zlib');
/** Why igzip is not in use ('' when it is): for messages and the tests. */
export const igzipUnavailable = loaded.why;

/**
 * The default is the fastest engine at hand, at its level 1. An explicit zlib level (0-9: 0 stores,
 * 9 compresses best) asks for zlib.
 * @param {number} [zlibLevel] @returns {DeflateSettings}
 */
export function deflateSettings(zlibLevel) {
  if (zlibLevel !== undefined) return { engine: 'zlib', level: zlibLevel };
  return { engine, level: 1 };
}

/** @param {DeflateSettings} s */
function addonFor(s) {
  if (s.engine !== 'igzip') return null;
  if (!igzip) throw new Error(`deflate: igzip asked for but not available (${igzipUnavailable})`);
  return igzip;
}

/**
 * `data` as one whole raw-deflate stream.
 * @param {Uint8Array} data @param {DeflateSettings} s @returns {Buffer}
 */
export function deflateRaw(data, s) {
  return deflatePiece(data, s, true);
}

/**
 * One piece of a stream too large to hold (a big file, chunk by chunk): each piece is compressed
 * on its own and ends byte-aligned (a full flush), so the pieces, concatenated, are one valid
 * stream once a final piece ends it; `deflatePiece(empty, s, true)` is a valid final piece (5
 * bytes). Pieces carry no history between them, which costs nothing measurable at 1 MiB.
 * @param {Uint8Array} data @param {DeflateSettings} s @param {boolean} final @returns {Buffer}
 */
export function deflatePiece(data, s, final) {
  const addon = addonFor(s);
  if (addon) return addon.deflateRaw(data, s.level, final);
  return deflateRawSync(data, { level: s.level, finishFlush: final ? zc.Z_FINISH : zc.Z_FULL_FLUSH });
}

/**
 * The most bytes one deflateInto call writes for `n` input bytes: igzip's worst case, stored blocks
 * of at most 65,535 bytes with 5 header bytes each, plus a dynamic header (ISAL_DEF_MAX_HDR_SIZE,
 * 328) and the flush's empty block (igzip.c's bound_of says the same).
 * @param {number} n @returns {number}
 */
export function deflateBound(n) {
  return n + 5 * (Math.floor(n / 65535) + 2) + 328 + 64;
}

/**
 * deflateRaw written into `out` instead of a new Buffer: the bytes written, or -1 if `out` is too
 * small (deflateBound(data.length) bytes always suffice). igzip only: undefined when `s` is zlib's,
 * and the caller uses deflateRaw.
 * @param {Uint8Array} data @param {Uint8Array} out @param {DeflateSettings} s @returns {number | undefined}
 */
export function deflateInto(data, out, s) {
  const addon = addonFor(s);
  return addon ? addon.deflateInto(data, out, s.level, true) : undefined;
}

/**
 * Why a stream did not inflate to what its `.filez` header promised; `found` is the evidence for
 * E_CORRUPT_OBJECT ('invalid deflate stream', 'N trailing bytes', 'N bytes').
 */
export class InflateError extends Error {
  /** @param {string} found @param {string} message */
  constructor(found, message) {
    super(message);
    this.found = found;
  }
}

const facts = new Float64Array(2);
const factBytes = new Uint8Array(facts.buffer);

/**
 * Inflate one whole raw-deflate stream that must hold exactly `size` bytes and nothing may follow:
 * bytes after the end of the stream would be stored and served unverified, so they are an error.
 * With `into` (at least `size` bytes) igzip inflates into it and the result is a view of it; zlib
 * ignores it.
 * @param {Uint8Array} data @param {number} size @param {Buffer} [into] @returns {Buffer}
 */
export function inflateRaw(data, size, into) {
  checkRatio(data, size);
  if (igzip) {
    const out = into && into.length >= size ? into.subarray(0, size) : Buffer.allocUnsafe(size);
    const status = igzip.inflateInto(data, out, factBytes);
    const [written = 0, unread = 0] = facts;
    if (status === 3) throw new InflateError(`> ${size} bytes`, 'payload longer than its header says');
    if (status === 2) throw new InflateError('invalid deflate stream', 'the deflate stream is cut short');
    if (status !== 0) throw new InflateError('invalid deflate stream', 'not a valid deflate stream');
    if (unread > 0) throw new InflateError(`${unread} trailing bytes`, 'bytes after the deflate stream');
    if (written !== size) throw sizeError(written, size);
    return out;
  }
  /** @type {ZlibResult} */
  let r;
  try {
    r = /** @type {any} */ (inflateRawSync(data, zlibOptions(size)));
  } catch (e) {
    throw new InflateError('invalid deflate stream', /** @type {Error} */ (e).message);
  }
  return zlibChecked(data, r, size);
}

/**
 * Whether `data` inflates to exactly `size` bytes, nothing after the stream, whose SHA-256 after
 * `prefix` is `sum` (32 bytes): a `.filez` checked against its name in one native call, with no
 * buffer of `size` bytes and no Hash object (node:crypto's createHash cost ~7 µs a call, ~45 ms of
 * a server's main thread over a push of v1's ~6,100 objects; perf, 2026-12-08). False says only
 * that something differs (the caller finds out what); undefined without igzip.
 * @param {Uint8Array} data @param {number} size @param {Uint8Array} prefix @param {Uint8Array} sum
 * @returns {boolean | undefined}
 */
export function inflateMatches(data, size, prefix, sum) {
  if (!igzip) return undefined;
  if (size > mostInflated(data)) return false;
  return igzip.inflateMatches(data, size, prefix, sum);
}

/**
 * inflateRaw, off the main thread when that pays: zlib on libuv's pool (a round trip costs about
 * what inflating a few KiB does, so callers keep small payloads on inflateRaw). igzip inflates on
 * the calling thread: it is fast enough that a round trip would cost more than it saves.
 * @param {Uint8Array} data @param {number} size @returns {Promise<Buffer>}
 */
export function inflateRawAsync(data, size) {
  if (igzip) return new Promise((resolve) => resolve(inflateRaw(data, size)));
  checkRatio(data, size);
  return new Promise((resolve, reject) => {
    inflateRawZlib(data, zlibOptions(size), (e, r) => {
      if (e) reject(new InflateError('invalid deflate stream', e.message));
      else {
        try {
          resolve(zlibChecked(data, /** @type {any} */ (r), size));
        } catch (err) {
          reject(err);
        }
      }
    });
  });
}

/** What zlib's one-shot calls return with `info: true`: the output, and the input bytes it used. */
/** @typedef {{ buffer: Buffer, engine: { bytesWritten: number } }} ZlibResult */

/**
 * maxOutputLength turns a payload longer than its header says into an error, not a memory
 * blow-up; a chunk of the exact size gives one output buffer, no concatenation.
 * @param {number} size @returns {import('node:zlib').ZlibOptions & { info: true }}
 */
function zlibOptions(size) {
  return { maxOutputLength: Math.max(size, 1), chunkSize: Math.max(size + 64, 1024), info: true };
}

/** @param {Uint8Array} data @param {ZlibResult} r @param {number} size */
function zlibChecked(data, r, size) {
  // zlib stops at the end of the stream and ignores what follows.
  const unread = data.length - r.engine.bytesWritten;
  if (unread > 0) throw new InflateError(`${unread} trailing bytes`, 'bytes after the deflate stream');
  if (r.buffer.length !== size) throw sizeError(r.buffer.length, size);
  return r.buffer;
}

/**
 * The most bytes `data` can inflate to: deflate expands at most 1032:1 (a 258-byte match in 2
 * bits), plus a little for a stream's own framing.
 * @param {Uint8Array} data @returns {number}
 */
function mostInflated(data) {
  return data.length * 1032 + 1024;
}

/**
 * A header that claims more than mostInflated is refused before an output buffer of its size is
 * made.
 * @param {Uint8Array} data @param {number} size
 */
function checkRatio(data, size) {
  const most = mostInflated(data);
  if (size > most) {
    throw new InflateError(`at most ${most} bytes`, `payload cannot be the ${size} bytes its header says`);
  }
}

/** @param {number} got @param {number} size */
function sizeError(got, size) {
  return new InflateError(`${got} bytes`, `payload is ${got} bytes, header says ${size}`);
}
