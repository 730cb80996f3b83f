// @ts-check
/**
 * A minor GC (a scavenge of V8's young generation) on demand, for code that drops large Buffers
 * faster than V8 notices.
 *
 * A Buffer's bytes live outside V8's heap and its JS object is a few bytes, so dropping a 1 MiB
 * payload hardly fills the young generation: the bytes stay allocated until a GC happens to come,
 * and new payloads take fresh memory meanwhile, each page of it a page fault. A scavenge costs
 * ~0.1-1 ms when little is alive, so one per few MB dropped keeps the garbage small.
 *
 * Call it where the dropped buffers are dead and the ones in use are few: a scavenge promotes what
 * survives two of them to the old generation, whose buffers only a major GC frees.
 *
 * Used by: the import workers (per 2 MB of payloads and deflate outputs, between jobs), a tar
 * import's main thread (per 8 MiB of stream), the checkout (per 4 MB of payloads written).
 *
 * V8 exposes gc() only with --expose-gc; setFlagsFromString turns that on for contexts made after,
 * and a new vm context hands the function over. Undefined if that fails: then V8 decides alone.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** @typedef {(opts?: { type: 'minor' | 'major' }) => void} Gc */
/** @type {Gc | null | undefined} null: not to be had */
let gc;

/**
 * Fetched on first use, not at import: a vm context costs ~1.5 ms, and a no-op pull imports the
 * checkout without writing anything. @returns {Gc | undefined}
 */
function getGc() {
  if (gc === undefined) {
    try {
      setFlagsFromString('--expose-gc');
      const fn = runInNewContext('gc');
      gc = typeof fn === 'function' ? fn : null;
    } catch {
      gc = null;
    }
  }
  return gc ?? undefined;
}

/** Counts bytes dropped and runs a minor GC each time `every` more have been. */
export class GarbageMeter {
  /** @param {number} every bytes */
  constructor(every) {
    this.every = every;
    this.garbage = 0;
  }

  /** @param {number} bytes of buffers just dropped (or about to be, once the caller returns) */
  dropped(bytes) {
    this.garbage += bytes;
  }

  /** A minor GC if `every` bytes have been dropped since the last one. */
  collect() {
    if (this.garbage >= this.every) {
      this.garbage = 0;
      getGc()?.({ type: 'minor' });
    }
  }
}
