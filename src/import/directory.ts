/**
 * Directory → OSTree objects. The walk runs on the main thread with synchronous readdir/lstat/xattr
 * calls (a few microseconds each, against ~30 us for a libuv round trip per async call), a whole
 * directory's in one call to native/files where it is built (scan-dir.ts), and hands
 * regular files to the worker pool as it goes, yielding to the event loop every few hundred entries
 * so finished batches are collected and the workers are kept fed.
 */
import { lstatSync, readdirSync, readlinkSync, realpathSync, type Stats, statSync } from 'node:fs';
import { getAttributeSync, listAttributesSync } from '@napi-rs/xattr';
import { errnoCode, RegistryError } from '../errors.js';
import { canonicalXattrs, checkEntryName, type DirMeta, type Xattr } from '../objects/index.js';
import type { ObjectStore } from '../store/object-store.js';
import { ContentWriter } from './content.js';
import { type EntryStat, scanDirectory } from './scan-dir.js';
import {
  type DirNode,
  deflateOf,
  type FileNode,
  type ImportOptions,
  type ImportResult,
  metaRules,
  newDir,
  sortPaths,
  TreeWriter,
} from './tree.js';

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;

/** Entries handled between two yields to the event loop (~1 ms of syscalls). */
const YIELD_EVERY = 256;

const utf8 = new TextDecoder('utf-8', { fatal: true });

