/**
 * `sysroot pull`: fetch a commit's objects from a registry into the local cache, verifying each one
 * before it is stored, then check the commit out atomically.
 *
 * Objects come from the server's OSTree repository (`/repo/objects/XX/…`), exactly as `ostree pull`
 * fetches them; only the resolution of REF and the REF@SHA history check use the JSON API. The server
 * is not trusted: the commit must hash to the pin, every dirtree/dirmeta to its name, and every
 * `.filez` must inflate and re-hash to its name before it enters the cache. A server holding one bad
 * object therefore makes the pull fail naming it, with nothing at DEST and nothing bad cached.
 *
 * Resuming is free: objects are write-once and verified, so running an interrupted pull again
 * fetches only what the cache still lacks (a bare SHA that is fully cached needs no server at all).
 */
import { lstat, readdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { checkoutCommit } from '../checkout/checkout.js';
import { errnoCode, RegistryError } from '../errors.js';
import {
  assertChecksum,
  type Checksum,
  decodeCommit,
  decodeDirTree,
  isChecksum,
  type ObjectType,
  objectId,
  sha256,
} from '../objects/index.js';
import { assertRef } from '../repo/refs.js';
import { type MetadataType, ObjectCache } from './cache.js';
import { type ClientOptions, MAX_METADATA_SIZE, RegistryClient, readBody } from './client.js';
import { type Progress, silentProgress } from './progress.js';
import { TaskGroup } from './tasks.js';

export interface PullOptions extends ClientOptions {
  /** The object cache directory (default: see defaultCacheDir). */
  cacheDir?: string;
  /** Object requests in flight (default 24). */
  concurrency?: number;
  progress?: Progress;
  /** Messages for the user (stderr in the CLI). */
  onNote?: (line: string) => void;
}

export interface PullResult {
  commit: Checksum;
  ref: string | null;
  dest: string;
  fetched: { objects: number; bytes: number };
  /** Objects of the commit that were already in the cache when the pull started. */
  cached: number;
  files: number;
  dirs: number;
  symlinks: number;
  /** Bytes of file content written at DEST. */
  bytes: number;
  ownershipApplied: boolean;
}

// 24 requests in flight keeps a high-latency link full (24 x 64 KiB windows) while staying well below
// the default 1024 file descriptors, with temp files and the checkout's own 48 included.
const DEFAULT_CONCURRENCY = 24;

// A .filez up to 8 MiB is read into memory and verified in one go (24 in flight: at most 192 MiB);
// larger ones, or ones whose size the server does not announce, are streamed through a temp file.
const IN_MEMORY_LIMIT = 8 * 1024 * 1024;

export interface PullSpec {
  ref: string | null;
  /** The commit the user named (REF@SHA or SHA): what the fetched commit must hash to. */
  pin: Checksum | null;
}

/** `REF`, `REF@SHA` or `SHA`. */
export function parsePullSpec(spec: string): PullSpec {
  const at = spec.lastIndexOf('@');
  if (at >= 0) {
    return {
      ref: assertRef(spec.slice(0, at)),
      pin: assertChecksum(spec.slice(at + 1), `pinned commit in "${spec}"`),
    };
  }
  if (isChecksum(spec)) return { ref: null, pin: spec };
  return { ref: assertRef(spec), pin: null };
}

/** Fail before any download if DEST cannot be checked out to (checkoutCommit checks again, atomically). */
async function precheckDest(dest: string): Promise<void> {
  try {
    const st = await lstat(dest);
    if (st.isDirectory() && (await readdir(dest)).length === 0) return;
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return;
    throw new RegistryError('E_IO', `${dest}: ${(e as Error).message}`, { path: dest });
  }
  throw new RegistryError(
    'E_DEST_NOT_EMPTY',
    `${dest} exists and is not an empty directory`,
    { path: dest },
    'pull into a new directory; sysroot never overwrites an existing tree',
  );
}

/** Re-word a verification failure so it is clear that the server's copy is bad. */
function fromServer(e: unknown, base: string): unknown {
  if (!(e instanceof RegistryError)) return e;
  if (e.code !== 'E_CORRUPT_OBJECT' && e.code !== 'E_NOT_NORMAL_FORM') return e;
  const object = e.details.object ?? 'an object';
  return new RegistryError(
    e.code,
    `the server sent a corrupt object ${object}: ${e.message}`,
    { ...e.details, url: base },
    'the copy on the server is damaged (run `sysroot fsck` there); nothing was checked out or cached',
    e,
  );
}

interface Counters {
  fetchedObjects: number;
  fetchedBytes: number;
  cached: number;
}

async function fetchCommit(
  client: RegistryClient,
  cache: ObjectCache,
  spec: PullSpec,
  counters: Counters,
): Promise<{ commit: Checksum; bytes: Buffer }> {
  let commit: Checksum;
  if (spec.ref && spec.pin) {
    // A pin must have been a head of the ref at some point: REF@SHA is a claim about the ref.
    const history = await client.log(spec.ref);
    // A ref written by stock ostree has no log, but its current head is still a head.
    if (!history.some((r) => r.to === spec.pin) && (await client.getRef(spec.ref)) !== spec.pin) {
      throw new RegistryError(
        'E_NOT_IN_HISTORY',
        `commit ${spec.pin} was never a head of ${spec.ref} on ${client.base}`,
        { ref: spec.ref, expected: spec.pin },
        `see the ref's history with: sysroot log --url ${client.base} ${spec.ref}`,
      );
    }
    commit = spec.pin;
  } else if (spec.pin) {
    commit = spec.pin;
  } else {
    const head = await client.getRef(spec.ref!);
    if (!head) {
      throw new RegistryError('E_REF_NOT_FOUND', `ref ${spec.ref} does not exist on ${client.base}`, {
        ref: spec.ref!,
      });
    }
    commit = head;
  }
  const cached = await cache.readMetadata(commit, 'commit');
  if (cached) {
    counters.cached++;
    return { commit, bytes: cached };
  }
  const id = objectId(commit, 'commit');
  const bytes = await client.fetchObject(commit, 'commit', (res, touch) =>
    readBody(res, { touch }, MAX_METADATA_SIZE, id),
  );
  const found = sha256(bytes);
  if (found !== commit && spec.pin) {
    throw new RegistryError(
      'E_PIN_MISMATCH',
      `the commit the server sent for ${spec.pin} hashes to ${found}`,
      { expected: spec.pin, found, object: id, url: client.base },
      'the server has a damaged or substituted commit; nothing was checked out or cached',
    );
  }
  try {
    await cache.putMetadata(commit, 'commit', bytes);
  } catch (e) {
    throw fromServer(e, client.base);
  }
  counters.fetchedObjects++;
  counters.fetchedBytes += bytes.length;
  return { commit, bytes };
}

/**
 * Make sure every object of `commit` is in the cache, fetching what is missing. Returns the number
 * of file and symlink paths in the commit (for the checkout's progress).
 */
async function fetchClosure(
  client: RegistryClient,
  cache: ObjectCache,
  commitBytes: Buffer,
  commit: Checksum,
  concurrency: number,
  progress: Progress,
  counters: Counters,
): Promise<number> {
  const c = decodeCommit(commitBytes, objectId(commit, 'commit'));
  const group = new TaskGroup(concurrency);
  const seen = new Set<string>();
  const once = (checksum: Checksum, type: ObjectType): boolean => {
    const k = `${checksum}.${type}`;
    if (seen.has(k)) return false;
    seen.add(k);
    progress.addTotal(1);
    return true;
  };

  const metadata = async (checksum: Checksum, type: MetadataType): Promise<Buffer> => {
    const cached = await cache.readMetadata(checksum, type);
    if (cached) {
      counters.cached++;
      progress.advance(1, 0);
      return cached;
    }
    const id = objectId(checksum, type);
    const bytes = await group.slot(() =>
      client.fetchObject(checksum, type, (res, touch) => readBody(res, { touch }, MAX_METADATA_SIZE, id)),
    );
    try {
      await cache.putMetadata(checksum, type, bytes);
    } catch (e) {
      throw fromServer(e, client.base);
    }
    counters.fetchedObjects++;
    counters.fetchedBytes += bytes.length;
    progress.advance(1, bytes.length);
    return bytes;
  };

  const content = async (checksum: Checksum): Promise<void> => {
    if (await cache.has(checksum, 'file')) {
      counters.cached++;
      progress.advance(1, 0);
      return;
    }
    const id = objectId(checksum, 'file');
    let received = 0;
    await group.slot(() =>
      client.fetchObject(checksum, 'file', async (res, touch) => {
        received = 0;
        const length = Number(res.headers.get('content-length') ?? Number.NaN);
        try {
          if (Number.isFinite(length) && length <= IN_MEMORY_LIMIT) {
            const filez = await readBody(res, { touch }, IN_MEMORY_LIMIT, id);
            received = filez.length;
            await cache.putFilez(checksum, filez);
          } else if (res.body) {
            const body = res.body;
            await cache.putFilezStream(
              checksum,
              (async function* () {
                for await (const chunk of body) {
                  touch();
                  received += chunk.length;
                  yield chunk;
                }
              })(),
            );
          } else {
            await cache.putFilez(checksum, Buffer.alloc(0));
          }
        } catch (e) {
          await res.body?.cancel().catch(() => undefined);
          throw fromServer(e, client.base);
        }
      }),
    );
    counters.fetchedObjects++;
    counters.fetchedBytes += received;
    progress.advance(1, received);
  };

  const trees = new Map<Checksum, { files: number; dirs: Checksum[] }>();
  const dir = (tree: Checksum, meta: Checksum): void => {
    if (once(meta, 'dirmeta')) group.spawn(async () => void (await metadata(meta, 'dirmeta')));
    if (!once(tree, 'dirtree')) return;
    group.spawn(async () => {
      const t = decodeDirTree(await metadata(tree, 'dirtree'), objectId(tree, 'dirtree'));
      trees.set(tree, { files: t.files.length, dirs: t.dirs.map((d) => d.tree) });
      for (const f of t.files) if (once(f.checksum, 'file')) group.spawn(() => content(f.checksum));
      for (const d of t.dirs) dir(d.tree, d.meta);
    });
  };
  dir(c.rootTree, c.rootMeta);
  await group.wait();
  // Paths (files and symlinks) the checkout will write: a subtree shared by several directories is
  // fetched once but checked out at each place, so count with multiplicity.
  const paths = new Map<Checksum, number>();
  const count = (tree: Checksum): number => {
    let n = paths.get(tree);
    if (n === undefined) {
      const t = trees.get(tree)!;
      n = t.files + t.dirs.reduce((sum, d) => sum + count(d), 0);
      paths.set(tree, n);
    }
    return n;
  };
  return count(c.rootTree);
}

/** The object a checkout failure names, if it is a verification failure of one object. */
function corruptObject(e: unknown): { checksum: Checksum; type: ObjectType } | undefined {
  if (!(e instanceof RegistryError) || (e.code !== 'E_CORRUPT_OBJECT' && e.code !== 'E_NOT_NORMAL_FORM'))
    return undefined;
  const m = /^([0-9a-f]{64})\.(file|dirtree|dirmeta|commit)$/.exec(String(e.details.object ?? ''));
  return m ? { checksum: m[1]!, type: m[2] as ObjectType } : undefined;
}

/**
 * Pull `spec` (REF, REF@SHA or SHA) from the registry at `url` and check it out at `dest`.
 * Nothing appears at `dest` unless every object was verified and the whole tree was written.
 */
export async function pull(
  url: string,
  spec: string,
  dest: string,
  opts: PullOptions = {},
): Promise<PullResult> {
  const parsed = parsePullSpec(spec);
  const target = resolve(dest);
  await precheckDest(target);
  const client = new RegistryClient(url, opts);
  const cache = await ObjectCache.open(opts.cacheDir);
  const progress = opts.progress ?? silentProgress;
  const counters: Counters = { fetchedObjects: 0, fetchedBytes: 0, cached: 0 };
  try {
    // A second round only happens when the checkout finds a cached object damaged after it was
    // cached (disk trouble): that object is evicted and fetched again, once.
    for (let round = 0; ; round++) {
      progress.phase('fetch', 0);
      const roundCounters: Counters = { fetchedObjects: 0, fetchedBytes: 0, cached: 0 };
      progress.addTotal(1);
      const { commit, bytes } = await fetchCommit(client, cache, parsed, roundCounters);
      progress.advance(1, roundCounters.fetchedBytes);
      const paths = await fetchClosure(
        client,
        cache,
        bytes,
        commit,
        opts.concurrency ?? DEFAULT_CONCURRENCY,
        progress,
        roundCounters,
      );
      counters.fetchedObjects += roundCounters.fetchedObjects;
      counters.fetchedBytes += roundCounters.fetchedBytes;
      if (round === 0) counters.cached = roundCounters.cached;
      progress.phase('write', paths, 'files');
      let written = 0;
      let wrote = 0;
      try {
        const r = await checkoutCommit(cache.objects, commit, target, {
          onProgress: (p) => {
            progress.advance(p.files - written, p.bytes - wrote);
            written = p.files;
            wrote = p.bytes;
          },
        });
        // Symlinks are not reported by the checkout's progress; fill the bar up to the real total.
        progress.advance(Math.max(0, paths - written), 0);
        progress.stop();
        return {
          commit,
          ref: parsed.ref,
          dest: target,
          fetched: { objects: counters.fetchedObjects, bytes: counters.fetchedBytes },
          cached: counters.cached,
          ...r,
        };
      } catch (e) {
        const bad = corruptObject(e);
        if (!bad || round > 0) throw e;
        opts.onNote?.(`${objectId(bad.checksum, bad.type)} in the local cache is damaged; fetching it again`);
        await cache.evict(bad.checksum, bad.type);
      }
    }
  } finally {
    progress.stop();
  }
}
