/**
 * Worker threads that compress pack frames (zstd-worker.js), shared by every PackWriter in the
 * process. Compressing is most of a writer's work (120 MB of a sysroot: ~350 ms at level 3 on one
 * core), and zstd-napi only offers blocking calls, so the writer hands full frames to this pool and
 * goes on reading files and hashing while they compress.
 *
 * Started on first use and never stopped: starting takes ~40 ms, during which writers compress on
 * their own thread (pool.compress returns undefined until a worker is ready), so small packs never
 * wait for it. Idle workers are unref'd and do not keep the process alive; a worker with a job is
 * ref'd, so a process waiting only for a frame does not exit under it. A worker that dies takes its
 * jobs with it (they reject) and is not replaced: writers fall back to their own thread.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { RegistryError } from '../errors.js';
import { reapplyAfterWorkerStart } from '../young-generation.js';

/** The compressed frame, and the raw buffer handed back for reuse. */
export interface Compressed {
  frame: Buffer;
  raw: Buffer;
}

interface Job {
  resolve: (r: Compressed) => void;
  reject: (e: unknown) => void;
}

interface Slot {
  worker: Worker;
  ready: boolean;
  jobs: Map<number, Job>;
}

type Reply =
  | { ready: true }
  | { id: number; frame: Uint8Array; raw: Uint8Array }
  | { id: number; error: string };

class ZstdPool {
  private readonly slots: Slot[] = [];
  private nextId = 1;

  constructor(size: number) {
    for (let i = 0; i < size; i++) this.spawn();
  }

  /** Workers alive (ready or starting). */
  get size(): number {
    return this.slots.length;
  }

  /** True once a worker can take frames. */
  get ready(): boolean {
    return this.slots.some((s) => s.ready);
  }

  /**
   * Compress `raw` (FRAME_TARGET bytes or fewer) in a worker. Its ArrayBuffer is transferred: the
   * caller must not touch `raw` again until it comes back with the result, and `raw` must be a view
   * of a buffer the caller owns alone. Returns undefined when no worker is ready, and the caller
   * compresses it itself.
   */
  compress(raw: Buffer, level: number): Promise<Compressed> | undefined {
    let best: Slot | undefined;
    for (const s of this.slots) if (s.ready && (!best || s.jobs.size < best.jobs.size)) best = s;
    if (!best) return undefined;
    const slot = best;
    const id = this.nextId++;
    return new Promise<Compressed>((resolve, reject) => {
      slot.jobs.set(id, { resolve, reject });
      slot.worker.ref();
      slot.worker.postMessage({ id, level, raw }, [raw.buffer as ArrayBuffer]);
    });
  }

  private spawn(): void {
    const worker = new Worker(new URL('./zstd-worker.js', import.meta.url));
    reapplyAfterWorkerStart(worker);
    const slot: Slot = { worker, ready: false, jobs: new Map() };
    worker.on('message', (m: Reply) => {
      if ('ready' in m) {
        slot.ready = true;
        return;
      }
      const job = slot.jobs.get(m.id);
      if (!job) return;
      slot.jobs.delete(m.id);
      if (slot.jobs.size === 0) worker.unref();
      if ('error' in m) job.reject(new RegistryError('E_INTERNAL', `zstd worker: ${m.error}`));
      else job.resolve({ frame: toBuffer(m.frame), raw: Buffer.from(m.raw.buffer as ArrayBuffer) });
    });
    const fail = (e: Error): void => {
      const i = this.slots.indexOf(slot);
      if (i >= 0) this.slots.splice(i, 1);
      for (const job of slot.jobs.values()) {
        job.reject(new RegistryError('E_INTERNAL', `zstd worker failed: ${e.message}`, {}, undefined, e));
      }
      slot.jobs.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`exited with code ${code}`)));
    // After the listeners: adding a 'message' listener refs the worker's port again, and a process
    // that never gave this worker a frame (a small pack) would then never exit.
    worker.unref();
    this.slots.push(slot);
  }
}

function toBuffer(u: Uint8Array): Buffer {
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

let shared: ZstdPool | undefined;

/** The process's pool, started on first call: one worker per core. */
export function zstdPool(): ZstdPool {
  shared ??= new ZstdPool(Math.max(1, availableParallelism()));
  return shared;
}
