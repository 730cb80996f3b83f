/**
 * Write-once of many small blobs into an FsBlobStore, batched to a worker thread that makes the
 * syscalls synchronously (fs-write-worker.js). Same result as FsBlobStore.createOnce per blob (temp
 * file in <root>/tmp, link(2), never replacing), at a fraction of the main thread's time.
 *
 * Why: a pack of a Debian sysroot stores ~6,100 small .filez. Through fs/promises each one costs
 * five libuv round trips (open, write, close, link, unlink); the server's main thread spent ~0.6 s of
 * CPU in them, on top of the ~0.7 s it needs to verify the records. In the worker the syscalls run
 * back to back on the other core while the main thread verifies the next records.
 *
 * The same worker answers existence checks of many keys at once (existsInWorker, behind
 * FsBlobStore.existsMany): the "which objects do you lack" query of a push.
 *
 * One worker per process, started on first use and unref'd (it never keeps the process alive).
 */
import { dirname } from 'node:path';
import { Worker } from 'node:worker_threads';
import { noSpaceError, RegistryError } from '../errors.js';
import { reapplyAfterWorkerStart } from '../young-generation.js';
import type { FsBlobStore } from './fs-blob-store.js';

/** A batch closes at 64 blobs or 2 MiB: ~50 us of messaging per batch against ~5 ms of syscalls. */
const BATCH_BLOBS = 64;
const BATCH_BYTES = 2 * 1024 * 1024;
/** Batches sent and not answered before `ready()` waits: bounds memory at ~3 x BATCH_BYTES. */
const MAX_INFLIGHT = 3;
/**
 * Batch buffers travel to the worker and back and are filled again. Fresh ones per batch left
 * ~60 MB of transferred garbage between GCs in the two threads (server peak RSS 226 MB, not ~160).
 * A blob that does not fit in the open batch's buffer sends that batch first; one larger than
 * BUFFER_SIZE gets a buffer of its own.
 */
const BUFFER_SIZE = BATCH_BYTES + 1024 * 1024;
const spare: ArrayBuffer[] = [];

type Result = boolean | { message: string; code?: string };

interface Pending {
  key: string;
  resolve: (created: boolean) => void;
  reject: (e: unknown) => void;
}

interface Waiting {
  resolve: (r: Result[]) => void;
  reject: (e: unknown) => void;
}

let shared: { worker: Worker; next: number; waiting: Map<number, Waiting> } | undefined;

function worker(): NonNullable<typeof shared> {
  if (shared) return shared;
  const w = new Worker(new URL('./fs-write-worker.js', import.meta.url));
  reapplyAfterWorkerStart(w);
  const s = { worker: w, next: 1, waiting: new Map<number, Waiting>() };
  w.on('message', (m: { id: number; results: Result[]; buf?: ArrayBuffer }) => {
    if (m.buf?.byteLength === BUFFER_SIZE && spare.length < MAX_INFLIGHT + 1) spare.push(m.buf);
    const done = s.waiting.get(m.id);
    s.waiting.delete(m.id);
    if (s.waiting.size === 0) w.unref();
    done?.resolve(m.results);
  });
  const fail = (e: unknown): void => {
    if (shared === s) shared = undefined;
    const err = new RegistryError('E_IO', `store write worker failed: ${(e as Error)?.message ?? e}`);
    for (const done of s.waiting.values()) done.reject(err);
    s.waiting.clear();
  };
  w.on('error', fail);
  w.on('exit', (code) => fail(new Error(`exited with code ${code}`)));
  // After the listeners: adding a 'message' listener refs the worker's port again. Unref'd before
  // it, the worker `sysroot serve` starts before it listens kept the server alive after SIGTERM
  // (until test helpers and the benchmark killed it, 5 and 15 s later).
  w.unref();
  shared = s;
  return s;
}

/**
 * Start the write worker now (a server does, for a directory store, before it listens): the first
 * push would otherwise wait ~50 ms for its isolate while its first batches queue up.
 */
export function startWriteWorker(): void {
  worker();
}

/** One request to the worker (an id is added), answered by its per-key results. */
function ask(message: Record<string, unknown>, transfer: ArrayBuffer[] = []): Promise<Result[]> {
  const s = worker();
  const id = s.next++;
  return new Promise<Result[]>((resolve, reject) => {
    s.waiting.set(id, { resolve, reject });
    s.worker.ref();
    s.worker.postMessage({ ...message, id }, transfer);
  });
}

