/**
 * A checkout's object source over the pull cache's packs (see pack-cache.ts): one full pack, or a
 * full pack and the update packs received since, which together hold a commit's closure.
 *
 * Records are not re-hashed here: each pack was verified record by record (readPack) before it was
 * renamed into the cache, and every frame read now is checked against zstd's XXH64 checksum and
 * every record header against the index (PackFile). Damage since then is E_BAD_PACK naming the pack
 * (`details.pack`), which the pull answers by evicting it and fetching again.
 *
 * Content is handed out pack by pack in pack order, so each 1 MiB frame is decompressed once
 * (PackFile keeps the last 4) instead of once per file that touches it.
 */

import type { Content } from '../checkout/content.js';
import type { CheckoutSource } from '../checkout/source.js';
import { isRegistryError, RegistryError } from '../errors.js';
import {
  type Checksum,
  type DirTree,
  decodeDirTree,
  encodeDirTree,
  isSymlink,
  objectId,
  parseContentHeader,
} from '../objects/index.js';
import {
  KIND,
  MAX_COLLECT,
  MAX_READ,
  type PackEvent,
  type PackFile,
  type PackIndex,
  type RecordKind,
} from '../pack/index.js';
import { missing } from '../store/object-store.js';

type MetadataType = 'commit' | 'dirtree' | 'dirmeta';

const KIND_OF: Record<MetadataType, RecordKind> = {
  commit: KIND.commit,
  dirtree: KIND.dirtree,
  dirmeta: KIND.dirmeta,
};

interface Located {
  /** Which pack (index into `packs`). */
  pack: number;
  /** The record's position in that pack. */
  at: number;
  length: number;
}

export class PackSource implements CheckoutSource {
  /** kind + checksum -> the first pack (in the given order) holding it. */
  private readonly where = new Map<string, Located>();
  /** Distinct objects handed out, by key: what the pull reports as cached or fetched. */
  readonly used = new Set<string>();

  /** `packs` with their names (the pack checksums), for errors that say which pack is damaged. */
  constructor(
    private readonly packs: readonly PackFile[],
    private readonly names: readonly string[],
  ) {
    packs.forEach((p, pack) => {
      p.index.records.forEach((r, at) => {
        const key = r.kind + r.checksum;
        if (!this.where.has(key)) this.where.set(key, { pack, at, length: r.length });
      });
    });
  }

  /** True if a record of `kind` with `checksum` is in one of the packs. */
  has(checksum: Checksum, kind: RecordKind): boolean {
    return this.where.has(kind + checksum);
  }

  /** The pack a `used` key came from. */
  packOf(key: string): string | undefined {
    const l = this.where.get(key);
    return l ? this.names[l.pack] : undefined;
  }

  async readMetadata(checksum: Checksum, type: MetadataType): Promise<Buffer> {
    const kind = KIND_OF[type];
    const l = this.where.get(kind + checksum);
    if (!l) throw missing(checksum, type);
    this.used.add(kind + checksum);
    return this.named(l.pack, () => this.packs[l.pack]!.read(checksum, kind));
  }

  contents(wanted: readonly Checksum[]): AsyncIterable<{ checksum: Checksum; content: Content }> {
    const found: Array<{ checksum: Checksum; l: Located }> = [];
    for (const checksum of wanted) {
      const l = this.where.get(KIND.content + checksum);
      if (!l) throw missing(checksum, 'file');
      found.push({ checksum, l });
    }
    found.sort((a, b) => a.l.pack - b.l.pack || a.l.at - b.l.at);
    for (const f of found) this.used.add(KIND.content + f.checksum);
    return this.iterate(found);
  }

