import { execFileSync } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { createWriteStream, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { finished } from 'node:stream/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { deflateRawSync } from 'node:zlib';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { isRegistryError, type RegistryError } from '../src/errors.js';
import { encode, Variant } from '../src/gvariant/index.js';
import { mapLimit } from '../src/map-limit.js';
import {
  contentChecksum,
  contentHashPrefix,
  encodeCommit,
  encodeCommitMeta,
  encodeDirMeta,
  encodeDirTree,
  type FileMeta,
  filezHeader,
  parseContentHeader,
  parseFilezHeader,
  sha256,
} from '../src/objects/index.js';
import type { FrameInfo } from '../src/pack/format.js';
import { decodeFrames, FrameCompressor, zstdAddonBuilt } from '../src/pack/frames.js';
import {
  decodeIndex,
  encodeIndex,
  FRAME_TARGET,
  KIND,
  MAX_COLLECT,
  PACK_MAGIC,
  type PackEvent,
  PackFile,
  type PackIndex,
  type PackSummary,
  PackWriter,
  type PackWriterOptions,
  RECORD_HEADER_SIZE,
  type RecordFile,
  type RecordKind,
  readPack,
  writableSink,
} from '../src/pack/index.js';
import { zstdPool } from '../src/pack/zstd-pool.js';
import { cleanup, tempDir } from './helpers/checkout-tree.js';

const MiB = 1024 * 1024;

afterEach(() => {
  vi.unstubAllEnvs();
});

// Buffers that are garbage but not yet collected would hide what is really alive: measure after a GC.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const dir = tempDir('pack');
afterAll(() => cleanup(dir));

// ---------------------------------------------------------------------------------------------
// Objects of every kind

interface Obj {
  kind: RecordKind;
  checksum: string;
  /** The record's payload as it is in the pack. */
  payload: Buffer;
  /** What readPack's data events carry (content: the file bytes only). */
  data: Buffer;
  file?: RecordFile;
}

const FILE: FileMeta = {
  uid: 0,
  gid: 0,
  mode: 0o100644,
  symlinkTarget: '',
  xattrs: [{ name: 'user.a', value: Buffer.from('1') }],
};
const LINK: FileMeta = { uid: 0, gid: 0, mode: 0o120777, symlinkTarget: '../lib/libz.so.1', xattrs: [] };

function metadataObj(kind: RecordKind, bytes: Buffer, checksum = sha256(bytes)): Obj {
  return { kind, checksum, payload: bytes, data: bytes };
}

function contentObj(meta: FileMeta, data: Buffer): Obj {
  const checksum = contentChecksum(meta, data);
  return {
    kind: KIND.content,
    checksum,
    payload: Buffer.concat([contentHashPrefix(meta), data]),
    data,
    file: { meta, size: data.length },
  };
}

function filezObj(meta: FileMeta, data: Buffer): Obj {
  // A symlink's .filez is its header alone.
  const body = meta.mode === LINK.mode ? [] : [deflateRawSync(data, { level: 1 })];
  const filez = Buffer.concat([filezHeader(meta, data.length), ...body]);
  return {
    kind: KIND.filez,
    checksum: contentChecksum(meta, data),
    payload: filez,
    data: filez,
    file: { meta, size: data.length },
  };
}

/** Deterministic incompressible bytes: AES-256-CTR of zeros, 1 MiB at a time. */
function* noise(seed: number, total: number): Generator<Buffer> {
  const c = createCipheriv('aes-256-ctr', Buffer.alloc(32, seed), Buffer.alloc(16));
  const zeros = Buffer.alloc(MiB);
  for (let left = total; left > 0; left -= MiB) yield c.update(zeros.subarray(0, Math.min(MiB, left)));
}

const noiseBuf = (seed: number, n: number) => Buffer.concat([...noise(seed, n)]);

function everyKind(): Obj[] {
  const dirmeta = encodeDirMeta({ uid: 0, gid: 0, mode: 0o40755, xattrs: [] });
  const text = Buffer.from('#!/bin/sh\necho tool\n'.repeat(50));
  const file = contentObj(FILE, text);
  const dirtree = encodeDirTree({
    files: [{ name: 'tool', checksum: file.checksum }],
    dirs: [],
  });
  const commit = encodeCommit({
    metadata: [['version', new Variant('s', '2026.1')]],
    parent: null,
    related: [],
    subject: 'stage3 2026.1',
    body: '',
    timestamp: 1_704_067_200,
    rootTree: sha256(dirtree),
    rootMeta: sha256(dirmeta),
  });
  const commitmeta = encodeCommitMeta([['sysroot.note', new Variant('s', 'signed later')]]);
  return [
    metadataObj(KIND.commit, commit),
    metadataObj(KIND.commitmeta, commitmeta, sha256(commit)),
    metadataObj(KIND.dirtree, dirtree),
    metadataObj(KIND.dirmeta, dirmeta),
    file,
    contentObj(LINK, Buffer.alloc(0)),
    contentObj({ ...FILE, mode: 0o104755 }, Buffer.alloc(0)),
    contentObj(FILE, noiseBuf(1, 3 * MiB + 12_345)),
    filezObj(FILE, Buffer.from('filez payload\n'.repeat(1000))),
    filezObj(LINK, Buffer.alloc(0)),
  ];
}

// ---------------------------------------------------------------------------------------------
// Writing and reading whole packs in memory

async function writePack(
  objs: Obj[],
  opts?: PackWriterOptions,
): Promise<{ pack: Buffer; summary: PackSummary }> {
  const chunks: Buffer[] = [];
  const w = new PackWriter(async (c) => {
    chunks.push(c);
  }, opts);
  for (const o of objs) await w.add(o.kind, o.checksum, o.payload);
  const summary = await w.finish();
  return { pack: Buffer.concat(chunks), summary };
}

/** The pack in pieces of `size` bytes, as a network body would arrive. */
async function* pieces(pack: Buffer, size = 64 * 1024): AsyncGenerator<Buffer> {
  for (let i = 0; i < pack.length; i += size) yield pack.subarray(i, i + size);
}

interface ReadRecord {
  kind: RecordKind;
  checksum: string;
  length: number;
  file?: RecordFile;
  data: Buffer;
  chunks: number;
  verified: boolean;
}

/**
 * Every record read. `seen` collects the buffers the chunks are in; with `reuse`, each chunk is
 * copied as it comes, as a consumer of ReadPackOptions.reuse must.
 */
async function readAll(
  source: AsyncIterable<Buffer>,
  collect?: number,
  seen?: { buffers: Set<ArrayBufferLike>; reuse: boolean },
): Promise<{ records: ReadRecord[]; index: PackIndex }> {
  const reuse = seen?.reuse === true;
  const records: ReadRecord[] = [];
  let parts: Buffer[] = [];
  let index: PackIndex | undefined;
  const opts = { ...(collect === undefined ? {} : { collect }), ...(reuse ? { reuse: true } : {}) };
  for await (const e of readPack(source, opts)) {
    if (e.type === 'record') {
      const { type: _, ...rest } = e;
      records.push({ ...rest, data: Buffer.alloc(0), chunks: 0, verified: false });
      parts = [];
    } else if (e.type === 'data') {
      seen?.buffers.add(e.chunk.buffer);
      parts.push(reuse ? Buffer.from(e.chunk) : e.chunk);
      records.at(-1)!.chunks++;
    } else if (e.type === 'verified') {
      const r = records.at(-1)!;
      r.data = Buffer.concat(parts);
      r.verified = true;
    } else index = e.index;
  }
  return { records, index: index! };
}

/** Await `p`; it must fail with a RegistryError of this code, which is returned. */
async function failsWith(p: Promise<unknown>, code: string): Promise<RegistryError> {
  try {
    await p;
  } catch (e) {
    if (isRegistryError(e)) {
      expect(e.code, e.message).toBe(code);
      return e;
    }
    throw e;
  }
  throw new Error(`expected ${code}, but it succeeded`);
}

/**
 * Read `pack` both ways, decoded on this thread and (with `reuse`, when native/zstd is built) a frame
 * ahead on libuv's pool: each must fail with `code` and the same message, but for zstd's own words
 * in parentheses. Returns the first.
 */
async function readFails(pack: Buffer, code: string): Promise<RegistryError> {
  const here = await failsWith(readAll(pieces(pack)), code);
  const ahead = await failsWith(readAll(pieces(pack), undefined, { buffers: new Set(), reuse: true }), code);
  const plain = (e: RegistryError) => e.message.replace(/ \([^)]*\)$/, '');
  expect(plain(ahead)).toBe(plain(here));
  return here;
}

