/** inflateVerified (src/store/object-store.ts): the streaming check checkout and cat use for big files. */
import { randomBytes } from 'node:crypto';
import { deflateRawSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { RegistryError } from '../src/errors.js';
import { contentChecksum, type FileMeta, filezHeader } from '../src/objects/index.js';
import { inflateVerified } from '../src/store/object-store.js';

const meta: FileMeta = { uid: 0, gid: 0, mode: 0o100644, symlinkTarget: '', xattrs: [] };
const MiB = 1024 * 1024;

function filez(payload: Buffer, m: FileMeta = meta): { csum: string; bytes: Buffer } {
  return {
    csum: contentChecksum(m, payload),
    bytes: Buffer.concat([filezHeader(m, payload.length), deflateRawSync(payload)]),
  };
}

/** `b` in slices of `n` bytes, counting how many were pulled and whether the source was closed. */
function source(b: Buffer, n: number) {
  const state = { pulled: 0, closed: false };
  const it = (async function* () {
    try {
      for (let i = 0; i < b.length; i += n) {
        state.pulled++;
        yield b.subarray(i, i + n);
      }
    } finally {
      state.closed = true;
    }
  })();
  return { it, state };
}

/** Runs to the end; a hang (the bug this guards against) fails the test by its timeout. */
async function drain(
  csum: string,
  bytes: Buffer,
  n = 64 * 1024,
): Promise<{ total: number; error?: RegistryError }> {
  let total = 0;
  try {
    for await (const c of inflateVerified(csum, source(bytes, n).it)) total += c.length;
    return { total };
  } catch (e) {
    if (e instanceof RegistryError) return { total, error: e };
    throw e;
  }
}

// Half random (so it does not compress away), half zeros.
const payload = Buffer.concat([randomBytes(2 * MiB), Buffer.alloc(6 * MiB)]);
const good = filez(payload);

describe('inflateVerified', () => {
  it('gives the payload, whatever the input slicing, and reports the header', async () => {
    for (const n of [1000, 64 * 1024, good.bytes.length]) {
      expect(await drain(good.csum, good.bytes, n)).toEqual({ total: payload.length });
    }
    let seen: { meta: FileMeta; size: number } | undefined;
    for await (const _ of inflateVerified(good.csum, source(good.bytes, 4096).it, (h) => (seen = h))) {
      // drain
    }
    expect(seen).toEqual({ meta, size: payload.length });
  });

  it('ends with E_CORRUPT_OBJECT, not a hang, on an invalid deflate stream', async () => {
    const header = filezHeader(meta, payload.length);
    const deflated = good.bytes.subarray(header.length);
    for (const bad of [
      Buffer.concat([header, deflated.subarray(0, 100_000), Buffer.alloc(3 * MiB, 0xff)]),
      Buffer.concat([header, Buffer.alloc(3 * MiB, 0xff)]),
    ]) {
      const r = await drain(good.csum, bad);
      expect(r.error?.code).toBe('E_CORRUPT_OBJECT');
      expect(r.error?.message).toContain(good.csum);
    }
  });

  it('E_CORRUPT_OBJECT: truncated stream, wrong checksum, lying size, mangled header', async () => {
    const cut = await drain(good.csum, good.bytes.subarray(0, good.bytes.length - 1000));
    expect(cut.error?.code).toBe('E_CORRUPT_OBJECT');

    const other = filez(Buffer.from('something else'));
    expect((await drain(other.csum, good.bytes)).error?.details.found).not.toBe(other.csum);
    expect((await drain(other.csum, good.bytes)).error?.code).toBe('E_CORRUPT_OBJECT');

    // Header says 10 bytes fewer than the stream holds.
    const short = Buffer.concat([
      filezHeader(meta, payload.length - 10),
      good.bytes.subarray(filezHeader(meta, 1).length),
    ]);
    expect((await drain(good.csum, short)).error?.code).toBe('E_CORRUPT_OBJECT');

    const mangled = Buffer.from(good.bytes);
    mangled[12] = 0xff; // inside the GVariant header: no longer decodes
    expect((await drain(good.csum, mangled)).error?.code).toBe('E_CORRUPT_OBJECT');
  });

  it('E_CORRUPT_OBJECT for bytes after the end of the deflate stream (as verifyFilez)', async () => {
    for (const extra of [1, 1000, 3 * MiB]) {
      const bytes = Buffer.concat([good.bytes, Buffer.alloc(extra, 0xab)]);
      for (const n of [4096, 64 * 1024, bytes.length]) {
        const r = await drain(good.csum, bytes, n);
        expect(r.error?.code).toBe('E_CORRUPT_OBJECT');
        expect(r.error?.message).toContain('after the deflate stream');
      }
    }
    // Empty chunks after the end are not bytes.
    const withEmpty = (async function* () {
      yield good.bytes;
      yield Buffer.alloc(0);
    })();
    let total = 0;
    for await (const c of inflateVerified(good.csum, withEmpty)) total += c.length;
    expect(total).toBe(payload.length);
  });

  it('accepts a symlink (no payload) and refuses one with a payload', async () => {
    const link: FileMeta = { ...meta, mode: 0o120777, symlinkTarget: '../x' };
    const csum = contentChecksum(link);
    const bytes = filezHeader(link, 0);
    expect(await drain(csum, bytes)).toEqual({ total: 0 });
    expect((await drain(csum, Buffer.concat([bytes, Buffer.from([3, 0])]))).error?.code).toBe(
      'E_CORRUPT_OBJECT',
    );
  });

  it('keeps memory bounded: a 256 MiB payload of zeros is not inflated ahead of the consumer', async () => {
    const zeros = filez(Buffer.alloc(256 * MiB));
    // ~256 KiB deflated, in 1 KiB slices: ~256 slices. The old version pulled them all at once.
    const src = source(zeros.bytes, 1024);
    const it = inflateVerified(zeros.csum, src.it);
    let max = 0;
    let got = 0;
    for await (const c of it) {
      max = Math.max(max, c.length);
      got += c.length;
      if (got >= 4 * MiB) break;
    }
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    expect(max).toBeLessThanOrEqual(1024 * 1024);
    // 4 MiB of zeros is ~4 KiB deflated; allow the inflater's 16 KiB input buffer and some slack.
    expect(src.state.pulled).toBeLessThan(64);
    // Stopping early closed the source (a file descriptor, in real use).
    expect(src.state.closed).toBe(true);
  });

  it('passes a failing source through unchanged', async () => {
    const boom = new Error('disk on fire');
    const failing = (async function* () {
      yield good.bytes.subarray(0, 200_000);
      throw boom;
    })();
    await expect(
      (async () => {
        for await (const _ of inflateVerified(good.csum, failing)) {
          // drain
        }
      })(),
    ).rejects.toBe(boom);
  });
});
