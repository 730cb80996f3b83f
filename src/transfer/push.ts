/**
 * `sysroot push`: import a tree into the local cache, commit it on top of the server's head of the
 * ref, upload only the objects the server lacks, and move the ref with a compare-and-swap.
 *
 * The commit is built here, not on the server, so its checksum (the pin) is known before a byte is
 * sent, and the server only has to verify and store objects. If someone else moves the ref between
 * our GET of the head and our PUT (a concurrent push), the server answers 409; the commit is rebuilt
 * on the new head (a few hundred bytes: the tree objects are shared) and the move is tried again, at
 * most 3 times. Objects already uploaded are not sent again.
 */
import { RegistryError } from '../errors.js';
import { Variant } from '../gvariant/index.js';
import { importSource } from '../import/index.js';
import {
  type Checksum,
  type Commit,
  encodeCommit,
  type Metadata,
  type ObjectType,
  objectId,
  objectPath,
} from '../objects/index.js';
import { commitClosure } from '../repo/closure.js';
import { assertRef } from '../repo/refs.js';
import type { ObjectRef } from '../store/object-store.js';
import { ObjectCache } from './cache.js';
import { type ClientOptions, RegistryClient, type RequestBody } from './client.js';
import { type Progress, silentProgress } from './progress.js';
import { forEachLimit } from './tasks.js';

export interface PushCommitOptions {
  ref: string;
  subject?: string;
  body?: string;
  /** Seconds since the epoch; default now. */
  timestamp?: number;
  /** User metadata, in the order given. */
  metadata?: Metadata;
  /** Append `ostree.ref-binding` = [ref], as `ostree commit --branch` does. */
  bindRef?: boolean;
  owner?: { uid: number; gid: number };
  canonicalPermissions?: boolean;
  skipSpecial?: boolean;
  /** Recorded in the server's ref log; default: the subject. */
  reason?: string;
}

export interface PushOptions extends Omit<ClientOptions, 'token'> {
  cacheDir?: string;
  /** Uploads in flight (default 12). */
  concurrency?: number;
  /** Rebuilds on a moved head before giving up (default 3). */
  maxRebases?: number;
  progress?: Progress;
  onNote?: (line: string) => void;
}

export interface PushResult {
  commit: Checksum;
  ref: string;
  parent: Checksum | null;
  /** How many times the commit was rebuilt because the ref moved under us. */
  rebased: number;
  uploaded: { objects: number; bytes: number };
  /** Objects of the commit the server already had. */
  present: number;
  fileCount: number;
  totalSize: number;
  skippedSpecial: string[];
  seq: number | null;
}

// 12 uploads in flight: enough to hide per-request latency; the server verifies (inflates and
// hashes) every object it receives, so more parallel uploads mostly queue up on its CPU.
const DEFAULT_CONCURRENCY = 12;

// The server accepts up to 100,000 objects per query; 10,000 keeps each request body near 1 MB.
const MISSING_BATCH = 10_000;

// Objects up to 4 MiB are read into memory and sent with a known length; larger ones are streamed
// from the cache file so 12 uploads of 2 GiB files do not need 24 GiB of memory.
const IN_MEMORY_LIMIT = 4 * 1024 * 1024;

/** Repository.commit's metadata rules: user keys in order, then skipped-special, then the ref binding. */
export function commitMetadata(
  ref: string,
  user: Metadata,
  skippedSpecial: string[],
  bindRef: boolean,
): Metadata {
  const metadata: Metadata = [...user];
  if (skippedSpecial.length) metadata.push(['sysroot.skipped-special', new Variant('as', skippedSpecial)]);
  if (bindRef) metadata.push(['ostree.ref-binding', new Variant('as', [ref])]);
  const seen = new Set<string>();
  for (const [k] of metadata) {
    if (seen.has(k))
      throw new RegistryError('E_USAGE', `metadata key "${k}" given more than once`, { found: k });
    seen.add(k);
  }
  return metadata;
}

