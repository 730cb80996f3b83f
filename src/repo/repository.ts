/**
 * A repository: objects, refs, the ref log, the summary and the index, on one BlobStore.
 *
 * The only ways a ref moves are `commit` (a fast-forward to a new commit whose parent is the
 * current head), `moveRef` with action 'push' (the same rule, for commits built elsewhere) and
 * `reset` (back to a commit already in the ref's history, with a reason). Each move appends a ref
 * log record first — the commit point — then replaces refs/heads/<ref> and rewrites the summary,
 * all under the store's write lock. Nothing here deletes or rewrites an object or a record.
 */
import { createHash } from 'node:crypto';
import { homedir, hostname, userInfo } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { RegistryError } from '../errors.js';
import { Variant } from '../gvariant/index.js';
import { type CommitRow, IndexDb, type StoredObject } from '../meta/index-db.js';
import {
  assertChecksum,
  type Checksum,
  type Commit,
  type DirTree,
  decodeCommit,
  decodeCommitMeta,
  decodeSummary,
  encodeCommit,
  encodeCommitMeta,
  encodeSummary,
  isChecksum,
  type Metadata,
  metadataGet,
  objectId,
  type SummaryRef,
  sha256,
  variantToJson,
} from '../objects/index.js';
import type { SigningKey } from '../sign/keys.js';
import {
  encodeSignatures,
  mergeSignatures,
  signAll,
  signatureCount,
  signaturesOf,
} from '../sign/signatures.js';
import type { BlobStore } from '../store/blob-store.js';
import { type ObjectRef, ObjectStore } from '../store/object-store.js';
import { openBlobStore, parseRepoUrl } from '../store/open.js';
import { type ClosureFacts, checkClosure, type LearntFacts, MemoryFacts } from './closure.js';
import { publishKey } from './keys.js';
import {
  ARCHIVE_CONFIG,
  CONFIG_KEY,
  INDEX_FILE,
  INIT_DIRS,
  REFS_PREFIX,
  refKey,
  SUMMARY_KEY,
  SUMMARY_SIG_KEY,
  summarySigKey,
} from './layout.js';
import {
  appendRecord,
  listLoggedRefs,
  type RefLogRecord,
  readLastRecord,
  readRefLog,
  signRecord,
} from './reflog.js';
import { assertRef, refsClash } from './refs.js';

export interface CommitOptions {
  ref: string;
  rootTree: Checksum;
  rootMeta: Checksum;
  subject?: string;
  body?: string;
  /** Seconds since the epoch; default now. */
  timestamp?: number;
  /** User metadata, in the order given. */
  metadata?: Metadata;
  /** Append `ostree.ref-binding` = [ref], as `ostree commit --branch` does. */
  bindRef?: boolean;
  /** Paths dropped by --skip-special, recorded under `sysroot.skipped-special`. */
  skippedSpecial?: string[];
  actor?: string;
  reason?: string;
  /** Known from the import; computed from the tree when absent. */
  stats?: { totalSize: number; fileCount: number };
  /** Detached metadata to store with the commit (signatures are added to it: storeCommit). */
  detached?: Buffer;
}

export interface MoveRefOptions {
  ref: string;
  /** The head the caller based its change on (compare-and-swap); null = the ref must not exist. */
  expected: Checksum | null;
  to: Checksum;
  action: 'commit' | 'push' | 'reset';
  reason: string;
  actor?: string;
  /** Size and file count when the caller knows them (an import); otherwise computed from the tree. */
  stats?: { totalSize: number; fileCount: number };
}

export interface Resolved {
  commit: Checksum;
  ref?: string;
}

/** A local commit rebuilt on the new head after a concurrent move, at most this often. */
const COMMIT_ATTEMPTS = 10;

/** Conditional writes that lose a race are retried this often; 100 racing pushes settle well within it. */
const PUBLISH_ATTEMPTS = 200;

/**
 * Uploaded objects are remembered in the index in batches of this many: one SQLite transaction per
 * object would cost ~6,000 commits per sysroot push, one per batch a few ms in all.
 */
const STORED_BATCH = 1000;

