/**
 * Walks over a commit's objects by checksum (each object once), reading only metadata objects.
 * Used to index a new commit, to check that a commit is complete before a ref may point at it,
 * and by fsck.
 */

import {
  type Checksum,
  decodeCommit,
  decodeDirTree,
  type ObjectType,
  objectId,
  parseFilezHeader,
} from '../objects/index.js';
import type { ObjectRef, ObjectStore } from '../store/object-store.js';
import { missing } from '../store/object-store.js';

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

/** How many existence checks run at once: each is a stat (or a HEAD on S3), ~6,000 per sysroot. */
const CHECK_CONCURRENCY = 32;

/**
 * A commit's closure, and the objects of it that the store does not have (content objects are
 * checked by existence; metadata objects are read, so a missing one ends the walk there).
 */
export async function checkClosure(
  objects: ObjectStore,
  commit: Checksum,
): Promise<{ closure: ObjectRef[]; missing: ObjectRef[] }> {
  const closure: ObjectRef[] = [];
  const missing: ObjectRef[] = [];
  try {
    for await (const o of commitClosure(objects, commit)) closure.push(o);
  } catch (e) {
    const m = /^([0-9a-f]{64})\.(\w+)$/.exec(
      ((e as { details?: { object?: string } }).details?.object ?? '') as string,
    );
    if (m && (e as { code?: string }).code === 'E_OBJECT_MISSING') {
      missing.push({ checksum: m[1]!, type: m[2] as ObjectType });
    } else throw e;
  }
  const files = closure.filter((o) => o.type === 'file');
  let next = 0;
  await Promise.all(
    Array.from({ length: CHECK_CONCURRENCY }, async () => {
      while (next < files.length) {
        const o = files[next++]!;
        if (!(await objects.has(o.checksum, 'file'))) missing.push(o);
      }
    }),
  );
  return { closure, missing };
}

/** Objects of a commit's closure that the store does not have. */
export async function missingObjects(objects: ObjectStore, commit: Checksum): Promise<ObjectRef[]> {
  return (await checkClosure(objects, commit)).missing;
}

/** Total regular-file bytes and file count of a commit, counting every path (as a checkout would). */
export async function commitStats(
  objects: ObjectStore,
  commit: Checksum,
): Promise<{ totalSize: number; fileCount: number }> {
  const c = decodeCommit(await objects.getMetadata(commit, 'commit'), objectId(commit, 'commit'));
  const fileSize = new Map<Checksum, number>();
  const treeStats = new Map<Checksum, { totalSize: number; fileCount: number }>();
  const sizeOf = async (checksum: Checksum): Promise<number> => {
    let s = fileSize.get(checksum);
    if (s !== undefined) return s;
    // The header is a few hundred bytes; 4 KiB almost always holds it, else read it all.
    const stream = await objects.blobs.readStream(
      `objects/${checksum.slice(0, 2)}/${checksum.slice(2)}.filez`,
      {
        start: 0,
        end: 4096,
      },
    );
    if (!stream) throw missing(checksum, 'file');
    const chunks: Buffer[] = [];
    for await (const ch of stream) chunks.push(ch);
    let h = parseFilezHeader(Buffer.concat(chunks), objectId(checksum, 'file'));
    if (!h) h = parseFilezHeader((await objects.getRaw(checksum, 'file')) ?? Buffer.alloc(0));
    if (!h) throw missing(checksum, 'file');
    s = h.size;
    fileSize.set(checksum, s);
    return s;
  };
  const walk = async (tree: Checksum): Promise<{ totalSize: number; fileCount: number }> => {
    const memo = treeStats.get(tree);
    if (memo) return memo;
    const t = decodeDirTree(await objects.getMetadata(tree, 'dirtree'), objectId(tree, 'dirtree'));
    const r = { totalSize: 0, fileCount: t.files.length };
    for (const f of t.files) r.totalSize += await sizeOf(f.checksum);
    for (const d of t.dirs) {
      const sub = await walk(d.tree);
      r.totalSize += sub.totalSize;
      r.fileCount += sub.fileCount;
    }
    treeStats.set(tree, r);
    return r;
  };
  return walk(c.rootTree);
}
