/**
 * A checkout's sources over packs (src/transfer/pack-source.ts): IncomingPack, over a pack as it
 * streams in (dirtrees are kept decoded only; their bytes must still come back exactly when asked
 * for), and PackSource, over the pull cache's packs.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
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
import { KIND, PackFile, type PackIndex, PackWriter, readPack, writableSink } from '../src/pack/index.js';
import { IncomingPack, PackSource } from '../src/transfer/pack-source.js';
import { cleanup, tempDir } from './helpers/checkout-tree.js';

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

describe('PackSource over cached packs that recycle their frames', () => {
  it('hands out every payload whole, small, spanning frames, and streamed', async () => {
    // A checkout takes each payload before it asks for the next; PackFile decompresses into the
    // buffers of frames it dropped, so a payload spanning more frames than it keeps (4) must be
    // gathered as it comes, not sliced from frames already reused.
    const dir = tempDir('pack-source');
    try {
      const files = [
        Buffer.from('small\n'),
        randomBytes(5 * 1024 * 1024 + 17), // 6 frames: more than PackFile keeps
        Buffer.from('after the big one\n'),
        randomBytes(17 * 1024 * 1024), // over MAX_READ: streamed
        Buffer.from('last\n'),
      ];
      const sums = files.map((f) => contentChecksum(FILE, f));
      const out = new PassThrough();
      const chunks: Buffer[] = [];
      out.on('data', (c: Buffer) => chunks.push(c));
      const w = new PackWriter(writableSink(out), { threads: false, level: 1 });
      for (const [i, f] of files.entries()) await w.addContent(sums[i]!, FILE, f);
      const { index } = await w.finish();
      out.end();
      const path = join(dir, 'p.pack');
      writeFileSync(path, Buffer.concat(chunks));
      const pack = await PackFile.open(path, index, { recycle: true });
      const source = new PackSource([pack], ['p']);
      try {
        const got = new Map<string, Buffer>();
        for await (const { checksum, content } of source.contents([...sums].reverse())) {
          if (content.payload) got.set(checksum, Buffer.from(content.payload));
          else {
            const parts: Buffer[] = [];
            for await (const c of await content.open!()) parts.push(Buffer.from(c));
            got.set(checksum, Buffer.concat(parts));
          }
        }
        for (const [i, f] of files.entries()) expect(got.get(sums[i]!)?.equals(f), `file ${i}`).toBe(true);
      } finally {
        await source.close();
      }
    } finally {
      cleanup(dir);
    }
  });
});