/**
 * Uploaded dirtrees kept in memory, decoded, for the closure check of the ref move that follows:
 * reading them back costs ~680 GETs on S3 (~1 s at 32 at once), and decoding them again ~18 ms on
 * a directory (a Debian sysroot's ~680 dirtrees, ~6,800 entries). 32 MiB, at ~TREE_ENTRY_BYTES an
 * entry (~1.4 MB a sysroot), holds the trees of ~20 pushes; the oldest go first.
 */
const RECENT_TREE_BYTES = 32 * 1024 ** 2;
/**
 * What a decoded entry holds on V8's heap, roughly: its object, its name, and one or two 64-character
 * checksum strings (~80 bytes each).
 */
const TREE_ENTRY_BYTES = 200;

/**
 * Objects verified and stored by this process, remembered for the closure check of the ref move
 * that follows: it asks about every object of the commit, ~6,100 SQLite lookups for a sysroot that
 * were ~25-35 ms of the server's main thread at the end of a push (perf, 2026-12-07), for objects
 * this process had just stored. 65,536 entries (~10 MB) hold a 1 GiB tree's ~50,000; the oldest
 * go first, and what is forgotten is still in the index.
 */
const RECENT_OBJECTS = 65_536;

/**
 * The index is node-local derived data: beside a directory repository, or for a bucket in the
 * user's cache directory (one file per location), since a bucket is shared by many nodes.
 */
export function indexPathFor(location: string): string {
  const where = parseRepoUrl(location);
  if (where.kind === 'fs') return join(where.path, INDEX_FILE);
  const base =
    process.env.SYSROOT_INDEX_DIR ??
    join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'sysroot-registry', 'index');
  return join(base, `${createHash('sha256').update(location).digest('hex').slice(0, 16)}.sqlite`);
}

export function defaultActor(): string {
  if (process.env.SYSROOT_ACTOR) return process.env.SYSROOT_ACTOR;
  let user = 'unknown';
  try {
    user = userInfo().username;
  } catch {
    // no passwd entry (containers): keep 'unknown'
  }
  return `${user}@${hostname()}`;
}

/** What a decoded dirtree is counted as against RECENT_TREE_BYTES. */
function treeBytes(t: DirTree): number {
  return (t.files.length + t.dirs.length + 1) * TREE_ENTRY_BYTES;
}

export class Repository {
  readonly objects: ObjectStore;
  private indexDb: IndexDb | undefined;
  /** Objects verified and stored by this process, not yet written to the index (see noteStored). */
  private stored: StoredObject[] = [];
  /** Dirtrees verified and stored by this process, oldest first (see RECENT_TREE_BYTES). */
  private readonly recentTrees = new Map<Checksum, DirTree>();
  /** Objects verified and stored by this process ("checksum.type" → size), oldest first (see RECENT_OBJECTS). */
  private readonly recentObjects = new Map<string, number | null>();
  private recentTreeBytes = 0;
  /** Keys this process signs new commits, summaries and ref log records with (useSigningKeys). */
  private signers: SigningKey[] = [];

  private constructor(
    readonly blobs: BlobStore,
    private readonly indexPath: string,
  ) {
    this.objects = new ObjectStore(blobs);
  }

  get location(): string {
    return this.blobs.location;
  }

  /**
   * A path for node-local derived data (`name` such as 'tokens.sqlite'): beside the index, which is
   * inside a directory repository, or in the cache directory for a bucket.
   */
  nodeLocalPath(name: string): string {
    return this.indexPath.endsWith(INDEX_FILE)
      ? join(this.indexPath.slice(0, -INDEX_FILE.length), 'sysroot', name)
      : this.indexPath.replace(/\.sqlite$/, `-${name}`);
  }

  /**
   * Create a repository at `location` (a directory or s3://BUCKET/PREFIX). Idempotent on an existing
   * archive repository.
   */
  static async init(location: string): Promise<Repository> {
    const where = parseRepoUrl(location);
    const blobs = openBlobStore(location);
    if (await blobs.read(CONFIG_KEY)) return Repository.open(location);
    if (where.kind === 'fs') {
      // Empty directories only exist on a filesystem; a bucket has no directories to create.
      const { mkdir } = await import('node:fs/promises');
      for (const d of INIT_DIRS) await mkdir(join(where.path, d), { recursive: true });
    }
    // Create-if-absent: two nodes initialising one bucket at once both end up with the same config.
    await blobs.replace(CONFIG_KEY, Buffer.from(ARCHIVE_CONFIG), { ifMatch: null });
    const repo = new Repository(blobs, indexPathFor(location));
    await repo.writeSummary();
    return repo;
  }

