/**
 * readPack: the streaming, verifying pack reader.
 *
 * For each record the events are
 *
 *   { type: 'record', kind, checksum, length, file? }   length: payload bytes in the pack
 *   { type: 'data', chunk } …                             zero or more, each at most 1 MiB
 *   { type: 'verified', tree? }                           only once the record checked out (tree: a
 *                                                         dirtree's decoded entries)
 *
 * and last `{ type: 'end', index }`, once the end record's sha256 (of the magic, the record headers
 * and the payloads endHashCovers names) matched and nothing followed it.
 * Anything wrong throws: E_CORRUPT_OBJECT (naming the object, with expected / found) or
 * E_NOT_NORMAL_FORM for a record, E_BAD_PACK for the pack as a whole. Nothing read before
 * `verified` may be trusted (stored under its name, renamed into place).
 *
 * What `data` carries, by kind:
 * - content (5): the file's bytes only. The header in front of them is given as `file.meta` in
 *   the record event, so a checkout can create the file before its bytes arrive; the payload is
 *   exactly `contentHashPrefix(file.meta) ‖ data` (the header is in normal form, so it re-encodes
 *   byte for byte). `file.size` is the number of data bytes.
 * - filez (6): the `.filez` bytes as they are stored; `file` gives the header it starts with (meta,
 *   and the inflated size).
 * - the others: the payload, which is the object's bytes.
 *
 * Memory stays flat: `data` chunks are slices of 1 MiB decode buffers, passed on as they are decoded.
 * Only metadata records (at most 10 MiB, OSTree's own limit) and `.filez` records of at most 1 MiB
 * (inflating to at most 16 MiB) are held whole, because they are checked whole. With
 * `collect: n`, a record whose data is at most n bytes comes as exactly one `data` event (empty for
 * a symlink), so small objects arrive as one Buffer.
 */
import { createHash } from 'node:crypto';
import { isRegistryError, RegistryError } from '../errors.js';
import {
  type Checksum,
  type DirTree,
  decodeCommit,
  decodeCommitMeta,
  decodeDirMeta,
  decodeDirTree,
  type FileMeta,
  isSymlink,
  MAX_FILEZ_HEADER,
  parseContentHeader,
  parseFilezHeader,
} from '../objects/index.js';
import { checkFilez, inflateVerified } from '../store/object-store.js';
import {
  badPack,
  corruptRecord,
  END_KIND,
  endHashCovers,
  FRAME_TARGET,
  type FrameInfo,
  isRecordKind,
  KIND,
  MAX_METADATA_RECORD,
  PACK_MAGIC,
  type PackIndex,
  RECORD_HEADER_SIZE,
  type RecordInfo,
  type RecordKind,
  recordId,
} from './format.js';
import { decodeFrames, type Region } from './frames.js';

/** The header of a content or filez record. */
export interface RecordFile {
  meta: FileMeta;
  /** The file's size: data bytes of a content record, inflated bytes of a filez record. */
  size: number;
}

export type PackEvent =
  | { type: 'record'; kind: RecordKind; checksum: Checksum; length: number; file?: RecordFile }
  | { type: 'data'; chunk: Buffer }
  /** A dirtree record's `verified` carries the tree it decoded: a checkout need not decode it again. */
  | { type: 'verified'; tree?: DirTree }
  | { type: 'end'; index: PackIndex };

export interface ReadPackOptions {
  /** Records whose data is at most this many bytes (≤ MAX_COLLECT) come as one `data` event. Default 0. */
  collect?: number;
  /**
   * Decode into one buffer again and again (decodeFrames' `reuse`): a `data` chunk is then valid
   * only until the next event is asked for, and a consumer copies what it keeps. For a consumer
   * that writes each chunk out at once (a pull's checkout); it saves a fresh 1 MiB per frame.
   */
  reuse?: boolean;
}

export const MAX_COLLECT = 16 * 1024 * 1024;

/** `data` chunks of metadata records held whole are cut to this size. */
const CHUNK = FRAME_TARGET;
/** .filez records up to this size, inflating to at most FILEZ_WHOLE_INFLATED, are checked in one call. */
const FILEZ_WHOLE = 1024 * 1024;
const FILEZ_WHOLE_INFLATED = 16 * 1024 * 1024;
const EMPTY = Buffer.alloc(0);

