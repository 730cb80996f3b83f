/**
 * The tree being imported, in memory: names and checksums only (file bytes never stay here), plus
 * the ownership/permission rules of `ostree commit` and the bottom-up write of dirtree/dirmeta.
 */
import { type DeflateSettings, deflateSettings } from '../compress/deflate.js';
import { RegistryError } from '../errors.js';
import {
  type Checksum,
  compareNames,
  type DirMeta,
  encodeDirMeta,
  encodeDirTree,
  type FileMeta,
  S_IFDIR,
  S_IFREG,
  SYMLINK_MODE,
  sha256,
  type Xattr,
} from '../objects/index.js';
import type { ObjectStore } from '../store/object-store.js';
import type { HashOnly } from './content.js';

export interface ImportOptions {
  /** Overrides uid/gid of every entry including the root dir (ostree --owner-uid/--owner-gid). */
  owner?: { uid: number; gid: number };
  /**
   * ostree --canonical-permissions: uid=gid=0; files mode&(0100000|0755); dirs mode&(040000|0755);
   * symlinks unchanged; all xattrs dropped. Wins over `owner`, as in ostree, which applies it last.
   */
  canonicalPermissions?: boolean;
  /** Drop device nodes, fifos and sockets (listed in skippedSpecial) instead of refusing the tree. */
  skipSpecial?: boolean;
  /**
   * A compressed tarball may expand at most this many times its compressed size past its first
   * 64 MiB (src/tar/compression.ts DEFAULT_EXPANSION: 100); 0 = no limit.
   */
  maxExpansion?: number;
  /**
   * Deflate the .filez payloads with zlib at this level, 0-9. Default: igzip (ISA-L) at its level
   * 1 when its addon is built, else zlib at 1 (src/compress/deflate.js): ostree's zlib 6 costs about
   * twice zlib 1's CPU, and 9x igzip's, for a few percent smaller objects, and clients accept any
   * valid deflate stream (FORMAT.md §3).
   */
  zlibLevel?: number;
  onProgress?: (p: { files: number; bytes: number }) => void;
  /**
   * Directories only: hash every file on this pool and write no content object (see HashOnly in
   * content.ts); dirtree and dirmeta objects still go to the store given to the importer.
   */
  hashOnly?: HashOnly;
  /** Stops the import (its reason is thrown) at the next few hundred entries or tar member. */
  signal?: AbortSignal;
}

export interface ImportResult {
  rootTree: Checksum;
  rootMeta: Checksum;
  /** Regular files + symlinks (each path counts, hard links included). */
  fileCount: number;
  /** Sum of regular-file sizes (each path counts). */
  totalSize: number;
  /** Paths dropped by skipSpecial, sorted bytewise. */
  skippedSpecial: string[];
  objectsWritten: number;
  objectsExisting: number;
}

/** A regular file or symlink; `checksum` arrives when the pool has hashed it. Shared by hard links. */
export interface FileNode {
  checksum: Checksum | undefined;
  /** Payload bytes (0 for a symlink). */
  size: number;
  /** Set for symlinks (tar import refuses paths through them). */
  symlink?: boolean;
}

export interface DirNode {
  meta: DirMeta;
  files: Map<string, FileNode>;
  dirs: Map<string, DirNode>;
  /** Set by TreeWriter.finish: the directory's checksums; its children have been released. */
  done?: { tree: Checksum; meta: Checksum };
}

export function newDir(meta: DirMeta): DirNode {
  return { meta, files: new Map(), dirs: new Map() };
}

/** A directory implied by a tar member's path without its own entry, as ostree's tar import does. */
export const IMPLIED_DIR: DirMeta = { uid: 0, gid: 0, mode: S_IFDIR | 0o755, xattrs: [] };

export type EntryKind = 'file' | 'symlink' | 'dir';

/** Ownership and permissions after --owner-uid/gid and --canonical-permissions (`perms`: mode & 0o7777). */
export interface MetaRules {
  file(uid: number, gid: number, perms: number, xattrs: Xattr[]): FileMeta;
  symlink(uid: number, gid: number, target: string, xattrs: Xattr[]): FileMeta;
  dir(uid: number, gid: number, perms: number, xattrs: Xattr[]): DirMeta;
  /** Whether xattrs are used at all (reading them is skipped when they would be dropped). */
  keepXattrs: boolean;
}

export function metaRules(opts: ImportOptions): MetaRules {
  const canonical = opts.canonicalPermissions === true;
  const owner = opts.owner;
  if (owner) {
    for (const v of [owner.uid, owner.gid]) {
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
        throw new RegistryError('E_USAGE', `owner uid/gid must be integers in 0..4294967295, got ${v}`);
      }
    }
  }
  const uidOf = (uid: number) => (canonical ? 0 : (owner?.uid ?? uid));
  const gidOf = (gid: number) => (canonical ? 0 : (owner?.gid ?? gid));
  const xa = (x: Xattr[]) => (canonical ? [] : x);
  return {
    keepXattrs: !canonical,
    file: (uid, gid, perms, xattrs) => ({
      uid: uidOf(uid),
      gid: gidOf(gid),
      mode: S_IFREG | (canonical ? perms & 0o755 : perms & 0o7777),
      symlinkTarget: '',
      xattrs: xa(xattrs),
    }),
    symlink: (uid, gid, target, xattrs) => ({
      uid: uidOf(uid),
      gid: gidOf(gid),
      mode: SYMLINK_MODE,
      symlinkTarget: target,
      xattrs: xa(xattrs),
    }),
    dir: (uid, gid, perms, xattrs) => ({
      uid: uidOf(uid),
      gid: gidOf(gid),
      mode: S_IFDIR | (canonical ? perms & 0o755 : perms & 0o7777),
      xattrs: xa(xattrs),
    }),
  };
}