// ---------------------------------------------------------------------------------------------
// Raw streams, for damaging packs on purpose

/** The decompressed stream, by the real zstd CLI. */
function zstdDecompress(pack: Buffer): Buffer {
  return execFileSync('zstd', ['-dc', '-q'], { input: pack, maxBuffer: 256 * MiB });
}

/** Compress a raw stream as the writer would: FRAME_TARGET raw bytes per frame. */
function compressRaw(raw: Buffer, frame = FRAME_TARGET): Buffer {
  const z = new FrameCompressor(3);
  const out: Buffer[] = [];
  for (let i = 0; i < raw.length; i += frame) out.push(z.compress(raw.subarray(i, i + frame)));
  return Buffer.concat(out);
}

interface RawRecord {
  at: number;
  kind: number;
  checksum: string;
  length: number;
  payload: Buffer;
}

/** Parse a raw stream by hand (magic, then kind ‖ checksum ‖ BE64 length ‖ payload …). */
function parseRaw(raw: Buffer): RawRecord[] {
  expect(raw.subarray(0, 8).toString('latin1')).toBe('OSTPACK1');
  const out: RawRecord[] = [];
  let at = 8;
  while (at < raw.length) {
    const length = Number(raw.readBigUInt64BE(at + 33));
    out.push({
      at,
      kind: raw[at]!,
      checksum: raw.toString('hex', at + 1, at + 33),
      length,
      payload: raw.subarray(at + 41, at + 41 + length),
    });
    at += 41 + length;
  }
  return out;
}

/**
 * The end checksum of a raw stream (magic and records, no end record), computed by hand: the magic,
 * every record header, and the commitmeta (4) and filez (6) payloads.
 */
function endChecksum(body: Buffer): string {
  const h = createHash('sha256').update(body.subarray(0, 8));
  for (const r of parseRaw(body)) {
    h.update(body.subarray(r.at, r.at + 41));
    if (r.kind === 4 || r.kind === 6) h.update(r.payload);
  }
  return h.digest('hex');
}

/** A pack whose raw stream is `raw` with a correct end record appended. */
function packOfRaw(body: Buffer): Buffer {
  const end = Buffer.alloc(41);
  Buffer.from(endChecksum(body), 'hex').copy(end, 1);
  return compressRaw(Buffer.concat([body, end]));
}

function rawRecord(kind: number, checksum: string, payload: Buffer): Buffer {
  const h = Buffer.alloc(41);
  h[0] = kind;
  Buffer.from(checksum, 'hex').copy(h, 1);
  h.writeBigUInt64BE(BigInt(payload.length), 33);
  return Buffer.concat([h, payload]);
}

/** A pack of one record, built by hand so that it can be anything. */
const packOfRecords = (...records: Buffer[]) => packOfRaw(Buffer.concat([PACK_MAGIC, ...records]));

// ---------------------------------------------------------------------------------------------

describe('parseContentHeader', () => {
  it('is the inverse of contentHashPrefix, and waits for more bytes when cut short', () => {
    for (const meta of [FILE, LINK, { ...FILE, mode: 0o104755, uid: 1000, gid: 27 }]) {
      const prefix = contentHashPrefix(meta);
      const stream = Buffer.concat([prefix, Buffer.from('file bytes')]);
      const h = parseContentHeader(stream, 'x.file')!;
      expect(h).toEqual({ meta, headerLength: prefix.length });
      expect(contentHashPrefix(h.meta).equals(stream.subarray(0, h.headerLength))).toBe(true);
      expect(parseContentHeader(stream.subarray(0, prefix.length - 1))).toBeUndefined();
      expect(parseContentHeader(stream.subarray(0, 5))).toBeUndefined();
    }
    const bad = Buffer.from(contentHashPrefix(FILE));
    bad[5] = 1;
    expect(() => parseContentHeader(bad, 'x.file')).toThrow(
      expect.objectContaining({ code: 'E_CORRUPT_OBJECT' }),
    );
  });

  it('repeated headers come from a memo: the same answers, sizes read each time, damage still caught', () => {
    const plain: FileMeta = { uid: 0, gid: 0, mode: 0o100755, symlinkTarget: '', xattrs: [] };
    const prefix = contentHashPrefix(plain);
    const first = parseContentHeader(prefix, 'a.file')!;
    const again = parseContentHeader(Buffer.concat([prefix, Buffer.from('bytes')]), 'b.file')!;
    expect(again).toEqual({ meta: plain, headerLength: prefix.length });
    expect(again.meta).toBe(first.meta); // shared, so frozen
    expect(Object.isFrozen(again.meta) && Object.isFrozen(again.meta.xattrs)).toBe(true);
    for (const size of [0, 1, 4096, 2 ** 40]) {
      const h = parseFilezHeader(filezHeader(plain, size), 'c.file')!;
      expect(h).toEqual({ meta: plain, size, headerLength: filezHeader(plain, 0).length });
    }
    // One byte of the mode changed: other bytes, so no memo hit, and the full check refuses it.
    const bad = Buffer.from(prefix);
    bad.writeUInt32BE(0o140755, bad.indexOf(Buffer.from([0, 0, 0o201, 0o355])));
    expect(() => parseContentHeader(bad, 'd.file')).toThrow(
      expect.objectContaining({ code: 'E_CORRUPT_OBJECT' }),
    );
    // With xattrs (nearly unique) nothing is kept: a fresh, unfrozen object each time.
    const withX = parseContentHeader(contentHashPrefix(FILE), 'e.file')!;
    expect(withX.meta).toEqual(FILE);
    expect(Object.isFrozen(withX.meta)).toBe(false);
  });

  it('a header that claims a socket, fifo or device is E_CORRUPT_OBJECT naming the object', () => {
    // Found by the HTTP fuzzer: a pack upload whose .filez header said 0140644 (a socket) was a 500.
    // Encoders refuse such a mode, so the header is built by hand: a regular file's, mode patched.
    for (const mode of [0o140644, 0o010644, 0o020644, 0o060644]) {
      for (const [parse, header] of [
        [parseContentHeader, contentHashPrefix(FILE)],
        [parseFilezHeader, filezHeader(FILE, 0)],
      ] as const) {
        const bytes = Buffer.from(header);
        const at = bytes.indexOf(Buffer.from([0, 0, 0o201, 0o244])); // mode 0100644, big-endian
        expect(at).toBeGreaterThan(0);
        bytes.writeUInt32BE(mode, at);
        expect(() => parse(bytes, 'x.file')).toThrow(
          expect.objectContaining({
            code: 'E_CORRUPT_OBJECT',
            details: expect.objectContaining({ object: 'x.file', found: `0${mode.toString(8)}` }),
          }),
        );
      }
    }
  });
});