/** Reads a pack from its compressed bytes, verifying every record; see the top of this file. */
export async function* readPack(
  source: AsyncIterable<Uint8Array>,
  opts: ReadPackOptions = {},
): AsyncGenerator<PackEvent> {
  const collect = opts.collect ?? 0;
  if (!Number.isSafeInteger(collect) || collect < 0 || collect > MAX_COLLECT) {
    throw new RegistryError('E_USAGE', `readPack: collect must be 0..${MAX_COLLECT}`, {
      found: String(collect),
    });
  }
  const frames: FrameInfo[] = [];
  const regions = decodeFrames(source, frames, { reuse: opts.reuse === true });
  const cur = new Cursor(regions);
  try {
    const stream = createHash('sha256');
    const magic = await cur.take(PACK_MAGIC.length);
    if (!magic) throw badPack('truncated: the stream ends before the magic', { expected: 'OSTPACK1' });
    if (!magic.equals(PACK_MAGIC)) {
      throw badPack('bad magic', { expected: 'OSTPACK1', found: magic.toString('hex') });
    }
    stream.update(magic);
    const records: RecordInfo[] = [];
    for (;;) {
      if (!(await cur.more())) {
        throw badPack('truncated: the stream ends without an end record', { offset: cur.consumed });
      }
      const frame = cur.frame;
      const offset = cur.frameOffset;
      const at = cur.consumed;
      const head = await cur.take(RECORD_HEADER_SIZE);
      if (!head) throw badPack('truncated inside a record header', { offset: at });
      const kind = head[0]!;
      const checksum = head.toString('hex', 1, 33);
      const length64 = head.readBigUInt64BE(33);
      if (kind === END_KIND) {
        yield {
          type: 'end',
          index: await finishPack(cur, stream.digest('hex'), checksum, length64, at, frames, records),
        };
        return;
      }
      if (!isRecordKind(kind)) {
        throw badPack(`unknown record kind ${kind}`, { found: String(kind), expected: '0..6', offset: at });
      }
      if (length64 > BigInt(Number.MAX_SAFE_INTEGER)) {
        throw badPack(`record ${recordId(kind, checksum)}: length ${length64} is out of range`, {
          object: recordId(kind, checksum),
          found: String(length64),
          offset: at,
        });
      }
      const length = Number(length64);
      stream.update(head);
      records.push({ kind, checksum, frame, offset, length });
      const r = new RecordReader(
        cur,
        endHashCovers(kind) ? stream : undefined,
        kind,
        checksum,
        length,
        collect,
        opts.reuse === true,
      );
      if (kind === KIND.content) yield* r.content();
      else if (kind === KIND.filez) yield* r.filez();
      else yield* r.metadata();
    }
  } finally {
    // Closes the decoder and, through it, the source (an HTTP body, a file).
    await regions.return(undefined);
  }
}

/** The end record: its checksum, its zero length, and nothing after it. */
async function finishPack(
  cur: Cursor,
  found: Checksum,
  expected: Checksum,
  length: bigint,
  at: number,
  frames: FrameInfo[],
  records: RecordInfo[],
): Promise<PackIndex> {
  if (length !== 0n) {
    throw badPack(`the end record has a length (${length})`, {
      expected: '0',
      found: String(length),
      offset: at,
    });
  }
  if (found !== expected) {
    throw badPack('the end checksum does not match the records', { expected, found, offset: at });
  }
  let trailing: boolean;
  try {
    trailing = await cur.more();
  } catch (e) {
    // Garbage or a cut-off frame after the last one: still bytes that should not be there.
    throw badPack('trailing bytes after the end record', { offset: at + RECORD_HEADER_SIZE }, e);
  }
  if (trailing) throw badPack('trailing bytes after the end record', { offset: at + RECORD_HEADER_SIZE });
  return { checksum: found, frames, records };
}

/** One record's payload: reads it from the cursor, checks it, and hashes it into the end checksum if covered. */
class RecordReader {
  private readonly id: string;

  constructor(
    private readonly cur: Cursor,
    /** The end checksum, when it covers this record's payload. */
    private readonly stream: ReturnType<typeof createHash> | undefined,
    private readonly kind: RecordKind,
    private readonly checksum: Checksum,
    private readonly length: number,
    private readonly collect: number,
    /** The cursor's bytes are overwritten once it moves on (ReadPackOptions.reuse). */
    private readonly reuse: boolean,
  ) {
    this.id = recordId(kind, checksum);
  }

