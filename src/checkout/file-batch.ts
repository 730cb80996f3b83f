/**
 * Batches of new files and symlinks written on a libuv pool thread by the native/files addon, so a
 * checkout's syscalls run beside the work that produces the files (decompressing, verifying).
 *
 * Why: writing a file is open + write + futimens + close, ~70-100 µs of kernel time on the VM we
 * measure on (2026-12-07), ~0.5 s for the ~6,600 entries of the Debian sysroot, and a pull made
 * them on the thread that also decompresses and hashes the pack. Now the pool thread makes a
 * batch's syscalls while the JavaScript thread fills the next batch. Cold pull of v1, medians of 8
 * alternating runs: 1.30 → 1.14 s with this and the decode buffer reused (without this: 1.295 s).
 * A worker thread writing in JavaScript saved nothing (docs/performance.md): an isolate to start,
 * payloads to pass, ~0.2 s more CPU.
 *
 *   JS thread    fill batch 1 │ fill batch 2 │ fill batch 3 ──────│ fill batch 4 … (waits for 2)
 *   pool thread               │ write batch 1 ──────────────────│ write batch 3 ── …
 *   pool thread                              │ write batch 2 ──────────────│ …
 *
 * Batches go to LANES (2) lanes in turn, each written in order: batch K waits for batch K - 2, and
 * sending it returns that wait to the caller (backpressure, which file() returns). Payloads
 * are copied into reused arenas, so the caller may reuse its bytes once file() returns (a
 * CheckoutSource's payloads are valid only until the next is asked for). Each entry's `done` runs
 * once its batch is over: its bytes are on disk, or the batch failed and nothing more is written.
 *
 * One producer, one file at a time: a checkout from a CheckoutSource (a pull). Only the plain cases
 * come here (no xattrs, no chown): the Writer in checkout.ts does the rest with its own synchronous
 * calls, and everything when the addon is not built.
 */
import { getSystemErrorName } from 'node:util';
import { loadAddon } from '../native-addon.js';

interface FilesAddon {
  writeFiles(paths: Buffer, specs: Int32Array, payloads: Buffer[], time: number): Promise<void>;
}

interface BatchFailure {
  index: number;
  errno: number;
  syscall: string;
}

const addon = loadAddon('files').addon as FilesAddon | null;

/** Whether native/files loaded (for the tests, which must run the batched path). */
export const filesAddonBuilt = addon !== null;

/**
 * Batches for a checkout, or undefined when the addon is not built or SYSROOT_NATIVE_FILES=0 (to
 * compare, or to rule the addon out); the checkout then writes every entry itself.
 */
export function fileBatches(
  time: number,
  toError: (e: NodeJS.ErrnoException, rel: string) => Error,
): FileBatches | undefined {
  return addon && process.env.SYSROOT_NATIVE_FILES !== '0' ? new FileBatches(time, toError) : undefined;
}

/** A batch is sent when it holds this many entries or this many payload bytes. */
const MAX_ENTRIES = 64;
const MAX_BYTES = 2 * 1024 * 1024;
/** The largest payload file() takes (it is copied into an arena): a caller writes bigger ones itself. */
export const MAX_BATCH_BYTES = MAX_BYTES;
/**
 * Copies of payloads are made into arenas of MAX_BYTES that are used again once their batch is
 * written, so the bytes of a pull go through the same few MiB instead of ~127 MB of fresh pages.
 */
const SPARE_ARENAS = 3;
/**
 * Batches written at once, each lane in order. Two: writing a file's bytes is mostly the kernel
 * copying them into new page-cache pages (perf of a pull of v2, 2026-12-08: 821 of the pool
 * threads' 2,033 samples in copy_folio_from_iter_atomic, ~0.4 s for 124 MB), and a pull of v2
 * with v1 cached, whose JavaScript thread has little else to do once it reads the cached pack, left
 * a core ~30% idle waiting for one lane. Medians of 8-9 alternating runs: that pull 1.20 → 1.05 s
 * and 1.07 → 1.04 s; a cold pull of v1 1.17 → 1.26 s, 1.40 → 1.39 s and 1.42 → 1.33 s (a noisy
 * host: no change there either way).
 */
const LANES = 2;

const KIND_FILE = 0;
const KIND_SYMLINK = 1;

interface Entry {
  /** Relative path, for errors. */
  rel: string;
  /** Runs once the batch is over (see the top of this file). */
  done: (() => void) | undefined;
}

class Batch {
  readonly paths: string[] = [];
  readonly specs: number[] = [];
  readonly payloads: Buffer[] = [];
  readonly entries: Entry[] = [];
  bytes = 0;
  /** Where copied payloads are, and how much of it is used. */
  arena: Buffer | undefined;
  used = 0;
}

