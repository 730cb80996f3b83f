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

export interface JobError {
  message: string;
  path?: string;
  errno?: string;
  changed?: boolean;
}

export type PoolRequest =
  | { type: 'batch' | 'compress'; items: WorkerItem[]; deflate?: boolean }
  | { type: 'stream'; prefix: Uint8Array; header: Uint8Array; size: number };

type Reply =
  | { type: 'done'; id: number; ok: true; results: ItemResult[] }
  | { type: 'done'; id: number; ok: false; error: JobError }
  | { type: 'ack'; id: number; bytes: number };

interface Job {
  id: number;
  request: PoolRequest;
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

/**
 * Bytes of one arena the workers write returned .filez into (hash-worker.js, `room`): 2 MiB holds
 * about a 4 MiB batch of a sysroot's files deflated, in one or two arenas.
 */
const ARENA_BYTES = 2 * 1024 * 1024;

/** Workers started before their pool (prestartHashWorkers), waiting for the init a pool sends them. */
const prestarted: Worker[] = [];

function startWorker(init: WorkerInit | null): Worker {
  const worker = new Worker(new URL('./hash-worker.js', import.meta.url), {
    workerData: init && { ...init, arena: ARENA_BYTES },
    // A 2 MB young generation makes V8 collect dead read/deflate buffers sooner: peak RSS 135 MB
    // instead of 148 MB on the Debian tree at the same speed (each worker held ~12 MB of garbage).
    resourceLimits: { maxYoungGenerationSizeMb: 2 },
  });
  reapplyAfterWorkerStart(worker);
  return worker;
}

/**
 * Start the import workers before the pool that will use them exists: the next HashPool of this
 * process takes them and sends them its init. A worker takes ~100 ms to start (an isolate, its
 * modules, the igzip addon); a push that starts them first thing (cli/main.ts) has that overlap
 * loading its own modules instead of following it: the first file was hashed ~135 ms after the
 * walk began. Unused, they keep nothing alive (unref'd).
 */
export function prestartHashWorkers(size = availableParallelism()): void {
  while (prestarted.length < size) {
    const worker = startWorker(null);
    worker.unref();
    // Until a pool listens: a worker that fails to start must not crash a command that never used it.
    worker.on('error', () => {});
    prestarted.push(worker);
  }
}

export class HashPool {
  private readonly slots: Slot[] = [];
  private readonly queue: Job[] = [];
  private nextId = 1;
  /**
   * Which worker made each arena in flight: it goes back there. Handed to whichever worker came
   * next, one worker got more than it kept (and dropped them) while the other made new ones: 37
   * new 2 MiB arenas per worker in a 1 GiB push, left to fragment the workers' malloc arenas.
   */
  private readonly arenaOwner = new WeakMap<ArrayBuffer, Slot>();
  private closed = false;

  constructor(init: WorkerInit, size = availableParallelism()) {
    for (let i = 0; i < Math.max(1, size); i++) {
      let worker = prestarted.shift();
      if (worker) {
        worker.ref();
        worker.postMessage({ type: 'init', init: { ...init, arena: ARENA_BYTES } });
      } else worker = startWorker(init);
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

  run(request: PoolRequest, transfer: ArrayBuffer[] = []): Promise<ItemResult[]> {
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
      const request: PoolRequest = { type: 'stream', prefix, header, size };
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

  /**
   * Hand back the arenas under `results`' .filez once the caller is done with every one of them
   * (they are then views of nothing here): a worker fills them again instead of new memory. Results
   * never handed back are garbage like any buffer.
   */
  recycle(results: readonly ItemResult[]): void {
    if (this.closed) return;
    const back = new Map<Slot, ArrayBuffer[]>();
    for (const r of results) {
      const b = r.filez?.buffer;
      if (!(b instanceof ArrayBuffer)) continue;
      const slot = this.arenaOwner.get(b);
      if (!slot || !this.slots.includes(slot)) continue;
      this.arenaOwner.delete(b);
      back.set(slot, [...(back.get(slot) ?? []), b]);
    }
    for (const [slot, buffers] of back) slot.worker.postMessage({ type: 'arenas', buffers }, buffers);
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
    if (m.ok) {
      for (const r of m.results) {
        const b = r.filez?.buffer;
        if (b instanceof ArrayBuffer && b.byteLength === ARENA_BYTES) this.arenaOwner.set(b, slot);
      }
      job.resolve(m.results);
    } else job.reject(workerError(m.error));
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

export function workerError(e: JobError): RegistryError {
  const hint = e.changed
    ? 'import a tree that is not being modified (a snapshot or a stopped build)'
    : undefined;
  return (
    noSpaceError(undefined, e.path ?? 'the repository', e.errno) ??
    new RegistryError('E_IO', e.message, { path: e.path, errno: e.errno }, hint)
  );
}
