/**
 * The deflate engines of `.filez` payloads (src/compress/deflate.js): ISA-L's igzip through
 * native/igzip, and Node's zlib. Whatever either writes, zlib (what ostree reads with) must inflate
 * to the same bytes; whatever is wrong with a stream, both must refuse it with the same evidence.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { afterEach, describe, expect, it, vi } from 'vitest';
import * as compress from '../src/compress/deflate.js';

type Engine = typeof compress;

/** deflate.js as loaded with igzip turned off (SYSROOT_DEFLATE=zlib), in a fresh module registry. */
async function zlibOnly(): Promise<Engine> {
  vi.stubEnv('SYSROOT_DEFLATE', 'zlib');
  vi.resetModules();
  const m = (await import('../src/compress/deflate.js')) as Engine;
  vi.unstubAllEnvs();
  return m;
}

afterEach(() => vi.unstubAllEnvs());

/** Inputs with the shapes a sysroot has: empty, tiny, text, a real binary, zeros, random bytes. */
function inputs(): Array<[string, Buffer]> {
  const text = Buffer.from('GNU C Library (Debian GLIBC 2.36-9+deb12u9) stable release\n'.repeat(2000));
  return [
    ['empty', Buffer.alloc(0)],
    ['one byte', Buffer.from([0x7f])],
    ['text', text],
    ['a binary (node)', readFileSync(process.execPath).subarray(0, 3 * 1024 * 1024)],
    ['5 MiB of zeros', Buffer.alloc(5 * 1024 * 1024)],
    ['3 MB of random bytes', randomBytes(3_000_000)],
  ];
}

