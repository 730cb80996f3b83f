/**
 * A commit's closure: the commit, its dirtrees and dirmeta, and every content object they name.
 * Walked to index a commit, to check that a commit is complete before a ref may point at it (with
 * its figures: total size and file count), and by fsck.
 *
 * A Debian sysroot's closure is ~6,100 objects in ~680 distinct dirtrees. Asking the store about
 * each one, and reading each file's header for the total size one at a time, made a ref move cost
 * 1.4–2.0 s on a directory (~40 s on S3), even for a release that adds 288 objects to its parent.
 * The check is cheap because two facts stay true once learnt, as nothing is ever deleted:
 *
 *   - an object found in the store (or verified and stored by an upload) stays there;
 *   - a dirtree whose whole closure was found complete stays complete, with the same figures.
 *     Dirtrees are named by the hash of their contents, so any commit holding that dirtree holds
 *     that same complete subtree: the walk stops there and takes its figures as they are.
 *
 * So checking v2 on top of a checked v1 reads only the dirtrees v2 changed and asks the store only
 * about objects never seen before. The facts come from the node-local index (`ClosureFacts`);
 * anything it does not know is asked of the store, so a missing or stale index costs time, never
 * correctness.
 */
import { RegistryError } from '../errors.js';
import {
  type Checksum,
  type Commit,
  type DirTree,
  decodeCommit,
  decodeDirTree,
  type ObjectType,
  objectId,
} from '../objects/index.js';
import type { ObjectRef, ObjectStore } from '../store/object-store.js';

export interface TreeFigures {
  fileCount: number;
  /** Uncompressed bytes of every file path; null when the sizes of some files were not read. */
  totalSize: number | null;
}

/** What is already known to be in the store. Every answer must be true of the store; undefined = not known. */
export interface ClosureFacts {
  /** A dirtree whose whole closure was found in the store, with its figures. */
  completeTree(tree: Checksum): TreeFigures | undefined;
  /** An object known to be stored; for a file, its uncompressed size (null if not known). */
  storedObject(checksum: Checksum, type: ObjectType): { size: number | null } | undefined;
  /** A stored dirtree, verified against its checksum and decoded, if at hand (saves a read and a decode). */
  dirtree?(tree: Checksum): DirTree | undefined;
  /** Runs `fn`, whose questions come together, as one batch (an index: one read transaction). */
  batch?<T>(fn: () => T): T;
}

/** Facts learnt by a check: the caller remembers them so that the next check can skip the work. */
export interface LearntFacts {
  trees: Array<{ checksum: Checksum } & TreeFigures>;
  objects: Array<ObjectRef & { size: number | null }>;
}

export interface ClosureCheck {
  /** Objects of the closure the store lacks; empty when the closure is complete. */
  missing: ObjectRef[];
  /** The commit's figures, when its closure is complete and the size of every file is known. */
  stats?: { totalSize: number; fileCount: number };
  learnt: LearntFacts;
  /** Store reads made: dirtrees read, and other objects looked up (stat, HEAD or a header read). */
  work: { treesRead: number; objectsLookedUp: number };
}

export interface CheckOptions {
  /**
   * Read the size of every file not known yet (one small read instead of an existence check), so
   * that `figures.totalSize` is a number. Off when the caller knows the figures already (an import).
   */
  sizes: boolean;
  /** The commit object, when the caller has read it already. */
  commit?: Commit;
}

/** Knows nothing: every question goes to the store (fsck, and the figures of a lone commit). */
export const NO_FACTS: ClosureFacts = { completeTree: () => undefined, storedObject: () => undefined };

/** Facts held in memory, over another source (reindex learns while it walks every commit). */
export class MemoryFacts implements ClosureFacts {
  private readonly trees = new Map<Checksum, TreeFigures>();
  private readonly objects = new Map<string, { size: number | null }>();

  constructor(private readonly base: ClosureFacts = NO_FACTS) {}

  completeTree(tree: Checksum): TreeFigures | undefined {
    return this.trees.get(tree) ?? this.base.completeTree(tree);
  }

  storedObject(checksum: Checksum, type: ObjectType): { size: number | null } | undefined {
    return this.objects.get(`${checksum}.${type}`) ?? this.base.storedObject(checksum, type);
  }

  learn(facts: LearntFacts): void {
    for (const { checksum, ...figures } of facts.trees) this.trees.set(checksum, figures);
    for (const o of facts.objects) this.objects.set(`${o.checksum}.${o.type}`, { size: o.size });
  }
}

/**
 * Store reads in flight at once: each is a stat or a small read (~0.1 ms of a libuv thread on a
 * directory) or a request (2–10 ms to S3), so 32 keep 4 threads or an S3 connection pool busy
 * without queueing thousands of requests.
 */
const CHECK_CONCURRENCY = 32;

