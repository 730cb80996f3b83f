/**
 * `sysroot push`: hash the tree, commit it on top of the server's head of the ref, send the objects
 * the server lacks in one pack, and move the ref with a compare-and-swap. Four requests for a new
 * version of a ref: GET the ref, POST objects/missing, POST a pack, PUT the ref. Three for a new
 * ref: its pack is sent while the tree is hashed, nothing asked first (live-pack.ts).
 *
 *   hash     pass 1 (push-source.ts): read + sha256 of every file on the worker pool, nothing
 *            deflated or written; dirtrees, dirmetas and the commit built in memory, byte for byte
 *            what `sysroot commit` builds.
 *   missing  POST /api/v1/objects/missing for the closure (16,384 objects per request: one for a
 *            sysroot).
 *   upload   pass 2: only the lacking files are deflated (level 1), streamed as `filez` records,
 *            then the lacking metadata, into ONE POST /api/v1/packs body, with backpressure from the
 *            socket back to the workers (memory stays flat: large files are spooled, then streamed).
 *            The pack is zstd level 0 ("store"): .filez bytes are deflated already.
 *   ref      PUT /api/v1/refs/{ref} from the head we built on.
 *
 * The commit is built here, not on the server, so its checksum (the pin) is known before a byte is
 * sent, and the server only has to verify and store objects. If someone else moves the ref between
 * our GET of the head and our PUT (a concurrent push), the server answers 409; the commit is rebuilt
 * on the new head (a few hundred bytes: the tree objects are shared), sent with one PUT, and the move
 * is tried again, at most 3 times.
 */
import { RegistryError } from '../errors.js';
import { Variant } from '../gvariant/index.js';
import {
  type Checksum,
  type Commit,
  encodeCommit,
  type Metadata,
  type ObjectType,
} from '../objects/index.js';
import { KIND } from '../pack/index.js';
import { assertRef } from '../repo/refs.js';
import type { SigningKey } from '../sign/keys.js';
import { encodeSignatures, signAll } from '../sign/signatures.js';
import type { ObjectRef } from '../store/object-store.js';
import { type ClientOptions, RegistryClient } from './client.js';
import { LivePack, packBody } from './live-pack.js';
import { type Progress, silentProgress } from './progress.js';
import { hashSource, type LiveFiles } from './push-source.js';

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
  /**
   * Keys the pusher signs the commit with: the signatures go up as the commit's commitmeta, in the
   * same pack, and the server adds its own (docs/signing.md).
   */
  signKeys?: readonly SigningKey[];
}

