/**
 * IncomingPack: a checkout's source over a pack as it streams in (src/transfer/pack-source.ts).
 * Dirtrees are kept decoded only; their bytes must still come back exactly when asked for.
 */
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { isRegistryError } from '../src/errors.js';
import {
  type Commit,
  contentChecksum,
  encodeCommit,
  encodeDirMeta,
  encodeDirTree,
  type FileMeta,
  sha256,
} from '../src/objects/index.js';
import { KIND, type PackIndex, PackWriter, readPack, writableSink } from '../src/pack/index.js';
import { IncomingPack } from '../src/transfer/pack-source.js';

const FILE: FileMeta = { uid: 0, gid: 0, mode: 0o100644, xattrs: [], symlinkTarget: '' };

async function packOf(add: (w: PackWriter) => Promise<void>): Promise<Buffer> {
  const out = new PassThrough();
  const chunks: Buffer[] = [];
  out.on('data', (c: Buffer) => chunks.push(c));
  const w = new PackWriter(writableSink(out), { threads: false });
  await add(w);
  await w.finish();
  out.end();
  return Buffer.concat(chunks);
}

async function* once(b: Buffer): AsyncGenerator<Buffer> {
  yield b;
}

describe('IncomingPack', () => {
  it('keeps a dirtree decoded only, and gives its exact bytes back when they are asked for', async () => {
    const data = Buffer.from('hello\n');
    const file = contentChecksum(FILE, data);
    const meta = encodeDirMeta({ uid: 0, gid: 0, mode: 0o40755, xattrs: [] });
    const sub = encodeDirTree({ files: [{ name: 'b.txt', checksum: file }], dirs: [] });
    const root = encodeDirTree({
      files: [{ name: 'a.txt', checksum: file }],
      dirs: [{ name: 'sub', tree: sha256(sub), meta: sha256(meta) }],
    });
    const commit: Commit = {
      metadata: [],
      parent: null,
      related: [],
      subject: 's',
      body: '',
      timestamp: 1,
      rootTree: sha256(root),
      rootMeta: sha256(meta),
    };
    const commitBytes = encodeCommit(commit);
    const pack = await packOf(async (w) => {
      await w.add(KIND.commit, sha256(commitBytes), commitBytes);
      await w.add(KIND.dirtree, sha256(root), root);
      await w.add(KIND.dirtree, sha256(sub), sub);
      await w.add(KIND.dirmeta, sha256(meta), meta);
      await w.addContent(file, FILE, data);
    });
    let ended: PackIndex | undefined;
    const incoming = new IncomingPack(
      readPack(once(pack), { collect: 1024 * 1024 }),
      undefined,
      async (index) => {
        ended = index;
      },
      async () => {},
    );
    // Asked out of order: the sub-tree first, which reads the root tree past on the way.
    expect(await incoming.readDirTree(sha256(sub))).toEqual({
      files: [{ name: 'b.txt', checksum: file }],
      dirs: [],
    });
    expect((await incoming.readMetadata(sha256(root), 'dirtree')).equals(root)).toBe(true);
    expect((await incoming.readMetadata(sha256(sub), 'dirtree')).equals(sub)).toBe(true);
    expect((await incoming.readMetadata(sha256(meta), 'dirmeta')).equals(meta)).toBe(true);
    expect((await incoming.readMetadata(sha256(commitBytes), 'commit')).equals(commitBytes)).toBe(true);
    // A dirtree the pack does not hold: once content begins, no more metadata can come.
    const absent = 'ab'.repeat(32);
    const e = await incoming.readDirTree(absent).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(isRegistryError(e, 'E_OBJECT_MISSING')).toBe(true);
    const got: string[] = [];
    for await (const { checksum, content } of incoming.contents([file])) {
      got.push(checksum);
      expect(content.payload?.equals(data)).toBe(true);
    }
    expect(got).toEqual([file]);
    expect(ended?.records).toHaveLength(5);
  });
});
