/**
 * Prompt collection of dropped buffers. Tar import reads ~130 MB through 1 MiB stream chunks and
 * decompressor outputs; each becomes garbage a moment later, but V8 sees only a tiny JS object per
 * chunk (the bytes live outside its heap) and collects only every ~64 MB of external memory. With
 * this and the workers' own collection (hash-worker.js), peak RSS importing the Debian tarball went
 * from 229 MB to 168 MB. A minor GC costs a few hundred microseconds: the young generation holds little.
 *
 * `gc` exists only with --expose-gc, which worker execArgv cannot carry; v8.setFlagsFromString sets
 * it for the process (hash-worker.js does the same) and a new vm context then has the function.
 * Without it, this does nothing and memory is merely higher.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

type GcFunction = (opts?: { type: 'minor' | 'major' }) => void;

let gcFn: GcFunction | null | undefined;

function getGc(): GcFunction | undefined {
  if (gcFn === undefined) {
    try {
      setFlagsFromString('--expose-gc');
      const fn: unknown = runInNewContext('gc');
      gcFn = typeof fn === 'function' ? (fn as GcFunction) : null;
    } catch {
      gcFn = null;
    }
  }
  return gcFn ?? undefined;
}

/** Counts bytes let go of and runs a minor GC every `every` bytes. */
export class GarbageMeter {
  private count = 0;

  constructor(private readonly every: number) {}

  dropped(bytes: number): void {
    this.count += bytes;
    if (this.count >= this.every) {
      this.count = 0;
      getGc()?.({ type: 'minor' });
    }
  }
}
