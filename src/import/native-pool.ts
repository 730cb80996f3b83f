/**
 * A push's files read, hashed and deflated by the native/hashfiles addon on libuv's thread pool,
 * in place of hash-worker.js's worker threads (pool.ts), when the addon is built.
 *
 * Why: a push is bound by CPU on 2 cores (client and server share them), and the two hash workers
 * cost CPU beyond their work: each isolate ~60-75 ms to start, and around every file messages,
 * garbage collection and fresh heap pages, about as much again as the sha256 they do (perf, push of
 * v1, 2026-12-07). The work itself is read(2), SHA-256 and one igzip deflate per file, which need
 * no JavaScript. Figures: docs/performance.md.
 *
 * Same requests and answers as HashPool, for what a push asks of a pool made with `root: null`:
 *
 *   batch     path items (under 2 GiB) and symlinks: hashed; with `deflate`, each file up to
 *             `init.big` comes back with its .filez, as the workers do
 *   compress  path items up to `init.big` and symlinks: read again, checked against their checksum,
 *             deflated
 *
 * Anything else (data items, a big file to compress, a stream) goes to a HashPool of workers,
 * started the first time it is needed.
 *
 * Memory: a scratch buffer of `init.big` per batch running (two), and arenas the .filez are written
 * into, sized to the batch's worst case and used again once recycle() hands them back.
 */
import { availableParallelism } from 'node:os';
import { getSystemErrorMap } from 'node:util';
import { deflateBound, deflateSettings } from '../compress/deflate.js';
import { RegistryError } from '../errors.js';
import { loadAddon } from '../native-addon.js';
import {
  HashPool,
  type ItemResult,
  type PoolRequest,
  type PoolStream,
  prestartHashWorkers,
  type WorkerInit,
  type WorkerItem,
  workerError,
} from './pool.js';

interface HashFilesAddon {
  hashFiles(
    paths: Buffer,
    sizes: Int32Array,
    parts: Uint8Array[],
    sums: Buffer,
    check: boolean,
    spans: Int32Array,
    scratch: Buffer,
    arena: Buffer,
    level: number,
  ): Promise<void>;
}

interface NativeFailure {
  index: number;
  errno: number;
  reason: string;
}

let addon: HashFilesAddon | null | undefined;
function hashFilesAddon(): HashFilesAddon | null {
  addon ??= loadAddon('hashfiles').addon as HashFilesAddon | null;
  return addon;
}

/** What a push hashes with: either pool. */
export type Hasher = Pick<
  HashPool,
  'size' | 'pending' | 'run' | 'openStream' | 'recycle' | 'cancelQueued' | 'close'
>;

/** Whether a pool for `init` would hash natively (SYSROOT_NATIVE_HASH=0 turns it off, to compare). */
export function nativeHashing(init: Pick<WorkerInit, 'root' | 'deflate'>): boolean {
  return (
    init.root === null &&
    init.deflate.engine === 'igzip' &&
    process.env.SYSROOT_NATIVE_HASH !== '0' &&
    hashFilesAddon() !== null
  );
}

/** The pool a push hashes with: native when it can be, else worker threads. */
export function hashPool(init: WorkerInit): Hasher {
  return nativeHashing(init) ? new NativeHashPool(init) : new HashPool(init);
}

/**
 * Called first thing by `sysroot push`: start the hash workers early (pool.ts says why) unless the
 * push, at its default deflate settings, will not need them.
 */
export function prestartHashers(): void {
  if (!nativeHashing({ root: null, deflate: deflateSettings() })) prestartHashWorkers();
}

/** Sizes travel in an Int32Array: a file of 2 GiB or more is hashed by the workers. */
const MAX_SIZE = 2 ** 31 - 1;
/** An arena holds at least this much: a batch is cut at 4 MiB of files, deflated about half that. */
const MIN_ARENA = 5 * 1024 * 1024;
const EMPTY = Buffer.alloc(0);

interface Job {
  request: PoolRequest & { type: 'batch' | 'compress' };
  resolve: (r: ItemResult[]) => void;
  reject: (e: unknown) => void;
}

export class NativeHashPool implements Hasher {
  readonly size: number;
  private readonly queue: Job[] = [];
  private running = 0;
  private readonly scratch: Buffer[] = [];
  private readonly spareArenas: Buffer[] = [];
  /** Arenas handed out with results, until recycle() gives them back. */
  private readonly lent = new Map<ArrayBuffer, Buffer>();
  private readonly settled = new Set<Promise<unknown>>();
  private workers: HashPool | undefined;
  private closed = false;

  constructor(
    private readonly init: WorkerInit,
    size = availableParallelism(),
  ) {
    this.size = Math.max(1, size);
  }

  get pending(): number {
    return this.queue.length + this.running + (this.workers?.pending ?? 0);
  }

  run(request: PoolRequest, transfer: ArrayBuffer[] = []): Promise<ItemResult[]> {
    if (this.closed) return Promise.reject(new RegistryError('E_INTERNAL', 'import pool is closed'));
    if (!this.native(request)) return this.fallback().run(request, transfer);
    return new Promise((resolve, reject) => {
      this.queue.push({ request, resolve, reject });
      this.dispatch();
    });
  }

  openStream(prefix: Uint8Array, header: Uint8Array, size: number): PoolStream {
    return this.fallback().openStream(prefix, header, size);
  }

