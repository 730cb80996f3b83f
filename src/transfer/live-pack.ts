/**
 * The pack of a push, as one request body, and the pack of a *new ref's* push, sent while its tree
 * is still being hashed (push.ts):
 *
 *   hash pass (workers) ──.filez as each file is hashed──▶ LivePack ──one POST /api/v1/packs──▶ server
 *   then, after the walk: the files hashed before the ref's answer came and those over BIG, the
 *   dirmetas, the dirtrees, the commit; finish() ends the pack and waits for the answer.
 *
 * Why: a ref with no head is nearly always a tree the server does not have (a new platform), so
 * asking "which objects do you lack" first costs a round trip and a second read and hash of the whole
 * tree for nothing. Hashing, deflating, sending and the server's checks then all overlap. A server
 * that has some of the files already says so in its answer ("already there"); only bandwidth is lost.
 *
 * The request is tried once. If it fails, the hash pass goes on without deflating, finish() answers
 * undefined, and the push falls back to the two passes with retries: what this pack got stored is
 * not sent again.
 */
import { RegistryError } from '../errors.js';
import type { Checksum } from '../objects/index.js';
import { KIND, PackWriter, type RecordKind } from '../pack/index.js';
import type { RegistryClient } from './client.js';
import type { ReusesChunks } from './http.js';
import type { FilezPayload, LiveFiles } from './push-source.js';

/** Bytes of pack waiting between the writer and the request body. */
const PIPE_BYTES = 1024 * 1024;
/**
 * The request body is handed on in pieces of this size: the HTTP client's stream buffers 16 chunks
 * whatever their size, which with whole 1 MiB frames kept ~60 MB more of the pack in memory.
 */
const BODY_PIECE = 64 * 1024;

/**
 * Between a PackWriter and a request body: the writer's frames queue here (at most PIPE_BYTES
 * before the writer waits) and leave as BODY_PIECE slices. Once the HTTP client says every slice of
 * a frame was written to the socket (ReusesChunks), the frame goes back to the writer to be
 * compressed into again, so a push's pack passes through a few MiB of memory, not 55 MB of fresh
 * buffers.
 *
 * `end()` after the last frame; `destroy(e)` makes the body fail with `e` and the writer's next
 * frame fail; a consumer that stops reading destroys it too.
 */
export class PackPipe implements AsyncIterable<Buffer>, ReusesChunks {
  private readonly frames: Buffer[] = [];
  private queued = 0;
  private ended = false;
  private failure: Error | undefined;
  private stopped = false;
  private wakeReader: (() => void) | undefined;
  private wakeWriter: (() => void) | undefined;
  /** Frames being sent, oldest first, with how many of their slices are not yet written. */
  private readonly sending: { frame: Buffer; left: number }[] = [];
  /** The writer frames go back to (set by packBody). */
  writer: PackWriter | undefined;

  get destroyed(): boolean {
    return this.stopped;
  }

  /** The writer's sink: queues a frame, waiting while the queue is full. */
  readonly sink = async (frame: Buffer): Promise<void> => {
    if (this.stopped || this.ended) throw new RegistryError('E_IO', 'pack output stream is closed');
    this.frames.push(frame);
    this.queued += frame.length;
    this.wake();
    while (this.queued > PIPE_BYTES && !this.stopped) {
      await new Promise<void>((resolve) => {
        this.wakeWriter = resolve;
      });
    }
    if (this.stopped) throw new RegistryError('E_IO', 'pack output stream closed while writing');
  };

  end(): void {
    this.ended = true;
    this.wake();
  }

  destroy(e?: Error): void {
    if (this.stopped) return;
    this.stopped = true;
    this.failure ??= e;
    this.frames.length = 0;
    this.wake();
  }

