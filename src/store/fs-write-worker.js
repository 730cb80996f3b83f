// @ts-check
/**
 * Write-once of many small blobs, and existence checks of many keys, with synchronous syscalls, off
 * the main thread (fs-batch-writer.ts is the other side). Plain JavaScript for the same reason as
 * src/import/hash-worker.js: vitest runs the TypeScript sources, and Node 20 cannot start a worker
 * from a .ts file.
 *
 * Each blob: open(tmp, O_EXCL) + write + close, link(2) to its key (EEXIST: it exists, nothing is
 * replaced), unlink(tmp) — FsBlobStore.createOnce's steps, without a libuv round trip per call.
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
import { parentPort, threadId } from 'node:worker_threads';

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

/** @param {string} tmp @param {string} dest @returns {boolean} */
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
