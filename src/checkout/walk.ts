/**
 * Reading a commit's tree: the walk used by checkout, export and `sysroot ls` / `sysroot cat`.
 *
 * Metadata objects (commit, dirtree, dirmeta) are verified by hash as they are read. Content objects
 * are only opened to read their header here (to tell a symlink from a file, and for `ls`); whoever
 * reads a file's bytes verifies them (readFileContent, checkout, export).
 *
 * Walk order (also the order of `sysroot export`): depth first, each directory before its contents,
 * the entries of a directory (files and subdirectories merged) in strcmp order of their UTF-8 names.
 * Note this is per-directory order, like `tar --sort=name`, not strcmp of whole paths: `a/x` comes
 * before its parent's next sibling `a-b` although '-' (0x2d) < '/' (0x2f).
 */
import { isRegistryError, RegistryError } from '../errors.js';
import { mapLimit } from '../map-limit.js';
import {
  type Checksum,
  type Commit,
  compareNames,
  type DirMeta,
  type DirTree,
  decodeCommit,
  decodeDirMeta,
  decodeDirTree,
  type FilezHeader,
  isSymlink,
  objectId,
  objectPath,
  parseFilezHeader,
} from '../objects/index.js';
import { corrupt, inflateVerified, missing, type ObjectStore } from '../store/object-store.js';

export interface TreeEntry {
  /** '' for the root, else relative without a leading slash: 'a/b'. */
  path: string;
  type: 'dir' | 'file' | 'symlink';
  /** Content checksum for files and symlinks, dirtree checksum for directories. */
  checksum: Checksum;
  /** Dirmeta checksum; directories only. */
  metaChecksum?: Checksum;
}

export interface ListEntry {
  name: string;
  type: TreeEntry['type'];
  checksum: Checksum;
  /** Full st_mode including the type bits. */
  mode: number;
  uid: number;
  gid: number;
  /** Regular files only. */
  size?: number;
  /** Symlinks only. */
  target?: string;
}

/** Files up to this size are verified whole before the first byte is handed out; bigger ones stream. */
export const WHOLE_FILE_LIMIT = 16 * 1024 * 1024;

// A .filez header is ~40 bytes plus the xattrs: one 4 KiB read nearly always holds it all.
const HEADER_PROBE = 4096;

// Headers and dirmetas fetched at once by listDir: enough to hide per-object latency on S3, few
// enough not to exhaust file descriptors (1700 entries in one directory is normal in /usr/lib).
const LIST_CONCURRENCY = 32;

export async function readCommit(objects: ObjectStore, commit: Checksum): Promise<Commit> {
  return decodeCommit(await objects.getMetadata(commit, 'commit'), objectId(commit, 'commit'));
}

export async function readDirTree(objects: ObjectStore, tree: Checksum): Promise<DirTree> {
  return decodeDirTree(await objects.getMetadata(tree, 'dirtree'), objectId(tree, 'dirtree'));
}

export async function readDirMeta(objects: ObjectStore, meta: Checksum): Promise<DirMeta> {
  return decodeDirMeta(await objects.getMetadata(meta, 'dirmeta'), objectId(meta, 'dirmeta'));
}

/** The header of a content object, reading only its first bytes. Not verified: the payload is not read. */
export async function readContentHeader(objects: ObjectStore, checksum: Checksum): Promise<FilezHeader> {
  const key = objectPath(checksum, 'file');
  const id = objectId(checksum, 'file');
  const parse = (b: Buffer): FilezHeader | undefined => {
    try {
      return parseFilezHeader(b, id);
    } catch (e) {
      // Undecodable is corrupt: the object is named by the hash of its header.
      if (isRegistryError(e, 'E_NOT_NORMAL_FORM'))
        throw corrupt(checksum, 'file', 'undecodable header', e.message);
      throw e;
    }
  };
  let buf = await readRange(objects, checksum, key, HEADER_PROBE);
  let h = parse(buf);
  if (!h && buf.length >= 8) {
    // Big xattrs: the first 4 bytes say how long the header is.
    buf = await readRange(objects, checksum, key, 8 + buf.readUInt32BE(0));
    h = parse(buf);
  }
  if (!h) throw corrupt(checksum, 'file', `${buf.length} bytes`, 'truncated .filez header');
  return h;
}

async function readRange(
  objects: ObjectStore,
  checksum: Checksum,
  key: string,
  end: number,
): Promise<Buffer> {
  const s = await objects.blobs.readStream(key, { start: 0, end });
  if (!s) throw missing(checksum, 'file');
  const parts: Buffer[] = [];
  for await (const c of s) parts.push(c);
  return Buffer.concat(parts);
}