  private async *iterate(
    found: Array<{ checksum: Checksum; l: Located }>,
  ): AsyncGenerator<{ checksum: Checksum; content: Content }> {
    for (const { checksum, l } of found) {
      const pack = this.packs[l.pack]!;
      if (l.length <= MAX_READ) {
        // The slice of its frame when it lies in one (nearly every file): no copy.
        const payload = await this.named(l.pack, () => pack.view(checksum, KIND.content));
        const h = header(checksum, payload);
        const data = payload.subarray(h.headerLength);
        yield { checksum, content: { meta: h.meta, size: data.length, payload: data } };
      } else {
        // A big file: its header is in the first chunk (≤ 1 MiB), the rest streams frame by frame.
        const chunks = pack.stream(checksum, KIND.content)[Symbol.asyncIterator]();
        let first = await this.named(l.pack, () => chunks.next());
        let head = first.done ? Buffer.alloc(0) : first.value;
        let h = parseContentHeader(head, objectId(checksum, 'file'));
        while (!h && !first.done) {
          first = await this.named(l.pack, () => chunks.next());
          if (!first.done) head = Buffer.concat([head, first.value]);
          h = parseContentHeader(head, objectId(checksum, 'file'));
        }
        if (!h)
          throw new RegistryError('E_BAD_PACK', `bad pack: ${objectId(checksum, 'file')} has no header`);
        const meta = h.meta;
        const rest = head.subarray(h.headerLength);
        const named = this.named.bind(this);
        const packIndex = l.pack;
        const size = l.length - h.headerLength;
        yield {
          checksum,
          content: {
            meta,
            size: isSymlink(meta) ? 0 : size,
            open: async () =>
              (async function* () {
                if (rest.length > 0) yield rest;
                for (;;) {
                  const r = await named(packIndex, () => chunks.next());
                  if (r.done) return;
                  yield r.value;
                }
              })(),
          },
        };
      }
    }
  }

  /** Run `f`, adding the pack's name to an E_BAD_PACK it throws. */
  private async named<T>(pack: number, f: () => Promise<T>): Promise<T> {
    try {
      return await f();
    } catch (e) {
      if (isRegistryError(e, 'E_BAD_PACK') && e.details.pack === undefined) {
        throw new RegistryError(e.code, e.message, { ...e.details, pack: this.names[pack] }, e.hint, e);
      }
      throw e;
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.packs.map((p) => p.close()));
  }
}

function header(checksum: Checksum, payload: Buffer) {
  const h = parseContentHeader(payload, objectId(checksum, 'file'));
  if (!h) throw new RegistryError('E_BAD_PACK', `bad pack: ${objectId(checksum, 'file')} has no header`);
  return h;
}

/**
 * A checkout's object source over a pack as it arrives (readPack's events, verified record by
 * record), on top of the cached packs an update pack completes (`base`). The checkout reads the
 * commit and the trees first, which a pack sends first; then it takes content records as they
 * stream past, each once it verified, and at the end of the stream whatever the update pack did
 * not carry from `base`. So the bytes are decompressed once and written while the rest arrives.
 *
 * Records must come in the pack order the server promises (metadata before content): metadata asked
 * for once the content began is missing. The events' chunks may be the reader's to reuse
 * (ReadPackOptions.reuse): what is kept past the next event is copied, and a payload handed out is
 * valid until the next is asked for, as CheckoutSource says. Nothing here is final: the checkout
 * renames its tree into place only after contents() ended, which is after the pack's end record
 * verified (`onEnd`).
 */
export class IncomingPack implements CheckoutSource {
  private readonly meta = new Map<string, Buffer>();
  /** Dirtrees, decoded (their bytes are not kept: readMetadata encodes them back), by checksum. */
  private readonly trees = new Map<Checksum, DirTree>();
  private readonly events: AsyncIterator<PackEvent>;
  /** The first content record's event, read while looking for metadata. */
  private stashed: (PackEvent & { type: 'record' }) | undefined;
  private ended = false;
  private pumping: Promise<void> | undefined;
  /** Distinct objects used from the stream and from `base`. */
  received = 0;
  fromBase = 0;

  constructor(
    events: AsyncIterable<PackEvent>,
    private readonly base: PackSource | undefined,
    private readonly onEnd: (index: PackIndex) => Promise<void>,
    private readonly onComplete: () => Promise<void>,
  ) {
    this.events = events[Symbol.asyncIterator]();
  }

  async readDirTree(checksum: Checksum): Promise<DirTree> {
    if (this.base?.has(checksum, KIND.dirtree)) {
      return decodeDirTree(await this.readMetadata(checksum, 'dirtree'), objectId(checksum, 'dirtree'));
    }
    for (;;) {
      const tree = this.trees.get(checksum);
      if (tree) return tree;
      await this.more(checksum, 'dirtree');
    }
  }

  async readMetadata(checksum: Checksum, type: MetadataType): Promise<Buffer> {
    const kind = KIND_OF[type];
    const key = kind + checksum;
    if (this.base?.has(checksum, kind)) {
      if (!this.base.used.has(key)) this.fromBase++;
      return this.base.readMetadata(checksum, type);
    }
    for (;;) {
      const b = this.meta.get(key);
      if (b) return b;
      // A dirtree is kept decoded only; it was verified in normal form, so it encodes back exactly.
      const tree = type === 'dirtree' ? this.trees.get(checksum) : undefined;
      if (tree) return encodeDirTree(tree);
      await this.more(checksum, type);
    }
  }