function isMoved(e: unknown): e is RegistryError {
  return e instanceof RegistryError && (e.code === 'E_REF_CONFLICT' || e.code === 'E_NOT_FAST_FORWARD');
}

/**
 * Push SOURCE (a directory or tarball) as a new commit of `commitOpts.ref` to the registry at `url`.
 * `token` falls back to $SYSROOT_TOKEN.
 */
export async function push(
  url: string,
  token: string | undefined,
  source: string,
  commitOpts: PushCommitOptions,
  opts: PushOptions = {},
): Promise<PushResult> {
  const ref = assertRef(commitOpts.ref);
  const client = new RegistryClient(url, { ...opts, ...(token !== undefined ? { token } : {}) });
  const note = opts.onNote ?? (() => {});
  const progress = opts.progress ?? silentProgress;
  const concurrency = opts.concurrency ?? DEFAULT_CONCURRENCY;
  const maxRebases = opts.maxRebases ?? 3;
  if (!client.hasToken) {
    // Fail before importing a multi-GiB tree: the server refuses anonymous uploads anyway.
    throw new RegistryError(
      'E_UNAUTHORIZED',
      'pushing needs a token',
      {},
      'pass --token or set SYSROOT_TOKEN (tokens are made with `sysroot token create --scope push:<glob>`)',
    );
  }
  const metadataUser = commitOpts.metadata ?? [];
  // Checked before the import as well, so a typo costs nothing.
  commitMetadata(ref, metadataUser, [], commitOpts.bindRef ?? false);

  let parent = await client.getRef(ref);
  const cache = await ObjectCache.open(opts.cacheDir);

  progress.phase('import', -1, 'files');
  let seenFiles = 0;
  let seenBytes = 0;
  const imported = await importSource(cache.objects, source, {
    owner: commitOpts.owner,
    canonicalPermissions: commitOpts.canonicalPermissions,
    skipSpecial: commitOpts.skipSpecial,
    onProgress: (p) => {
      progress.advance(p.files - seenFiles, p.bytes - seenBytes);
      seenFiles = p.files;
      seenBytes = p.bytes;
    },
  });
  progress.stop();
  if (imported.skippedSpecial.length) {
    note(`skipped ${imported.skippedSpecial.length} special file(s): ${imported.skippedSpecial.join(', ')}`);
  }
  const metadata = commitMetadata(ref, metadataUser, imported.skippedSpecial, commitOpts.bindRef ?? false);
  // Fixed once, so a rebuilt commit differs from the first only in its parent.
  const timestamp = commitOpts.timestamp ?? Math.floor(Date.now() / 1000);
  const reason = commitOpts.reason ?? commitOpts.subject ?? '';

  const makeCommit = async (p: Checksum | null): Promise<Checksum> => {
    const commit: Commit = {
      metadata,
      parent: p,
      related: [],
      subject: commitOpts.subject ?? '',
      body: commitOpts.body ?? '',
      timestamp,
      rootTree: imported.rootTree,
      rootMeta: imported.rootMeta,
    };
    return cache.objects.putMetadata('commit', encodeCommit(commit));
  };

  const uploaded = new Set<string>();
  const stats = { objects: 0, bytes: 0, present: 0 };
  const upload = async (o: ObjectRef): Promise<void> => {
    const key = objectPath(o.checksum, o.type);
    const st = await cache.blobs.stat(key);
    if (!st)
      throw new RegistryError(
        'E_OBJECT_MISSING',
        `object ${objectId(o.checksum, o.type)} is not in the local cache`,
      );
    let body: RequestBody;
    if (st.size <= IN_MEMORY_LIMIT) {
      const bytes = await cache.blobs.read(key);
      if (!bytes)
        throw new RegistryError(
          'E_OBJECT_MISSING',
          `object ${objectId(o.checksum, o.type)} vanished from the local cache`,
        );
      body = bytes;
    } else {
      body = () =>
        (async function* () {
          const s = await cache.blobs.readStream(key);
          if (!s)
            throw new RegistryError(
              'E_OBJECT_MISSING',
              `object ${objectId(o.checksum, o.type)} vanished from the local cache`,
            );
          yield* s;
        })();
    }
    try {
      await client.putObject(o.checksum, o.type, body, st.size);
    } catch (e) {
      if (e instanceof RegistryError && e.code === 'E_CORRUPT_OBJECT') {
        // Our cached copy is bad (it was verified when it was written, so the disk changed it): drop it
        // so that the next push re-imports it instead of failing the same way forever.
        await cache.evict(o.checksum, o.type);
        throw new RegistryError(
          'E_CORRUPT_OBJECT',
          `the server refused ${objectId(o.checksum, o.type)} from the local cache as corrupt: ${e.message}`,
          { ...e.details, object: objectId(o.checksum, o.type), cache: cache.dir },
          'it was removed from the local cache; run the push again',
          e,
        );
      }
      throw e;
    }
    uploaded.add(`${o.checksum}.${o.type}`);
    stats.objects++;
    stats.bytes += st.size;
    progress.advance(1, st.size);
  };

  /** Upload what the server lacks of `objects`; the commit object (if among them) goes last. */
  const sync = async (objects: ObjectRef[]): Promise<void> => {
    const todo = objects.filter((o) => !uploaded.has(`${o.checksum}.${o.type}`));
    const lacking: ObjectRef[] = [];
    for (let i = 0; i < todo.length; i += MISSING_BATCH) {
      lacking.push(...(await client.missing(todo.slice(i, i + MISSING_BATCH))));
    }
    stats.present += todo.length - lacking.length;
    const commits = lacking.filter((o) => o.type === 'commit');
    const rest = lacking.filter((o) => o.type !== 'commit');
    progress.phase('upload', lacking.length);
    await forEachLimit(rest, concurrency, upload);
    for (const c of commits) await upload(c);
    progress.stop();
  };

  let commit = await makeCommit(parent);
  const closure: ObjectRef[] = [];
  for await (const o of commitClosure(cache.objects, commit)) closure.push(o);
  const tree = closure.filter((o) => o.type !== 'commit');
  await sync(closure);

  let rebased = 0;
  let retriedMissing = false;
  const result = (seq: number | null): PushResult => ({
    commit,
    ref,
    parent,
    rebased,
    uploaded: { objects: stats.objects, bytes: stats.bytes },
    present: stats.present,
    fileCount: imported.fileCount,
    totalSize: imported.totalSize,
    skippedSpecial: imported.skippedSpecial,
    seq,
  });
  for (;;) {
    try {
      const moved = await client.moveRef(ref, parent, commit, reason);
      return result(typeof moved.seq === 'number' ? moved.seq : null);
    } catch (e) {
      if (isMoved(e)) {
        const head = await client.getRef(ref);
        // Our own earlier attempt may have gone through with its answer lost on the way back.
        if (head === commit) return result(null);
        if (rebased >= maxRebases || head === parent) throw e;
        rebased++;
        note(
          `${ref} moved to ${head ?? 'nothing'} while pushing (a concurrent push); ` +
            `rebuilding the commit on top of it (rebase ${rebased} of ${maxRebases})`,
        );
        parent = head;
        commit = await makeCommit(parent);
        await sync([{ checksum: commit, type: 'commit' }]);
        continue;
      }
      if (e instanceof RegistryError && e.code === 'E_OBJECT_MISSING' && !retriedMissing) {
        // The server lost or never stored something it said it had: ask again about the whole closure.
        retriedMissing = true;
        uploaded.clear();
        await sync([...tree, { checksum: commit, type: 'commit' as ObjectType }]);
        continue;
      }
      throw e;
    }
  }
}