  private record(file?: RecordFile): PackEvent {
    return file
      ? { type: 'record', kind: this.kind, checksum: this.checksum, length: this.length, file }
      : { type: 'record', kind: this.kind, checksum: this.checksum, length: this.length };
  }

  /**
   * Exactly n bytes (hashed into the end checksum if covered); a slice when they lie in one decode
   * buffer. `last`: nothing else is taken before the caller is done with them (the record's whole
   * payload), so with `reuse` bytes that cross a region may be gathered in the cursor's scratch
   * buffer instead of a fresh one.
   */
  private async need(n: number, last = false): Promise<Buffer> {
    const b = await this.cur.take(n, last && this.reuse);
    if (!b)
      throw badPack(`truncated inside record ${this.id}`, { object: this.id, offset: this.cur.consumed });
    this.stream?.update(b);
    return b;
  }

  /** The next at most `max` (> 0) bytes as they come (hashed into the end checksum if covered). */
  private async some(max: number): Promise<Buffer> {
    const b = await this.cur.some(max);
    if (!b)
      throw badPack(`truncated inside record ${this.id}`, { object: this.id, offset: this.cur.consumed });
    this.stream?.update(b);
    return b;
  }

  /** A buffer held whole, as data events: one if collecting, else ≤ 1 MiB slices. */
  private *data(b: Buffer): Generator<PackEvent> {
    if (this.collect > 0 && b.length <= this.collect) {
      yield { type: 'data', chunk: b };
      return;
    }
    for (let i = 0; i < b.length; i += CHUNK) yield { type: 'data', chunk: b.subarray(i, i + CHUNK) };
  }

  /** commit, dirtree, dirmeta, commitmeta: held whole, hashed (not commitmeta), decoded in normal form. */
  async *metadata(): AsyncGenerator<PackEvent> {
    if (this.length > MAX_METADATA_RECORD) {
      throw badPack(
        `record ${this.id} is ${this.length} bytes, over the ${MAX_METADATA_RECORD}-byte metadata limit`,
        {
          object: this.id,
          expected: `<= ${MAX_METADATA_RECORD} bytes`,
          found: `${this.length} bytes`,
        },
      );
    }
    const payload = await this.need(this.length, true);
    if (this.kind !== KIND.commitmeta) {
      const found = createHash('sha256').update(payload).digest('hex');
      if (found !== this.checksum) throw corruptRecord(this.kind, this.checksum, found, 'checksum mismatch');
    }
    let tree: DirTree | undefined;
    if (this.kind === KIND.commit) decodeCommit(payload, this.id);
    else if (this.kind === KIND.dirtree) tree = decodeDirTree(payload, this.id);
    else if (this.kind === KIND.dirmeta) decodeDirMeta(payload, this.id);
    else decodeCommitMeta(payload, this.id);
    yield this.record();
    yield* this.data(payload);
    yield tree ? { type: 'verified', tree } : { type: 'verified' };
  }

  /** The framed header at the start of a content or filez payload: BE32 length, 4 zero bytes, header. */
  private async framedHeader(what: string): Promise<Buffer> {
    if (this.length < 8) {
      throw corruptRecord(this.kind, this.checksum, `${this.length} bytes`, `too short for a ${what}`);
    }
    const first = await this.need(8);
    const len = first.readUInt32BE(0);
    if (first.readUInt32BE(4) !== 0 || len > MAX_FILEZ_HEADER || 8 + len > this.length) {
      throw corruptRecord(this.kind, this.checksum, first.toString('hex'), `bad ${what}`);
    }
    // Copied before the next read: with `reuse`, reading on may decode over `first`'s bytes.
    const header = Buffer.allocUnsafe(8 + len);
    first.copy(header, 0);
    (await this.need(len)).copy(header, 8);
    return header;
  }