export async function importDirectory(
  objects: ObjectStore,
  dir: string,
  opts: ImportOptions = {},
): Promise<ImportResult> {
  const rules = metaRules(opts);
  const deflate = deflateOf(opts);
  // The root may be given as a symlink to a directory (a "current" link); everything below is lstat'ed.
  let root: string;
  let rootStat: Stats;
  try {
    root = realpathSync(dir);
    rootStat = statSync(root);
  } catch (e) {
    const code = errnoCode(e) === 'ENOENT' ? 'E_NOT_FOUND' : 'E_IO';
    throw new RegistryError(code, `${dir}: ${(e as Error).message}`, { path: dir }, undefined, e);
  }
  if (!rootStat.isDirectory()) throw new RegistryError('E_USAGE', `${dir} is not a directory`, { path: dir });

  const readXattrs = (abs: string, rel: string): Xattr[] => (rules.keepXattrs ? xattrsOf(abs, rel) : []);
  const dirMeta = (st: Stats, abs: string, rel: string) =>
    rules.dir(st.uid, st.gid, st.mode & 0o7777, readXattrs(abs, rel));

  const dirs = new TreeWriter(objects);
  /**
   * Directories are finished (encoded, written, children released) as soon as they are walked and every
   * file in them has its checksum, so memory follows the walk's frontier rather than the tree: /usr
   * (138k entries) held 67 MB of V8 heap when the whole tree waited for the end.
   */
  const waiting = new Map<FileNode, WalkDir[]>();
  const maybeFinish = (d: WalkDir): void => {
    for (let cur: WalkDir | undefined = d; cur?.walked && cur.pending === 0; cur = cur.parent) {
      dirs.finish(cur, cur.rel);
      if (cur.parent) cur.parent.pending--;
    }
  };
  const onChecksum = (node: FileNode): void => {
    const ds = waiting.get(node);
    if (!ds) return;
    waiting.delete(node);
    for (const d of ds) {
      d.pending--;
      maybeFinish(d);
    }
  };
  const addFile = (dir: WalkDir, name: string, node: FileNode): void => {
    dir.files.set(name, node);
    if (node.checksum !== undefined) return;
    dir.pending++;
    const ds = waiting.get(node);
    if (ds) ds.push(dir);
    else waiting.set(node, [dir]);
  };

  const writer = await ContentWriter.open(objects, {
    deflate,
    onProgress: opts.onProgress,
    onChecksum,
    ...(opts.hashOnly ? { hashOnly: opts.hashOnly } : {}),
  });
  try {
    const special: string[] = [];
    /** Hard links: dev:ino of files with nlink > 1, so every link shares the first one's node. */
    const inodes = new Map<string, FileNode>();
    // Paths are joined by hand: path.join normalises every call, which showed in profiles at 6000 entries.
    const top = walkDir(dirMeta(rootStat, root, '.'), undefined, root === '/' ? '' : root, '');
    const stack: WalkDir[] = [top];
    let sinceYield = 0;
    for (let cur = stack.pop(); cur; cur = stack.pop()) {
      // The native scan reads a directory's entries, their lstat and xattrs in one call; without it,
      // the same calls one by one (names as Buffers: a name that is not UTF-8 must be seen as bytes,
      // not silently replaced with U+FFFD).
      const entries = scanDirectory(cur.abs || '/', rules.keepXattrs) ?? readNames(cur.abs || '/');
      for (const entry of entries) {
        const name = decodeName(entry.raw, cur.rel);
        const rel = cur.rel ? `${cur.rel}/${name}` : name;
        checkEntryName(name, rel);
        const abs = `${cur.abs}/${name}`;
        const st = entry.stat ?? lstatOf(abs);
        const xattrsOfEntry = (): Xattr[] =>
          entry.xattrs ? canonicalXattrs(entry.xattrs) : readXattrs(abs, rel);
        const type = st.mode & S_IFMT;
        if (type === S_IFDIR) {
          const node = walkDir(rules.dir(st.uid, st.gid, st.mode & 0o7777, xattrsOfEntry()), cur, abs, rel);
          cur.dirs.set(name, node);
          cur.pending++;
          stack.push(node);
        } else if (type === S_IFREG) {
          const key = st.nlink > 1 ? inodeKey(abs) : undefined;
          const linked = key === undefined ? undefined : inodes.get(key);
          if (linked) {
            addFile(cur, name, linked);
          } else {
            const node: FileNode = { checksum: undefined, size: st.size };
            if (key !== undefined) inodes.set(key, node);
            addFile(cur, name, node);
            const meta = rules.file(st.uid, st.gid, st.mode & 0o7777, xattrsOfEntry());
            writer.addPath(abs, meta, st.size, node);
          }
        } else if (type === S_IFLNK) {
          const node: FileNode = { checksum: undefined, size: 0 };
          addFile(cur, name, node);
          writer.addSymlink(rules.symlink(st.uid, st.gid, linkTarget(abs, rel), xattrsOfEntry()), node);
        } else {
          special.push(rel);
        }
        if (++sinceYield >= YIELD_EVERY) {
          sinceYield = 0;
          opts.signal?.throwIfAborted();
          await writer.throttle();
          await dirs.drain();
          await new Promise<void>((r) => setImmediate(r));
        }
      }
      cur.walked = true;
      maybeFinish(cur);
    }
    if (special.length > 0 && !opts.skipSpecial) throw specialFiles(special);
    await writer.finish();
    await dirs.flush();
    if (!top.done)
      throw new RegistryError('E_INTERNAL', `${dir}: the import finished with directories left open`);
    return {
      rootTree: top.done.tree,
      rootMeta: top.done.meta,
      fileCount: dirs.fileCount,
      totalSize: dirs.totalSize,
      skippedSpecial: sortPaths(special),
      objectsWritten: writer.written + dirs.written,
      objectsExisting: writer.existing + dirs.existing,
    };
  } finally {
    await dirs.settle();
    await writer.close();
  }
}

/** A directory during the walk: finished once walked and `pending` (unhashed files, open subdirectories) is 0. */
interface WalkDir extends DirNode {
  parent: WalkDir | undefined;
  abs: string;
  rel: string;
  pending: number;
  walked: boolean;
}

function walkDir(meta: DirMeta, parent: WalkDir | undefined, abs: string, rel: string): WalkDir {
  return { ...newDir(meta), parent, abs, rel, pending: 0, walked: false };
}