/** How the import deflates: the fastest engine at hand, or zlib at the level asked for. */
export function deflateOf(opts: ImportOptions): DeflateSettings {
  const level = opts.zlibLevel;
  if (level !== undefined && (!Number.isInteger(level) || level < 0 || level > 9)) {
    throw new RegistryError('E_USAGE', `zlib level must be an integer 0-9, got ${level}`);
  }
  return deflateSettings(level);
}

/** Metadata writes in flight: enough to hide the store's latency, few enough to stay polite to S3. */
const META_CONCURRENCY = 16;
/** Encoded directories waiting to be written before the producer is made to wait. */
const META_QUEUE = 256;

/**
 * Encodes finished directories (dirtree + dirmeta) and writes them as it goes, so encoded bytes never
 * pile up: holding every dirtree of /usr (20k directories) until the end peaked at 27 MB.
 */
export class TreeWriter {
  fileCount = 0;
  totalSize = 0;
  written = 0;
  existing = 0;
  private readonly queued = new Set<Checksum>();
  private readonly queue: { checksum: Checksum; type: 'dirtree' | 'dirmeta'; bytes: Buffer }[] = [];
  private running = 0;
  private failure: { error: unknown } | undefined;
  private waiters: (() => void)[] = [];

  constructor(private readonly objects: ObjectStore) {}

  /**
   * Encode a directory whose files all have checksums and whose subdirectories are all done, queue
   * its objects, and release its children: from here on it is two checksums.
   */
  finish(node: DirNode, path: string): { tree: Checksum; meta: Checksum } {
    const files = [];
    for (const [name, f] of node.files) {
      if (f.checksum === undefined) {
        throw new RegistryError('E_INTERNAL', `no checksum for ${path ? `${path}/` : ''}${name}`);
      }
      this.fileCount++;
      this.totalSize += f.size;
      files.push({ name, checksum: f.checksum });
    }
    const dirs = [];
    for (const [name, d] of node.dirs) {
      if (!d.done)
        throw new RegistryError('E_INTERNAL', `directory ${path ? `${path}/` : ''}${name} is not done`);
      dirs.push({ name, tree: d.done.tree, meta: d.done.meta });
    }
    const done = {
      tree: this.add('dirtree', encodeDirTree({ files, dirs })),
      meta: this.add('dirmeta', encodeDirMeta(node.meta)),
    };
    node.done = done;
    node.files = EMPTY_FILES;
    node.dirs = EMPTY_DIRS;
    return done;
  }

  /** Every directory from the leaves up (the tar import, whose tree is only final at the end). */
  async finishAll(root: DirNode): Promise<{ tree: Checksum; meta: Checksum }> {
    // Iterative: a hostile archive can nest 2000 directories deep within PATH_MAX.
    const stack: { node: DirNode; path: string; expanded: boolean }[] = [
      { node: root, path: '', expanded: false },
    ];
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      if (!top.expanded) {
        top.expanded = true;
        for (const [name, d] of top.node.dirs) {
          if (!d.done)
            stack.push({ node: d, path: top.path ? `${top.path}/${name}` : name, expanded: false });
        }
        continue;
      }
      stack.pop();
      this.finish(top.node, top.path);
      await this.drain();
    }
    return root.done!;
  }

  /** Wait while too much is queued; throws the first write failure. */
  async drain(): Promise<void> {
    while (this.queue.length > META_QUEUE && !this.failure)
      await new Promise<void>((r) => this.waiters.push(r));
    if (this.failure) throw this.failure.error;
  }

  /** Wait for every write; throws the first failure. */
  async flush(): Promise<void> {
    while (this.running > 0 || (this.queue.length > 0 && !this.failure)) {
      await new Promise<void>((r) => this.waiters.push(r));
    }
    if (this.failure) throw this.failure.error;
  }

  /** After a failure elsewhere: drop what is queued and wait for writes in flight (they own temp files). */
  async settle(): Promise<void> {
    this.queue.length = 0;
    while (this.running > 0) await new Promise<void>((r) => this.waiters.push(r));
  }

  private add(type: 'dirtree' | 'dirmeta', bytes: Buffer): Checksum {
    const checksum = sha256(bytes);
    if (!this.queued.has(checksum)) {
      this.queued.add(checksum);
      this.queue.push({ checksum, type, bytes });
      this.pump();
    }
    return checksum;
  }

  private pump(): void {
    while (this.running < META_CONCURRENCY && this.queue.length > 0 && !this.failure) {
      const job = this.queue.shift()!;
      this.running++;
      this.write(job.checksum, job.type, job.bytes)
        .catch((e: unknown) => {
          this.failure ??= { error: e };
        })
        .finally(() => {
          this.running--;
          this.pump();
          for (const w of this.waiters.splice(0)) w();
        });
    }
  }

  private async write(checksum: Checksum, type: 'dirtree' | 'dirmeta', bytes: Buffer): Promise<void> {
    if (await this.objects.has(checksum, type)) {
      this.existing++;
    } else {
      await this.objects.putMetadata(type, bytes);
      this.written++;
    }
  }
}

/** Shared by every finished directory; never written to (finish() is the only place that swaps them in). */
const EMPTY_FILES: Map<string, FileNode> = new Map();
const EMPTY_DIRS: Map<string, DirNode> = new Map();

/** Bytewise (strcmp) order of paths, as everywhere else in OSTree. */
export function sortPaths(paths: Iterable<string>): string[] {
  return [...new Set(paths)].sort(compareNames);
}