describe('pack round trip', () => {
  it('carries every kind of record and verifies each one', async () => {
    const objs = everyKind();
    const { pack, summary } = await writePack(objs);
    const { records, index } = await readAll(pieces(pack));
    expect(records.map((r) => [r.kind, r.checksum, r.length, r.verified])).toEqual(
      objs.map((o) => [o.kind, o.checksum, o.payload.length, true]),
    );
    for (const [i, o] of objs.entries()) {
      expect(records[i]!.data.equals(o.data), `data of record ${i}`).toBe(true);
      expect(records[i]!.file).toEqual(o.file);
    }
    expect(summary.records).toBe(objs.length);
    expect(summary.bytes).toBe(pack.length);
    const raw = zstdDecompress(pack);
    expect(summary.rawBytes).toBe(raw.length);
    expect(index).toEqual(summary.index);
    expect(index.checksum).toBe(endChecksum(raw.subarray(0, raw.length - 41)));
    // 3 MiB of noise: four frames, the last one short.
    expect(index.frames.map((f) => f.rawSize)).toEqual([MiB, MiB, MiB, raw.length - 3 * MiB]);
  });

  it('writes and reads an empty pack: the magic and the end record in one frame', async () => {
    const { pack, summary } = await writePack([]);
    expect(zstdDecompress(pack).subarray(0, 9).toString('latin1')).toBe('OSTPACK1\0');
    expect(summary).toMatchObject({ records: 0, rawBytes: 8 + 41, bytes: pack.length });
    const { records, index } = await readAll(pieces(pack));
    expect(records).toEqual([]);
    expect(index).toEqual({
      checksum: sha256(PACK_MAGIC),
      frames: [{ compressedOffset: 0, compressedSize: pack.length, rawSize: 49 }],
      records: [],
    });
  });

  it('reads a pack that arrives one byte at a time, and one that arrives whole', async () => {
    const objs = everyKind().filter((o) => o.payload.length < 100_000);
    const { pack, summary } = await writePack(objs);
    for (const size of [1, pack.length]) {
      // Decoded on this thread, and with `reuse` a frame ahead on the pool (native/zstd).
      for (const reuse of [false, true]) {
        const { records, index } = await readAll(pieces(pack, size), undefined, {
          buffers: new Set(),
          reuse,
        });
        expect(records.map((r) => r.data.toString('hex'))).toEqual(objs.map((o) => o.data.toString('hex')));
        expect(index).toEqual(summary.index);
      }
    }
  });

  it('decodes into regions that end only where a frame or a 1 MiB buffer does, whatever the input chunks', async () => {
    // 3.5 MiB of raw stream in 4 frames, fed in 64 KiB and 1-byte-ish (997) chunks: a region per
    // input chunk meant the reader copied every record that crossed one.
    const raw = Buffer.alloc(3.5 * MiB);
    for (let i = 0; i < raw.length; i += 4) raw.writeUInt32LE((i * 2654435761) >>> 0, i);
    const z = compressRaw(raw);
    for (const size of [64 * 1024, 997]) {
      const frames: FrameInfo[] = [];
      const regions: Array<{ length: number; frame: number; offset: number }> = [];
      const parts: Buffer[] = [];
      for await (const r of decodeFrames(pieces(z, size), frames)) {
        regions.push({ length: r.bytes.length, frame: r.frame, offset: r.offset });
        parts.push(Buffer.from(r.bytes));
      }
      expect(Buffer.concat(parts).equals(raw)).toBe(true);
      expect(frames.map((f) => f.rawSize)).toEqual([MiB, MiB, MiB, MiB / 2]);
      // Each frame is one region, or two where it crosses into a new output buffer.
      expect(regions.length).toBeLessThanOrEqual(frames.length * 2);
      for (const [i, f] of frames.entries()) {
        const mine = regions.filter((r) => r.frame === i);
        expect(mine.reduce((n, r) => n + r.length, 0)).toBe(f.rawSize);
        let at = 0;
        for (const r of mine) {
          expect(r.offset).toBe(at);
          at += r.length;
        }
      }
    }
  });

  it('gives each record whose data is at most `collect` bytes as exactly one Buffer', async () => {
    const objs = everyKind();
    const { pack } = await writePack(objs);
    const { records } = await readAll(pieces(pack, 1000), 64 * 1024);
    for (const [i, r] of records.entries()) {
      const small = objs[i]!.data.length <= 64 * 1024;
      if (small) expect(r.chunks, `record ${i}`).toBe(1);
      else expect(r.chunks).toBeGreaterThan(1);
      expect(r.data.equals(objs[i]!.data)).toBe(true);
    }
    // Without collect, a symlink has no data event at all.
    const plain = await readAll(pieces(pack));
    expect(plain.records[5]!.chunks).toBe(0);
  });

  it('native/zstd is built (a pull decodes a frame ahead on the pool; npm ci builds it)', () => {
    expect(zstdAddonBuilt()).toBe(true);
  });

  it.each([
    ['a frame ahead on the pool (native/zstd)', '1'],
    ['on this thread', '0'],
  ])(
    'reuse, decoded %s: the same decode buffers again and again; a consumer that copies each chunk reads the same',
    async (_, native) => {
      // Every kind, a 3 MiB file across frames, and a 2 MiB .filez checked as a stream (its chunks
      // reach the inflater after the cursor moved on, so the reader copies them for it).
      const objs = [...everyKind(), filezObj(FILE, noiseBuf(3, 2 * MiB))];
      const { pack } = await writePack(objs);
      vi.stubEnv('SYSROOT_NATIVE_ZSTD', native);
      // One decode buffer on this thread; two a frame ahead, one read while the other is decoded into.
      const decodeBuffers = native === '1' ? 2 : 1;
      for (const collect of [undefined, 64 * 1024, MAX_COLLECT]) {
        const fresh = { buffers: new Set<ArrayBufferLike>(), reuse: false };
        const reused = { buffers: new Set<ArrayBufferLike>(), reuse: true };
        const plain = await readAll(pieces(pack, 64 * 1024), collect, fresh);
        const { records, index } = await readAll(pieces(pack, 64 * 1024), collect, reused);
        expect(records.map((r) => r.verified)).toEqual(objs.map(() => true));
        for (const [i, o] of objs.entries())
          expect(records[i]!.data.equals(o.data), `record ${i}`).toBe(true);
        expect(index).toEqual(plain.index);
        // ~7 MiB of raw stream: a new 1 MiB decode buffer per frame without reuse, one or two with it
        // (plus, when collecting, the scratch buffer records crossing regions are gathered in, which
        // grows to the largest: here once for the 2 MiB .filez and once for the 3 MiB file).
        const big = (set: Set<ArrayBufferLike>) => [...set].filter((b) => b.byteLength >= MiB).length;
        expect(big(reused.buffers), `collect ${collect}`).toBeLessThanOrEqual(
          decodeBuffers + (collect ? 2 : 0),
        );
        if (collect === undefined) {
          expect(big(fresh.buffers)).toBeGreaterThanOrEqual(6);
          expect(big(fresh.buffers)).toBeGreaterThan(big(reused.buffers));
        }
      }
    },
  );

  it('reuse: a content header that starts at the end of a full frame reads right', async () => {
    // The reader takes a content header's 8-byte frame (its length) and then the header itself. When
    // the 8 bytes are at the end of a 1 MiB frame and the header is in the next one, taking the
    // header decodes that frame, with `reuse` into the buffer the 8 bytes came from.
    const second = contentObj(FILE, noiseBuf(5, MiB + 4321));
    const head = contentHashPrefix(FILE).length;
    // Raw stream: magic (8), header (41), first payload, header (41), the second payload's 8 bytes
    // ending at `end`: the frame's end, or 2 or 4 bytes into the header before it.
    for (const end of [MiB, MiB - 2, MiB - 4]) {
      const first = contentObj(FILE, noiseBuf(4, end - 8 - 8 - 41 - 41 - head));
      const objs = [first, second];
      const { pack } = await writePack(objs, { level: 1 });
      const out: Buffer[] = [];
      let verified = 0;
      for await (const e of readPack(pieces(pack), { reuse: true, collect: MAX_COLLECT })) {
        if (e.type === 'data') out.push(Buffer.from(e.chunk));
        if (e.type === 'verified') verified++;
      }
      expect(verified, `end ${end}`).toBe(2);
      expect(out[0]!.equals(first.data) && out[1]!.equals(second.data), `end ${end}`).toBe(true);
    }
  });

  it('writes the same bytes for the same records, at any level, and level 0 stores', async () => {
    const objs = everyKind();
    const a = await writePack(objs);
    const b = await writePack(objs);
    expect(a.pack.equals(b.pack)).toBe(true);
    const stored = await writePack(objs, { level: 0 });
    const best = await writePack(objs, { level: 19 });
    expect(stored.pack.length).toBeGreaterThan(a.pack.length);
    expect(best.pack.length).toBeLessThan(a.pack.length);
    // Frames differ, the raw stream does not.
    expect(zstdDecompress(stored.pack).equals(zstdDecompress(a.pack))).toBe(true);
    expect((await readAll(pieces(stored.pack))).index.checksum).toBe(a.summary.index.checksum);
  });

  it('is a plain multi-frame zstd stream: `zstd -dc` prints the magic and the records', async () => {
    const objs = everyKind();
    const { pack, summary } = await writePack(objs);
    const file = join(dir, 'cli.pack');
    writeFileSync(file, pack);
    const raw = execFileSync('zstd', ['-dc', '-q', file], { maxBuffer: 64 * MiB });
    expect(raw.subarray(0, 8).toString('latin1')).toBe('OSTPACK1');
    const recs = parseRaw(raw);
    expect(recs.slice(0, -1).map((r) => [r.kind, r.checksum, r.payload.toString('hex')])).toEqual(
      objs.map((o) => [o.kind, o.checksum, o.payload.toString('hex')]),
    );
    const end = recs.at(-1)!;
    expect([end.kind, end.length, end.at + 41]).toEqual([0, 0, raw.length]);
    expect(end.checksum).toBe(endChecksum(raw.subarray(0, end.at)));
    expect(end.checksum).toBe(summary.index.checksum);
    // `zstd -l` counts the frames the index lists.
    const listing = execFileSync('zstd', ['-lv', file]).toString();
    expect(listing).toMatch(new RegExp(`# Zstandard Frames: ${summary.index.frames.length}\\b`));
    expect(listing).toMatch(/Check: XXH64/);
  });
});