export function specialFiles(paths: string[]): RegistryError {
  const sorted = sortPaths(paths);
  const shown =
    sorted.slice(0, 20).join(', ') + (sorted.length > 20 ? `, ... (${sorted.length} in all)` : '');
  return new RegistryError(
    'E_SPECIAL_FILE',
    `the tree contains ${sorted.length} device node(s), fifo(s) or socket(s), which OSTree cannot store: ` +
      shown,
    { paths: sorted },
    'remove them, or pass --skip-special to leave them out of the import',
  );
}

/** Strict UTF-8, as OSTree requires of names; the message shows the bad bytes as \\xNN. */
function decodeName(raw: Buffer, parent: string): string {
  try {
    return utf8.decode(raw);
  } catch {
    const shown = escapeBytes(raw);
    const path = parent ? `${parent}/${shown}` : shown;
    throw new RegistryError('E_BAD_NAME', `${path}: file name is not valid UTF-8`, {
      path,
      found: raw.toString('hex'),
    });
  }
}

function escapeBytes(b: Buffer): string {
  let s = '';
  for (const c of b)
    s +=
      c >= 0x20 && c < 0x7f && c !== 0x5c ? String.fromCharCode(c) : `\\x${c.toString(16).padStart(2, '0')}`;
  return s;
}

/** The walk's entries without the native scan: names only, each lstat'ed as it is reached. */
function readNames(dir: string): { raw: Buffer; stat: undefined; xattrs: undefined }[] {
  try {
    return readdirSync(dir, { encoding: 'buffer' }).map((raw) => ({
      raw,
      stat: undefined,
      xattrs: undefined,
    }));
  } catch (e) {
    throw ioError(e, dir);
  }
}

function lstatOf(abs: string): EntryStat {
  try {
    return lstatSync(abs);
  } catch (e) {
    throw ioError(e, abs);
  }
}

/** Exact dev:ino (bigint: inode numbers on XFS/btrfs can exceed 2^53, and a collision would merge files). */
function inodeKey(abs: string): string {
  try {
    const st = lstatSync(abs, { bigint: true });
    return `${st.dev}:${st.ino}`;
  } catch (e) {
    throw ioError(e, abs);
  }
}

function linkTarget(abs: string, rel: string): string {
  let raw: Buffer;
  try {
    raw = readlinkSync(abs, { encoding: 'buffer' });
  } catch (e) {
    throw ioError(e, abs);
  }
  try {
    return utf8.decode(raw);
  } catch {
    throw new RegistryError('E_BAD_NAME', `${rel}: symlink target is not valid UTF-8`, {
      path: rel,
      found: raw.toString('hex'),
    });
  }
}

/**
 * Extended attributes without following symlinks: @napi-rs/xattr calls llistxattr/lgetxattr (checked
 * with strace). A filesystem without xattr support (EOPNOTSUPP) simply has none.
 */
function xattrsOf(abs: string, rel: string): Xattr[] {
  let names: string[];
  try {
    names = listAttributesSync(abs);
  } catch (e) {
    if (/os error (95|61)\b/.test((e as Error).message)) return [];
    throw new RegistryError(
      'E_IO',
      `${abs}: reading xattrs: ${(e as Error).message}`,
      { path: rel },
      undefined,
      e,
    );
  }
  if (names.length === 0) return [];
  const out: Xattr[] = [];
  for (const name of names) {
    let value: Buffer | null;
    try {
      value = getAttributeSync(abs, name);
    } catch (e) {
      throw new RegistryError(
        'E_IO',
        `${abs}: reading xattr ${name}: ${(e as Error).message}`,
        { path: rel },
        undefined,
        e,
      );
    }
    if (value) out.push({ name, value: Buffer.from(value) });
  }
  return canonicalXattrs(out);
}

function ioError(e: unknown, abs: string): RegistryError {
  if (e instanceof RegistryError) return e;
  const code = errnoCode(e);
  return new RegistryError(
    'E_IO',
    `${abs}: ${(e as Error).message}`,
    { path: abs, errno: code },
    undefined,
    e,
  );
}