function entryType(h: FilezHeader): 'file' | 'symlink' {
  return isSymlink(h.meta) ? 'symlink' : 'file';
}

function joinPath(dir: string, name: string): string {
  return dir === '' ? name : `${dir}/${name}`;
}

/** A directory's files and subdirectories merged into one strcmp-ordered list. */
export function mergedEntries(
  t: DirTree,
): Array<{ name: string; file?: Checksum; dir?: { tree: Checksum; meta: Checksum } }> {
  const out: Array<{ name: string; file?: Checksum; dir?: { tree: Checksum; meta: Checksum } }> = [];
  let i = 0;
  let j = 0;
  while (i < t.files.length || j < t.dirs.length) {
    const f = t.files[i];
    const d = t.dirs[j];
    if (f && (!d || compareNames(f.name, d.name) < 0)) {
      out.push({ name: f.name, file: f.checksum });
      i++;
    } else if (d) {
      out.push({ name: d.name, dir: { tree: d.tree, meta: d.meta } });
      j++;
    }
  }
  return out;
}

/**
 * Every entry of a commit's tree in walk order (see the top of this file), the root first as ''.
 * Content headers are read to tell symlinks from files; all dirtrees and dirmetas are verified.
 */
export async function* walkCommit(objects: ObjectStore, commit: Checksum): AsyncGenerator<TreeEntry> {
  const c = await readCommit(objects, commit);
  // Dirmetas are few (4 in the vectors, ~10 in a Debian sysroot): verify each one once.
  const metas = new Set<Checksum>();
  const checkMeta = async (m: Checksum): Promise<void> => {
    if (metas.has(m)) return;
    await readDirMeta(objects, m);
    metas.add(m);
  };
  await checkMeta(c.rootMeta);
  yield { path: '', type: 'dir', checksum: c.rootTree, metaChecksum: c.rootMeta };
  yield* walkTree(objects, c.rootTree, '', checkMeta);
}

async function* walkTree(
  objects: ObjectStore,
  tree: Checksum,
  dir: string,
  checkMeta: (m: Checksum) => Promise<void>,
): AsyncGenerator<TreeEntry> {
  const entries = mergedEntries(await readDirTree(objects, tree));
  // Headers of one directory are read together (the walk is otherwise one round trip per file), and
  // once per object: /many in the vectors is 1700 entries of one object.
  const cache = new Map<Checksum, Promise<FilezHeader>>();
  const headers = await mapLimit(
    entries.filter((e) => e.file !== undefined),
    LIST_CONCURRENCY,
    (e) => memo(cache, e.file!, () => readContentHeader(objects, e.file!)),
  );
  let k = 0;
  for (const e of entries) {
    const path = joinPath(dir, e.name);
    if (e.file !== undefined) {
      yield { path, type: entryType(headers[k++]!), checksum: e.file };
    } else if (e.dir) {
      await checkMeta(e.dir.meta);
      yield { path, type: 'dir', checksum: e.dir.tree, metaChecksum: e.dir.meta };
      yield* walkTree(objects, e.dir.tree, path, checkMeta);
    }
  }
}

/** Split a user-given path ('/usr//lib/', 'usr/lib', '.', '') into names; '..' is refused. */
export function splitPath(path: string): string[] {
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) {
    throw new RegistryError(
      'E_USAGE',
      `path "${path}" contains "..": paths are relative to the commit's root`,
      {
        path,
      },
    );
  }
  return parts;
}

interface Resolved {
  entry: TreeEntry;
  header?: FilezHeader;
}

async function resolve(objects: ObjectStore, commit: Checksum, path: string): Promise<Resolved> {
  const names = splitPath(path);
  const c = await readCommit(objects, commit);
  let entry: TreeEntry = { path: '', type: 'dir', checksum: c.rootTree, metaChecksum: c.rootMeta };
  const notFound = (why: string): RegistryError =>
    new RegistryError('E_NOT_FOUND', `${path}: ${why} in commit ${commit}`, {
      path,
      object: objectId(commit, 'commit'),
    });
  for (let i = 0; i < names.length; i++) {
    const name = names[i]!;
    if (entry.type !== 'dir') throw notFound(`"${entry.path}" is not a directory`);
    const t = await readDirTree(objects, entry.checksum);
    const p = joinPath(entry.path, name);
    const d = t.dirs.find((x) => x.name === name);
    if (d) {
      entry = { path: p, type: 'dir', checksum: d.tree, metaChecksum: d.meta };
      continue;
    }
    const f = t.files.find((x) => x.name === name);
    if (!f) throw notFound('no such file or directory');
    const header = await readContentHeader(objects, f.checksum);
    entry = { path: p, type: entryType(header), checksum: f.checksum };
    if (i === names.length - 1) return { entry, header };
  }
  return { entry };
}