export class FileBatches {
  private filling = new Batch();
  /** Per lane, the last batch sent, chained behind the ones before (write() never rejects: see `failed`). */
  private readonly lanes: Promise<void>[] = Array.from({ length: LANES }, () => Promise.resolve());
  private sent = 0;
  private readonly spare: Buffer[] = [];
  /** The first failure; every later call rethrows it. */
  private failed: unknown;

  constructor(
    /** Seconds since the epoch: every entry's atime and mtime. */
    private readonly time: number,
    /** Turns a failed syscall into the caller's error (path relative to the checkout). */
    private readonly toError: (e: NodeJS.ErrnoException, rel: string) => Error,
  ) {
    if (!addon) throw new Error('FileBatches: the native/files addon is not available');
  }

  /**
   * A regular file at `path` with a copy of `payload` (at most MAX_BATCH_BYTES), created with
   * `createMode` and then fchmod'ed to `finalMode` unless that is undefined; `done` runs once its
   * batch is over. The promise, if any, is backpressure: wait for it.
   */
  file(
    path: string,
    rel: string,
    createMode: number,
    finalMode: number | undefined,
    payload: Buffer,
    done?: () => void,
  ): Promise<void> | undefined {
    if (this.failed) throw this.failed;
    if (payload.length > MAX_BYTES) throw new RangeError(`FileBatches: cannot copy ${payload.length} bytes`);
    let wait: Promise<void> | undefined;
    if (this.filling.arena && this.filling.used + payload.length > this.filling.arena.length) {
      wait = this.send();
    }
    const b = this.filling;
    b.arena ??= this.spare.pop() ?? Buffer.allocUnsafe(MAX_BYTES);
    const copy = b.arena.subarray(b.used, b.used + payload.copy(b.arena, b.used));
    b.used += copy.length;
    return this.add(path, rel, KIND_FILE, createMode, finalMode ?? -1, copy, done) ?? wait;
  }

  symlink(path: string, rel: string, target: string): Promise<void> | undefined {
    if (this.failed) throw this.failed;
    return this.add(path, rel, KIND_SYMLINK, 0, -1, Buffer.from(target, 'utf8'), undefined);
  }

  private add(
    path: string,
    rel: string,
    kind: number,
    createMode: number,
    finalMode: number,
    payload: Buffer,
    done: (() => void) | undefined,
  ): Promise<void> | undefined {
    // The paths go to the addon NUL-separated: one with a NUL in it would shift every later entry.
    if (path.includes('\0')) throw new TypeError(`FileBatches: a path with a NUL: ${JSON.stringify(path)}`);
    const b = this.filling;
    b.paths.push(path);
    b.specs.push(kind, createMode, finalMode);
    b.payloads.push(payload);
    b.entries.push({ rel, done });
    b.bytes += payload.length;
    if (b.entries.length >= MAX_ENTRIES || b.bytes >= MAX_BYTES) return this.send();
    return undefined;
  }

  /** Waits for every batch sent, without throwing: before a failed checkout removes its tree. */
  async settle(): Promise<void> {
    await Promise.all(this.lanes);
  }

  /** Writes what is queued and waits for every batch; throws the first failure. */
  async flush(): Promise<void> {
    this.send();
    await Promise.all(this.lanes);
    if (this.failed) throw this.failed;
  }

  /**
   * Chains the filling batch behind the last one sent and returns that one, for the caller to wait
   * for: the batch just sent is then being written while the next fills.
   */
  private send(): Promise<void> | undefined {
    const b = this.filling;
    if (b.entries.length === 0) return undefined;
    this.filling = new Batch();
    const lane = this.sent++ % LANES;
    const before = this.lanes[lane]!;
    this.lanes[lane] = before.then(() => this.write(b));
    return before;
  }

  private async write(b: Batch): Promise<void> {
    try {
      if (this.failed) return;
      // Paths are NUL-terminated in one buffer: one UTF-8 encoding per batch instead of one per file.
      const paths = Buffer.from(`${b.paths.join('\0')}\0`, 'utf8');
      await addon!
        .writeFiles(paths, Int32Array.from(b.specs), b.payloads, this.time)
        .catch((f: BatchFailure) => {
          const at = Math.max(0, f.index);
          const code = getSystemErrorName(-f.errno);
          const err: NodeJS.ErrnoException = new Error(`${code}: ${f.syscall} failed, '${b.paths[at]}'`);
          err.code = code;
          err.errno = -f.errno;
          err.syscall = f.syscall;
          err.path = b.paths[at];
          this.failed = this.toError(err, b.entries[at]!.rel);
        });
    } finally {
      // Every entry's batch is over, written or not: after a failure nothing more will be written.
      if (b.arena && this.spare.length < SPARE_ARENAS) this.spare.push(b.arena);
      for (const e of b.entries) e.done?.();
    }
  }
}