  /** Open the repository at `location` (a directory or s3://BUCKET/PREFIX). */
  static async open(location: string): Promise<Repository> {
    const blobs = openBlobStore(location);
    const config = await blobs.read(CONFIG_KEY);
    const mode = config && /^mode\s*=\s*(\S+)/m.exec(config.toString('utf8'))?.[1];
    if (!config || (mode !== 'archive-z2' && mode !== 'archive')) {
      throw new RegistryError(
        'E_NOT_A_REPO',
        config
          ? `${location} is an OSTree repository in mode ${mode}, not archive-z2`
          : `${location} is not a repository`,
        { path: location },
        config ? undefined : `create one with: sysroot init --repo ${location}`,
      );
    }
    return new Repository(blobs, indexPathFor(location));
  }

  /**
   * Sign from now on with `keys`: every commit that first arrives here (local commit, push), every
   * summary written and every ref log record appended. Their public keys are published in the
   * repository (write-once, sysroot/keys/), so that fsck and `sysroot log --verify` find them.
   */
  async useSigningKeys(keys: readonly SigningKey[]): Promise<void> {
    for (const k of keys) await publishKey(this.blobs, k);
    this.signers = [...keys];
  }

  get signingKeys(): readonly SigningKey[] {
    return this.signers;
  }

  /**
   * Store a commit that arrives here for the first time, with its detached metadata: the pusher's
   * (`detached`, signatures included) merged with this repository's own signatures. Objects are
   * write-once, so the commitmeta is written before the commit and only when the commit is new: a
   * commit stored earlier (before a key existed) keeps what it has, and anyone who sees the commit
   * also sees its signatures. Returns whether the commit was created.
   */
  async storeCommit(bytes: Buffer, detached?: Buffer): Promise<{ checksum: Checksum; created: boolean }> {
    const checksum = sha256(bytes);
    const id = objectId(checksum, 'commit');
    if (await this.objects.has(checksum, 'commit')) {
      // Verifies that the stored copy is these bytes.
      await this.objects.putMetadata('commit', bytes);
      return { checksum, created: false };
    }
    decodeCommit(bytes, id);
    const metaId = objectId(checksum, 'commitmeta');
    const given = detached ? decodeCommitMeta(detached, metaId) : undefined;
    if (given) signaturesOf(given, metaId);
    const own = await signAll(this.signers, bytes);
    if (signatureCount(own) > 0) {
      await this.objects.putMetadata('commitmeta', encodeCommitMeta(mergeSignatures(given, own)), checksum);
    } else if (detached) {
      await this.objects.putMetadata('commitmeta', detached, checksum);
    }
    await this.objects.putMetadata('commit', bytes);
    return { checksum, created: true };
  }

  /** The SQLite index, opened on first use; filled from the repository if it is new or stale. */
  async index(): Promise<IndexDb> {
    if (!this.indexDb) {
      const db = new IndexDb(this.indexPath);
      this.indexDb = db;
      const refs = await this.listRefs();
      const indexed = new Map(db.listRefs().map((r) => [r.name, r.head]));
      if (refs.length !== indexed.size || refs.some((r) => indexed.get(r.name) !== r.head))
        await this.reindex();
    }
    return this.indexDb;
  }

  close(): void {
    if (this.indexDb) this.flushStored(this.indexDb);
    this.indexDb?.close();
    this.indexDb = undefined;
  }