describe('a 40 MiB file', () => {
  const SIZE = 40 * MiB + 7;
  const meta: FileMeta = { ...FILE, mode: 0o100755 };
  const checksum = (() => {
    const h = createHash('sha256').update(contentHashPrefix(meta));
    for (const c of noise(7, SIZE)) h.update(c);
    return h.digest('hex');
  })();
  const small = contentObj(FILE, Buffer.from('after the big one\n'));

  it('streams from writer to reader across 41 frames without either holding it', async () => {
    // Writer -> 256 KiB pipe -> reader, concurrently: at no point does anyone have the whole pack.
    const pipe = new PassThrough({ highWaterMark: 256 * 1024 });
    const w = new PackWriter(writableSink(pipe));
    const writing = (async () => {
      await w.addStream(KIND.content, checksum, contentHashPrefix(meta).length + SIZE, [
        contentHashPrefix(meta),
        ...noise(7, SIZE),
      ]);
      await w.add(small.kind, small.checksum, small.payload);
      const s = await w.finish();
      pipe.end();
      return s;
    })();
    gc();
    const base = process.memoryUsage().arrayBuffers;
    let peak = 0;
    let maxChunk = 0;
    let got = 0;
    const hash = createHash('sha256').update(contentHashPrefix(meta));
    const events: string[] = [];
    let index: PackIndex | undefined;
    for await (const e of readPack(pipe)) {
      if (e.type === 'data') {
        maxChunk = Math.max(maxChunk, e.chunk.length);
        if (events.length === 1) {
          got += e.chunk.length;
          hash.update(e.chunk);
        }
        gc();
        peak = Math.max(peak, process.memoryUsage().arrayBuffers - base);
        continue;
      }
      if (e.type === 'record' && events.length === 0) expect(e.file).toEqual({ meta, size: SIZE });
      if (e.type === 'end') index = e.index;
      events.push(e.type);
    }
    const summary = await writing;
    expect(events).toEqual(['record', 'verified', 'record', 'verified', 'end']);
    expect(got).toBe(SIZE);
    expect(hash.digest('hex')).toBe(checksum);
    expect(maxChunk).toBeLessThanOrEqual(MiB);
    expect(summary.index.frames.length).toBe(41);
    expect(index).toEqual(summary.index);
    // 40 MiB went through; what was alive at any time stayed far below it.
    expect(peak).toBeLessThan(12 * MiB);
  });

  it('refuses the stream if the file had fewer bytes than promised, and the writer stays failed', async () => {
    const w = new PackWriter(async () => {});
    const e = await failsWith(w.addStream(KIND.content, checksum, SIZE + 100, noise(7, SIZE)), 'E_USAGE');
    expect(e.details).toMatchObject({ expected: `${SIZE + 100} bytes`, found: `${SIZE} bytes` });
    await failsWith(w.add(small.kind, small.checksum, small.payload), 'E_USAGE');
    await failsWith(w.finish(), 'E_USAGE');
    const w2 = new PackWriter(async () => {});
    await failsWith(w2.addStream(KIND.content, checksum, 10, [Buffer.alloc(11)]), 'E_USAGE');
  });

  it('is read back through the index a frame at a time', async () => {
    const file = join(dir, 'big.pack');
    const out = createWriteStream(file);
    const w = new PackWriter(writableSink(out));
    await w.addStream(KIND.content, checksum, contentHashPrefix(meta).length + SIZE, [
      contentHashPrefix(meta),
      ...noise(7, SIZE),
    ]);
    await w.add(small.kind, small.checksum, small.payload);
    const { index } = await w.finish();
    out.end();
    await finished(out);
    const p = await PackFile.open(file, decodeIndex(encodeIndex(index)));
    try {
      const h = createHash('sha256');
      let maxChunk = 0;
      for await (const c of p.stream(checksum, KIND.content)) {
        maxChunk = Math.max(maxChunk, c.length);
        h.update(c);
      }
      expect(h.digest('hex')).toBe(checksum);
      expect(maxChunk).toBeLessThanOrEqual(MiB);
      expect((await p.read(small.checksum, KIND.content)).equals(small.payload)).toBe(true);
      await failsWith(p.read(checksum, KIND.content), 'E_USAGE');
    } finally {
      await p.close();
    }
  });
});