describe('deflate engines', () => {
  it('igzip is built and chosen by default (it needs ISA-L: apt-get install libisal-dev, then npm rebuild)', () => {
    // The registry works without it (zlib), ~4.6x slower to push and commit: the test suite must
    // exercise what users get, so a missing addon fails here, loudly, with the reason.
    expect(compress.igzipUnavailable, compress.igzipUnavailable).toBe('');
    expect(compress.engine).toBe('igzip');
    expect(compress.deflateSettings()).toEqual({ engine: 'igzip', level: 1 });
    // An explicit zlib level still means zlib at that level.
    expect(compress.deflateSettings(9)).toEqual({ engine: 'zlib', level: 9 });
  });

  it('SYSROOT_DEFLATE=zlib falls back to zlib level 1', async () => {
    const z = await zlibOnly();
    expect(z.engine).toBe('zlib');
    expect(z.igzipUnavailable).toBe('SYSROOT_DEFLATE=zlib');
    expect(z.deflateSettings()).toEqual({ engine: 'zlib', level: 1 });
  });

  for (const settings of [
    { engine: 'igzip', level: 1 },
    { engine: 'igzip', level: 0 },
    { engine: 'igzip', level: 3 },
    { engine: 'zlib', level: 1 },
    { engine: 'zlib', level: 0 },
  ] as const) {
    it(`${settings.engine} level ${settings.level}: zlib and both inflaters read back every input`, async () => {
      const z = await zlibOnly();
      for (const [name, data] of inputs()) {
        const d = compress.deflateRaw(data, settings);
        expect(inflateRawSync(d).equals(data), name).toBe(true);
        expect(compress.inflateRaw(d, data.length).equals(data), name).toBe(true);
        expect(z.inflateRaw(d, data.length).equals(data), name).toBe(true);
        // igzip's output buffer is sized for this bound (native/igzip/igzip.c): incompressible
        // input grows by no more than its stored blocks' headers.
        if (settings.engine === 'igzip') {
          const bound = data.length + 5 * (Math.ceil(data.length / 65535) + 2) + 328 + 64;
          expect(d.length, name).toBeLessThanOrEqual(bound);
        }
      }
    });

    it(`${settings.engine} level ${settings.level}: pieces and a final empty piece make one stream`, () => {
      const data = Buffer.concat(inputs().map(([, d]) => d));
      const pieces: Buffer[] = [];
      for (let at = 0; at < data.length; at += 1024 * 1024) {
        pieces.push(compress.deflatePiece(data.subarray(at, at + 1024 * 1024), settings, false));
      }
      pieces.push(compress.deflatePiece(Buffer.alloc(0), settings, true));
      const stream = Buffer.concat(pieces);
      expect(inflateRawSync(stream).equals(data)).toBe(true);
      expect(compress.inflateRaw(stream, data.length).equals(data)).toBe(true);
    });
  }

  it("deflateInto writes the same stream into the caller's buffer, and -1 when it does not fit", () => {
    const igzip = { engine: 'igzip', level: 1 } as const;
    for (const [name, data] of inputs()) {
      // Written behind 7 bytes of something else, as a .filez behind its header.
      const out = Buffer.alloc(7 + compress.deflateBound(data.length), 0xee);
      const n = compress.deflateInto(data, out.subarray(7), igzip)!;
      expect(n, name).toBeGreaterThan(0);
      expect(out.subarray(0, 7).equals(Buffer.alloc(7, 0xee)), name).toBe(true);
      expect(out.subarray(7, 7 + n).equals(compress.deflateRaw(data, igzip)), name).toBe(true);
      expect(inflateRawSync(out.subarray(7, 7 + n)).equals(data), name).toBe(true);
      expect(compress.deflateInto(data, Buffer.alloc(n - 1), igzip), name).toBe(-1);
    }
    // zlib has no such call: the caller deflates with deflateRaw.
    expect(compress.deflateInto(Buffer.from('x'), Buffer.alloc(64), { engine: 'zlib', level: 1 })).toBe(
      undefined,
    );
  });

  it("inflateRaw into a caller's buffer gives a view of it", () => {
    const data = readFileSync(process.execPath).subarray(0, 200_000);
    const into = Buffer.alloc(300_000);
    const out = compress.inflateRaw(
      compress.deflateRaw(data, { engine: 'igzip', level: 1 }),
      data.length,
      into,
    );
    expect(out.equals(data)).toBe(true);
    expect(out.buffer).toBe(into.buffer);
    // Too small a buffer is not used: a buffer of the payload's own.
    const small = compress.inflateRaw(
      compress.deflateRaw(data, { engine: 'igzip', level: 1 }),
      data.length,
      into.subarray(0, 10),
    );
    expect(small.equals(data)).toBe(true);
    expect(small.buffer).not.toBe(into.buffer);
  });

  it('igzip compresses a real binary about as well as zlib level 1', () => {
    const data = readFileSync(process.execPath).subarray(0, 8 * 1024 * 1024);
    const igzip = compress.deflateRaw(data, { engine: 'igzip', level: 1 }).length;
    const zlib = deflateRawSync(data, { level: 1 }).length;
    expect(igzip / zlib).toBeLessThan(1.1);
    expect(igzip).toBeLessThan(data.length * 0.6);
  });

  for (const which of ['igzip', 'zlib'] as const) {
    it(`${which} inflate refuses what does not match the header, with the evidence`, async () => {
      const m = which === 'igzip' ? compress : await zlibOnly();
      expect(m.engine).toBe(which);
      const data = Buffer.from('hello hello hello, a file of a sysroot\n'.repeat(50));
      const good = deflateRawSync(data, { level: 6 });
      const fails = (input: Buffer, size: number): { found: string; message: string } => {
        try {
          m.inflateRaw(input, size);
        } catch (e) {
          expect(e).toBeInstanceOf(m.InflateError);
          return { found: (e as compress.InflateError).found, message: (e as Error).message };
        }
        throw new Error('inflateRaw accepted a bad stream');
      };
      expect(m.inflateRaw(good, data.length).equals(data)).toBe(true);
      // Bytes after the end of the stream would be stored and served unverified.
      for (const extra of [1, 7, 8, 9, 100]) {
        expect(fails(Buffer.concat([good, Buffer.alloc(extra, 0xaa)]), data.length).found).toBe(
          `${extra} trailing bytes`,
        );
      }
      expect(fails(good.subarray(0, good.length - 3), data.length).found).toBe('invalid deflate stream');
      expect(fails(Buffer.from('not a deflate stream at all'), data.length).found).toBe(
        'invalid deflate stream',
      );
      expect(fails(good, data.length + 1)).toEqual({
        found: `${data.length} bytes`,
        message: `payload is ${data.length} bytes, header says ${data.length + 1}`,
      });
      // Longer than the header says: stopped at the header's size, never inflated whole.
      expect(fails(good, data.length - 1).found).toMatch(/invalid deflate stream|> \d+ bytes/);
      // A header that claims more than deflate can expand to is refused before allocating it.
      expect(fails(good, 2 ** 31).found).toBe(`at most ${good.length * 1032 + 1024} bytes`);
      const zeros = Buffer.alloc(1024 * 1024);
      const z = deflateRawSync(zeros);
      expect((await m.inflateRawAsync(z, zeros.length)).equals(zeros)).toBe(true);
      await expect(m.inflateRawAsync(Buffer.concat([z, Buffer.from([1])]), zeros.length)).rejects.toThrow(
        'bytes after the deflate stream',
      );
    });
  }

  it('inflateMatches: true for exactly the stream, size and checksum; false for any difference; undefined without igzip', async () => {
    const prefix = Buffer.from('a content header, as checkFilez gives it');
    const sumOf = (b: Buffer) => createHash('sha256').update(prefix).update(b).digest();
    // Larger than the addon's 256 KiB window (several rounds of inflate + SHA-256), a small one, an empty one.
    for (const data of [
      Buffer.concat([randomBytes(300_000), Buffer.alloc(700_000, 3)]),
      Buffer.from('small\n'),
      Buffer.alloc(0),
    ]) {
      const good = deflateRawSync(data, { level: 6 });
      const sum = sumOf(data);
      const n = data.length;
      expect(compress.inflateMatches(good, n, prefix, sum), `${n} bytes`).toBe(true);
      expect(
        compress.inflateMatches(compress.deflateRaw(data, { engine: 'igzip', level: 1 }), n, prefix, sum),
      ).toBe(true);
      const wrongSum = Buffer.from(sum);
      wrongSum[31]! ^= 1;
      expect(compress.inflateMatches(good, n, prefix, wrongSum)).toBe(false);
      expect(compress.inflateMatches(good, n, Buffer.from('another header'), sum)).toBe(false);
      expect(compress.inflateMatches(good, n + 1, prefix, sum)).toBe(false);
      if (n > 0) expect(compress.inflateMatches(good, n - 1, prefix, sum)).toBe(false);
      for (const extra of [1, 7, 8, 9, 100]) {
        expect(
          compress.inflateMatches(Buffer.concat([good, Buffer.alloc(extra, 0xaa)]), n, prefix, sum),
        ).toBe(false);
      }
      expect(compress.inflateMatches(good.subarray(0, good.length - 3), n, prefix, sum)).toBe(false);
      expect(compress.inflateMatches(Buffer.from('not a deflate stream at all'), n, prefix, sum)).toBe(false);
      // More than deflate can expand to: refused before inflating.
      expect(compress.inflateMatches(good, 2 ** 40, prefix, sum)).toBe(false);
    }
    const z = await zlibOnly();
    expect(z.inflateMatches(deflateRawSync(Buffer.from('x')), 1, prefix, sumOf(Buffer.from('x')))).toBe(
      undefined,
    );
  });

  it('the same checksum whichever engine deflated (the name is of the uncompressed bytes)', () => {
    const data = randomBytes(100_000);
    const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    const a = compress.inflateRaw(compress.deflateRaw(data, { engine: 'igzip', level: 1 }), data.length);
    const b = compress.inflateRaw(compress.deflateRaw(data, { engine: 'zlib', level: 6 }), data.length);
    expect(sha(a)).toBe(sha(data));
    expect(sha(b)).toBe(sha(data));
  });
});
