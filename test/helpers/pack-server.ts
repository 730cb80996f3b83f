/**
 * Packs as `GET /api/v1/packs/{to}` and `/api/v1/packs/{from}..{to}` answer them (docs/http-api.md),
 * generated here from a Repository's raw objects with PackWriter, for pull tests.
 *
 * Objects are read as stored, without verification, so a damaged object on the "server" reaches
 * the client as a record that does not verify, which is what the client must catch; `tamper` flips a
 * byte of one record's payload after the fact, as a damaged or malicious server would.
 *
 * Record order is the contract's: the commit (and commitmeta), dirmeta/dirtree breadth first, then
 * one content record per distinct file, depth first (a directory's files before its subdirectories).
 */
import { inflateRawSync } from 'node:zlib';
import {
  type Checksum,
  contentHashPrefix,
  decodeCommit,
  decodeDirTree,
  isSymlink,
  objectPath,
  parseFilezHeader,
} from '../../src/objects/index.js';
import { KIND, PackWriter } from '../../src/pack/index.js';
import type { Repository } from '../../src/repo/repository.js';

export interface PackOptions {
  /** Flip a byte in the payload of the content record of this object. */
  tamper?: Checksum;
}

async function raw(repo: Repository, key: string): Promise<Buffer> {
  const b = await repo.objects.blobs.read(key);
  if (!b) throw new Error(`test pack: ${key} is missing`);
  return b;
}

/** Every object of a commit's closure, by type: what an update pack leaves out. */
async function closure(repo: Repository, commit: Checksum): Promise<Set<string>> {
  const out = new Set<string>([`${commit}.commit`]);
  const c = decodeCommit(await raw(repo, objectPath(commit, 'commit')));
  const walk = async (tree: Checksum, meta: Checksum): Promise<void> => {
    out.add(`${meta}.dirmeta`);
    if (out.has(`${tree}.dirtree`)) return;
    out.add(`${tree}.dirtree`);
    const t = decodeDirTree(await raw(repo, objectPath(tree, 'dirtree')));
    for (const f of t.files) out.add(`${f.checksum}.file`);
    for (const d of t.dirs) await walk(d.tree, d.meta);
  };
  await walk(c.rootTree, c.rootMeta);
  return out;
}

/** The pack of closure(to), less closure(from) if given. */
export async function makePack(
  repo: Repository,
  to: Checksum,
  from?: Checksum,
  opts: PackOptions = {},
): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const w = new PackWriter(async (c) => void chunks.push(c), { threads: false });
  const seen = from ? await closure(repo, from) : new Set<string>();
  const once = (id: string): boolean => !seen.has(id) && !!seen.add(id);
  const commitBytes = await raw(repo, objectPath(to, 'commit'));
  await w.add(KIND.commit, to, commitBytes);
  const cm = await repo.objects.blobs.read(objectPath(to, 'commitmeta'));
  if (cm) await w.add(KIND.commitmeta, to, cm);
  const c = decodeCommit(commitBytes);
  // Breadth first: metadata.
  const trees = new Map<Checksum, ReturnType<typeof decodeDirTree>>();
  let level: Array<{ tree: Checksum; meta: Checksum }> = [{ tree: c.rootTree, meta: c.rootMeta }];
  while (level.length > 0) {
    const next: typeof level = [];
    for (const d of level) {
      if (once(`${d.meta}.dirmeta`))
        await w.add(KIND.dirmeta, d.meta, await raw(repo, objectPath(d.meta, 'dirmeta')));
      if (!once(`${d.tree}.dirtree`)) continue;
      const bytes = await raw(repo, objectPath(d.tree, 'dirtree'));
      await w.add(KIND.dirtree, d.tree, bytes);
      const t = decodeDirTree(bytes);
      trees.set(d.tree, t);
      for (const sub of t.dirs) next.push({ tree: sub.tree, meta: sub.meta });
    }
    level = next;
  }
  // Depth first: content.
  const files = async (tree: Checksum): Promise<void> => {
    const t = trees.get(tree);
    if (!t) return;
    trees.delete(tree);
    for (const f of t.files) {
      if (!once(`${f.checksum}.file`)) continue;
      const filez = await raw(repo, objectPath(f.checksum, 'file'));
      const h = parseFilezHeader(filez)!;
      let data: Buffer;
      try {
        data = isSymlink(h.meta) ? Buffer.alloc(0) : inflateRawSync(filez.subarray(h.headerLength));
      } catch {
        data = Buffer.alloc(h.size, 0xee);
      }
      const payload = Buffer.concat([contentHashPrefix(h.meta), data]);
      if (opts.tamper === f.checksum) payload[payload.length - 1]! ^= 0x55;
      await w.add(KIND.content, f.checksum, payload);
    }
    for (const d of t.dirs) await files(d.tree);
  };
  await files(c.rootTree);
  await w.finish();
  return Buffer.concat(chunks);
}

/**
 * Answer `GET /api/v1/packs/…` from `repo`, or undefined for any other path. 404 E_NOT_FOUND
 * `{commit}` when `to` or `from` is not a commit here.
 */
export async function packResponse(
  repo: Repository,
  path: string,
  opts: PackOptions = {},
): Promise<Response | undefined> {
  const m = /^\/api\/v1\/packs\/(?:([0-9a-f]{64})\.\.)?([0-9a-f]{64})$/.exec(path);
  if (!m) return undefined;
  const [, from, to] = m as unknown as [string, string | undefined, string];
  for (const c of [from, to]) {
    if (c && !(await repo.objects.blobs.stat(objectPath(c, 'commit')))) {
      return Response.json(
        { error: { code: 'E_NOT_FOUND', message: `no commit ${c}`, details: { commit: c } } },
        { status: 404 },
      );
    }
  }
  const body = await makePack(repo, to, from, opts);
  return new Response(new Uint8Array(body), {
    headers: { 'content-type': 'application/octet-stream', 'content-length': String(body.length) },
  });
}
