// @ts-check
/**
 * Write-once of many small blobs, and existence checks of many keys, with synchronous syscalls, off
 * the main thread (fs-batch-writer.ts is the other side). Plain JavaScript for the same reason as
 * src/import/hash-worker.js: vitest runs the TypeScript sources, and Node 20 cannot start a worker
 * from a .ts file.
 *
 * Each blob: open(tmp, O_EXCL) + write + close, then put in place at its key without replacing
 * anything (EEXIST: it exists, and tmp is unlinked). With native/files (the usual case) a whole
 * batch is one call, writeOnce, which does that in C with renameat2(RENAME_NOREPLACE): one system
 * call where link and unlink were two (the worker's link and unlink took ~270 ms of a push of v1,
 * 6,124 objects, in a profile of `sysroot serve`; push v1 into a fresh registry, 6 alternating runs,
 * 2026-12-07: the server's CPU 1.975 → 1.795 s, the push 2.505 → 2.30 s). Without the addon, or
 * with SYSROOT_NATIVE_FILES=0, the loop below makes FsBlobStore.createOnce's steps from
 * JavaScript: link(2) to the key and unlink(tmp). Either way without a libuv round trip per call.
 *
 * Request {id, root, tmpDir, keys, ends, buf}: blob i is buf[ends[i-1] .. ends[i]).
 * Answer {id, results, buf}: per blob true (created), false (existed) or {message, code}; buf is
 * transferred back for reuse.
 *
 * Request {id, op: 'exists', root, keys}. Answer {id, results}: per key true (a regular file is
 * there), false (nothing: ENOENT or ENOTDIR, or not a regular file) or {message, code}, as
 * FsBlobStore.stat decides.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, linkSync, mkdirSync, openSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { getSystemErrorName } from 'node:util';
import { parentPort, threadId } from 'node:worker_threads';
import { loadAddon } from '../native-addon.js';

/**
 * @typedef {{
 *   writeOnce?: (root: string, tmpPrefix: string, keys: Buffer, ends: Float64Array, bytes: Uint8Array, results: Int32Array) => void,
 * }} FilesAddon
 */
const filesAddon = /** @type {FilesAddon | null} */ (loadAddon('files').addon);
/**
 * native/files' writeOnce: a whole batch in one call, the loop below in C. In `perf record -a` of
 * pushes of v1 (6,129 objects, 2026-12-07, 3 pairs) this worker spent 25-29% of its samples in
 * JavaScript around its system calls (paths, fs wrappers, errors): 223-336 samples of 0.5 ms;
 * with writeOnce 34-38, and the worker 892 → 752, 962 → 879, 1,176 → 966 samples in all. Null
 * without the addon (or one built before it existed) or with SYSROOT_NATIVE_FILES=0.
 */
const writeOnce = process.env.SYSROOT_NATIVE_FILES === '0' ? null : (filesAddon?.writeOnce ?? null);
/** writeOnce's names for the call that failed. */
const CALLS = ['', 'open', 'write', 'close', 'renameat2', 'mkdir', 'link'];

/** @param {number} err positive errno */
const errnoName = (err) => getSystemErrorName(-err);

const port = parentPort;
if (!port) throw new Error('fs-write-worker.js must run in a worker thread');
const tag = `${process.pid}-w${threadId}-${randomBytes(4).toString('hex')}`;
let counter = 0;
/** Directories (objects/XX) this thread has made or seen. */
const made = new Set();

/** @param {number} fd @param {Uint8Array} data */
function writeAll(fd, data) {
  for (let off = 0; off < data.length; ) off += writeSync(fd, data, off, data.length - off);
}

/**
 * `tmp` linked at `dest` unless something is there already: true if linked, false if it existed.
 * Either way tmp is still there, to be unlinked.
 * @param {string} tmp @param {string} dest @returns {boolean}
 */
function linkOnce(tmp, dest) {
  const dir = dirname(dest);
  if (!made.has(dir)) {
    mkdirSync(dir, { recursive: true });
    made.add(dir);
  }
  try {
    linkSync(tmp, dest);
    return true;
  } catch (e) {
    if (/** @type {NodeJS.ErrnoException} */ (e).code === 'EEXIST') return false;
    throw e;
  }
}

/**
 * The batch through native/files' writeOnce; the same results as the loop in the handler below.
 * @param {string} root @param {string} tmpDir @param {string[]} keys @param {number[]} ends @param {Uint8Array} bytes
 * @returns {(boolean | { message: string, code?: string })[]}
 */
function writeNative(root, tmpDir, keys, ends, bytes) {
  const out = new Int32Array(2 * keys.length);
  /** @type {NonNullable<typeof writeOnce>} */ (writeOnce)(
    root,
    join(tmpDir, `tmp-${tag}-n`),
    Buffer.from(`${keys.join('\0')}\0`),
    Float64Array.from(ends),
    bytes,
    out,
  );
  return keys.map((key, i) => {
    const status = /** @type {number} */ (out[2 * i]);
    const call = CALLS[/** @type {number} */ (out[2 * i + 1])];
    if (call === '') return status === 1;
    const code = errnoName(status);
    return { message: `${code}: ${call} failed for '${join(root, key)}'`, code };
  });
}

/** @param {string} root @param {string[]} keys */
function exists(root, keys) {
  return keys.map((key) => {
    try {
      return statSync(join(root, key), { throwIfNoEntry: false })?.isFile() ?? false;
    } catch (e) {
      const err = /** @type {NodeJS.ErrnoException} */ (e);
      if (err.code === 'ENOTDIR') return false;
      return { message: err.message, code: err.code };
    }
  });
}

port.on(
  'message',
  (
    /** @type {{ id: number, op?: 'exists', root: string, tmpDir: string, keys: string[], ends: number[], buf: ArrayBuffer }} */ m,
  ) => {
    if (m.op === 'exists') {
      port.postMessage({ id: m.id, results: exists(m.root, m.keys) });
      return;
    }
    const bytes = new Uint8Array(m.buf);
    if (writeOnce) {
      port.postMessage(
        { id: m.id, results: writeNative(m.root, m.tmpDir, m.keys, m.ends, bytes), buf: m.buf },
        [m.buf],
      );
      return;
    }
    /** @type {(boolean | { message: string, code?: string })[]} */
    const results = [];
    let start = 0;
    for (let i = 0; i < m.keys.length; i++) {
      const end = /** @type {number} */ (m.ends[i]);
      const tmp = join(m.tmpDir, `tmp-${tag}-${++counter}`);
      let fd;
      try {
        fd = openSync(tmp, 'wx', 0o666);
        writeAll(fd, bytes.subarray(start, end));
        closeSync(fd);
        fd = undefined;
        results.push(linkOnce(tmp, join(m.root, /** @type {string} */ (m.keys[i]))));
      } catch (e) {
        const err = /** @type {NodeJS.ErrnoException} */ (e);
        results.push({ message: err.message, code: err.code });
      } finally {
        if (fd !== undefined) closeSync(fd);
        try {
          unlinkSync(tmp);
        } catch {}
      }
      start = end;
    }
    // The buffer goes back to be filled again: no garbage per batch on either side.
    port.postMessage({ id: m.id, results, buf: m.buf }, [m.buf]);
  },
);