  recycle(results: readonly ItemResult[]): void {
    for (const r of results) {
      const b = r.filez?.buffer;
      const arena = b instanceof ArrayBuffer ? this.lent.get(b) : undefined;
      if (!arena) continue;
      this.lent.delete(b as ArrayBuffer);
      if (this.spareArenas.length < this.size * 3) this.spareArenas.push(arena);
    }
    this.workers?.recycle(results);
  }

  cancelQueued(reason: unknown): void {
    for (const job of this.queue.splice(0)) job.reject(reason);
    this.workers?.cancelQueued(reason);
  }

  async close(): Promise<void> {
    this.cancelQueued(new RegistryError('E_INTERNAL', 'import cancelled'));
    await Promise.allSettled([...this.settled]);
    this.closed = true;
    await this.workers?.close();
  }

  /** Whether the addon does all of `request` (see the top of this file). */
  private native(request: PoolRequest): request is PoolRequest & { type: 'batch' | 'compress' } {
    if (request.type === 'batch')
      return request.items.every((i) => i.kind === 'symlink' || (i.kind === 'path' && i.size <= MAX_SIZE));
    if (request.type === 'compress')
      return request.items.every(
        (i) => i.kind === 'symlink' || (i.kind === 'path' && i.size <= this.init.big),
      );
    return false;
  }

  private fallback(): HashPool {
    this.workers ??= new HashPool(this.init, this.size);
    return this.workers;
  }

  private dispatch(): void {
    while (this.running < this.size && this.queue.length > 0) {
      const job = this.queue.shift()!;
      this.running++;
      const scratch = this.scratch.pop() ?? Buffer.allocUnsafeSlow(this.init.big);
      const p = this.hash(job.request, scratch).then(job.resolve, job.reject);
      this.settled.add(p);
      void p.finally(() => {
        this.settled.delete(p);
        this.scratch.push(scratch);
        this.running--;
        this.dispatch();
      });
    }
  }

  private async hash(request: Job['request'], scratch: Buffer): Promise<ItemResult[]> {
    const items = request.items as Array<Exclude<WorkerItem, { kind: 'data' }>>;
    const compress = request.type === 'compress';
    const deflate = compress || request.deflate === true;
    const n = items.length;
    const sizes = new Int32Array(n);
    const parts: Uint8Array[] = [];
    const sums = Buffer.allocUnsafe(32 * n);
    let paths = '';
    let need = 0;
    for (let i = 0; i < n; i++) {
      const item = items[i]!;
      const size = item.kind === 'path' ? item.size : -1;
      sizes[i] = size;
      paths += `${item.kind === 'path' ? item.path : ''}\0`;
      parts.push(item.prefix, item.header);
      if (compress) sums.write(item.checksum!, 32 * i, 'hex');
      if (deflate && size <= this.init.big) need += item.header.length + (size >= 0 ? deflateBound(size) : 0);
    }
    const arena = deflate ? this.arena(need) : EMPTY;
    const spans = new Int32Array(2 * n);
    try {
      await hashFilesAddon()!.hashFiles(
        Buffer.from(paths),
        sizes,
        parts,
        sums,
        compress,
        spans,
        scratch,
        arena,
        deflate ? this.init.deflate.level : -1,
      );
    } catch (e) {
      if (arena !== EMPTY) this.spareArenas.push(arena);
      throw failure(e, items);
    }
    const results: ItemResult[] = [];
    for (let i = 0; i < n; i++) {
      const length = spans[2 * i + 1]!;
      const filez = length >= 0 ? arena.subarray(spans[2 * i]!, spans[2 * i]! + length) : undefined;
      if (compress) {
        results.push({ filez });
        continue;
      }
      const checksum = sums.toString('hex', 32 * i, 32 * i + 32);
      results.push(filez ? { checksum, status: 'hashed', filez } : { checksum, status: 'hashed' });
    }
    if (arena !== EMPTY) this.lent.set(arena.buffer as ArrayBuffer, arena);
    return results;
  }

  /** An arena of at least `need` bytes: a spare one, or a new one. */
  private arena(need: number): Buffer {
    const i = this.spareArenas.findIndex((a) => a.length >= need);
    if (i >= 0) return this.spareArenas.splice(i, 1)[0]!;
    return Buffer.allocUnsafeSlow(Math.max(need, MIN_ARENA));
  }
}

const systemErrors = getSystemErrorMap();

/** The addon's rejection as the error hash-worker.js would have given (pool.ts workerError). */
function failure(e: unknown, items: readonly WorkerItem[]): RegistryError {
  const f = e as Partial<NativeFailure>;
  if (typeof f?.index !== 'number' || typeof f.reason !== 'string') {
    return new RegistryError('E_INTERNAL', `native hashing failed: ${(e as Error)?.message ?? e}`);
  }
  const item = items[f.index];
  const path = item?.kind === 'path' ? item.path : undefined;
  if (f.reason === 'changed') {
    return workerError({ message: `${path}: changed while being imported`, path, changed: true });
  }
  const sys = f.errno ? systemErrors.get(-f.errno) : undefined;
  if (!sys)
    return new RegistryError('E_INTERNAL', `native hashing failed: ${f.reason} (${path ?? 'symlink'})`);
  const [code, text] = sys;
  return workerError({ message: `${path}: ${code}: ${text}, ${f.reason} '${path}'`, path, errno: code });
}