describe('random access', () => {
  // 400 small files, some medium ones, metadata: records straddle most of the 3+ frames.
  const objs: Obj[] = [
    ...everyKind(),
    ...Array.from({ length: 400 }, (_, i) =>
      contentObj(FILE, Buffer.from(`file ${i}\n`.repeat(1 + (i % 97)))),
    ),
    ...Array.from({ length: 6 }, (_, i) => contentObj(FILE, noiseBuf(100 + i, 300_000 + i))),
  ];
  let file = '';
  let summary: PackSummary;

  it('finds every record by checksum and kind, byte for byte', async () => {
    ({ summary } = await writePack(objs).then(({ pack, summary }) => {
      file = join(dir, 'ra.pack');
      writeFileSync(file, pack);
      return { summary };
    }));
    writeFileSync(`${file}.idx`, encodeIndex(summary.index));
    const index = decodeIndex(readFileSync(`${file}.idx`));
    expect(index).toEqual(summary.index);
    const p = await PackFile.open(file, index);
    try {
      // Shuffled, deterministically.
      const order = objs.map((_, i) => (i * 7919) % objs.length);
      expect(new Set(order).size).toBe(objs.length);
      for (const i of order) {
        const o = objs[i]!;
        expect(p.has(o.checksum, o.kind)).toBe(true);
        const got = await p.read(o.checksum, o.kind);
        expect(got.equals(o.payload), `record ${i}`).toBe(true);
        if (o.kind === KIND.content) {
          const h = parseContentHeader(got)!;
          expect(h.meta).toEqual(o.file!.meta);
          expect(got.subarray(h.headerLength).equals(o.data)).toBe(true);
        }
      }
      expect(p.has(objs[0]!.checksum, KIND.dirtree)).toBe(false);
      const e = await failsWith(p.read(objs[0]!.checksum, KIND.dirtree), 'E_OBJECT_MISSING');
      expect(e.details.object).toBe(`${objs[0]!.checksum}.dirtree`);
    } finally {
      await p.close();
    }
  });

  it.each([
    ['on the pool (native/zstd)', '1'],
    ['on this thread', '0'],
  ])(
    'decompresses each frame once, %s, when records are read in pack order: the next frame before a read asks for it',
    async (_, native) => {
      vi.stubEnv('SYSROOT_NATIVE_ZSTD', native);
      const p = await PackFile.open(file, summary.index);
      // biome-ignore lint/suspicious/noExplicitAny: reading private state
      const priv = p as any;
      expect(priv.decoder.native).toBe(native === '1');
      const load = vi.spyOn(priv, 'load');
      try {
        // The first record lies in frame 0; taking frame 0 loads frame 1 too.
        await p.read(objs[0]!.checksum, objs[0]!.kind);
        expect(load.mock.calls.map((c) => c[0])).toEqual([0, 1]);
        for (const o of objs.slice(1)) await p.read(o.checksum, o.kind);
        expect(load.mock.calls.map((c) => c[0])).toEqual(summary.index.frames.map((_, i) => i));
        expect(summary.index.frames.length).toBeGreaterThanOrEqual(5);
      } finally {
        await p.close();
      }
    },
  );

  it('recycle: frame buffers are decompressed into again, never under a read that holds them', async () => {
    // In pack order through stream(), copying each chunk as it comes (what a checkout does), and
    // 32 at once in a shuffled order through read(): the same bytes either way, from a handful of
    // frame buffers instead of one per frame.
    const p = await PackFile.open(file, summary.index, { recycle: true });
    const buffers = new Set<ArrayBufferLike>();
    try {
      for (const [i, o] of objs.entries()) {
        const parts: Buffer[] = [];
        for await (const c of p.stream(o.checksum, o.kind)) {
          buffers.add(c.buffer);
          parts.push(Buffer.from(c));
        }
        expect(Buffer.concat(parts).equals(o.payload), `record ${i}`).toBe(true);
      }
      const frames = buffers.size;
      expect(summary.index.frames.length).toBeGreaterThanOrEqual(5);
      expect(frames).toBeLessThanOrEqual(5);
      // view() of a record that spans frames gathers it into one buffer, again and again.
      const spanning = objs.filter((o) => {
        const r = summary.index.records.find((x) => x.checksum === o.checksum && x.kind === o.kind)!;
        return r.offset + RECORD_HEADER_SIZE + r.length > summary.index.frames[r.frame]!.rawSize;
      });
      expect(spanning.length).toBeGreaterThanOrEqual(2);
      const gathered = new Set<ArrayBufferLike>();
      for (const o of spanning) {
        const v = await p.view(o.checksum, o.kind);
        expect(v.equals(o.payload)).toBe(true);
        gathered.add(v.buffer);
      }
      expect(gathered.size).toBe(1);
      const order = objs.map((_, i) => (i * 7919) % objs.length);
      await mapLimit(order, 32, async (i) => {
        const o = objs[i]!;
        expect((await p.read(o.checksum, o.kind)).equals(o.payload), `record ${i}`).toBe(true);
      });
    } finally {
      await p.close();
    }
  });

  it('refuses an index that belongs to another pack', async () => {
    const other = await writePack(objs.slice(1));
    const e = await failsWith(PackFile.open(file, other.summary.index), 'E_BAD_PACK');
    expect(e.details).toMatchObject({
      expected: `${other.pack.length} bytes`,
      found: `${summary.bytes} bytes`,
    });
    // Same frames, records shifted by one: the record headers in the pack give it away.
    const shifted: PackIndex = {
      ...summary.index,
      records: summary.index.records.map((r, i) => ({
        ...summary.index.records[(i + 1) % objs.length]!,
        kind: r.kind,
        checksum: r.checksum,
      })),
    };
    const p = await PackFile.open(file, shifted);
    try {
      await failsWith(p.read(objs[0]!.checksum, objs[0]!.kind), 'E_BAD_PACK');
    } finally {
      await p.close();
    }
  });

  it.each([
    ['on the pool (native/zstd)', '1'],
    ['on this thread', '0'],
  ])('detects a damaged frame on disk through its zstd checksum, decompressed %s', async (_, native) => {
    vi.stubEnv('SYSROOT_NATIVE_ZSTD', native);
    const pack = readFileSync(file);
    const f = summary.index.frames[1]!;
    // Flip a byte in the middle of a block, away from the frame header.
    pack[f.compressedOffset + Math.floor(f.compressedSize / 2)]! ^= 0x40;
    const bad = join(dir, `damaged-${native}.pack`);
    writeFileSync(bad, pack);
    const p = await PackFile.open(bad, summary.index);
    try {
      // A record in frame 0 reads right: frame 1, loaded ahead and damaged, fails only for a read of it.
      const inFrame0 = summary.index.records[0]!;
      expect(inFrame0.frame).toBe(0);
      expect((await p.read(inFrame0.checksum, inFrame0.kind)).equals(objs[0]!.payload)).toBe(true);
      // The record that runs through frame 1 (the 3 MiB file starts in frame 0).
      const inFrame1 = summary.index.records.filter((r) => r.frame <= 1).at(-1)!;
      expect(inFrame1.length).toBeGreaterThan(MiB);
      const e = await failsWith(p.read(inFrame1.checksum, inFrame1.kind), 'E_BAD_PACK');
      expect(e.details.frame).toBe(1);
      // Asked again, it fails again (a failed frame is not kept).
      const again = await failsWith(p.read(inFrame1.checksum, inFrame1.kind), 'E_BAD_PACK');
      expect(again.details.frame).toBe(1);
    } finally {
      await p.close();
    }
  });

  it('detects a damaged .idx', () => {
    const idx = encodeIndex(summary.index);
    for (const at of [0, 9, 45, 60, idx.length - 100, idx.length - 1]) {
      const bad = Buffer.from(idx);
      bad[at]! ^= 1;
      expect(() => decodeIndex(bad), `byte ${at}`).toThrow(expect.objectContaining({ code: 'E_BAD_PACK' }));
    }
    let err: unknown;
    try {
      const bad = Buffer.from(idx);
      bad[60]! ^= 1;
      decodeIndex(bad);
    } catch (e) {
      err = e;
    }
    expect((err as RegistryError).details).toMatchObject({
      expected: idx.toString('hex', idx.length - 32),
    });
    expect(() => decodeIndex(idx.subarray(0, idx.length - 49))).toThrow(/damaged pack index/);
    expect(() => decodeIndex(Buffer.alloc(10))).toThrow(/too short/);
  });

  it('keeps a record length above 4 GiB exact (a u64 in the .idx)', () => {
    // 5,200 full frames (~5.1 GiB raw) and one record spanning nearly all of them.
    const frames = Array.from({ length: 5200 }, (_, i) => ({
      compressedOffset: i * 1000,
      compressedSize: 1000,
      rawSize: FRAME_TARGET,
    }));
    const length = 5200 * FRAME_TARGET - 8 - 2 * RECORD_HEADER_SIZE - 3;
    expect(length).toBeGreaterThan(2 ** 32);
    const index: PackIndex = {
      checksum: 'ab'.repeat(32),
      frames,
      records: [{ kind: KIND.filez, checksum: 'cd'.repeat(32), frame: 0, offset: 8, length }],
    };
    const back = decodeIndex(encodeIndex(index));
    expect(back.records).toEqual(index.records);
    expect(back.frames).toEqual(frames);
    // One byte longer and it would run into the end record: refused.
    const over = { ...index, records: [{ ...index.records[0]!, length: length + 4 }] };
    expect(() => decodeIndex(encodeIndex(over))).toThrow(/not inside the pack/);
  });

  it('refuses an intact .idx whose records lie outside its frames', () => {
    const bad: PackIndex = {
      ...summary.index,
      records: [{ ...summary.index.records[0]!, length: summary.rawBytes }],
    };
    expect(() => decodeIndex(encodeIndex(bad))).toThrow(/record 0 is not inside the pack/);
  });
});