  /**
   * Remember that an object is in the store, verified (the server calls this for every upload it
   * stored or found there), with a file's uncompressed size, and a dirtree as the upload decoded it
   * (in normal form, so exactly its bytes): the closure check of the next ref move then trusts the
   * index instead of asking the store about each of ~6,000 objects, and neither reads nor decodes
   * a dirtree again.
   */
  noteStored(o: StoredObject, dirtree?: DirTree): void {
    if (o.type === 'dirtree' && dirtree && !this.recentTrees.has(o.checksum)) {
      this.recentTrees.set(o.checksum, dirtree);
      this.recentTreeBytes += treeBytes(dirtree);
      for (const [k, t] of this.recentTrees) {
        if (this.recentTreeBytes <= RECENT_TREE_BYTES) break;
        this.recentTrees.delete(k);
        this.recentTreeBytes -= treeBytes(t);
      }
    }
    this.stored.push({ checksum: o.checksum, type: o.type, size: o.size ?? null });
    this.recentObjects.set(`${o.checksum}.${o.type}`, o.size ?? null);
    if (this.recentObjects.size > RECENT_OBJECTS)
      this.recentObjects.delete(this.recentObjects.keys().next().value!);
    if (this.stored.length < STORED_BATCH) return;
    // Derived data: if the index cannot be opened or written (a full disk), the closure check asks
    // the store instead. Both failures are caught: this promise has no one waiting on it.
    this.index()
      .then((db) => this.flushStored(db))
      .catch(() => {});
  }

  private flushStored(db: IndexDb): void {
    if (this.stored.length) db.putObjects(this.stored.splice(0));
  }

  /** What the closure check may take as known: the index, and the dirtrees uploaded here. */
  private closureFacts(db: IndexDb): ClosureFacts {
    return {
      completeTree: (tree) => db.completeTree(tree),
      storedObject: (checksum, type) => {
        const size = this.recentObjects.get(`${checksum}.${type}`);
        return size !== undefined ? { size } : db.storedObject(checksum, type);
      },
      dirtree: (tree) => this.recentTrees.get(tree),
      batch: (fn) => db.read(fn),
    };
  }

  /** Keep what a closure check learnt, for the next one. */
  private remember(db: IndexDb, learnt: LearntFacts): void {
    db.putObjects(learnt.objects);
    db.putTrees(learnt.trees);
  }

  /**
   * A commit's total size and file count, from the figures the index knows for its unchanged
   * subtrees and the store for the rest; undefined if the commit's closure is incomplete.
   */
  async commitStats(checksum: Checksum): Promise<{ totalSize: number; fileCount: number } | undefined> {
    const db = await this.index();
    this.flushStored(db);
    const check = await checkClosure(this.objects, checksum, this.closureFacts(db), { sizes: true });
    this.remember(db, check.learnt);
    return check.stats;
  }

  async readRef(ref: string): Promise<Checksum | undefined> {
    const b = await this.blobs.read(refKey(assertRef(ref)));
    if (!b) return undefined;
    const c = b.toString('utf8').trim();
    if (!isChecksum(c)) {
      throw new RegistryError('E_CORRUPT_OBJECT', `ref ${ref} holds "${c.slice(0, 80)}", not a checksum`, {
        ref,
      });
    }
    return c;
  }

