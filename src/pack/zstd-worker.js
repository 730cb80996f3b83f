// @ts-check
/**
 * Pack frame compression off the main thread (see zstd-pool.ts for the other side).
 *
 * Plain JavaScript on purpose: vitest runs the TypeScript sources directly and Node 20 cannot start
 * a worker from a .ts file, so this file must run as is (tsc checks it through checkJs and copies it
 * to dist/). It does what FrameCompressor in frames.ts does, with the same parameters, so a frame's
 * bytes do not depend on which thread compressed it.
 *
 * Protocol: {ready: true} once, when zstd is loaded; then each {id, level, raw: Uint8Array (its
 * buffer transferred)} is answered by {id, frame: Uint8Array (transferred, exactly the frame's size),
 * raw (transferred back)} or {id, error: message}.
 */
import { parentPort } from 'node:worker_threads';
import zstd from 'zstd-napi/binding.js';

/** @type {Map<number, import('zstd-napi/binding.js').CCtx>} */
const contexts = new Map();

/** @param {number} level */
function context(level) {
  let cctx = contexts.get(level);
  if (!cctx) {
    cctx = new zstd.CCtx();
    cctx.setParameter(zstd.CParameter.compressionLevel, level);
    cctx.setParameter(zstd.CParameter.checksumFlag, 1);
    cctx.setParameter(zstd.CParameter.contentSizeFlag, 1);
    cctx.setParameter(zstd.CParameter.nbWorkers, 0);
    contexts.set(level, cctx);
  }
  return cctx;
}

let scratch = Buffer.alloc(0);

parentPort?.postMessage({ ready: true });

parentPort?.on('message', (/** @type {{id: number, level: number, raw: Uint8Array}} */ m) => {
  try {
    const bound = zstd.compressBound(m.raw.length);
    if (scratch.length < bound) scratch = Buffer.allocUnsafe(bound);
    const n = context(m.level).compress2(scratch, m.raw);
    const frame = new Uint8Array(n);
    frame.set(scratch.subarray(0, n));
    // The raw buffer goes back too: the writer fills it again, instead of it lingering here as garbage
    // (a worker's heap is small and rarely collected, and each of these is 1 MiB outside it).
    parentPort?.postMessage({ id: m.id, frame, raw: m.raw }, [
      frame.buffer,
      /** @type {ArrayBuffer} */ (m.raw.buffer),
    ]);
  } catch (e) {
    parentPort?.postMessage({ id: m.id, error: e instanceof Error ? e.message : String(e) });
  }
});