describe('a damaged pack is refused with the right code and evidence', () => {
  const objs = everyKind();
  let pack: Buffer;
  let raw: Buffer;
  let recs: RawRecord[];

  it('(setup) writes the pack', async () => {
    pack = (await writePack(objs)).pack;
    raw = zstdDecompress(pack);
    recs = parseRaw(raw);
  });

  /** The raw stream with `f` applied to a copy, recompressed. */
  const damage = (f: (r: Buffer) => Buffer | undefined) => {
    const copy = Buffer.from(raw);
    return compressRaw(f(copy) ?? copy);
  };

  it('a flipped byte in a file: E_CORRUPT_OBJECT naming the object, expected / found', async () => {
    const file = recs[4]!;
    expect(file.kind).toBe(KIND.content);
    const bad = damage((r) => {
      r[file.at + 41 + file.length - 3]! ^= 1;
      return r;
    });
    const payload = Buffer.from(file.payload);
    payload[payload.length - 3]! ^= 1;
    const e = await readFails(bad, 'E_CORRUPT_OBJECT');
    expect(e.details).toEqual({
      object: `${file.checksum}.file`,
      expected: file.checksum,
      found: sha256(payload),
    });
  });

  it('a flipped byte in a content header: still a checksum mismatch, with what it hashes to', async () => {
    const file = recs[4]!;
    const bad = damage((r) => {
      r[file.at + 41 + 12]! ^= 0x80;
      return r;
    });
    const payload = Buffer.from(file.payload);
    payload[12]! ^= 0x80;
    const e = await readFails(bad, 'E_CORRUPT_OBJECT');
    expect(e.details).toEqual({
      object: `${file.checksum}.file`,
      expected: file.checksum,
      found: sha256(payload),
    });
  });

  it('a flipped byte in a commit', async () => {
    const c = recs[0]!;
    const bad = damage((r) => {
      r[c.at + 41 + 20]! ^= 4;
      return r;
    });
    const e = await readFails(bad, 'E_CORRUPT_OBJECT');
    expect(e.details.object).toBe(`${c.checksum}.commit`);
    expect(e.details.expected).toBe(c.checksum);
    expect(e.details.found).toMatch(/^[0-9a-f]{64}$/);
    expect(e.details.found).not.toBe(c.checksum);
  });

  it('a wrong length: the payload no longer hashes to its name', async () => {
    const d = recs[3]!;
    expect(d.kind).toBe(KIND.dirmeta);
    const bad = damage((r) => {
      r.writeBigUInt64BE(BigInt(d.length + 1), d.at + 33);
      return r;
    });
    const e = await readFails(bad, 'E_CORRUPT_OBJECT');
    expect(e.details).toMatchObject({
      object: `${d.checksum}.dirmeta`,
      found: sha256(raw.subarray(d.at + 41, d.at + 41 + d.length + 1)),
    });
  });

  it('a length past the end of the stream: truncated', async () => {
    const f = recs.at(-2)!;
    const bad = damage((r) => {
      r.writeBigUInt64BE(BigInt(f.length + 10_000_000), f.at + 33);
      return r;
    });
    const e = await readFails(bad, 'E_BAD_PACK');
    expect(e.message).toMatch(/truncated inside record/);
  });

  it('an unknown kind', async () => {
    const bad = damage((r) => {
      r[recs[2]!.at] = 9;
      return r;
    });
    const e = await readFails(bad, 'E_BAD_PACK');
    expect(e.details).toMatchObject({ found: '9', offset: recs[2]!.at });
  });

  it('a bad magic', async () => {
    const bad = damage((r) => {
      r.write('OSTPACK2', 0, 'latin1');
      return r;
    });
    const e = await readFails(bad, 'E_BAD_PACK');
    expect(e.details).toEqual({ expected: 'OSTPACK1', found: Buffer.from('OSTPACK2').toString('hex') });
    await readFails(Buffer.from('not zstd at all'), 'E_BAD_PACK');
    await readFails(Buffer.alloc(0), 'E_BAD_PACK');
  });

  it('a stream cut in the middle of a frame', async () => {
    const { summary } = await writePack(objs);
    const f = summary.index.frames[1]!;
    const e = await readFails(pack.subarray(0, f.compressedOffset + 1000), 'E_BAD_PACK');
    expect(e.message).toMatch(/ends inside frame 1/);
    // Even a cut in the last frame, a few bytes short: the end record cannot be confirmed.
    await readFails(pack.subarray(0, pack.length - 3), 'E_BAD_PACK');
  });

  it('a stream cut at a frame boundary', async () => {
    const { summary } = await writePack(objs);
    for (const f of summary.index.frames.slice(1)) {
      const e = await readFails(pack.subarray(0, f.compressedOffset), 'E_BAD_PACK');
      expect(e.message).toMatch(/truncated/);
    }
  });

  it('a stream without its end record', async () => {
    const e = await readFails(compressRaw(raw.subarray(0, raw.length - 41)), 'E_BAD_PACK');
    expect(e.message).toMatch(/without an end record/);
  });

  it('bytes after the end record: in its frame, in another frame, or not zstd at all', async () => {
    const inFrame = compressRaw(Buffer.concat([raw, Buffer.from([0])]));
    const e1 = await readFails(inFrame, 'E_BAD_PACK');
    expect(e1.message).toMatch(/trailing bytes after the end record/);
    const nextFrame = Buffer.concat([pack, new FrameCompressor(3).compress(Buffer.from('more'))]);
    const e2 = await readFails(nextFrame, 'E_BAD_PACK');
    expect(e2.message).toMatch(/trailing bytes after the end record/);
    const garbage = Buffer.concat([pack, Buffer.from('garbage')]);
    const e3 = await readFails(garbage, 'E_BAD_PACK');
    expect(e3.message).toMatch(/trailing bytes after the end record/);
    // A zstd skippable frame (magic 0x184D2A50, 4-byte length): data outside every record.
    const skippable = Buffer.from([0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4]);
    await readFails(Buffer.concat([pack, skippable]), 'E_BAD_PACK');
    const first = (await writePack(objs)).summary.index.frames[1]!.compressedOffset;
    const e4 = await readFails(
      Buffer.concat([pack.subarray(0, first), skippable, pack.subarray(first)]),
      'E_BAD_PACK',
    );
    expect(e4.message).toMatch(/frame 1 is empty/);
  });

  it('a bad end checksum, with the checksum of what was read', async () => {
    const end = recs.at(-1)!;
    const bad = damage((r) => {
      r[end.at + 5]! ^= 1;
      return r;
    });
    const e = await readFails(bad, 'E_BAD_PACK');
    const expected = Buffer.from(end.checksum, 'hex');
    expected[4]! ^= 1;
    expect(e.details).toMatchObject({ expected: expected.toString('hex'), found: end.checksum });
    const withLength = damage((r) => {
      r.writeBigUInt64BE(1n, end.at + 33);
      return r;
    });
    await readFails(withLength, 'E_BAD_PACK');
  });

  /** The raw stream rebuilt from the given records (each verifies on its own), then the original end record. */
  const restack = (parts: Buffer[]) => {
    const end = recs.at(-1)!;
    return compressRaw(Buffer.concat([PACK_MAGIC, ...parts, raw.subarray(end.at, end.at + 41)]));
  };
  const whole = (r: RawRecord) => raw.subarray(r.at, r.at + 41 + r.length);

  it('records reordered, dropped, duplicated or inserted: the end checksum (over the headers) differs', async () => {
    const body = recs.slice(0, -1).map(whole);
    const swapped = [body[0]!, body[1]!, body[3]!, body[2]!, ...body.slice(4)];
    const dropped = [...body.slice(0, 5), ...body.slice(6)];
    const duplicated = [...body.slice(0, 5), body[4]!, ...body.slice(5)];
    const extra = contentObj(FILE, Buffer.from('inserted'));
    const inserted = [
      ...body.slice(0, 5),
      rawRecord(extra.kind, extra.checksum, extra.payload),
      ...body.slice(5),
    ];
    const end = recs.at(-1)!;
    for (const parts of [swapped, dropped, duplicated, inserted]) {
      const e = await readFails(restack(parts), 'E_BAD_PACK');
      expect(e.message).toMatch(/end checksum/);
      expect(e.details.expected).toBe(end.checksum);
      expect(e.details.found).toBe(endChecksum(Buffer.concat([PACK_MAGIC, ...parts])));
    }
    // The same records in their own order still read.
    expect((await readAll(pieces(restack(body)))).index.checksum).toBe(end.checksum);
  });

  it('a commitmeta or filez payload changed, though it still decodes or inflates to its name', async () => {
    const body = recs.slice(0, -1).map(whole);
    const cm = recs[1]!;
    expect(cm.kind).toBe(KIND.commitmeta);
    // Same length, still a valid commitmeta: only the end checksum can tell.
    const otherMeta = encodeCommitMeta([['sysroot.note', new Variant('s', 'signed LATER')]]);
    expect(otherMeta.length).toBe(cm.length);
    const f = recs[8]!;
    expect(f.kind).toBe(KIND.filez);
    // The same file deflated at another level: a valid .filez of the same object, other bytes.
    const data = Buffer.from('filez payload\n'.repeat(1000));
    const otherFilez = Buffer.concat([filezHeader(FILE, data.length), deflateRawSync(data, { level: 9 })]);
    expect(otherFilez.equals(f.payload)).toBe(false);
    await readAll(pieces(packOfRecords(rawRecord(KIND.filez, f.checksum, otherFilez))));
    for (const [i, r] of [
      [1, rawRecord(KIND.commitmeta, cm.checksum, otherMeta)],
      [8, rawRecord(KIND.filez, f.checksum, otherFilez)],
    ] as const) {
      const parts = body.map((b, j) => (j === i ? r : b));
      const e = await readFails(restack(parts), 'E_BAD_PACK');
      expect(e.message).toMatch(/end checksum/);
    }
  });

  it('a dirtree not in normal form, though it hashes to its name: E_NOT_NORMAL_FORM', async () => {
    // A non-minimal framing: one file entry whose offsets are padded with a zero byte.
    const good = encodeDirTree({ files: [{ name: 'a', checksum: 'ab'.repeat(32) }], dirs: [] });
    const bytes = Buffer.concat([good, Buffer.from([0])]);
    const checksum = sha256(bytes);
    const e = await readFails(packOfRecords(rawRecord(KIND.dirtree, checksum, bytes)), 'E_NOT_NORMAL_FORM');
    expect(e.details.object).toBe(`${checksum}.dirtree`);
    // And a dirmeta that decodes but is not a directory.
    const dm = encode('(uuua(ayay))', [0, 0, 0x00a48100, []]);
    await readFails(packOfRecords(rawRecord(KIND.dirmeta, sha256(dm), dm)), 'E_CORRUPT_OBJECT');
    // A commitmeta is not hashed, but it must decode.
    const cm = Buffer.from('not a variant dict');
    const e2 = await readFails(
      packOfRecords(rawRecord(KIND.commitmeta, 'cd'.repeat(32), cm)),
      'E_NOT_NORMAL_FORM',
    );
    expect(e2.details.object).toBe(`${'cd'.repeat(32)}.commitmeta`);
  });

  it('a content header not in normal form: E_NOT_NORMAL_FORM; a symlink with bytes: E_CORRUPT_OBJECT', async () => {
    const h = Buffer.concat([contentHashPrefix(LINK)]);
    const nonNormal = Buffer.concat([h, Buffer.from([0])]);
    nonNormal.writeUInt32BE(nonNormal.length - 8, 0);
    const e = await readFails(
      packOfRecords(rawRecord(KIND.content, sha256(nonNormal), nonNormal)),
      'E_NOT_NORMAL_FORM',
    );
    expect(e.details.object).toBe(`${sha256(nonNormal)}.file`);
    const withBytes = Buffer.concat([h, Buffer.from('x')]);
    const e2 = await readFails(
      packOfRecords(rawRecord(KIND.content, sha256(withBytes), withBytes)),
      'E_CORRUPT_OBJECT',
    );
    expect(e2.details.found).toBe('1 bytes');
  });

  it('a filez that does not inflate to its name, small or streamed', async () => {
    for (const size of [1000, 3 * MiB]) {
      const good = filezObj(FILE, noiseBuf(3, size));
      const other = filezObj(FILE, noiseBuf(4, size));
      const e = await readFails(
        packOfRecords(rawRecord(KIND.filez, good.checksum, other.payload)),
        'E_CORRUPT_OBJECT',
      );
      expect(e.details, `${size} bytes`).toEqual({
        object: `${good.checksum}.file`,
        expected: good.checksum,
        found: other.checksum,
      });
      const garbage = Buffer.concat([filezHeader(FILE, size), Buffer.alloc(size + 10, 0xff)]);
      const e2 = await readFails(
        packOfRecords(rawRecord(KIND.filez, good.checksum, garbage)),
        'E_CORRUPT_OBJECT',
      );
      expect(e2.details.found).toBe('invalid deflate stream');
      // Bytes after the deflate stream are refused too.
      const trailing = Buffer.concat([good.payload, Buffer.from([0])]);
      const e3 = await readFails(
        packOfRecords(rawRecord(KIND.filez, good.checksum, trailing)),
        'E_CORRUPT_OBJECT',
      );
      expect(e3.details.found).toMatch(/trailing bytes/);
      // And the good one passes both ways.
      const ok = await readAll(pieces(packOfRecords(rawRecord(KIND.filez, good.checksum, good.payload))));
      expect(ok.records[0]!.verified).toBe(true);
      expect(ok.records[0]!.data.equals(good.payload)).toBe(true);
    }
  });

  it('a small filez that inflates to 20 MiB is checked as a stream, and a wrong one still caught', async () => {
    const zeros = filezObj(FILE, Buffer.alloc(20 * MiB));
    expect(zeros.payload.length).toBeLessThan(100_000);
    const ok = await readAll(pieces(packOfRecords(rawRecord(KIND.filez, zeros.checksum, zeros.payload))));
    expect(ok.records[0]).toMatchObject({ verified: true, file: { size: 20 * MiB } });
    expect(ok.records[0]!.data.equals(zeros.payload)).toBe(true);
    const ones = filezObj(FILE, Buffer.alloc(20 * MiB, 1));
    const e = await readFails(
      packOfRecords(rawRecord(KIND.filez, zeros.checksum, ones.payload)),
      'E_CORRUPT_OBJECT',
    );
    expect(e.details).toMatchObject({ expected: zeros.checksum, found: ones.checksum });
  });

  it('a frame larger than FRAME_TARGET', async () => {
    const e = await readFails(compressRaw(raw, 2 * FRAME_TARGET), 'E_BAD_PACK');
    expect(e.message).toMatch(/frame 0/);
  });

  it('any byte of the compressed stream flipped: refused or read right, by both decoders', async () => {
    // zstd's own checks (block headers, the content checksum) and the records' meet on the bytes of
    // the pack as sent. The decoder on this thread yields a frame's bytes before its checksum is
    // read at the frame's end, so a record may fail first there (E_CORRUPT_OBJECT), where the one
    // ahead on the pool (native/zstd) refuses the whole frame (E_BAD_PACK): both must refuse.
    let seed = 12345;
    const next = () => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed;
    };
    const expected = objs.map((o) => o.data.toString('hex'));
    let refused = 0;
    for (let i = 0; i < 150; i++) {
      const bad = Buffer.from(pack);
      bad[next() % bad.length]! ^= 1 << (next() % 8);
      for (const reuse of [false, true]) {
        try {
          const { records } = await readAll(pieces(bad, 4096), undefined, { buffers: new Set(), reuse });
          // A flip zstd does not read (padding bits) changes nothing: every record must be intact.
          expect(records.map((r) => r.data.toString('hex'))).toEqual(expected);
        } catch (e) {
          if (!isRegistryError(e)) throw e;
          expect(['E_BAD_PACK', 'E_CORRUPT_OBJECT', 'E_NOT_NORMAL_FORM']).toContain(e.code);
          refused++;
        }
      }
    }
    expect(refused).toBeGreaterThan(250);
  });
});