  /** Wait for the next metadata record (one pump at a time), or fail if no more can come. */
  private async more(checksum: Checksum, type: MetadataType): Promise<void> {
    if (this.ended || this.stashed) throw missing(checksum, type);
    this.pumping ??= this.pump().finally(() => {
      this.pumping = undefined;
    });
    await this.pumping;
  }

  /** Read on until a metadata record verified, content begins, or the stream ends. */
  private async pump(): Promise<void> {
    let cur: { key: string; kind: RecordKind; checksum: Checksum; parts: Buffer[] } | undefined;
    for (;;) {
      const r = await this.events.next();
      if (r.done) throw new RegistryError('E_BAD_PACK', 'bad pack: the stream stopped early');
      const ev = r.value;
      if (ev.type === 'record') {
        if (ev.kind === KIND.content) {
          this.stashed = ev;
          return;
        }
        cur = { key: ev.kind + ev.checksum, kind: ev.kind, checksum: ev.checksum, parts: [] };
      } else if (ev.type === 'data') {
        cur?.parts.push(ev.chunk);
      } else if (ev.type === 'verified') {
        if (cur) {
          const { parts } = cur;
          // Copied: the chunks are the reader's to reuse once the next event is asked for.
          const bytes = (): Buffer => (parts.length === 1 ? Buffer.from(parts[0]!) : Buffer.concat(parts));
          // A dirtree is kept decoded alone (the reader decoded it to verify it): the 1 GiB bench
          // tree's 6,400 dirtrees held their bytes twice over, decoded and raw.
          if (cur.kind === KIND.dirtree) {
            this.trees.set(
              cur.checksum,
              ev.tree ?? decodeDirTree(bytes(), objectId(cur.checksum, 'dirtree')),
            );
          } else this.meta.set(cur.key, bytes());
          this.received++;
        }
        return;
      } else {
        this.ended = true;
        await this.onEnd(ev.index);
        return;
      }
    }
  }

  contents(wanted: readonly Checksum[]): AsyncIterable<{ checksum: Checksum; content: Content }> {
    return this.iterate(new Set(wanted));
  }

  private async *iterate(want: Set<Checksum>): AsyncGenerator<{ checksum: Checksum; content: Content }> {
    while (!this.ended) {
      let ev: PackEvent;
      if (this.stashed) {
        ev = this.stashed;
        this.stashed = undefined;
      } else {
        const r = await this.events.next();
        if (r.done) throw new RegistryError('E_BAD_PACK', 'bad pack: the stream stopped early');
        ev = r.value;
      }
      if (ev.type === 'end') {
        this.ended = true;
        await this.onEnd(ev.index);
        break;
      }
      if (ev.type !== 'record') continue;
      this.received++;
      if (ev.kind !== KIND.content || !ev.file || !want.has(ev.checksum)) {
        // Not needed (or not content): read past it; it is verified all the same.
        await this.skip();
        continue;
      }
      want.delete(ev.checksum);
      const { meta, size } = ev.file;
      if (isSymlink(meta) || size <= MAX_COLLECT) {
        const parts: Buffer[] = [];
        await this.skip(parts);
        const payload = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
        yield { checksum: ev.checksum, content: { meta, size: payload.length, payload } };
      } else {
        // Written to a partial file as it arrives; a record that fails verification throws out of
        // this stream, and the checkout removes its whole temp tree.
        const events = this.events;
        let done = false;
        yield {
          checksum: ev.checksum,
          content: {
            meta,
            size,
            open: async () =>
              (async function* () {
                for (;;) {
                  const r = await events.next();
                  if (r.done) throw new RegistryError('E_BAD_PACK', 'bad pack: the stream stopped early');
                  if (r.value.type === 'data') yield r.value.chunk;
                  else if (r.value.type === 'verified') break;
                }
                done = true;
              })(),
          },
        };
        if (!done) await this.skip();
      }
    }
    if (want.size > 0) {
      if (!this.base) throw missing(want.values().next().value!, 'file');
      this.fromBase += want.size;
      yield* this.base.contents([...want]);
    }
    await this.onComplete();
  }

  /** Read the current record's remaining events up to 'verified', keeping its data in `parts`. */
  private async skip(parts?: Buffer[]): Promise<void> {
    for (;;) {
      const r = await this.events.next();
      if (r.done) throw new RegistryError('E_BAD_PACK', 'bad pack: the stream stopped early');
      if (r.value.type === 'data') parts?.push(r.value.chunk);
      else if (r.value.type === 'verified') return;
      else throw new RegistryError('E_BAD_PACK', 'bad pack: a record ended without being verified');
    }
  }
}