  /** Refs from refs/heads, the source OSTree clients see. */
  async listRefs(): Promise<Array<{ name: string; head: Checksum }>> {
    const out: Array<{ name: string; head: Checksum }> = [];
    for await (const key of this.blobs.list(REFS_PREFIX)) {
      const name = key.slice(REFS_PREFIX.length);
      const head = await this.readRef(name);
      if (head) out.push({ name, head });
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async readCommit(checksum: Checksum): Promise<Commit> {
    return decodeCommit(await this.objects.getMetadata(checksum, 'commit'), objectId(checksum, 'commit'));
  }

  /**
   * `REF`, `REF@SHA` or `SHA`. REF@SHA is a pin: the commit must exist, hash to SHA (every read is
   * verified) and be in REF's history.
   */
  async resolve(spec: string): Promise<Resolved> {
    const at = spec.lastIndexOf('@');
    if (at >= 0) {
      const ref = assertRef(spec.slice(0, at));
      const commit = assertChecksum(spec.slice(at + 1), `pinned commit in "${spec}"`);
      const history = await readRefLog(this.blobs, ref);
      const head = await this.readRef(ref);
      if (head === undefined && history.length === 0) throw refNotFound(ref);
      if (head !== commit && !history.some((r) => r.record.to === commit)) {
        throw new RegistryError('E_NOT_IN_HISTORY', `commit ${commit} was never a head of ${ref}`, {
          ref,
          expected: commit,
        });
      }
      await this.readCommit(commit);
      return { commit, ref };
    }
    if (isChecksum(spec)) {
      await this.readCommit(spec);
      return { commit: spec };
    }
    const ref = assertRef(spec);
    const head = await this.readRef(ref);
    if (!head) throw refNotFound(ref);
    return { commit: head, ref };
  }

  /** Write a commit object on top of the ref's head and move the ref to it. Returns the checksum. */
  async commit(o: CommitOptions): Promise<Checksum> {
    assertRef(o.ref);
    const metadata: Metadata = [...(o.metadata ?? [])];
    if (o.skippedSpecial?.length)
      metadata.push(['sysroot.skipped-special', new Variant('as', o.skippedSpecial)]);
    if (o.bindRef) metadata.push(['ostree.ref-binding', new Variant('as', [o.ref])]);
    for (const [k] of metadata) {
      if (metadata.filter(([x]) => x === k).length > 1) {
        throw new RegistryError('E_USAGE', `metadata key "${k}" given more than once`, { found: k });
      }
    }
    // Retry if another writer moves the ref between reading the head and moving it: the new commit
    // must name the real head as its parent, so it is rebuilt (a cheap, small object).
    for (let attempt = 0; ; attempt++) {
      const parent = (await this.readRef(o.ref)) ?? null;
      const commit: Commit = {
        metadata,
        parent,
        related: [],
        subject: o.subject ?? '',
        body: o.body ?? '',
        timestamp: o.timestamp ?? Math.floor(Date.now() / 1000),
        rootTree: o.rootTree,
        rootMeta: o.rootMeta,
      };
      const bytes = encodeCommit(commit);
      const { checksum } = await this.storeCommit(bytes, o.detached);
      try {
        await this.moveRef({
          ref: o.ref,
          expected: parent,
          to: checksum,
          action: 'commit',
          reason: o.reason ?? commit.subject,
          actor: o.actor,
          stats: o.stats,
        });
      } catch (e) {
        if (e instanceof RegistryError && e.code === 'E_REF_CONFLICT' && attempt < COMMIT_ATTEMPTS) {
          // Jittered backoff: writers that collided once would otherwise collide again in lockstep.
          await sleep(Math.random() * Math.min(1000, 25 * 2 ** attempt));
          continue;
        }
        throw e;
      }
      return checksum;
    }
  }

  /**
   * Move a ref, atomically with respect to other writers (compare-and-swap on `expected`).
   * commit/push: `to` must be complete and its parent must be the current head (fast-forward).
   * reset: `to` must already be in the ref's history.
   */
  async moveRef(o: MoveRefOptions): Promise<RefLogRecord> {
    assertRef(o.ref);
    const to = assertChecksum(o.to, 'target commit');
    const target = await this.readCommit(to);
    // Open (and if needed rebuild) the index before the ref moves, so that it is built from the
    // repository as it was and the move below is recorded on top of it.
    const db = await this.index();
    this.flushStored(db);
    let stats = o.stats;
    if (o.action !== 'reset') {
      // The index vouches for objects and whole subtrees found before (closure.ts says why that is
      // safe); the rest is asked of the store. File sizes are read only when the figures are needed
      // for the commit's index row: not for an import, which knows them, nor for a known commit.
      const sizes = !stats && !db.getCommit(to);
      const checked = await checkClosure(this.objects, to, this.closureFacts(db), { sizes, commit: target });
      this.remember(db, checked.learnt);
      const lacking = checked.missing;
      if (lacking.length) {
        throw new RegistryError(
          'E_OBJECT_MISSING',
          `commit ${to} is incomplete: ${lacking.length} object(s) missing, e.g. ${objectId(lacking[0]!.checksum, lacking[0]!.type)}`,
          { object: objectId(lacking[0]!.checksum, lacking[0]!.type), missing: lacking.length },
        );
      }
      stats ??= checked.stats;
    }
    const record = await this.blobs.withLock(async () => {
      const last = await readLastRecord(this.blobs, o.ref);
      const head = (await this.readRef(o.ref)) ?? null;
      // The log is the truth; a crash between appending a record and replacing refs/heads leaves the
      // ref file behind the log, and the next move repairs it.
      const current = last ? last.record.to : head;
      if (current !== o.expected) {
        throw new RegistryError(
          'E_REF_CONFLICT',
          `ref ${o.ref} moved: it is at ${current ?? 'nothing'}, the change was based on ${o.expected ?? 'nothing'}`,
          { ref: o.ref, expected: o.expected ?? 'nothing', found: current ?? 'nothing' },
          'fetch the new head and retry',
        );
      }
      if (current === null) {
        for (const other of await this.listRefs()) {
          if (refsClash(other.name, o.ref)) {
            throw new RegistryError('E_INVALID_REF', `ref ${o.ref} cannot exist beside ref ${other.name}`, {
              ref: o.ref,
            });
          }
        }
      }
      if (o.action === 'reset') {
        if (!(await readRefLog(this.blobs, o.ref)).some((r) => r.record.to === to)) {
          throw new RegistryError('E_NOT_IN_HISTORY', `commit ${to} was never a head of ${o.ref}`, {
            ref: o.ref,
            expected: to,
          });
        }
      } else if (target.parent !== current) {
        throw new RegistryError(
          'E_NOT_FAST_FORWARD',
          `commit ${to} is not a fast-forward of ${o.ref}: its parent is ${target.parent ?? 'none'}, the head is ${current ?? 'none'}`,
          { ref: o.ref, expected: current ?? 'none', found: target.parent ?? 'none' },
          'build the new commit on top of the current head',
        );
      }
      const unsigned: RefLogRecord = {
        version: 1,
        ref: o.ref,
        seq: last ? last.record.seq + 1 : 1,
        from: current,
        to,
        time: new Date().toISOString(),
        actor: o.actor ?? defaultActor(),
        action: o.action,
        reason: o.reason,
        prev: last ? last.hash : null,
      };
      // Signed by every key this process holds (a version 2 record); unsigned without keys.
      const rec = await signRecord(unsigned, this.signers);
      // The commit point: creating record N+1 is atomic (write-once), so of two writers racing for the
      // same N+1 — two processes, or two registry nodes on one bucket — exactly one succeeds.
      const { created } = await appendRecord(this.blobs, rec);
      if (!created) {
        throw new RegistryError('E_REF_CONFLICT', `ref ${o.ref} moved while we were moving it`, {
          ref: o.ref,
        });
      }
      await this.publishRef(o.ref);
      await this.writeSummaryLocked();
      return rec;
    });
    db.recordRefMove(record);
    // A commit built elsewhere (a push) enters the index when a ref first points at it.
    if (!db.getCommit(to)) await this.indexCommit(to, target, stats);
    return record;
  }

  /** An audited rollback: point `ref` back at a commit already in its history. */
  async reset(ref: string, commit: Checksum, reason: string, actor?: string): Promise<RefLogRecord> {
    if (!reason.trim()) throw new RegistryError('E_USAGE', 'a reset needs a reason', { ref });
    const current = (await this.readRef(ref)) ?? null;
    if (current === null) throw refNotFound(ref);
    // Checked here too (moveRef re-checks under the lock) so that a commit this repository has never
    // seen is reported as "not in the history", not as a missing object.
    if (!(await readRefLog(this.blobs, ref)).some((r) => r.record.to === commit)) {
      throw new RegistryError('E_NOT_IN_HISTORY', `commit ${commit} was never a head of ${ref}`, {
        ref,
        expected: commit,
      });
    }
    return this.moveRef({ ref, expected: current, to: commit, action: 'reset', reason, actor });
  }

  /** A ref's history, newest first. */
  async log(ref: string): Promise<RefLogRecord[]> {
    assertRef(ref);
    const records = await readRefLog(this.blobs, ref);
    if (records.length === 0 && !(await this.readRef(ref))) throw refNotFound(ref);
    return records.map((r) => r.record).reverse();
  }

  /**
   * Finish the ref moves a crash cut short. A move's commit point is its ref log record; a process
   * killed after writing it (kill -9, a power cut, a node lost) leaves refs/heads/<ref> behind the log,
   * or the summary behind refs/heads, until the next move of that ref — and stock ostree clients,
   * which read only those two, see the previous head meanwhile. Under the write lock: every logged
   * ref whose refs/heads differs from its newest record is published, and the summary is rewritten
   * if it does not list exactly refs/heads. `sysroot serve` runs this when it starts. Returns what
   * it repaired (the closure of each commit was checked before its record was written).
   */
  async finishInterruptedMoves(): Promise<{ refs: Array<{ ref: string; to: Checksum }>; summary: boolean }> {
    return this.blobs.withLock(async () => {
      const refs: Array<{ ref: string; to: Checksum }> = [];
      for (const ref of await listLoggedRefs(this.blobs)) {
        const newest = (await readLastRecord(this.blobs, ref))?.record.to;
        if (newest && (await this.readRef(ref)) !== newest) {
          await this.publishRef(ref);
          refs.push({ ref, to: newest });
        }
      }
      const heads = new Map((await this.listRefs()).map((r) => [r.name, r.head]));
      const bytes = await this.blobs.read(SUMMARY_KEY);
      let agrees = false;
      try {
        const listed = bytes ? decodeSummary(bytes).refs : [];
        agrees =
          (bytes !== undefined || heads.size === 0) &&
          listed.length === heads.size &&
          listed.every((r) => heads.get(r.name) === r.checksum);
      } catch {
        // A summary that does not decode is rewritten like a stale one.
      }
      if (!agrees) await this.writeSummaryLocked();
      return { refs, summary: !agrees };
    });
  }

  /** Rewrite the summary from refs/heads. Takes the write lock. */
  async writeSummary(): Promise<void> {
    await this.blobs.withLock(() => this.writeSummaryLocked());
  }

  /**
   * Make refs/heads/<ref> name the newest commit in the ref's log. Several writers may publish at
   * once (nodes on one bucket share no lock): each writes what the log says *now*, and only over the
   * ref file it read (a conditional replace), so an older value never lands on top of a newer one;
   * a writer that loses re-reads and tries again. The log only grows, so this converges.
   */
  private async publishRef(ref: string): Promise<void> {
    for (let attempt = 0; attempt < PUBLISH_ATTEMPTS; attempt++) {
      const st = await this.blobs.stat(refKey(ref));
      const newest = (await readLastRecord(this.blobs, ref))?.record.to;
      if (!newest) return;
      const current = st ? (await this.blobs.read(refKey(ref)))?.toString('utf8').trim() : undefined;
      if (current === newest) return;
      const data = Buffer.from(`${newest}\n`);
      if (await this.blobs.replace(refKey(ref), data, { ifMatch: st ? st.etag : null })) return;
    }
    throw new RegistryError('E_REF_CONFLICT', `could not publish ref ${ref}: it keeps changing`, { ref });
  }

  /**
   * Rewrite the summary from refs/heads, conditionally on the summary we started from: a summary
   * computed from older refs can then never replace one computed from newer refs.
   */
  private async writeSummaryLocked(): Promise<void> {
    for (let attempt = 0; attempt < PUBLISH_ATTEMPTS; attempt++) {
      const st = await this.blobs.stat(SUMMARY_KEY);
      const bytes = await this.summaryBytes();
      // The signature exists before the summary it signs, under the summary's hash: the server
      // serves summary.sig from there (server/consistent-summary.ts), so the two always match.
      const sig = await this.signSummary(bytes);
      if (await this.blobs.replace(SUMMARY_KEY, bytes, { ifMatch: st ? st.etag : null })) {
        await this.publishSummarySig(sig);
        return;
      }
    }
    throw new RegistryError('E_REF_CONFLICT', 'could not rewrite the summary: the refs keep changing');
  }

  /** summary.sig for `summary`, stored write-once by the summary's sha256; undefined without keys. */
  private async signSummary(summary: Buffer): Promise<Buffer | undefined> {
    const sigs = await signAll(this.signers, summary);
    if (signatureCount(sigs) === 0) return undefined;
    const sig = encodeSignatures(sigs);
    await this.blobs.createOnce(summarySigKey(sha256(summary)), sig);
    return sig;
  }

  /**
   * The top-level summary.sig, for static web servers and ostree reading the directory: the new
   * one, or, when this writer has no keys, an empty a{sv} over an old one (there is no delete, and a
   * stale summary.sig would make clients keep their cached summary: ostree keys that cache on it).
   */
  private async publishSummarySig(sig: Buffer | undefined): Promise<void> {
    if (sig) await this.blobs.replace(SUMMARY_SIG_KEY, sig);
    else if ((await this.blobs.stat(SUMMARY_SIG_KEY))?.size)
      await this.blobs.replace(SUMMARY_SIG_KEY, Buffer.alloc(0));
  }

  private async summaryBytes(): Promise<Buffer> {
    const refs: SummaryRef[] = [];
    for (const { name, head } of await this.listRefs()) {
      const bytes = await this.objects.getMetadata(head, 'commit');
      const c = decodeCommit(bytes, objectId(head, 'commit'));
      const version = metadataGet(c.metadata, 'version');
      refs.push({
        name,
        checksum: head,
        commitSize: bytes.length,
        timestamp: c.timestamp,
        ...(version?.type === 's' ? { version: version.value as string } : {}),
      });
    }
    return encodeSummary({ refs, lastModified: Math.floor(Date.now() / 1000) });
  }

  /** A commit's index row; none for a commit whose closure is incomplete (it has no figures). */
  private async indexCommit(
    checksum: Checksum,
    c: Commit,
    stats?: { totalSize: number; fileCount: number },
  ): Promise<void> {
    const s = stats ?? (await this.commitStats(checksum));
    if (s) (await this.index()).putCommit(commitRow(checksum, c, s));
  }

  /** Rebuild the SQLite index from the repository alone. */
  async reindex(): Promise<{ commits: number; refs: number; records: number; objects: number }> {
    const db = this.indexDb ?? new IndexDb(this.indexPath);
    this.indexDb = db;
    const objects: ObjectRef[] = [];
    for await (const o of this.objects.list()) objects.push(o);
    // The listing says what is stored (not file sizes); what the walks below learn is kept in memory,
    // so each commit after the first reads only the subtrees that differ from the ones before it.
    const listed = new Set(objects.map((o) => `${o.checksum}.${o.type}`));
    const base: ClosureFacts = {
      completeTree: () => undefined,
      storedObject: (checksum, type) => (listed.has(`${checksum}.${type}`) ? { size: null } : undefined),
    };
    const facts = new MemoryFacts(base);
    const learnt: LearntFacts = { trees: [], objects: [] };
    const refs = await this.listRefs();
    const records: RefLogRecord[] = [];
    for (const ref of new Set([...refs.map((r) => r.name), ...(await listLoggedRefs(this.blobs))])) {
      for (const r of await readRefLog(this.blobs, ref)) records.push(r.record);
    }
    const commits: Array<{
      checksum: Checksum;
      c: Commit;
      stats?: { totalSize: number; fileCount: number };
    }> = [];
    for (const o of objects) {
      if (o.type !== 'commit') continue;
      const c = await this.readCommit(o.checksum);
      // A partial commit (a pull at depth 0 keeps only the newest tree) or one with a corrupt dirtree
      // has no figures, and no row: fsck reports it, and a ref move to it, once complete, adds the row.
      let stats: { totalSize: number; fileCount: number } | undefined;
      try {
        const check = await checkClosure(this.objects, o.checksum, facts, { sizes: true, commit: c });
        facts.learn(check.learnt);
        for (const t of check.learnt.trees) learnt.trees.push(t);
        for (const x of check.learnt.objects) learnt.objects.push(x);
        stats = check.stats;
      } catch (e) {
        if (!(e instanceof RegistryError)) throw e;
      }
      commits.push({ checksum: o.checksum, c, stats });
    }
    db.rebuild(() => {
      db.putObjects(objects);
      this.remember(db, learnt);
      for (const { checksum, c, stats } of commits) if (stats) db.putCommit(commitRow(checksum, c, stats));
      for (const r of records) db.recordRefMove(r);
      // refs/heads is what clients see; a ref with no log (written by ostree itself) is indexed too.
      for (const r of refs) db.putRef(r.name, r.head);
    });
    return { commits: commits.length, refs: refs.length, records: records.length, objects: objects.length };
  }
}

function commitRow(
  checksum: Checksum,
  c: Commit,
  stats: { totalSize: number; fileCount: number },
): CommitRow {
  return {
    checksum,
    parent: c.parent,
    subject: c.subject,
    body: c.body,
    timestamp: c.timestamp,
    rootTree: c.rootTree,
    rootMeta: c.rootMeta,
    metadata: Object.fromEntries(c.metadata.map(([k, v]) => [k, variantToJson(v)])),
    ...stats,
  };
}

export function refNotFound(ref: string): RegistryError {
  return new RegistryError(
    'E_REF_NOT_FOUND',
    `ref ${ref} does not exist`,
    { ref },
    'list refs with: sysroot refs',
  );
}