  /** content: header ‖ file bytes, hashed as they stream. */
  async *content(): AsyncGenerator<PackEvent> {
    const headerBytes = await this.framedHeader('content header');
    const hash = createHash('sha256').update(headerBytes);
    let header: ReturnType<typeof parseContentHeader>;
    try {
      header = parseContentHeader(headerBytes, this.id);
    } catch (e) {
      // A damaged byte in the header should read as what it is, a checksum mismatch, when it is one.
      throw await this.mismatchOr(hash, this.length - headerBytes.length, e);
    }
    const { meta } = header!;
    const size = this.length - headerBytes.length;
    if (isSymlink(meta) && size !== 0) {
      throw corruptRecord(this.kind, this.checksum, `${size} bytes`, 'a symlink with file bytes');
    }
    yield this.record({ meta, size });
    if (this.collect > 0 && size <= this.collect) {
      const b = await this.need(size, true);
      hash.update(b);
      yield { type: 'data', chunk: b };
    } else {
      for (let left = size; left > 0; ) {
        const c = await this.some(left);
        hash.update(c);
        left -= c.length;
        yield { type: 'data', chunk: c };
      }
    }
    const found = hash.digest('hex');
    if (found !== this.checksum) throw corruptRecord(this.kind, this.checksum, found, 'checksum mismatch');
    yield { type: 'verified' };
  }

  /** Reads the rest of the payload into `hash`: a mismatch is the better error; else `otherwise`. */
  private async mismatchOr(
    hash: ReturnType<typeof createHash>,
    left: number,
    otherwise: unknown,
  ): Promise<unknown> {
    while (left > 0) {
      const c = await this.some(left);
      hash.update(c);
      left -= c.length;
    }
    const found = hash.digest('hex');
    return found !== this.checksum
      ? corruptRecord(this.kind, this.checksum, found, 'checksum mismatch')
      : otherwise;
  }

  /** filez: checked as the object store checks a .filez (inflate, re-hash), whole when small. */
  async *filez(): AsyncGenerator<PackEvent> {
    if (this.length <= FILEZ_WHOLE) {
      const filez = await this.need(this.length);
      const h = inPack(() => parseFilezHeader(filez, this.id));
      if (h && h.size <= FILEZ_WHOLE_INFLATED) {
        const { meta, size } = inPack(() => checkFilez(this.checksum, filez, h));
        yield this.record({ meta, size });
        yield* this.data(filez);
        yield { type: 'verified' };
        return;
      }
      if (!h)
        throw corruptRecord(this.kind, this.checksum, `${this.length} bytes`, 'truncated .filez header');
      yield* this.filezStream(filez, h.meta, h.size, 0);
      return;
    }
    const headerBytes = await this.framedHeader('.filez header');
    const h = inPack(() => parseFilezHeader(headerBytes, this.id))!;
    yield* this.filezStream(headerBytes, h.meta, h.size, this.length - headerBytes.length);
  }

  /** Large .filez: the bytes go to inflateVerified as they are passed on; `verified` waits for its verdict. */
  private async *filezStream(
    first: Buffer,
    meta: FileMeta,
    size: number,
    left: number,
  ): AsyncGenerator<PackEvent> {
    // The inflater reads a chunk after the cursor moved on: with `reuse`, it gets its own copy.
    const feed = new Feed(this.reuse);
    const verdict = (async () => {
      for await (const _inflated of inflateVerified(this.checksum, feed)) {
        // Only the verdict matters here; the caller gets the .filez bytes.
      }
    })();
    verdict.catch(() => {});
    try {
      yield this.record({ meta, size });
      await Promise.race([feed.push(first), verdict]);
      if (this.collect >= first.length + left && left > 0) {
        const rest = await this.need(left);
        await Promise.race([feed.push(rest), verdict]);
        yield { type: 'data', chunk: Buffer.concat([first, rest]) };
      } else {
        yield* this.data(first);
        while (left > 0) {
          const c = await this.some(left);
          left -= c.length;
          await Promise.race([feed.push(c), verdict]);
          yield { type: 'data', chunk: c };
        }
      }
      feed.end();
      await inPackAsync(verdict);
    } finally {
      feed.close();
    }
    yield { type: 'verified' };
  }
}

/** The object store's verification errors, re-labelled as coming from a pack (same code and evidence). */
function relabel(e: unknown): unknown {
  if (isRegistryError(e) && (e.code === 'E_CORRUPT_OBJECT' || e.code === 'E_NOT_NORMAL_FORM')) {
    return new RegistryError(
      e.code,
      `pack record: ${e.message}`,
      e.details,
      'the pack is damaged or was built wrong; fetch or build it again',
    );
  }
  return e;
}

function inPack<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw relabel(e);
  }
}

async function inPackAsync(p: Promise<void>): Promise<void> {
  try {
    await p;
  } catch (e) {
    throw relabel(e);
  }
}