  written(chunk: Uint8Array): void {
    const head = this.sending[0];
    if (!head || chunk.buffer !== head.frame.buffer) return;
    if (--head.left === 0) {
      this.sending.shift();
      this.writer?.recycle(head.frame);
    }
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Buffer> {
    try {
      for (;;) {
        if (this.stopped) {
          if (this.failure) throw this.failure;
          return;
        }
        const frame = this.frames.shift();
        if (!frame) {
          if (this.ended) return;
          await new Promise<void>((resolve) => {
            this.wakeReader = resolve;
          });
          continue;
        }
        this.queued -= frame.length;
        this.wakeWriter?.();
        this.wakeWriter = undefined;
        this.sending.push({ frame, left: Math.ceil(frame.length / BODY_PIECE) });
        for (let at = 0; at < frame.length && !this.stopped; at += BODY_PIECE) {
          yield frame.subarray(at, at + BODY_PIECE);
        }
      }
    } finally {
      // Stopped reading (the request ended or failed): the writer must not wait for room.
      if (!this.ended || this.frames.length > 0) this.destroy();
    }
  }

  private wake(): void {
    this.wakeReader?.();
    this.wakeReader = undefined;
    this.wakeWriter?.();
    this.wakeWriter = undefined;
  }
}

/**
 * A pack written on this thread into a request body: zstd level 0 ("store"), since .filez bytes are
 * deflated already (~0.1 s of CPU for a sysroot's 54 MB, not worth the zstd pool's two workers), and
 * no index (a push never reads its pack back).
 */
export function packBody(): { pack: PackWriter; body: PackPipe } {
  const body = new PackPipe();
  const pack = new PackWriter(body.sink, { level: 0, threads: false, index: false });
  body.writer = pack;
  return { pack, body };
}

export interface PackAnswer {
  records: number;
  stored: number;
  existing: number;
  bytes: number;
  /** Bytes of the request body. */
  wire: number;
}

export class LivePack implements LiveFiles {
  /**
   * Every record added, per kind: nothing goes in twice. The checksum strings are the caller's own
   * (not a key made per record): 42,000 of them for the 1 GiB bench tree.
   */
  private readonly sent = new Map<RecordKind, Set<Checksum>>();
  private readonly pack: PackWriter;
  private readonly body: PackPipe;
  private readonly answer: Promise<Omit<PackAnswer, 'wire'>>;
  private chain: Promise<void> = Promise.resolve();
  /** Set once the request or the pack failed: nothing more is sent. */
  private broken = false;
  /** Why the request failed, for the push's note. */
  failure: string | undefined;

  constructor(client: RegistryClient) {
    const { pack, body } = packBody();
    this.pack = pack;
    this.body = body;
    let made = false;
    this.answer = client.postPack(
      () => {
        if (made) throw new Error('a live pack is sent once');
        made = true;
        return body;
      },
      { tries: 1 },
    );
    this.answer.catch((e: unknown) => {
      this.failure = (e as Error)?.message ?? String(e);
      this.break();
    });
  }

  wanted(): boolean {
    return !this.broken;
  }

  file(checksum: Checksum, filez: Buffer): Promise<void> {
    return this.add(KIND.filez, checksum, filez);
  }

  /** A file the hash pass did not send (hashed before the ref's answer, or over BIG). */
  filez(f: FilezPayload): Promise<void> {
    return this.add(KIND.filez, f.checksum, f.body, f.length);
  }

  /** Resolves once the record is in the pack (backpressure from the socket), or dropped if broken. */
  add(
    kind: RecordKind,
    checksum: Checksum,
    body: Uint8Array | AsyncIterable<Buffer>,
    length?: number,
  ): Promise<void> {
    let sent = this.sent.get(kind);
    if (!sent) {
      sent = new Set();
      this.sent.set(kind, sent);
    }
    if (this.broken || sent.has(checksum)) return this.chain;
    sent.add(checksum);
    this.chain = this.chain.then(async () => {
      if (this.broken) return;
      try {
        if (body instanceof Uint8Array) await this.pack.add(kind, checksum, body);
        else await this.pack.addStream(kind, checksum, length ?? 0, body);
      } catch {
        // The request ended (its error is the answer's) or the output closed.
        this.break();
      }
    });
    return this.chain;
  }

  has(kind: RecordKind, checksum: Checksum): boolean {
    return this.sent.get(kind)?.has(checksum) ?? false;
  }

  /** Ends the pack and waits for the server's answer; undefined if it broke (fall back). */
  async finish(): Promise<PackAnswer | undefined> {
    await this.chain;
    let wire = 0;
    if (!this.broken) {
      try {
        wire = (await this.pack.finish()).bytes;
        this.body.end();
      } catch {
        this.break();
      }
    }
    try {
      return { ...(await this.answer), wire };
    } catch {
      return undefined;
    }
  }

  /** Stop sending: the push failed elsewhere (a file changed, the hash pass failed). */
  abort(): void {
    this.break();
    this.answer.catch(() => {});
  }

  private break(): void {
    this.broken = true;
    if (!this.body.destroyed) this.body.destroy(new Error('live pack stopped'));
  }
}
