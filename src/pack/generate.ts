/**
 * The records of a commit's closure, written to a PackWriter in the order a checkout needs them
 * (docs/format.md "Packs", "Commit packs"): a client reading the pack front to back can create every
 * directory before the first file arrives, then write each file as its record streams past.
 *
 *   commit, commitmeta (if the store has one)
 *   metadata, breadth first from the root (a directory's subdirectories in name order); for each
 *     directory: its dirmeta, then its dirtree (each the first time it is met)
 *   content records (kind 5, inflated), one per distinct file, in the order a depth-first walk of
 *     the dirtrees first meets them: a directory's files in name order, then its subdirectories in
 *     name order
 *
 * Every dirtree, dirmeta and content object appears once: a dirtree met a second time (an identical
 * subtree at another path) is not walked again. A reader therefore has every directory's metadata
 * before the first file, and can create the whole tree, then write each file as its record streams
 * past. (`sysroot checkout` from a store needs no order: it writes 32 files at a time.)
 *
 * An update pack (`exclude`: the closure of the commit the client has) leaves out every object of
 * that closure, and does not walk a subtree whose dirtree is in it: dirtrees are named by their
 * content, so that subtree's whole closure is in it too. The content reads, which are the cost, are
 * then proportional to the change (v1 -> v2 of a Debian sysroot: 288 of 6,129 objects, 244 ms).
 *
 * Everything is verified as it is read (metadata by sha256, content by inflating and re-hashing):
 * a corrupt object fails the generation with E_CORRUPT_OBJECT naming it, a missing one with
 * E_OBJECT_MISSING. The writer's pack is then unusable; the caller must not keep it.
 */

import { Budget, type Content, loadContent, readMetadata } from '../checkout/content.js';
import { mapLimit } from '../map-limit.js';
import {
  type Checksum,
  contentHashPrefix,
  type DirTree,
  decodeCommit,
  decodeCommitMeta,
  decodeDirMeta,
  decodeDirTree,
  objectId,
  objectPath,
} from '../objects/index.js';
import type { ObjectStore } from '../store/object-store.js';
import { KIND } from './format.js';
import type { PackWriter } from './writer.js';

/** The objects of a closure, by kind (the commit object aside). */
export interface ClosureSets {
  trees: Set<Checksum>;
  metas: Set<Checksum>;
  files: Set<Checksum>;
}

export interface PackContents {
  /** Records written, by kind. */
  commits: number;
  metadata: number;
  files: number;
  /** Uncompressed bytes of the content records' files. */
  fileBytes: number;
}

/**
 * Dirtrees read at once: on a directory they are in the page cache (~20 µs each), on S3 each is a
 * request of a few ms, so 32 in flight hide the latency without queueing hundreds.
 */
const TREE_CONCURRENCY = 32;

/**
 * Content objects read and inflated ahead of the one being written: enough to keep libuv's 4
 * threads inflating while the writer copies and the zstd workers compress (16, 32 and 64 measured
 * within 5% on the Debian sysroot); the budget bounds the memory they hold.
 */
const CONTENT_AHEAD = 32;
const CONTENT_BUDGET = 64 * 1024 * 1024;

/** Every dirtree, dirmeta and file object of a commit's closure (reads and verifies each dirtree). */
export async function closureSets(objects: ObjectStore, commit: Checksum): Promise<ClosureSets> {
  const c = decodeCommit(await readMetadata(objects, commit, 'commit'), objectId(commit, 'commit'));
  const sets: ClosureSets = { trees: new Set([c.rootTree]), metas: new Set([c.rootMeta]), files: new Set() };
  let level = [c.rootTree];
  while (level.length > 0) {
    const trees = await mapLimit(level, TREE_CONCURRENCY, async (t) =>
      decodeDirTree(await readMetadata(objects, t, 'dirtree'), objectId(t, 'dirtree')),
    );
    const next: Checksum[] = [];
    for (const t of trees) {
      for (const f of t.files) sets.files.add(f.checksum);
      for (const d of t.dirs) {
        sets.metas.add(d.meta);
        if (!sets.trees.has(d.tree)) {
          sets.trees.add(d.tree);
          next.push(d.tree);
        }
      }
    }
    level = next;
  }
  return sets;
}

/**
 * Write the records of `commit`'s closure, less `exclude`, to `writer` (see the top of this file for
 * the order). Does not call `writer.finish()`.
 */
