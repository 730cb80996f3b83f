/**
 * Commit packs, stored: the whole closure of a commit, or the update between two commits, as one
 * pack file (src/pack/, docs/format.md "Packs") kept in the repository beside the objects:
 *
 *   sysroot/packs/<to>.pack          closure(to)
 *   sysroot/packs/<from>-<to>.pack   closure(to) less closure(from)
 *
 * A pack is derived from immutable objects, so once written it is never stale: it is written once
 * (BlobStore.createOnce, on a directory or S3) and kept forever. It is generated completely into the
 * store before anyone is given a byte of it, so a corrupt or missing object fails the request with
 * an error naming it instead of cutting a download short, and no pack is stored.
 *
 * Requests for one pack in one process share one generation (a map of promises). Two nodes on one
 * bucket may both generate it; the write-once create keeps one, and either is the same bytes: the
 * record order is fixed and zstd output depends only on the input and the level (worker pool or not).
 */
import { PassThrough } from 'node:stream';
import { RegistryError } from '../errors.js';
import { type Checksum, objectId } from '../objects/index.js';
import { DEFAULT_LEVEL } from '../pack/format.js';
import { closureSets, type PackContents, writeCommitRecords } from '../pack/generate.js';
import { PackWriter, writableSink } from '../pack/writer.js';
import type { BlobStat } from '../store/blob-store.js';
import { packKey } from './layout.js';
import type { Repository } from './repository.js';

export interface StoredPack {
  /** The blob key, `sysroot/packs/…`. */
  key: string;
  stat: BlobStat;
  to: Checksum;
  from?: Checksum;
  /** True if this call generated it (false: it was in the store already). */
  generated: boolean;
  /** What it holds, when generated here. */
  contents?: PackContents;
}

export interface CommitPacksOptions {
  /** zstd level of generated packs; default 3 (the level every node must use: see the top). */
  level?: number;
}

export class CommitPacks {
  private readonly inflight = new Map<string, Promise<StoredPack>>();
  /** Generations this instance started: a pack served from the store does not count. */
  generations = 0;
  private readonly level: number;
  /** The warm-ups asked for so far, run one after another (see warm). */
  private warming: Promise<void> = Promise.resolve();

  constructor(
    readonly repo: Repository,
    opts: CommitPacksOptions = {},
  ) {
    this.level = opts.level ?? DEFAULT_LEVEL;
  }

  /**
   * The stored pack of `to` (or of the update from `from`), generated first if the store lacks it.
   * E_NOT_FOUND with `{ commit }` if `to` is not a commit here, or `from` is not a commit whose
   * closure is complete here; E_OBJECT_MISSING / E_CORRUPT_OBJECT naming an object of `to`'s closure.
   */
  get(to: Checksum, from?: Checksum): Promise<StoredPack> {
    const key = packKey(to, from);
    let p = this.inflight.get(key);
    if (!p) {
      p = this.ensure(key, to, from).finally(() => this.inflight.delete(key));
      this.inflight.set(key, p);
    }
    return p;
  }

  /**
   * After a ref moved to `to`: the pack of `to` and the update from its parent (if any). Warm-ups run
   * one at a time, after the ones asked for before (a burst of ref moves must not start dozens of
   * generations at once); a pull for one of them meanwhile starts it, or joins it, at once through
   * get(). Resolves with the failures, never rejects: the caller logs them.
   */
  warm(to: Checksum): Promise<Array<{ key: string; error: unknown }>> {
    const run = this.warming.then(() => this.warmNow(to));
    this.warming = run.then(
      () => {},
      () => {},
    );
    return run;
  }

  private async warmNow(to: Checksum): Promise<Array<{ key: string; error: unknown }>> {
    const failures: Array<{ key: string; error: unknown }> = [];
    const attempt = async (from?: Checksum): Promise<void> => {
      try {
        await this.get(to, from);
      } catch (error) {
        failures.push({ key: packKey(to, from), error });
      }
    };
    await attempt();
    let parent: Checksum | null = null;
    try {
      parent = (await this.repo.readCommit(to)).parent;
    } catch {
      // Already reported by the full pack's failure.
    }
    if (parent) await attempt(parent);
    return failures;
  }

  private async ensure(key: string, to: Checksum, from?: Checksum): Promise<StoredPack> {
    const base = { key, to, ...(from === undefined ? {} : { from }) };
    const existing = await this.repo.blobs.stat(key);
    if (existing) return { ...base, stat: existing, generated: false };
    if (!(await this.repo.objects.has(to, 'commit'))) {
      throw new RegistryError('E_NOT_FOUND', `commit ${to} not found`, {
        commit: to,
        object: objectId(to, 'commit'),
      });
    }
    if (from !== undefined && !(await this.isComplete(from))) {
      throw new RegistryError(
        'E_NOT_FOUND',
        `commit ${from} is not a commit whose closure this server has complete`,
        { commit: from },
        `ask for the whole pack of ${to} instead`,
      );
    }
    this.generations++;
    const contents = await this.generate(key, to, from);
    const stat = await this.repo.blobs.stat(key);
    if (!stat) {
      throw new RegistryError('E_IO', `pack ${key} was written but cannot be found`, { path: key });
    }
    return { ...base, stat, generated: true, contents };
  }

  /** A commit whose whole closure is in the store: its index row says so, or a check does. */
  private async isComplete(commit: Checksum): Promise<boolean> {
    if (!(await this.repo.objects.has(commit, 'commit'))) return false;
    // A row exists only for a commit found complete (every ref head is one), and stays true.
    if ((await this.repo.index()).getCommit(commit)) return true;
    return (await this.repo.commitStats(commit)) !== undefined;
  }

  /** Generate into the store: the pack is visible under `key` only once whole. */
  private async generate(key: string, to: Checksum, from?: Checksum): Promise<PackContents> {
    const objects = this.repo.objects;
    const exclude = from === undefined ? undefined : await closureSets(objects, from);
    const body = new PassThrough();
    // The store may not be reading `body` yet when we destroy it (FsBlobStore first picks a temp
    // name): a destroyed stream with no 'error' listener would crash the process. The error is
    // reported through `storing` and the throw below instead.
    body.on('error', () => {});
    let aborting = false;
    let storeError: { error: unknown } | undefined;
    const storing = this.repo.blobs.createOnce(key, body);
    storing.catch((error: unknown) => {
      // The store gave up (disk full, S3 down): stop the writer, which waits on this stream.
      if (!aborting) storeError = { error };
      body.destroy(error as Error);
    });
    try {
      const writer = new PackWriter(writableSink(body), { level: this.level });
      const contents = await writeCommitRecords(objects, writer, to, exclude);
      await writer.finish();
      body.end();
      // False when another node stored it first: the same bytes (see the top).
      await storing;
      return contents;
    } catch (e) {
      aborting = true;
      body.destroy(e as Error);
      await storing.catch(() => {});
      throw storeError ? storeError.error : e;
    }
  }
}