/** Objects of a commit's closure, each once, in walk order (reads every dirtree; no facts used). */
export async function* commitClosure(objects: ObjectStore, commit: Checksum): AsyncGenerator<ObjectRef> {
  const c = decodeCommit(await objects.getMetadata(commit, 'commit'), objectId(commit, 'commit'));
  yield { checksum: commit, type: 'commit' };
  const seen = new Set<string>();
  const once = (checksum: Checksum, type: ObjectType): boolean => {
    const k = `${checksum}.${type}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  };
  const stack: Array<[Checksum, Checksum]> = [[c.rootTree, c.rootMeta]];
  while (stack.length) {
    const [tree, meta] = stack.pop()!;
    if (once(meta, 'dirmeta')) {
      await objects.getMetadata(meta, 'dirmeta');
      yield { checksum: meta, type: 'dirmeta' };
    }
    if (!once(tree, 'dirtree')) continue;
    const t = decodeDirTree(await objects.getMetadata(tree, 'dirtree'), objectId(tree, 'dirtree'));
    yield { checksum: tree, type: 'dirtree' };
    for (const f of t.files) if (once(f.checksum, 'file')) yield { checksum: f.checksum, type: 'file' };
    for (const d of t.dirs) stack.push([d.tree, d.meta]);
  }
}

/** A dirtree as the walk needs it: file checksums (one per path) and sub-directories. */
interface TreeNode {
  files: Checksum[];
  dirs: Array<{ tree: Checksum; meta: Checksum }>;
}

type Task = { kind: 'dirtree' | 'dirmeta' | 'file'; checksum: Checksum };

/**
 * Check a commit's closure against the store, skipping what `facts` already vouch for, and compute
 * its figures. Reads are concurrent (CHECK_CONCURRENCY); a missing object does not stop the walk,
 * so `missing` lists every missing object reachable through the dirtrees that are there.
 */
export async function checkClosure(
  objects: ObjectStore,
  commit: Checksum,
  facts: ClosureFacts,
  opts: CheckOptions,
): Promise<ClosureCheck> {
  const learnt: LearntFacts = { trees: [], objects: [] };
  const work = { treesRead: 0, objectsLookedUp: 0 };
  const missing: ObjectRef[] = [];
  let c = opts.commit;
  if (!c) {
    const bytes = await readMetadata(objects, commit, 'commit');
    if (!bytes) return { missing: [{ checksum: commit, type: 'commit' }], learnt, work };
    c = decodeCommit(bytes, objectId(commit, 'commit'));
  }

  const known = new Map<Checksum, TreeFigures>();
  const nodes = new Map<Checksum, TreeNode | 'reading' | 'missing'>();
  const fileSize = new Map<Checksum, number | null>();
  const metaSeen = new Set<Checksum>();
  const absent = new Set<string>();
  const tasks: Task[] = [];

  /**
   * Dirtrees found at hand (facts.dirtree), waiting to be expanded. They are expanded in the same
   * turn, not as tasks: the walk of a commit just pushed, whose every dirtree is at hand, is then
   * synchronous and inside one facts.batch. As ~680 tasks, each with its own read transaction and
   * its tree decoded again, it took ~40 ms of a ~75 ms ref move (push of v1, 2026-12-08).
   */
  const atHand: Array<[Checksum, DirTree]> = [];
  const visitTree = (tree: Checksum): void => {
    if (known.has(tree) || nodes.has(tree)) return;
    const k = facts.completeTree(tree);
    if (k && (k.totalSize !== null || !opts.sizes)) {
      known.set(tree, k);
      return;
    }
    nodes.set(tree, 'reading');
    const t = facts.dirtree?.(tree);
    if (t) atHand.push([tree, t]);
    else tasks.push({ kind: 'dirtree', checksum: tree });
  };
  const visitMeta = (meta: Checksum): void => {
    if (metaSeen.has(meta)) return;
    metaSeen.add(meta);
    if (!facts.storedObject(meta, 'dirmeta')) tasks.push({ kind: 'dirmeta', checksum: meta });
  };
  const visitFile = (file: Checksum): void => {
    if (fileSize.has(file)) return;
    const k = facts.storedObject(file, 'file');
    if (k && (k.size !== null || !opts.sizes)) fileSize.set(file, k.size);
    else {
      fileSize.set(file, null);
      tasks.push({ kind: 'file', checksum: file });
    }
  };
  /** A dirtree's node, and what it names visited; then every tree found at hand meanwhile (a stack, not recursion). */
  const expand = (tree: Checksum, t: DirTree): void => {
    for (let next: [Checksum, DirTree] | undefined = [tree, t]; next; next = atHand.pop()) {
      const [checksum, node] = next;
      nodes.set(checksum, { files: node.files.map((f) => f.checksum), dirs: node.dirs });
      for (const f of node.files) visitFile(f.checksum);
      for (const d of node.dirs) {
        visitMeta(d.meta);
        visitTree(d.tree);
      }
    }
  };
  const batched = (fn: () => void): void => (facts.batch ? facts.batch(fn) : fn());
  const lacks = (checksum: Checksum, type: ObjectType): void => {
    absent.add(`${checksum}.${type}`);
    missing.push({ checksum, type });
  };

  const run = async (task: Task): Promise<void> => {
    const { kind, checksum } = task;
    if (kind === 'dirtree') {
      work.treesRead++;
      const bytes = await readMetadata(objects, checksum, 'dirtree');
      if (!bytes) {
        nodes.set(checksum, 'missing');
        lacks(checksum, 'dirtree');
        return;
      }
      const t = decodeDirTree(bytes, objectId(checksum, 'dirtree'));
      batched(() => expand(checksum, t));
      return;
    }
    work.objectsLookedUp++;
    if (kind === 'file' && opts.sizes) {
      // One small read proves the object is there and gives its size: no separate existence check.
      const h = await objects.readFileHeader(checksum);
      if (!h) return lacks(checksum, 'file');
      fileSize.set(checksum, h.size);
      learnt.objects.push({ checksum, type: 'file', size: h.size });
    } else if (await objects.has(checksum, kind)) {
      learnt.objects.push({ checksum, type: kind, size: null });
    } else lacks(checksum, kind);
  };

  batched(() => {
    visitMeta(c.rootMeta);
    visitTree(c.rootTree);
    const first = atHand.pop();
    if (first) expand(...first);
  });
  await drain(tasks, CHECK_CONCURRENCY, run);

  // Figures bottom-up, each dirtree once (an identical subtree at two paths counts twice, as a
  // checkout writes it twice). Every complete dirtree is learnt, even inside an incomplete commit.
  const figures = new Map<Checksum, TreeFigures | undefined>();
  const figuresOf = (tree: Checksum): TreeFigures | undefined => {
    const k = known.get(tree);
    if (k) return k;
    if (figures.has(tree)) return figures.get(tree);
    const node = nodes.get(tree);
    let r: TreeFigures | undefined;
    if (node && node !== 'missing' && node !== 'reading') {
      let complete = true;
      let fileCount = node.files.length;
      let totalSize: number | null = 0;
      // A complete commit has nothing absent: no "checksum.file" key built for each of ~6,100 files.
      const anyAbsent = absent.size > 0;
      for (const f of node.files) {
        const s = fileSize.get(f);
        if (anyAbsent && absent.has(`${f}.file`)) complete = false;
        else totalSize = s === null || s === undefined || totalSize === null ? null : totalSize + s;
      }
      for (const d of node.dirs) {
        const sub = figuresOf(d.tree);
        if (!sub || (anyAbsent && absent.has(`${d.meta}.dirmeta`))) complete = false;
        else {
          fileCount += sub.fileCount;
          totalSize = sub.totalSize === null || totalSize === null ? null : totalSize + sub.totalSize;
        }
      }
      if (complete) {
        r = { fileCount, totalSize };
        learnt.trees.push({ checksum: tree, ...r });
      }
    }
    figures.set(tree, r);
    return r;
  };
  const root = figuresOf(c.rootTree);
  const complete = root && root.totalSize !== null && !absent.has(`${c.rootMeta}.dirmeta`);
  return {
    missing,
    ...(complete ? { stats: { totalSize: root.totalSize!, fileCount: root.fileCount } } : {}),
    learnt,
    work,
  };
}

/** Objects of a commit's closure that the store does not have (asks the store about every one). */
export async function missingObjects(objects: ObjectStore, commit: Checksum): Promise<ObjectRef[]> {
  return (await checkClosure(objects, commit, NO_FACTS, { sizes: false })).missing;
}

/**
 * Total regular-file bytes and file count of a commit, counting every path (as a checkout would),
 * from the store alone. Throws E_OBJECT_MISSING if the closure is incomplete.
 */
export async function commitStats(
  objects: ObjectStore,
  commit: Checksum,
): Promise<{ totalSize: number; fileCount: number }> {
  const r = await checkClosure(objects, commit, NO_FACTS, { sizes: true });
  if (r.stats) return r.stats;
  const m = r.missing[0] ?? { checksum: commit, type: 'commit' };
  const id = objectId(m.checksum, m.type);
  throw new RegistryError('E_OBJECT_MISSING', `object ${id} is missing`, { object: id });
}

/** A metadata object, verified; undefined if the store does not have it. */
async function readMetadata(
  objects: ObjectStore,
  checksum: Checksum,
  type: 'commit' | 'dirtree',
): Promise<Buffer | undefined> {
  try {
    return await objects.getMetadata(checksum, type);
  } catch (e) {
    if (e instanceof RegistryError && e.code === 'E_OBJECT_MISSING') return undefined;
    throw e;
  }
}

/**
 * Run `fn` over a queue that `fn` itself may grow, at most `limit` at a time; resolves when the
 * queue is empty and nothing is running, rejects at the first error.
 */
function drain<T>(queue: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  return new Promise((resolve, reject) => {
    let next = 0;
    let running = 0;
    let failed = false;
    const pump = (): void => {
      if (failed) return;
      if (next === queue.length && running === 0) {
        resolve();
        return;
      }
      while (running < limit && next < queue.length) {
        running++;
        fn(queue[next++]!).then(
          () => {
            running--;
            pump();
          },
          (e: unknown) => {
            failed = true;
            reject(e);
          },
        );
      }
    };
    pump();
  });
}
