/**
 * A small worker_threads pool for hash-worker.js: one worker per core, at most two requests in flight
 * per worker (one running, one queued in the worker, so it never waits for the main thread between
 * batches), the rest queued here and handed to whichever worker frees up first.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { DeflateSettings } from '../compress/deflate.js';
import { noSpaceError, RegistryError } from '../errors.js';
import { reapplyAfterWorkerStart } from '../young-generation.js';

export interface WorkerInit {
  /** Repository root of an FsBlobStore: the worker writes objects itself. Null for other stores. */
  root: string | null;
  /** Where temp files go: `<root>/tmp` (same filesystem, for link(2)) or a private spool directory. */
  tmpDir: string;
  deflate: DeflateSettings;
  /** Files larger than this are streamed in `chunk`-sized pieces instead of read whole. */
  big: number;
  chunk: number;
}

export type WorkerItem =
  | { kind: 'path'; path: string; size: number; prefix: Uint8Array; header: Uint8Array; checksum?: string }
  | { kind: 'data'; data: Uint8Array; prefix: Uint8Array; header: Uint8Array; checksum?: string }
  | { kind: 'symlink'; prefix: Uint8Array; header: Uint8Array; checksum?: string };

export interface ItemResult {
  checksum?: string;
  status?: 'written' | 'existing' | 'hashed';
  data?: Uint8Array;
  filez?: Uint8Array;
  spool?: string;
}

interface JobError {
  message: string;
  path?: string;
  errno?: string;
  changed?: boolean;
}

type Request =
  | { type: 'batch' | 'compress'; items: WorkerItem[]; deflate?: boolean }
  | { type: 'stream'; prefix: Uint8Array; header: Uint8Array; size: number };

type Reply =
  | { type: 'done'; id: number; ok: true; results: ItemResult[] }
  | { type: 'done'; id: number; ok: false; error: JobError }
  | { type: 'ack'; id: number; bytes: number };

interface Job {
  id: number;
  request: Request;
  transfer: ArrayBuffer[];
  resolve: (r: ItemResult[]) => void;
  reject: (e: unknown) => void;
  onAck?: (bytes: number) => void;
}

interface Slot {
  worker: Worker;
  inflight: Map<number, Job>;
}

/** Requests in flight per worker: one running, one waiting in the worker's own queue. */
const PER_WORKER = 2;

export class HashPool {
  private readonly slots: Slot[] = [];
  private readonly queue: Job[] = [];
  private nextId = 1;
  private closed = false;

  constructor(init: WorkerInit, size = availableParallelism()) {
    for (let i = 0; i < Math.max(1, size); i++) {
      const worker = new Worker(new URL('./hash-worker.js', import.meta.url), {
        workerData: init,
        // A 2 MB young generation makes V8 collect dead read/deflate buffers sooner: peak RSS 135 MB
        // instead of 148 MB on the Debian tree at the same speed (each worker held ~12 MB of garbage).
        resourceLimits: { maxYoungGenerationSizeMb: 2 },
      });
      reapplyAfterWorkerStart(worker);
      const slot: Slot = { worker, inflight: new Map() };
      worker.on('message', (m: Reply) => this.onReply(slot, m));
      worker.on('error', (e) => this.onCrash(slot, e));
      worker.on('exit', (code) => {
        if (!this.closed) this.onCrash(slot, new Error(`import worker exited with code ${code}`));
      });
      this.slots.push(slot);
    }
  }

  get size(): number {
    return this.slots.length;
  }

  /** Requests not yet finished, queued here or in a worker. */
  get pending(): number {
    return this.queue.length + this.slots.reduce((n, s) => n + s.inflight.size, 0);
  }

  run(request: Request, transfer: ArrayBuffer[] = []): Promise<ItemResult[]> {
    return new Promise((resolve, reject) => {
      if (this.closed) {
        reject(new RegistryError('E_INTERNAL', 'import worker pool is closed'));
        return;
      }
      this.queue.push({ id: this.nextId++, request, transfer, resolve, reject });
      this.dispatch();
    });
  }

