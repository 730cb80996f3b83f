/**
 * A push's request body (src/transfer/live-pack.ts, PackPipe): a PackWriter's frames, handed on as
 * 64 KiB slices, and each frame's memory given back to the writer once the HTTP client says every
 * slice of it was written (StreamedBody.written).
 */
import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { contentHashPrefix, type FileMeta, sha256 } from '../src/objects/index.js';
import { KIND, readPack } from '../src/pack/index.js';
import { packBody } from '../src/transfer/live-pack.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const META: FileMeta = { uid: 0, gid: 0, mode: 0o100644, symlinkTarget: '', xattrs: [] };
/** A content record's checksum: of its header and bytes. */
const contentSum = (data: Buffer) => sha256(Buffer.concat([contentHashPrefix(META), data]));

async function* once(b: Buffer) {
  yield b;
}

describe('PackPipe', () => {
  it('sends a whole pack in slices and compresses later frames into the memory of written ones', async () => {
    const { pack, body } = packBody();
    // Files of random bytes (stored, not compressed: level 0): ~6 MiB, 6+ frames.
    const records = Array.from({ length: 24 }, () => randomBytes(256 * 1024));
    const writing = (async () => {
      for (const r of records) await pack.addContent(contentSum(r), META, r);
      await pack.finish();
      body.end();
    })();
    const sent: Buffer[] = [];
    const frameBuffers = new Set<ArrayBufferLike>();
    let slices = 0;
    for await (const slice of body) {
      expect(slice.length).toBeLessThanOrEqual(64 * 1024);
      sent.push(Buffer.from(slice));
      frameBuffers.add(slice.buffer);
      slices++;
      // What http.ts does once the socket took the slice.
      body.written(slice);
    }
    await writing;
    expect(slices).toBeGreaterThan(6 * 16);
    // Each written frame went back to the writer: a few buffers served every frame.
    expect(frameBuffers.size).toBeLessThanOrEqual(3);
    const got: Buffer[] = [];
    for await (const ev of readPack(once(Buffer.concat(sent)), { collect: 1024 * 1024 })) {
      if (ev.type === 'data') got.push(Buffer.from(ev.chunk));
    }
    expect(got.map(sha)).toEqual(records.map(sha));
  });

  it('without `written`, no frame memory is used twice', async () => {
    const { pack, body } = packBody();
    const writing = (async () => {
      for (let i = 0; i < 8; i++) {
        const r = randomBytes(512 * 1024);
        await pack.add(KIND.commitmeta, sha(r), r);
      }
      await pack.finish();
      body.end();
    })();
    const frameBuffers: ArrayBufferLike[] = [];
    for await (const slice of body) if (!frameBuffers.includes(slice.buffer)) frameBuffers.push(slice.buffer);
    await writing;
    expect(frameBuffers.length).toBeGreaterThanOrEqual(4);
  });

  it('destroy(e) fails the body with e and the writer, and a reader that stops fails the writer', async () => {
    const a = packBody();
    const big = randomBytes(3 * 1024 * 1024);
    const failed = a.pack.add(KIND.commitmeta, sha(big), big);
    const it = a.body[Symbol.asyncIterator]();
    await it.next();
    a.body.destroy(new Error('live pack stopped'));
    await expect(it.next()).rejects.toThrow('live pack stopped');
    await expect(failed).rejects.toMatchObject({ code: 'E_IO' });
    expect(a.body.destroyed).toBe(true);

    const b = packBody();
    const writing = b.pack.add(KIND.commitmeta, sha(big), big);
    for await (const _ of b.body) break;
    await expect(writing).rejects.toMatchObject({ code: 'E_IO' });
  });
});