describe('PackWriter', () => {
  it('waits for a slow sink: memory stays at a few frames', async () => {
    const pipe = new PassThrough({ highWaterMark: 1 });
    const w = new PackWriter(writableSink(pipe), { level: 0 });
    let added = 0;
    const writing = (async () => {
      for (const c of noise(9, 32 * MiB)) {
        const o = contentObj(FILE, c);
        await w.add(o.kind, o.checksum, o.payload);
        added++;
      }
      await w.finish();
      pipe.end();
    })();
    await new Promise((r) => setTimeout(r, 300));
    // Nobody reads the pipe: the writer stops once the frames in flight (2 per pool worker) are full.
    expect(added).toBeGreaterThanOrEqual(1);
    expect(added).toBeLessThanOrEqual(2 * availableParallelism() + 2);
    const { records } = await readAll(pipe);
    await writing;
    expect(records).toHaveLength(32);
  });

  it('writes the same bytes with or without the worker pool', async () => {
    // 12 frames: the pool starts on the first frame and takes over once a worker is ready.
    const objs = Array.from({ length: 12 }, (_, i) => contentObj(FILE, noiseBuf(20 + i, MiB - 1000)));
    const pooled = await writePack(objs);
    await vi.waitFor(() => expect(zstdPool().ready).toBe(true), { timeout: 10_000 });
    const compress = vi.spyOn(zstdPool(), 'compress');
    const warm = await writePack(objs);
    expect(compress).toHaveBeenCalledTimes(12);
    compress.mockClear();
    const alone = await writePack(objs, { threads: false });
    expect(compress).not.toHaveBeenCalled();
    compress.mockRestore();
    expect(pooled.pack.equals(alone.pack)).toBe(true);
    expect(warm.pack.equals(alone.pack)).toBe(true);
    expect(warm.summary).toEqual(alone.summary);
    expect(alone.summary.index.frames).toHaveLength(12);
  });

  it('without an index writes the same bytes and summary, less the records, and still refuses duplicates', async () => {
    const objs = everyKind();
    const full = await writePack(objs, { threads: false });
    const bare = await writePack(objs, { threads: false, index: false });
    expect(bare.pack.equals(full.pack)).toBe(true);
    expect(bare.summary).toEqual({ ...full.summary, index: { ...full.summary.index, records: [] } });
    expect(bare.summary.records).toBe(objs.length);
    const w = new PackWriter(async () => {}, { index: false });
    const [commit] = objs;
    await w.add(commit!.kind, commit!.checksum, commit!.payload);
    // The same checksum as another kind is another record (a commit and its commitmeta share one).
    await w.add(KIND.commitmeta, commit!.checksum, Buffer.from('not hashed'));
    await failsWith(w.add(commit!.kind, commit!.checksum, commit!.payload), 'E_USAGE');
  });

  it('refuses duplicates, bad kinds, bad checksums, overlapping calls and use after finish', async () => {
    const [commit] = everyKind();
    const w = new PackWriter(async () => {});
    await w.add(commit!.kind, commit!.checksum, commit!.payload);
    await failsWith(w.add(commit!.kind, commit!.checksum, commit!.payload), 'E_USAGE');
    const w2 = new PackWriter(async () => {});
    await failsWith(w2.add(7 as RecordKind, commit!.checksum, commit!.payload), 'E_USAGE');
    await failsWith(
      new PackWriter(async () => {}).add(KIND.commit, 'ABC', commit!.payload),
      'E_INVALID_CHECKSUM',
    );
    const w3 = new PackWriter(async () => {});
    const first = w3.addStream(
      KIND.content,
      'aa'.repeat(32),
      1,
      (async function* () {
        await new Promise((r) => setTimeout(r, 20));
        yield Buffer.from('x');
      })(),
    );
    await failsWith(w3.add(commit!.kind, commit!.checksum, commit!.payload), 'E_USAGE');
    await first;
    await w3.finish();
    await failsWith(w3.finish(), 'E_USAGE');
    expect(() => new PackWriter(async () => {}, { level: 1.5 })).toThrow(/level 1.5/);
  });

  it('fails when the sink fails, and stays failed', async () => {
    const w = new PackWriter(async () => {
      throw new Error('disk full');
    });
    const o = contentObj(FILE, noiseBuf(5, 2 * MiB));
    // Frames reach the sink a few frames behind the records: the failure shows by finish() at the latest.
    await expect(
      (async () => {
        await w.add(o.kind, o.checksum, o.payload);
        await w.finish();
      })(),
    ).rejects.toThrow('disk full');
    await expect(w.add(KIND.dirmeta, 'ab'.repeat(32), Buffer.alloc(1))).rejects.toThrow('disk full');
  });

  it('writes content from metadata and bytes without the caller joining them', async () => {
    const o = contentObj(FILE, Buffer.from('hello\n'));
    const chunks: Buffer[] = [];
    const w = new PackWriter(async (c) => {
      chunks.push(c);
    });
    await w.addContent(o.checksum, FILE, o.data);
    await w.finish();
    const { records } = await readAll(pieces(Buffer.concat(chunks)));
    expect(records[0]).toMatchObject({
      kind: KIND.content,
      checksum: o.checksum,
      verified: true,
      file: o.file,
    });
  });
});

describe('readPack', () => {
  it('closes its source when the consumer stops early', async () => {
    const { pack } = await writePack(everyKind());
    let closed = false;
    async function* source(): AsyncGenerator<Buffer> {
      try {
        yield* pieces(pack, 4096);
      } finally {
        closed = true;
      }
    }
    const seen: PackEvent['type'][] = [];
    for await (const e of readPack(source())) {
      seen.push(e.type);
      if (e.type === 'verified') break;
    }
    expect(seen[0]).toBe('record');
    expect(closed).toBe(true);
  });

  it('passes on an error of its source unchanged', async () => {
    const { pack } = await writePack(everyKind());
    async function* source(): AsyncGenerator<Buffer> {
      yield pack.subarray(0, 5000);
      throw new Error('connection reset');
    }
    await expect(readAll(source())).rejects.toThrow('connection reset');
  });

  it('refuses a collect limit over 16 MiB', async () => {
    await failsWith(readPack(pieces(Buffer.alloc(0)), { collect: 17 * MiB }).next(), 'E_USAGE');
  });
});
