// @ts-check
/**
 * Import worker: read + sha256 + raw deflate + write of content objects, off the main thread.
 *
 * Plain JavaScript on purpose: vitest runs the TypeScript sources directly and Node 20 cannot start
 * a worker from a .ts file, so this file must run as is (tsc checks it through checkJs and copies it
 * to dist/). It imports node: builtins and the deflate engines (src/compress/deflate.js, plain JS
 * too); the main thread encodes the GVariant headers with src/objects and sends the bytes with every
 * item, so the checksum rules live in one place.
 *
 * Protocol (see pool.ts for the other side; every request has a numeric id, answered once by
 * {type:'done', id, ok, results | error}):
 *   batch    items [{kind:'path', path, size, prefix, header} | {kind:'data', data, prefix, header}
 *                   | {kind:'symlink', prefix, header}]
 *            With a repository root (FsBlobStore): hash, skip if objects/XX/… exists, else deflate,
 *            write tmp/… and link(2) it into place; results {checksum, status:'written'|'existing'}.
 *            Without (other stores, and a push's first pass: root null is the hash-only mode): hash
 *            only, results {checksum, status:'hashed'} and data items' buffers travel back so the
 *            main thread can ask for compression of the missing ones; with {deflate: true}, path
 *            and symlink items up to BIG also come back with their {filez} (a new ref's push).
 *   compress items like batch plus {checksum}; results {filez} (header ‖ deflate) or, for files
 *            over BIG, {spool} (a file in tmpDir the main thread streams into the store and removes).
 *   arenas   {buffers}: arenas of .filez (see `room`) handed back to be filled again; no answer.
 *   init     {init}: the WorkerInit of a worker started without workerData; first, no answer.
 *   stream   {prefix, header, size}, followed by {type:'chunk', id, data} messages (each answered by
 *            {type:'ack', id, bytes}) and {type:'end', id} or {type:'abort', id}: a large tar member,
 *            hashed and deflated incrementally; results [{checksum, status, spool?}].
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  constants as fsConstants,
  fstatSync,
  linkSync,
  mkdirSync,
  openSync,
  readSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { parentPort, threadId, workerData } from 'node:worker_threads';
import { deflateBound, deflateInto, deflatePiece, deflateRaw } from '../compress/deflate.js';
import { GarbageMeter } from '../minor-gc.js';

/**
 * @typedef {{ root: string | null, tmpDir: string, deflate: import('../compress/deflate.js').DeflateSettings,
 *   big: number, chunk: number, arena: number }} WorkerInit
 * @typedef {{ kind: 'path', path: string, size: number, prefix: Uint8Array, header: Uint8Array,
 *   checksum?: string }} PathItem
 * @typedef {{ kind: 'data', data: Uint8Array, prefix: Uint8Array, header: Uint8Array,
 *   checksum?: string }} DataItem
 * @typedef {{ kind: 'symlink', prefix: Uint8Array, header: Uint8Array, checksum?: string }} SymlinkItem
 * @typedef {PathItem | DataItem | SymlinkItem} Item
 * @typedef {{ checksum?: string, status?: 'written' | 'existing' | 'hashed', data?: Uint8Array,
 *   filez?: Uint8Array, spool?: string }} ItemResult
 * @typedef {{ type: 'batch' | 'compress', id: number, items: Item[], deflate?: boolean }
 *   | { type: 'stream', id: number, prefix: Uint8Array, header: Uint8Array, size: number }
 *   | { type: 'chunk', id: number, data: Uint8Array }
 *   | { type: 'end' | 'abort', id: number }} Request
 * @typedef {{ type: 'arenas', buffers: ArrayBuffer[] } | { type: 'init', init: WorkerInit }} ArenasMessage
 * @typedef {{ message: string, path?: string, errno?: string, changed?: boolean }} JobError
 */

const port = parentPort;
if (!port) throw new Error('hash-worker.js must run in a worker thread');
/** From workerData, or (a worker started before its pool: pool.ts prestartHashWorkers) the first message. */
let init = /** @type {WorkerInit} */ (workerData);
const O_NOFOLLOW = fsConstants.O_NOFOLLOW;

/**
 * Every file leaves its payload (tar) and its deflate output behind as garbage, and V8 does not
 * notice: the backing stores live outside its heap and the JS objects are a few bytes each, so the
 * young generation hardly fills and a GC came only every ~40 MB per worker (that was most of a 284 MB
 * peak RSS importing /usr). A minor GC (~50 us with a 2 MB young generation) per 2 MB let go
 * of keeps it at a few MB (src/minor-gc.js).
 *
 * collect() runs between jobs, or between chunks of one file, never inside a batch: a scavenge there
 * would see the batch's unprocessed payloads still referenced, promote them after two rounds, and
 * then only a major GC frees them (tar import held ~100 MB that way).
 */