  /**
   * A large tar member, hashed and deflated incrementally by one worker. It bypasses the queue so its
   * chunks can flow at once: the main thread cannot read the next member until this one is consumed.
   */
  openStream(prefix: Uint8Array, header: Uint8Array, size: number): PoolStream {
    if (this.closed || this.slots.length === 0)
      throw new RegistryError('E_INTERNAL', 'import worker pool is closed');
    const slot = this.slots.reduce((a, b) => (b.inflight.size < a.inflight.size ? b : a));
    const id = this.nextId++;
    let onAck: (bytes: number) => void = () => {};
    const done = new Promise<ItemResult[]>((resolve, reject) => {
      const request: Request = { type: 'stream', prefix, header, size };
      slot.inflight.set(id, { id, request, transfer: [], resolve, reject, onAck: (n) => onAck(n) });
    });
    slot.worker.postMessage({ type: 'stream', id, prefix, header, size });
    return {
      done,
      send: (chunk: Uint8Array<ArrayBuffer>) =>
        slot.worker.postMessage({ type: 'chunk', id, data: chunk }, [chunk.buffer]),
      end: () => slot.worker.postMessage({ type: 'end', id }),
      abort: () => slot.worker.postMessage({ type: 'abort', id }),
      onAck: (fn) => {
        onAck = fn;
      },
    };
  }

  /** Forget queued requests (they reject); requests already in a worker still finish. */
  cancelQueued(reason: unknown): void {
    for (const job of this.queue.splice(0)) job.reject(reason);
  }

  /**
   * Wait for the requests in flight (a worker owns a temp file while it works on one, and removes it
   * when it finishes, success or not), then stop the workers.
   */
  async close(): Promise<void> {
    this.cancelQueued(new RegistryError('E_INTERNAL', 'import cancelled'));
    const inflight = this.slots.flatMap((s) => [...s.inflight.values()]);
    await Promise.allSettled(inflight.map((j) => new Promise<void>((r) => this.whenSettled(j, r))));
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }

  private whenSettled(job: Job, cb: () => void): void {
    const { resolve, reject } = job;
    job.resolve = (r) => {
      resolve(r);
      cb();
    };
    job.reject = (e) => {
      reject(e);
      cb();
    };
  }

  private dispatch(): void {
    while (this.queue.length > 0) {
      let best: Slot | undefined;
      for (const s of this.slots) {
        if (s.inflight.size < PER_WORKER && (!best || s.inflight.size < best.inflight.size)) best = s;
      }
      if (!best) return;
      const job = this.queue.shift()!;
      best.inflight.set(job.id, job);
      best.worker.postMessage({ ...job.request, id: job.id }, job.transfer);
    }
  }

  private onReply(slot: Slot, m: Reply): void {
    const job = slot.inflight.get(m.id);
    if (!job) return;
    if (m.type === 'ack') {
      job.onAck?.(m.bytes);
      return;
    }
    slot.inflight.delete(m.id);
    if (m.ok) job.resolve(m.results);
    else job.reject(workerError(m.error));
    this.dispatch();
  }

  private onCrash(slot: Slot, e: Error): void {
    for (const job of slot.inflight.values()) {
      job.reject(new RegistryError('E_INTERNAL', `import worker failed: ${e.message}`, {}, undefined, e));
    }
    slot.inflight.clear();
    const i = this.slots.indexOf(slot);
    if (i >= 0) this.slots.splice(i, 1);
    if (this.slots.length === 0)
      this.cancelQueued(new RegistryError('E_INTERNAL', 'every import worker failed'));
    else this.dispatch();
  }
}

export interface PoolStream {
  done: Promise<ItemResult[]>;
  /** Hand a chunk to the worker; its ArrayBuffer is transferred (the caller must own all of it). */
  send(chunk: Uint8Array<ArrayBuffer>): void;
  end(): void;
  abort(): void;
  onAck(fn: (bytes: number) => void): void;
}

function workerError(e: JobError): RegistryError {
  const hint = e.changed
    ? 'import a tree that is not being modified (a snapshot or a stopped build)'
    : undefined;
  return (
    noSpaceError(undefined, e.path ?? 'the repository', e.errno) ??
    new RegistryError('E_IO', e.message, { path: e.path, errno: e.errno }, hint)
  );
}
