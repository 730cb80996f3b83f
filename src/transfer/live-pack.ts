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
import { PassThrough } from 'node:stream';
import type { Checksum } from '../objects/index.js';
import { KIND, PackWriter, type RecordKind, writableSink } from '../pack/index.js';
import type { RegistryClient } from './client.js';
import type { FilezPayload, LiveFiles } from './push-source.js';

/** Bytes of pack buffered between the writer and the request body. */
const PIPE_BYTES = 1024 * 1024;
/**
 * The request body is handed on in pieces of this size: the HTTP client's stream buffers 16 chunks
 * whatever their size, which with whole 1 MiB frames kept ~60 MB more of the pack in memory.
 */
const BODY_PIECE = 64 * 1024;

async function* slices(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  for await (const chunk of source) {
    for (let at = 0; at < chunk.length; at += BODY_PIECE) yield chunk.subarray(at, at + BODY_PIECE);
  }
}

/**
 * A pack written on this thread into a request body: zstd level 0 ("store"), since .filez bytes are
 * deflated already (~0.1 s of CPU for a sysroot's 54 MB, not worth the zstd pool's two workers), and
 * no index (a push never reads its pack back).
 */
export function packBody(): { pack: PackWriter; out: PassThrough; body: AsyncIterable<Buffer> } {
  const out = new PassThrough({ highWaterMark: PIPE_BYTES });
  // Destroyed if the pack fails to build, maybe before the request reads it: without a listener
  // that 'error' would crash the process. The caller keeps the error.
  out.on('error', () => {});
  const pack = new PackWriter(writableSink(out), { level: 0, threads: false, index: false });
  return { pack, out, body: slices(out) };
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
  private readonly out: PassThrough;
  private readonly answer: Promise<Omit<PackAnswer, 'wire'>>;
  private chain: Promise<void> = Promise.resolve();
  /** Set once the request or the pack failed: nothing more is sent. */
  private broken = false;
  /** Why the request failed, for the push's note. */
  failure: string | undefined;

  constructor(client: RegistryClient) {
    const { pack, out, body } = packBody();
    this.pack = pack;
    this.out = out;
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
        this.out.end();
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
    if (!this.out.destroyed) this.out.destroy(new Error('live pack stopped'));
  }
}