export async function writeCommitRecords(
  objects: ObjectStore,
  writer: PackWriter,
  commit: Checksum,
  exclude?: ClosureSets,
): Promise<PackContents> {
  const out: PackContents = { commits: 1, metadata: 0, files: 0, fileBytes: 0 };
  const commitBytes = await readMetadata(objects, commit, 'commit');
  const c = decodeCommit(commitBytes, objectId(commit, 'commit'));
  await writer.add(KIND.commit, commit, commitBytes);
  // Not content-addressed (signatures may be added): decoded here so that a damaged one fails now,
  // not in every client.
  const commitmeta = await objects.blobs.read(objectPath(commit, 'commitmeta'));
  if (commitmeta) {
    decodeCommitMeta(commitmeta, objectId(commit, 'commitmeta'));
    await writer.add(KIND.commitmeta, commit, commitmeta);
    out.metadata++;
  }

  const metas = new Set<Checksum>(exclude?.metas);
  const trees = new Set<Checksum>(exclude?.trees);
  const addMeta = async (m: Checksum): Promise<void> => {
    if (metas.has(m)) return;
    metas.add(m);
    const bytes = await readMetadata(objects, m, 'dirmeta');
    decodeDirMeta(bytes, objectId(m, 'dirmeta'));
    await writer.add(KIND.dirmeta, m, bytes);
    out.metadata++;
  };

  // Metadata, breadth first. The dirtrees the level will write are read together, then written in order.
  const walked = new Map<Checksum, DirTree>();
  let level: Array<{ tree: Checksum; meta: Checksum }> = [{ tree: c.rootTree, meta: c.rootMeta }];
  while (level.length > 0) {
    const wanted = [...new Set(level.map((d) => d.tree).filter((t) => !trees.has(t)))];
    const read = await mapLimit(wanted, TREE_CONCURRENCY, (t) => readMetadata(objects, t, 'dirtree'));
    const bytesOf = new Map(wanted.map((t, i) => [t, read[i]!]));
    const next: typeof level = [];
    for (const d of level) {
      await addMeta(d.meta);
      if (trees.has(d.tree)) continue;
      trees.add(d.tree);
      const bytes = bytesOf.get(d.tree)!;
      const t = decodeDirTree(bytes, objectId(d.tree, 'dirtree'));
      await writer.add(KIND.dirtree, d.tree, bytes);
      out.metadata++;
      walked.set(d.tree, t);
      for (const sub of t.dirs) next.push({ tree: sub.tree, meta: sub.meta });
    }
    level = next;
  }

  // Content, depth first over the dirtrees just written (each once): a directory's files, then its
  // subdirectories, both in name order.
  const files = new Set<Checksum>(exclude?.files);
  const fileOrder: Checksum[] = [];
  const visit = (tree: Checksum): void => {
    const t = walked.get(tree);
    if (!t) return;
    walked.delete(tree);
    for (const f of t.files) {
      if (files.has(f.checksum)) continue;
      files.add(f.checksum);
      fileOrder.push(f.checksum);
    }
    for (const d of t.dirs) visit(d.tree);
  };
  visit(c.rootTree);
  await writeContents(objects, writer, fileOrder, out);
  return out;
}

/**
 * Content records in `order`, each read and verified ahead of the writer (CONTENT_AHEAD, within
 * CONTENT_BUDGET bytes of payload) and written in order. Files too large to hold are streamed into
 * the pack as they inflate; their checksum is known only at the end, so a mismatch fails the pack.
 */
async function writeContents(
  objects: ObjectStore,
  writer: PackWriter,
  order: Checksum[],
  out: PackContents,
): Promise<void> {
  const budget = new Budget(CONTENT_BUDGET);
  const pending: Array<Promise<Content>> = [];
  let started = 0;
  let lastTurn: Promise<void> = Promise.resolve();
  const startNext = (): void => {
    const turn = new Turn(budget, lastTurn);
    lastTurn = turn.done;
    const p = loadContent(objects, order[started++]!, turn);
    // Awaited in order below; a failure ahead of the writer must not count as unhandled meanwhile.
    p.then(turn.pass, turn.pass);
    pending.push(p);
  };
  while (started < order.length && pending.length < CONTENT_AHEAD) startNext();
  for (let i = 0; i < order.length; i++) {
    const content = await pending.shift()!;
    if (started < order.length) startNext();
    const checksum = order[i]!;
    if (content.payload) {
      try {
        await writer.addContent(checksum, content.meta, content.payload);
      } finally {
        budget.release(content.size);
      }
    } else {
      const prefix = contentHashPrefix(content.meta);
      const chunks = await content.open();
      await writer.addStream(
        KIND.content,
        checksum,
        prefix.length + content.size,
        (async function* () {
          yield prefix;
          yield* chunks;
        })(),
      );
    }
    out.files++;
    out.fileBytes += content.size;
  }
}

/**
 * One read-ahead's share of the budget, taken in the order the reads were started. Reads finish out
 * of order (S3), and the budget is released in write order: a later read holding the budget while
 * the next one to write waits for it would wait forever. So each takes its turn after the one
 * before it has taken its own (or finished without needing any: a symlink, a streamed file).
 */
class Turn extends Budget {
  readonly done: Promise<void>;
  private mine!: () => void;

  constructor(
    private readonly shared: Budget,
    private readonly prev: Promise<void>,
  ) {
    super(0);
    const own = new Promise<void>((resolve) => {
      this.mine = resolve;
    });
    this.done = Promise.all([prev, own]).then(() => {});
  }

  /** This read will not ask for (more) budget: let the next one take its turn. */
  readonly pass = (): void => this.mine();

  override async acquire(n: number): Promise<void> {
    await this.prev;
    await this.shared.acquire(n);
    this.mine();
  }

  override release(n: number): void {
    this.shared.release(n);
  }
}