/** Keys per existence request: ~30 ms of stats, so a concurrent upload's writes wait no longer. */
const EXISTS_BATCH = 4096;

/**
 * Which of `keys` under `root` are regular files (FsBlobStore.existsMany). Asking a push's ~6,100
 * objects one async stat at a time (32 in flight) took ~100 ms of the server's main thread on a
 * fresh repository; synchronous stats in the worker take ~45 ms there, and none here.
 */
export async function existsInWorker(root: string, keys: readonly string[]): Promise<boolean[]> {
  const out: boolean[] = [];
  for (let i = 0; i < keys.length; i += EXISTS_BATCH) {
    const part = keys.slice(i, i + EXISTS_BATCH);
    const results = await ask({ op: 'exists', root, keys: part });
    part.forEach((key, j) => {
      const r = results[j];
      if (typeof r !== 'boolean') {
        throw new RegistryError('E_IO', `${key}: ${r?.message ?? 'not checked'}`, {
          path: key,
          errno: r?.code,
        });
      }
      out.push(r);
    });
  }
  return out;
}

export class FsBatchWriter {
  private batch: Pending[] = [];
  /** The open batch's buffer (from `spare` when it is BUFFER_SIZE), its bytes so far, and where each blob ends. */
  private buf: Uint8Array | undefined;
  private fill = 0;
  private ends: number[] = [];
  private inflight = 0;
  private waiters: (() => void)[] = [];
  private tmpDir: string | undefined;

  constructor(private readonly store: FsBlobStore) {}

  /**
   * Queue a write-once of `data`; true if it was created. The bytes are copied into the batch's
   * buffer at once, so the caller may reuse `data` as soon as this returns (a pack reader decoding
   * into one buffer again and again).
   */
  write(key: string, data: Uint8Array): Promise<boolean> {
    if (this.buf && this.fill + data.length > this.buf.length) void this.flush();
    if (!this.buf) {
      this.buf = new Uint8Array(
        data.length <= BUFFER_SIZE
          ? (spare.pop() ?? new ArrayBuffer(BUFFER_SIZE))
          : new ArrayBuffer(data.length),
      );
    }
    this.buf.set(data, this.fill);
    this.fill += data.length;
    this.ends.push(this.fill);
    const done = new Promise<boolean>((resolve, reject) => this.batch.push({ key, resolve, reject }));
    if (this.batch.length >= BATCH_BLOBS || this.fill >= BATCH_BYTES) void this.flush();
    return done;
  }

  /** Whether ready() would wait: MAX_INFLIGHT batches are with the worker. */
  get full(): boolean {
    return this.inflight >= MAX_INFLIGHT;
  }

  /** Resolves when fewer than MAX_INFLIGHT batches are waiting for the worker. */
  async ready(): Promise<void> {
    while (this.inflight >= MAX_INFLIGHT) await new Promise<void>((r) => this.waiters.push(r));
  }

  /** Send the open batch now. */
  async flush(): Promise<void> {
    const { batch, buf, ends } = this;
    if (batch.length === 0 || !buf) return;
    this.batch = [];
    this.buf = undefined;
    this.fill = 0;
    this.ends = [];
    this.inflight++;
    try {
      this.tmpDir ??= dirname(await this.store.tempPath());
      // The buffer is transferred (not cloned) to the worker, which sends it back to be filled again.
      const results = await ask(
        { root: this.store.root, tmpDir: this.tmpDir, keys: batch.map((p) => p.key), ends, buf: buf.buffer },
        [buf.buffer as ArrayBuffer],
      );
      batch.forEach((p, i) => {
        const r = results[i];
        if (typeof r === 'boolean') p.resolve(r);
        else
          p.reject(
            noSpaceError(undefined, p.key, r?.code) ??
              new RegistryError('E_IO', `${p.key}: ${r?.message ?? 'not written'}`, {
                path: p.key,
                errno: r?.code,
              }),
          );
      });
    } catch (e) {
      for (const p of batch) p.reject(e);
    } finally {
      this.inflight--;
      for (const w of this.waiters.splice(0)) w();
    }
  }
}