export interface PushOptions extends Omit<ClientOptions, 'token'> {
  /** Unused: a push keeps no local cache any more (kept for callers that still pass it). */
  cacheDir?: string;
  /** Unused: objects go up in one pack request (kept for callers that still pass it). */
  concurrency?: number;
  /**
   * A new ref (no head on the server): send its pack while the tree is hashed, without asking first
   * which objects the server lacks (default true; live-pack.ts says why). False: always ask first.
   */
  stream?: boolean;
  /** Rebuilds on a moved head before giving up (default 3). */
  maxRebases?: number;
  /**
   * The ref's head on the server, asked for already (RegistryClient.getRef of the same ref): the
   * CLI asks before it loads the importer, so the answer is in before the first file is hashed.
   */
  head?: Promise<Checksum | null>;
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

/**
 * Objects per "which do you lack" query. The server accepts up to 100,000; a Debian sysroot's
 * closure is ~6,100, one query. Each query's JSON (~90 bytes per object each way, and the objects
 * parsed from it) is garbage a moment later: asked 47,000 at once, the 1 GiB bench push peaked
 * there.
 */
const MISSING_BATCH = 16_384;

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

/** The metadata among `objs`, in RECORD_ORDER. */
function metadataRecords(objs: ObjectRef[]): Array<ObjectRef & { type: Exclude<ObjectType, 'file'> }> {
  return objs
    .filter((o): o is ObjectRef & { type: Exclude<ObjectType, 'file'> } => o.type !== 'file')
    .sort((a, b) => RECORD_ORDER[a.type] - RECORD_ORDER[b.type]);
}

function isMoved(e: unknown): e is RegistryError {
  return e instanceof RegistryError && (e.code === 'E_REF_CONFLICT' || e.code === 'E_NOT_FAST_FORWARD');
}

/** Records of a pack in the order the server stores them: files, directories, the commit last. */
const RECORD_ORDER: Record<Exclude<ObjectType, 'file'>, number> = {
  dirmeta: 0,
  dirtree: 1,
  commitmeta: 2,
  commit: 3,
};

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
  const maxRebases = opts.maxRebases ?? 3;
  if (!client.hasToken) {
    // Fail before hashing a multi-GiB tree: the server refuses anonymous uploads anyway.
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

  // The ref is asked for while the tree is hashed: the answer is there before the hash pass needs
  // it (a first request costs ~9 ms, node:http loading included). A server that cannot answer
  // still stops the push early: the hashing is aborted with its error.
  const hashing = new AbortController();
  const parentAsked = opts.head ?? client.getRef(ref);
  parentAsked.catch((e: unknown) => hashing.abort(e));
  // A new ref: its pack is sent while the tree is hashed (live-pack.ts).
  let live: LivePack | undefined;
  let answered = false;
  parentAsked.then(
    (p) => {
      answered = true;
      if (p === null && opts.stream !== false && !hashing.signal.aborted) live = new LivePack(client);
    },
    () => {
      answered = true;
    },
  );
  // Until the answer the workers deflate on the guess of a new ref, and each .filez waits for it:
  // into the live pack, or dropped if the ref has a head. Files hashed before the answer (it comes
  // ~20-40 ms after the walk starts: ~100-200 files) were otherwise read and hashed again, and
  // deflated, after the walk, when nothing else overlaps. A push to an existing ref deflates those
  // few for nothing.
  const liveFiles: LiveFiles = {
    wanted: () => (live ? live.wanted() : opts.stream !== false && !answered),
    file: (checksum, filez) => {
      if (live) return live.file(checksum, filez);
      if (answered) return Promise.resolve();
      return parentAsked.then(
        () => live?.file(checksum, filez),
        () => {},
      );
    },
  };

  progress.phase('hash', -1, 'files');
  let seenFiles = 0;
  let seenBytes = 0;
  const hashed = hashSource(
    source,
    {
      owner: commitOpts.owner,
      canonicalPermissions: commitOpts.canonicalPermissions,
      skipSpecial: commitOpts.skipSpecial,
      signal: hashing.signal,
      onProgress: (p) => {
        progress.advance(p.files - seenFiles, p.bytes - seenBytes);
        seenFiles = p.files;
        seenBytes = p.bytes;
      },
    },
    liveFiles,
  ).finally(() => progress.stop());
  let parent: Checksum | null;
  let tree: Awaited<typeof hashed>;
  try {
    [parent, tree] = await Promise.all([parentAsked, hashed]);
  } catch (e) {
    live?.abort();
    // The ref's error first (the hashing's is then only its echo); a tree that did hash is closed.
    await hashed.then((t) => t.close()).catch(() => {});
    await parentAsked;
    throw e;
  }
  try {
    const { imported, objects } = tree;
    if (imported.skippedSpecial.length) {
      note(
        `skipped ${imported.skippedSpecial.length} special file(s): ${imported.skippedSpecial.join(', ')}`,
      );
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
      const bytes = encodeCommit(commit);
      const checksum = await objects.putMetadata('commit', bytes);
      if (commitOpts.signKeys?.length) {
        await objects.putMetadata(
          'commitmeta',
          encodeSignatures(await signAll(commitOpts.signKeys, bytes)),
          checksum,
        );
      }
      return checksum;
    };
    /** The commit and, when signed, its commitmeta: they travel together (the server signs on arrival). */
    const withMeta = (c: Checksum): ObjectRef[] =>
      commitOpts.signKeys?.length
        ? [
            { checksum: c, type: 'commitmeta' },
            { checksum: c, type: 'commit' },
          ]
        : [{ checksum: c, type: 'commit' }];

    const stats = { objects: 0, bytes: 0, present: 0 };

    /** Which of `wanted` the server lacks: one request per 100,000 objects (the server's limit). */
    const lacking = async (wanted: ObjectRef[]): Promise<ObjectRef[]> => {
      // The answer's entries are replaced by the ones asked about, so their checksum strings are
      // not held twice (47,000 of them for the 1 GiB bench tree; an answer naming an object not
      // asked about is ignored).
      const out: ObjectRef[] = [];
      for (let i = 0; i < wanted.length; i += MISSING_BATCH) {
        const batch = wanted.slice(i, i + MISSING_BATCH);
        const byType = new Map<ObjectType, Map<Checksum, ObjectRef>>();
        for (const o of batch) {
          let m = byType.get(o.type);
          if (!m) {
            m = new Map();
            byType.set(o.type, m);
          }
          m.set(o.checksum, o);
        }
        for (const m of await client.missing(batch)) {
          const o = byType.get(m.type)?.get(m.checksum);
          if (o) out.push(o);
        }
      }
      return out;
    };

    /**
     * Everything in `send` as one pack, in one request: files first, the commit last. A retry (the
     * connection broke, the server restarted) first asks again which of them the server lacks: the
     * records the failed attempt got stored are not sent twice (a 24 MiB pack cut halfway resends
     * half of it, not all of it).
     */
    const upload = async (send: ObjectRef[]): Promise<void> => {
      if (send.length === 0) return;
      let pending = send;
      let failure: unknown;
      let wire = 0;
      const body = (): AsyncIterable<Uint8Array> => {
        // A pack that failed to build (a file changed while pushing) fails the same way again.
        if (failure !== undefined) throw failure;
        const files = pending.filter((o) => o.type === 'file').map((o) => o.checksum);
        const meta = metadataRecords(pending);
        progress.phase('upload', pending.length);
        // `failure` carries a failure to build the pack to the caller.
        const { pack, body } = packBody();
        (async () => {
          for await (const f of tree.filez(files)) {
            if (Buffer.isBuffer(f.body)) await pack.add(KIND.filez, f.checksum, f.body);
            else await pack.addStream(KIND.filez, f.checksum, f.length, f.body);
            progress.advance(1, f.length);
          }
          for (const o of meta) {
            const bytes = await objects.getMetadata(o.checksum, o.type);
            await pack.add(KIND[o.type], o.checksum, bytes);
            progress.advance(1, bytes.length);
          }
          wire = (await pack.finish()).bytes;
          body.end();
        })().catch((e: unknown) => {
          if (!body.destroyed) failure = e;
          body.destroy(e instanceof Error ? e : new Error(String(e)));
        });
        return body;
      };
      const beforeRetry = async (): Promise<void> => {
        progress.stop();
        if (failure !== undefined) return;
        pending = await lacking(pending);
      };
      try {
        const r = await client.postPack(body, { beforeRetry });
        stats.objects += r.records;
      } catch (e) {
        throw failure ?? e;
      } finally {
        progress.stop();
      }
      stats.bytes += wire;
    };

    let commit = await makeCommit(parent);
    const closure = await tree.closure(commit);
    const treeObjects = closure.filter((o) => o.type !== 'commit');
    const sent = live ? await finishLive(live, closure) : undefined;
    if (sent) {
      stats.objects = sent.records;
      stats.bytes = sent.wire;
      stats.present = sent.existing;
    } else {
      // No live pack, or it broke: the two passes, with retries.
      if (live)
        note(
          `${live.failure ?? 'the pack upload failed'}; asking which objects the server lacks, to send those`,
        );
      const send = await lacking(closure);
      stats.present = closure.length - send.length;
      if (send.some((o) => o.type === 'commit') && commitOpts.signKeys?.length) {
        send.push({ checksum: commit, type: 'commitmeta' });
      }
      await upload(send);
    }

    /**
     * The rest of a live pack after the walk: the files it does not hold yet, the metadata and the
     * commit (with its signatures); then the server's answer, or undefined if it broke.
     */
    async function finishLive(pack: LivePack, objs: ObjectRef[]) {
      const files = objs.filter((o) => o.type === 'file' && !pack.has(KIND.filez, o.checksum));
      const signed: ObjectRef[] = commitOpts.signKeys?.length
        ? [{ checksum: commit, type: 'commitmeta' }]
        : [];
      const meta = metadataRecords([...objs, ...signed]);
      progress.phase('upload', files.length + meta.length);
      try {
        for await (const f of tree.filez(files.map((o) => o.checksum))) {
          await pack.filez(f);
          progress.advance(1, f.length);
        }
        for (const o of meta) {
          const bytes = await objects.getMetadata(o.checksum, o.type);
          await pack.add(KIND[o.type], o.checksum, bytes);
          progress.advance(1, bytes.length);
        }
      } catch (e) {
        pack.abort();
        throw e;
      } finally {
        progress.stop();
      }
      return pack.finish();
    }

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
        progress.phase('ref', 1);
        const moved = await client.moveRef(ref, parent, commit, reason);
        progress.advance(1, 0);
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
          // Only the commit is new: the tree is on the server already. One small PUT; a signed
          // commit goes with its commitmeta in one small pack (the server takes signatures only so).
          if (commitOpts.signKeys?.length) {
            await upload(withMeta(commit));
            continue;
          }
          const bytes = await objects.getMetadata(commit, 'commit');
          await client.putObject(commit, 'commit', bytes);
          stats.objects++;
          stats.bytes += bytes.length;
          continue;
        }
        if (e instanceof RegistryError && e.code === 'E_OBJECT_MISSING' && !retriedMissing) {
          // The server lost or never stored something it said it had: ask again about the whole closure.
          retriedMissing = true;
          const again = await lacking([...treeObjects, { checksum: commit, type: 'commit' }]);
          if (again.some((o) => o.type === 'commit') && commitOpts.signKeys?.length) {
            again.push({ checksum: commit, type: 'commitmeta' });
          }
          await upload(again);
          continue;
        }
        throw e;
      } finally {
        progress.stop();
      }
    }
  } finally {
    await tree.close();
  }
}