/** The entry at `path` ('' or '/' is the root). Symlinks are not followed. E_NOT_FOUND naming the path. */
export async function resolvePath(objects: ObjectStore, commit: Checksum, path: string): Promise<TreeEntry> {
  return (await resolve(objects, commit, path)).entry;
}

async function listEntry(
  objects: ObjectStore,
  name: string,
  e: TreeEntry,
  header?: FilezHeader,
): Promise<ListEntry> {
  if (e.type === 'dir') {
    const m = await readDirMeta(objects, e.metaChecksum!);
    return { name, type: 'dir', checksum: e.checksum, mode: m.mode, uid: m.uid, gid: m.gid };
  }
  const h = header ?? (await readContentHeader(objects, e.checksum));
  const out: ListEntry = {
    name,
    type: entryType(h),
    checksum: e.checksum,
    mode: h.meta.mode,
    uid: h.meta.uid,
    gid: h.meta.gid,
  };
  if (out.type === 'symlink') out.target = h.meta.symlinkTarget;
  else out.size = h.size;
  return out;
}

/**
 * The entries of the directory at `path`, in strcmp order, with their metadata (for `sysroot ls`).
 * A path that names a file or symlink lists that one entry, as ls(1) does.
 */
export async function listDir(objects: ObjectStore, commit: Checksum, path: string): Promise<ListEntry[]> {
  const r = await resolve(objects, commit, path);
  const base = r.entry.path.split('/').pop()!;
  if (r.entry.type !== 'dir') return [await listEntry(objects, base, r.entry, r.header)];
  const entries = mergedEntries(await readDirTree(objects, r.entry.checksum));
  // One object often backs many entries (1700 empty files in the vectors' /many): read it once.
  const headers = new Map<Checksum, Promise<FilezHeader>>();
  const metas = new Map<Checksum, Promise<DirMeta>>();
  return mapLimit(entries, LIST_CONCURRENCY, async (e) => {
    if (e.dir) {
      const meta = await memo(metas, e.dir.meta, () => readDirMeta(objects, e.dir!.meta));
      return {
        name: e.name,
        type: 'dir',
        checksum: e.dir.tree,
        mode: meta.mode,
        uid: meta.uid,
        gid: meta.gid,
      };
    }
    const csum = e.file!;
    const h = await memo(headers, csum, () => readContentHeader(objects, csum));
    return listEntry(objects, e.name, { path: '', type: 'file', checksum: csum }, h);
  });
}

/**
 * The bytes of the regular file at `path` (for `sysroot cat`), verified against the content checksum.
 * Files up to WHOLE_FILE_LIMIT are verified before the first byte is returned; larger ones are
 * streamed and the iteration throws E_CORRUPT_OBJECT at the end if the checksum does not match.
 * E_USAGE for a directory or a symlink.
 */
export async function readFileContent(
  objects: ObjectStore,
  commit: Checksum,
  path: string,
): Promise<AsyncIterable<Buffer>> {
  const r = await resolve(objects, commit, path);
  if (r.entry.type === 'dir') {
    throw new RegistryError('E_USAGE', `${path} is a directory in commit ${commit}`, { path });
  }
  const h = r.header!;
  if (r.entry.type === 'symlink') {
    throw new RegistryError(
      'E_USAGE',
      `${path} is a symbolic link to "${h.meta.symlinkTarget}" in commit ${commit}`,
      {
        path,
      },
    );
  }
  const csum = r.entry.checksum;
  if (h.size <= WHOLE_FILE_LIMIT) {
    const { payload } = await objects.getContent(csum);
    return (async function* () {
      if (payload.length > 0) yield payload;
    })();
  }
  return inflateVerified(csum, await objects.readContentStream(csum));
}

/** The value cached under `key`, computed by `make` the first time. */
export function memo<K, V>(cache: Map<K, V>, key: K, make: () => V): V {
  if (cache.has(key)) return cache.get(key)!;
  const v = make();
  cache.set(key, v);
  return v;
}