/** Reads the raw stream region by region: exact takes (slices when possible) and pass-through chunks. */
class Cursor {
  private buf: Buffer = EMPTY;
  private pos = 0;
  private base = 0;
  private done = false;
  private scratch: Buffer = EMPTY;
  private readonly it: AsyncIterator<Region>;
  /** Index of the frame the next byte is in (valid after more() returned true). */
  frame = 0;
  /** Raw bytes taken so far. */
  consumed = 0;

  constructor(regions: AsyncIterable<Region>) {
    this.it = regions[Symbol.asyncIterator]();
  }

  /** Where the next byte is in its frame's raw bytes (valid after more() returned true). */
  get frameOffset(): number {
    return this.base + this.pos;
  }

  /** True when a byte is available; false at the end of the stream. */
  async more(): Promise<boolean> {
    while (this.pos >= this.buf.length) {
      if (this.done) return false;
      const r = await this.it.next();
      if (r.done) {
        this.done = true;
        return false;
      }
      this.buf = r.value.bytes;
      this.pos = 0;
      this.base = r.value.offset;
      this.frame = r.value.frame;
    }
    return true;
  }

  /**
   * Exactly n bytes, or undefined if the stream ends first. `scratch`: bytes that cross regions
   * may be gathered in a buffer the next such take overwrites (the caller is done with them by then).
   */
  async take(n: number, scratch = false): Promise<Buffer | undefined> {
    if (n === 0) return EMPTY;
    if (!(await this.more())) return undefined;
    if (this.buf.length - this.pos >= n) {
      const b = this.buf.subarray(this.pos, this.pos + n);
      this.pos += n;
      this.consumed += n;
      return b;
    }
    let out: Buffer;
    if (scratch) {
      // Grown to the largest record that crossed a region so far (at most MAX_COLLECT, 16 MiB).
      if (this.scratch.length < n) this.scratch = Buffer.allocUnsafe(n);
      out = this.scratch.subarray(0, n);
    } else out = Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      if (!(await this.more())) return undefined;
      const k = Math.min(n - got, this.buf.length - this.pos);
      this.buf.copy(out, got, this.pos, this.pos + k);
      this.pos += k;
      got += k;
      this.consumed += k;
    }
    return out;
  }

  /** Between 1 and max bytes, from the current region; undefined at the end of the stream. */
  async some(max: number): Promise<Buffer | undefined> {
    if (!(await this.more())) return undefined;
    const n = Math.min(max, this.buf.length - this.pos);
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    this.consumed += n;
    return b;
  }
}

/**
 * Hands chunks to a pulling consumer (inflateVerified) with at most one waiting, so the producer
 * runs at the consumer's pace. return() from the consumer (it stopped early) releases the producer.
 */
class Feed implements AsyncIterable<Buffer> {
  private readonly items: Buffer[] = [];
  private ended = false;
  private closed = false;
  private wakeConsumer: (() => void) | undefined;
  private wakeProducer: (() => void) | undefined;

  /** `copy`: keep a copy of each chunk, not the chunk (whose bytes the producer will overwrite). */
  constructor(private readonly copy = false) {}

  async push(chunk: Buffer): Promise<void> {
    if (this.closed || chunk.length === 0) return;
    this.items.push(this.copy ? Buffer.from(chunk) : chunk);
    this.wake('consumer');
    while (this.items.length > 1 && !this.closed) {
      await new Promise<void>((resolve) => {
        this.wakeProducer = resolve;
      });
    }
  }

  end(): void {
    this.ended = true;
    this.wake('consumer');
  }

  /** Stop: the consumer sees the end, a waiting producer is released. */
  close(): void {
    this.closed = true;
    this.ended = true;
    this.items.length = 0;
    this.wake('consumer');
    this.wake('producer');
  }

  private wake(who: 'consumer' | 'producer'): void {
    const f = who === 'consumer' ? this.wakeConsumer : this.wakeProducer;
    if (who === 'consumer') this.wakeConsumer = undefined;
    else this.wakeProducer = undefined;
    f?.();
  }

  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    return {
      next: async (): Promise<IteratorResult<Buffer>> => {
        for (;;) {
          const c = this.items.shift();
          if (c) {
            this.wake('producer');
            return { done: false, value: c };
          }
          if (this.ended) return { done: true, value: undefined };
          await new Promise<void>((resolve) => {
            this.wakeConsumer = resolve;
          });
        }
      },
      return: async (): Promise<IteratorResult<Buffer>> => {
        this.close();
        return { done: true, value: undefined };
      },
    };
  }
}
