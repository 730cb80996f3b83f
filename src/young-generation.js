// @ts-check
/**
 * Keep V8's young generation at its starting size, for a push.
 *
 * V8 doubles the young generation (up to 2 x 16 MB) while a process allocates fast, and it never
 * shrinks back. Each page of it is touched once, a page fault each: ~10 µs on the Firecracker VM of
 * 2026-12-06, where the 1 GiB push's main thread grew it to 32 MB. The work's big data lives in
 * Buffers outside that heap, and what dies young there dies as young in 4 MB.
 * `--max-semi-space-size` has no effect once the heap exists; `--semi-space-growth-factor=1` does.
 *
 * But V8 sets that factor back to 2 whenever it sets up a new isolate, that is, whenever a worker
 * thread starts; so whoever starts a worker calls reapplyAfterWorkerStart(worker). With it, the
 * 1 GiB push peaked at 211-221 MB instead of 242-246 MB (2 runs each).
 *
 * Only `sysroot push` uses it (bin/sysroot.js). A pull keeps many small objects a while (the pack's
 * records, the tree), which a young generation this small promotes to the old one: the 1 GiB pull
 * took 7.1 s instead of 5.6 s and 8.2 s of CPU instead of 6.0 s, at the same peak RSS (2 runs
 * each). `sysroot serve` runs for days and touches its young generation once.
 */
import { setFlagsFromString } from 'node:v8';

let fixed = false;

/** From now on the young generation of every isolate of the process keeps its starting size. */
export function fixYoungGeneration() {
  setFlagsFromString('--semi-space-growth-factor=1');
  fixed = true;
}

/**
 * Set the factor again once `worker` runs: its isolate's set-up put it back to 2.
 * @param {import('node:worker_threads').Worker} worker
 */
export function reapplyAfterWorkerStart(worker) {
  if (fixed) worker.once('online', fixYoungGeneration);
}