const garbage = new GarbageMeter(2 * 1024 * 1024);

/** objects/XX directories this thread has already made (256 at most). */
const madeDirs = new Set();
let tmpCounter = 0;
const tmpTag = `${process.pid}-${threadId}-${randomBytes(4).toString('hex')}`;

class ImportFailure extends Error {
  /** @param {string} message @param {string} [path] @param {string} [errno] @param {boolean} [changed] */
  constructor(message, path, errno, changed) {
    super(message);
    this.path = path;
    this.errno = errno;
    this.changed = changed;
  }
}

/** @param {unknown} e @param {string} path @returns {ImportFailure} */
function ioFailure(e, path) {
  if (e instanceof ImportFailure) return e;
  const err = /** @type {NodeJS.ErrnoException} */ (e);
  return new ImportFailure(`${path}: ${err.message}`, path, err.code);
}

/** @param {Uint8Array} u @returns {Buffer} */
function buf(u) {
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

function tmpPath() {
  tmpCounter++;
  return join(init.tmpDir, `tmp-${tmpTag}-${tmpCounter}`);
}

/** @param {string} checksum */
function objectFile(checksum) {
  if (!init.root) throw new Error('no repository root');
  return join(init.root, 'objects', checksum.slice(0, 2), `${checksum.slice(2)}.filez`);
}

/** @param {number} fd @param {Uint8Array} data */
function writeAll(fd, data) {
  for (let off = 0; off < data.length; ) off += writeSync(fd, data, off, data.length - off);
}

/**
 * Link a finished temp file to its object name; EEXIST means another writer (or an identical file
 * earlier in this import) got there first, which is fine: the name is the content. Removes `tmp`.
 * @param {string} tmp @param {string} checksum @returns {'written' | 'existing'}
 */
function linkObject(tmp, checksum) {
  const dest = objectFile(checksum);
  try {
    const dir = dirname(dest);
    if (!madeDirs.has(dir)) {
      mkdirSync(dir, { recursive: true });
      madeDirs.add(dir);
    }
    linkSync(tmp, dest);
    return 'written';
  } catch (e) {
    if (/** @type {NodeJS.ErrnoException} */ (e).code === 'EEXIST') return 'existing';
    throw ioFailure(e, dest);
  } finally {
    try {
      unlinkSync(tmp);
    } catch {}
  }
}

/** @param {string} checksum @param {Uint8Array[]} parts @returns {'written' | 'existing'} */
function writeObject(checksum, parts) {
  const tmp = tmpPath();
  let fd;
  try {
    fd = openSync(tmp, 'wx', 0o644);
    for (const p of parts) writeAll(fd, p);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {}
    throw ioFailure(e, tmp);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  return linkObject(tmp, checksum);
}

/**
 * Open a regular file without following a symlink that replaced it since the main thread's lstat,
 * and check it still has the size the .filez header was built with.
 * @param {PathItem} item @returns {number}
 */
function openChecked(item) {
  let fd;
  try {
    fd = openSync(item.path, fsConstants.O_RDONLY | O_NOFOLLOW);
    const st = fstatSync(fd);
    if (!st.isFile() || st.size !== item.size) {
      throw new ImportFailure(`${item.path}: changed while being imported`, item.path, undefined, true);
    }
    return fd;
  } catch (e) {
    if (fd !== undefined) closeSync(fd);
    throw ioFailure(e, item.path);
  }
}

/**
 * One read buffer per worker, grown to the largest file seen (at most `big`): a fresh buffer per file
 * left ~40 MB of garbage per worker between GCs on a Debian tree (peak RSS 170 MB instead of 130).
 */
let readBuffer = Buffer.allocUnsafeSlow(1024 * 1024);

/** @param {PathItem} item @returns {Buffer} valid until the next call */
function readWhole(item) {
  const fd = openChecked(item);
  try {
    if (readBuffer.length < item.size)
      readBuffer = Buffer.allocUnsafeSlow(Math.max(item.size, readBuffer.length * 2));
    const data = readBuffer.subarray(0, item.size);
    let off = 0;
    while (off < item.size) {
      const n = readSync(fd, data, off, item.size - off, off);
      if (n === 0) break;
      off += n;
    }
    // A short read, or bytes past the end, mean the file is being written to right now.
    if (off !== item.size || readSync(fd, Buffer.allocUnsafe(1), 0, 1, off) !== 0) {
      throw new ImportFailure(`${item.path}: changed while being imported`, item.path, undefined, true);
    }
    return data;
  } catch (e) {
    throw ioFailure(e, item.path);
  } finally {
    closeSync(fd);
  }
}

/** The read buffer of large files, reused chunk after chunk (see deflateToTemp for why that is safe). */
let chunkBuffer = Buffer.allocUnsafeSlow(0);

/**
 * The payload of a large file in `chunk`-sized pieces, hashing as it goes. Every piece is a view of
 * the same buffer: the consumer must be done with one before it asks for the next.
 * @param {PathItem} item @param {number} fd @param {import('node:crypto').Hash} hash
 */
async function* readChunks(item, fd, hash) {
  if (chunkBuffer.length < init.chunk) chunkBuffer = Buffer.allocUnsafeSlow(init.chunk);
  let off = 0;
  while (off < item.size) {
    const want = Math.min(init.chunk, item.size - off);
    const chunk = chunkBuffer.subarray(0, want);
    let got = 0;
    try {
      while (got < want) {
        const n = readSync(fd, chunk, got, want - got, off + got);
        if (n === 0) break;
        got += n;
      }
    } catch (e) {
      throw ioFailure(e, item.path);
    }
    if (got !== want)
      throw new ImportFailure(`${item.path}: changed while being imported`, item.path, undefined, true);
    off += got;
    hash.update(chunk);
    yield chunk;
  }
}

/**
 * Deflate `source` into a new temp file that starts with `header`; returns the temp path.
 *
 * Chunk by chunk (deflatePiece: each piece ends byte-aligned, a final empty piece ends the stream),
 * synchronously, so the caller may refill the same buffer for the next chunk and memory stays at
 * one chunk and its output whatever the file's size.
 * @param {Uint8Array} header @param {AsyncIterable<Uint8Array>} source @param {string} what
 */
async function deflateToTemp(header, source, what) {
  const tmp = tmpPath();
  let fd;
  try {
    fd = openSync(tmp, 'wx', 0o644);
    writeAll(fd, header);
    for await (const chunk of source) {
      const z = deflatePiece(chunk, init.deflate, false);
      writeAll(fd, z);
      garbage.dropped(z.length);
      garbage.collect();
    }
    writeAll(fd, deflatePiece(new Uint8Array(0), init.deflate, true));
    return tmp;
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {}
    throw ioFailure(e, what);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** @param {Uint8Array} prefix @param {Uint8Array} [payload] */
function checksumOf(prefix, payload) {
  const h = createHash('sha256').update(prefix);
  if (payload) h.update(payload);
  return h.digest('hex');
}

/**
 * A file too large to hold (over `big` bytes): one pass to hash, and only if the store lacks the
 * object a second pass to deflate, re-hashing to prove the file did not change in between.
 * @param {PathItem} item @param {boolean} compress @returns {Promise<ItemResult>}
 */
async function bigFile(item, compress) {
  const fd = openChecked(item);
  try {
    let checksum = item.checksum;
    if (checksum === undefined) {
      const hash = createHash('sha256').update(item.prefix);
      for await (const _ of readChunks(item, fd, hash));
      checksum = hash.digest('hex');
      if (!init.root) return { checksum, status: 'hashed' };
      if (existsSync(objectFile(checksum))) return { checksum, status: 'existing' };
    }
    const again = createHash('sha256').update(item.prefix);
    const tmp = await deflateToTemp(item.header, readChunks(item, fd, again), item.path);
    if (again.digest('hex') !== checksum) {
      unlinkSync(tmp);
      throw new ImportFailure(`${item.path}: changed while being imported`, item.path, undefined, true);
    }
    if (compress || !init.root) return { checksum, spool: tmp };
    return { checksum, status: linkObject(tmp, checksum) };
  } finally {
    closeSync(fd);
  }
}

/**
 * @param {Item} item
 * @param {boolean} [deflate] hash-only mode: deflate too and return the .filez (a push of a new ref
 *   streams them as it hashes; files over `big` are left to a later compress request)
 * @returns {Promise<ItemResult> | ItemResult}
 */
function hashItem(item, deflate = false) {
  if (item.kind === 'path' && item.size > init.big) return bigFile(item, false);
  const payload = item.kind === 'path' ? readWhole(item) : item.kind === 'data' ? buf(item.data) : undefined;
  const checksum = checksumOf(item.prefix, payload);
  if (!init.root) {
    if (item.kind === 'data') return { checksum, status: 'hashed', data: item.data };
    if (deflate) return { checksum, status: 'hashed', filez: filezOf(item, payload) };
    return { checksum, status: 'hashed' };
  }
  // Objects the store already has are neither compressed nor written again.
  if (existsSync(objectFile(checksum))) {
    if (item.kind === 'data') garbage.dropped(item.data.length);
    return { checksum, status: 'existing' };
  }
  const z = payload ? deflateRaw(payload, init.deflate) : undefined;
  const status = writeObject(checksum, z ? [item.header, z] : [item.header]);
  garbage.dropped((z?.length ?? 0) + (item.kind === 'data' ? item.data.length : 0));
  return { checksum, status };
}

/** @param {Item} item @returns {Promise<ItemResult> | ItemResult} */
function compressItem(item) {
  if (item.kind === 'path' && item.size > init.big) return bigFile(item, true);
  if (item.kind === 'symlink') return { filez: item.header };
  const payload = item.kind === 'path' ? readWhole(item) : buf(item.data);
  if (item.kind === 'path' && checksumOf(item.prefix, payload) !== item.checksum) {
    throw new ImportFailure(`${item.path}: changed while being imported`, item.path, undefined, true);
  }
  if (item.kind === 'data') garbage.dropped(item.data.length);
  return { filez: filezOf(item, payload) };
}

/**
 * Arenas: the .filez a request returns are written back to back into buffers of init.arena bytes,
 * transferred with the answer; the main thread hands them back (HashPool.recycle) once it has put
 * their .filez into its pack, and they are filled again. A push of a new ref returns ~55 MB of
 * .filez for a sysroot: made as a Buffer each (deflated into igzip's scratch, copied out, then
 * copied again behind the header) they were ~110 MB of fresh memory per push and a page fault per
 * 4 KiB of it, on both workers and in the main thread's garbage collector.
 */
/** @type {ArrayBuffer[]} */
const spareArenas = [];
/**
 * Arenas kept for reuse. A request holds at most 4 MiB of file data, deflated (one or two arenas),
 * and a push holds two requests' answers per worker while their .filez wait for the pack.
 */
const MAX_SPARE_ARENAS = 6;
/** @type {{ bytes: Uint8Array, at: number } | undefined} */
let arena;
/** Arenas (and .filez too large for one) written by the current request: transferred with its answer. */
/** @type {ArrayBuffer[]} */
let requestBuffers = [];

/**
 * `n` bytes to write a .filez into: the rest of the current arena, a new arena, or a buffer of its
 * own when `n` is more than an arena holds.
 * @param {number} n @returns {Uint8Array}
 */
function room(n) {
  if (n > init.arena) {
    const own = new Uint8Array(n);
    requestBuffers.push(own.buffer);
    return own;
  }
  if (!arena || init.arena - arena.at < n) {
    const buffer = spareArenas.pop() ?? new ArrayBuffer(init.arena);
    arena = { bytes: new Uint8Array(buffer), at: 0 };
    requestBuffers.push(buffer);
  }
  return arena.bytes.subarray(arena.at, arena.at + n);
}

/**
 * The .filez of an item: its header, then its payload deflated (a symlink's is the header alone).
 * With igzip the bytes go straight into an arena (see `room`).
 * @param {Item} item @param {Uint8Array | undefined} payload @returns {Uint8Array}
 */
function filezOf(item, payload) {
  if (!payload) return item.header;
  const h = item.header.length;
  const out = room(h + deflateBound(payload.length));
  const n = deflateInto(payload, out.subarray(h), init.deflate);
  if (n !== undefined) {
    if (n < 0) throw new Error(`deflate: output over its bound (${payload.length} bytes in)`);
    out.set(item.header, 0);
    if (arena && out.buffer === arena.bytes.buffer) arena.at += h + n;
    return out.subarray(0, h + n);
  }
  const z = deflateRaw(payload, init.deflate);
  const filez = new Uint8Array(item.header.length + z.length);
  filez.set(item.header, 0);
  filez.set(z, item.header.length);
  // z is garbage now (filez is transferred): counted, or a push's workers grew by ~40 MB each.
  garbage.dropped(z.length);
  return filez;
}

/** Chunks of one stream job, which may arrive before the job starts running. */
class Channel {
  constructor() {
    /** @type {(Uint8Array | null | Error)[]} */
    this.items = [];
    /** @type {(() => void) | undefined} */
    this.wake = undefined;
  }

  /** @param {Uint8Array | null | Error} item */
  push(item) {
    this.items.push(item);
    this.wake?.();
  }

  /** @returns {AsyncGenerator<Uint8Array>} */
  async *[Symbol.asyncIterator]() {
    for (;;) {
      const item = this.items.shift();
      if (item === undefined) {
        await new Promise((resolve) => {
          this.wake = () => resolve(undefined);
        });
        this.wake = undefined;
        continue;
      }
      if (item === null) return;
      if (item instanceof Error) throw item;
      yield item;
    }
  }
}

/** @type {Map<number, Channel>} */
const channels = new Map();

/** @param {number} id */
function channel(id) {
  let c = channels.get(id);
  if (!c) {
    c = new Channel();
    channels.set(id, c);
  }
  return c;
}

/**
 * @param {number} id @param {Uint8Array} prefix @param {Uint8Array} header @param {number} size
 * @returns {Promise<ItemResult>}
 */
async function streamJob(id, prefix, header, size) {
  const hash = createHash('sha256').update(prefix);
  let total = 0;
  const source = channel(id);
  const counted = async function* () {
    for await (const chunk of source) {
      total += chunk.length;
      hash.update(chunk);
      yield buf(chunk);
      garbage.dropped(chunk.length);
      garbage.collect();
      port?.postMessage({ type: 'ack', id, bytes: chunk.length });
    }
  };
  const what = `tar member (${size} bytes)`;
  let tmp;
  try {
    tmp = await deflateToTemp(header, counted(), what);
  } finally {
    channels.delete(id);
  }
  if (total !== size) {
    unlinkSync(tmp);
    throw new ImportFailure(`${what}: got ${total} bytes`);
  }
  const checksum = hash.digest('hex');
  if (!init.root) return { checksum, spool: tmp };
  return { checksum, status: linkObject(tmp, checksum) };
}

/** @type {Request[]} */
const jobs = [];
let running = false;

/** @param {Request} msg @returns {Promise<ItemResult[]>} */
async function run(msg) {
  if (msg.type === 'stream') return [await streamJob(msg.id, msg.prefix, msg.header, msg.size)];
  if (msg.type !== 'batch' && msg.type !== 'compress') throw new Error(`unexpected request ${msg.type}`);
  /** @type {ItemResult[]} */
  const results = [];
  for (const item of msg.items)
    results.push(await (msg.type === 'batch' ? hashItem(item, msg.deflate) : compressItem(item)));
  return results;
}

/** @param {ItemResult[]} results @returns {ArrayBuffer[]} */
function transferables(results) {
  /** @type {ArrayBuffer[]} */
  const list = [];
  for (const r of results) {
    for (const u of [r.data, r.filez]) {
      if (
        u &&
        u.buffer instanceof ArrayBuffer &&
        u.byteOffset === 0 &&
        u.byteLength === u.buffer.byteLength
      ) {
        list.push(u.buffer);
      }
    }
  }
  return list;
}

async function pump() {
  if (running) return;
  running = true;
  try {
    for (let msg = jobs.shift(); msg; msg = jobs.shift()) {
      try {
        const results = await run(msg);
        const transfer = transferables(results);
        for (const b of requestBuffers) if (!transfer.includes(b)) transfer.push(b);
        port?.postMessage({ type: 'done', id: msg.id, ok: true, results }, transfer);
      } catch (e) {
        const f =
          e instanceof ImportFailure ? e : new ImportFailure(String(/** @type {Error} */ (e)?.message ?? e));
        /** @type {JobError} */
        const error = { message: f.message, path: f.path, errno: f.errno, changed: f.changed };
        port?.postMessage({ type: 'done', id: msg.id, ok: false, error });
      }
      // The arenas went with the answer (or, after a failure, are dropped): the next request starts
      // a new one.
      arena = undefined;
      requestBuffers = [];
      garbage.collect();
    }
  } finally {
    running = false;
  }
}

port.on('message', (/** @type {Request | ArenasMessage} */ msg) => {
  if (msg.type === 'init') init = msg.init;
  else if (msg.type === 'arenas') {
    for (const b of msg.buffers)
      if (b.byteLength === init.arena && spareArenas.length < MAX_SPARE_ARENAS) spareArenas.push(b);
  } else if (msg.type === 'chunk') channel(msg.id).push(msg.data);
  else if (msg.type === 'end') channel(msg.id).push(null);
  else if (msg.type === 'abort') channel(msg.id).push(new ImportFailure('aborted'));
  else {
    jobs.push(msg);
    void pump();
  }
});
