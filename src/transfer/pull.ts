/**
 * `sysroot pull`: one request for the commit (REF → its head), one for a pack of what the cache
 * lacks, checked out while it arrives.
 *
 *   resolve   GET /api/v1/refs/REF (or the ref log for REF@SHA; nothing for a bare SHA)
 *   fetch     GET /api/v1/packs/{from}..{to}  when the cache holds a complete commit `from` of the
 *             same ref (the newest), else  GET /api/v1/packs/{to}  (the whole closure; also the
 *             answer to a 404 naming `from`). The body goes to a temp file in the pack cache while
 *             readPack verifies every record; the pack is renamed into the cache once its end
 *             record verified (pack-cache.ts).
 *   checkout  at the same time, from the records as they verify and, for an update, the cached
 *             packs it completes (IncomingPack in pack-source.ts); atomically, as `sysroot checkout`
 *             does. A commit the cache already holds complete is checked out from its packs alone.
 *             Once the whole tree was found, the commit is catalogued as complete.
 *
 * Doing both at once decompresses the pack once and writes files while the rest arrives: cold pull
 * + checkout of the 127 MB Debian sysroot went from 5.7 s (6,130 requests) to ~0.95 s (2 requests).
 *
 * The server is not trusted: the pack's first record must be the commit asked for and hash to it
 * (a pin that does not match fails naming both), every record must verify, and a checkout that
 * finds an object missing fails. Nothing is renamed into DEST or the cache before that. A cached
 * pack that no longer reads back (bad `.idx`, a frame failing zstd's checksum) is evicted and the
 * pull fetched again, once.
 *
 * Signatures (docs/signing.md): with `trust`, the commit's signatures are checked before anything is
 * fetched or written: its `.commit` and `.commitmeta` (two small GETs under /repo/, ~1 KB) must
 * carry a valid signature by a trusted, unrevoked key, else E_SIGNATURE and DEST stays absent. The
 * pack that follows must start with a commit hashing to the same checksum, so the tree checked out
 * is the one that was signed.
 *
 * A no-op: when DEST is a checkout this cache made of exactly the commit asked for (same directory
 * inode, root mtime still 0), nothing is fetched or written (pack-cache.ts records checkouts).
 */
import { lstat, readdir, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { CheckoutResult } from '../checkout/checkout.js';
import { errnoCode, isRegistryError, RegistryError } from '../errors.js';
import { assertChecksum, type Checksum, decodeCommit, isChecksum, objectId } from '../objects/index.js';
import { KIND } from '../pack/format.js';
import type { PackEvent } from '../pack/index.js';
import { assertRef } from '../repo/refs.js';
import { type TrustedKeys, verifyCommit } from '../sign/verify.js';
import { type ClientOptions, RegistryClient } from './client.js';
import type { HttpAnswer } from './http.js';
import { type CommitEntry, PackCache, type PackTemp } from './pack-cache.js';
import type { IncomingPack } from './pack-source.js';
import { type Progress, silentProgress } from './progress.js';

export interface PullOptions extends ClientOptions {
  /** The cache directory (default: see defaultCacheDir); packs live in its packs/ subdirectory. */
  cacheDir?: string;
  progress?: Progress;
  /** Messages for the user (stderr in the CLI). */
  onNote?: (line: string) => void;
  /**
   * Verify the commit's signatures against these keys before fetching it: always when the pull
   * follows a ref, and for a pin (REF@SHA, SHA) when `verifyPinned` (a pin is verified by its hash).
   */
  trust?: TrustedKeys;
  verifyPinned?: boolean;
}

export interface PullResult {
  commit: Checksum;
  ref: string | null;
  dest: string;
  /** Records of the pack received (0 if none) and its size on the wire. */
  fetched: { objects: number; bytes: number };
  /** Objects of the commit that came from packs already cached. */
  cached: number;
  files: number;
  dirs: number;
  symlinks: number;
  /** Bytes of file content written at DEST. */
  bytes: number;
  ownershipApplied: boolean;
  /** True when DEST already was a checkout of the commit by this cache: nothing was written. */
  noop?: boolean;
  /** Ids of the trusted keys whose signature verified; absent when signatures were not checked. */
  signedBy?: string[];
}

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

function destNotEmpty(dest: string): RegistryError {
  return new RegistryError(
    'E_DEST_NOT_EMPTY',
    `${dest} exists and is not an empty directory`,
    { path: dest },
    'pull into a new directory; sysroot never overwrites an existing tree',
  );
}

/**
 * Before any download: DEST must be absent or empty, or a checkout this cache made (then the
 * commit it holds is returned, for the no-op check). checkoutCommit checks again, atomically.
 */
async function precheckDest(dest: string, cache: PackCache): Promise<Checksum | undefined> {
  try {
    const st = await lstat(dest);
    if (st.isDirectory()) {
      if ((await readdir(dest)).length === 0) return undefined;
      const made = await cache.checkoutAt(dest, st);
      if (made) return made;
    }
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return undefined;
    throw new RegistryError('E_IO', `${dest}: ${(e as Error).message}`, { path: dest });
  }
  throw destNotEmpty(dest);
}

/** Re-word a verification failure so it is clear that the server's copy is bad. */
function fromServer(e: unknown, base: string): unknown {
  if (!(e instanceof RegistryError)) return e;
  if (e.code !== 'E_CORRUPT_OBJECT' && e.code !== 'E_NOT_NORMAL_FORM' && e.code !== 'E_BAD_PACK') return e;
  const object = e.details.object ?? (e.code === 'E_BAD_PACK' ? 'a pack' : 'an object');
  return new RegistryError(
    e.code,
    `the server sent a corrupt ${object}: ${e.message}`,
    { ...e.details, url: base },
    'the copy on the server is damaged (run `sysroot fsck` there); nothing was checked out or cached',
    e,
  );
}

/** The commit `spec` names: a ref's head (1 request), a pin checked against the ref log, or a SHA. */
async function resolveCommit(client: RegistryClient, spec: PullSpec): Promise<Checksum> {
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
    return spec.pin;
  }
  if (spec.pin) return spec.pin;
  const head = await client.getRef(spec.ref!);
  if (!head) {
    throw new RegistryError('E_REF_NOT_FOUND', `ref ${spec.ref} does not exist on ${client.base}`, {
      ref: spec.ref!,
    });
  }
  return head;
}

/**
 * The commit's signatures against `trust`, from its .commit (re-hashed: it must be the commit asked
 * for) and .commitmeta (none: unsigned). Returns the ids of the keys that signed.
 */
async function verifySignatures(
  client: RegistryClient,
  commit: Checksum,
  ref: string | null,
  trust: TrustedKeys,
): Promise<string[]> {
  const { MAX_METADATA_SIZE, readBody } = await import('./client.js');
  const get = (type: 'commit' | 'commitmeta') =>
    client.fetchObject(commit, type, (res, touch) =>
      readBody(res, { touch }, MAX_METADATA_SIZE, `${commit}.${type}`),
    );
  const bytes = await get('commit');
  let meta: Buffer | undefined;
  try {
    meta = await get('commitmeta');
  } catch (e) {
    if (!isRegistryError(e, 'E_OBJECT_MISSING')) throw e;
  }
  try {
    return (await verifyCommit(commit, bytes, meta, trust, { ref, url: client.base })).valid;
  } catch (e) {
    throw fromServer(e, client.base);
  }
}

/** `packs/{from}..{to}` (an update from a cached commit) or `packs/{to}` (the whole closure). */
function packPath(commit: Checksum, from: CommitEntry | undefined): string {
  return from ? `packs/${from.commit}..${commit}` : `packs/${commit}`;
}

/**
 * readPack over the body, which is written to `temp` as it passes; the first record must be the
 * commit asked for. Verification failures are re-worded as the server's (fromServer, wrongCommit);
 * a connection lost halfway is passed on as it is, for the client to retry the request.
 */
async function* receive(
  res: HttpAnswer,
  temp: PackTemp,
  commit: Checksum,
  spec: PullSpec,
  base: string,
  progress: Progress,
  touch: () => void,
): AsyncGenerator<PackEvent> {
  const body = res.body;
  const chunks = (async function* () {
    for await (const c of body) {
      touch();
      temp.write(c);
      progress.advance(0, c.length);
      yield c;
    }
  })();
  let first = true;
  try {
    const { MAX_COLLECT, readPack } = (await loadWritingModules()).reader;
    // reuse: IncomingPack copies what it keeps, and the checkout writes (or copies) each payload
    // before it asks for the next.
    for await (const ev of readPack(chunks, { collect: MAX_COLLECT, reuse: true })) {
      if (ev.type === 'record') {
        if (first && (ev.kind !== KIND.commit || ev.checksum !== commit)) {
          throw wrongCommit(commit, spec, objectId(ev.checksum, 'commit'), ev.checksum, base);
        }
        first = false;
      } else if (ev.type === 'end' && first) {
        throw new RegistryError('E_BAD_PACK', 'bad pack: it holds no records', { url: base });
      }
      yield ev;
    }
  } catch (e) {
    // The commit record itself did not hash to its name: for a pin, that is a pin mismatch.
    if (isRegistryError(e, 'E_CORRUPT_OBJECT') && e.details.object === objectId(commit, 'commit')) {
      throw wrongCommit(commit, spec, objectId(commit, 'commit'), String(e.details.found), base);
    }
    throw fromServer(e, base);
  }
}

/** The pack does not start with the commit asked for, or its commit record does not hash to it. */
function wrongCommit(
  commit: Checksum,
  spec: PullSpec,
  id: string,
  found: string,
  base: string,
): RegistryError {
  if (spec.pin) {
    return new RegistryError(
      'E_PIN_MISMATCH',
      `the commit the server sent for ${spec.pin} hashes to ${found}`,
      { expected: spec.pin, found, object: objectId(commit, 'commit'), url: base },
      'the server has a damaged or substituted commit; nothing was checked out or cached',
    );
  }
  return new RegistryError(
    'E_CORRUPT_OBJECT',
    `the server sent ${id} (hashing to ${found}) for commit ${commit}`,
    { expected: commit, found, object: objectId(commit, 'commit'), url: base },
    'the server has a damaged or substituted commit; nothing was checked out or cached',
  );
}

/**
 * What a pull that writes needs and a no-op pull never does: the checkout, the pack reader and the
 * cached packs (~30 ms of start-up, the zstd and xattr bindings included). Imported on first use,
 * and started beside the ref request when DEST cannot be a no-op: Node's ESM loader reads modules
 * asynchronously, and loaded after the ref's answer they kept the process idle ~25 ms before it
 * asked for the pack.
 */
let writingModules:
  | Promise<{
      checkout: typeof import('../checkout/checkout.js');
      packSource: typeof import('./pack-source.js');
      reader: typeof import('../pack/reader.js');
    }>
  | undefined;
function loadWritingModules() {
  writingModules ??= Promise.all([
    import('../checkout/checkout.js'),
    import('./pack-source.js'),
    import('../pack/reader.js'),
    // Not used here: PackCache.source imports it for cached packs; loading it now is the point.
    import('../pack/pack-file.js'),
  ]).then(([checkout, packSource, reader]) => ({ checkout, packSource, reader }));
  return writingModules;
}

/** One attempt: check out from the cache, or from a pack as it arrives (on top of cached packs). */
async function pullOnce(
  client: RegistryClient,
  cache: PackCache,
  spec: PullSpec,
  commit: Checksum,
  target: string,
  progress: Progress,
): Promise<PullResult> {
  const { checkout, packSource } = await loadWritingModules();
  const { checkoutCommit } = checkout;
  const { IncomingPack } = packSource;
  let written = 0;
  let wrote = 0;
  const onProgress = (p: { files: number; bytes: number }): void => {
    progress.advance(p.files - written, p.bytes - wrote);
    written = p.files;
    wrote = p.bytes;
  };
  const done = async (r: CheckoutResult, fetched: PullResult['fetched'], cached: number) => {
    await cache.recordCheckout(target, commit, await stat(target)).catch(() => {});
    progress.stop();
    return { commit, ref: spec.ref, dest: target, fetched, cached, ...r };
  };
  const entry = await cache.complete(commit);
  if (entry) {
    const source = await cache.source(entry.packs);
    try {
      progress.phase('write', -1, 'files');
      const r = await checkoutCommit(source, commit, target, { onProgress });
      return await done(r, { objects: 0, bytes: 0 }, source.used.size);
    } finally {
      await source.close();
    }
  }
  const newest = spec.ref ? await cache.newestOf(spec.ref, commit) : undefined;
  let base = newest ? await cache.source(newest.packs) : undefined;
  // The whole download and checkout run inside the request, so that a connection lost halfway is
  // retried like any transient error (the checkout's temp tree is gone by then) and the client's
  // idle timer sees every chunk.
  const attempt = (from: CommitEntry | undefined): Promise<PullResult> => {
    const path = packPath(commit, from);
    const what = `GET /api/v1/${path}`;
    return client.request({ method: 'GET', url: client.apiUrl(path), what }, async (res, touch) => {
      progress.phase('pull', -1, 'files');
      const temp = cache.begin();
      try {
        let stored: Checksum | undefined;
        const incoming: IncomingPack = new IncomingPack(
          receive(res, temp, commit, spec, client.base, progress, touch),
          base,
          async (index) => {
            stored = await temp.keep(index);
          },
          async () => {
            const { timestamp } = decodeCommit(await incoming.readMetadata(commit, 'commit'));
            const packs = [...(from?.packs ?? []), stored!];
            await cache.addCommit({ commit, ref: spec.ref, timestamp, packs });
          },
        );
        const r = await checkoutCommit(incoming, commit, target, { onProgress });
        return await done(r, { objects: incoming.received, bytes: temp.bytes }, incoming.fromBase);
      } finally {
        await temp.drop();
        res.cancel();
      }
    });
  };
  try {
    try {
      return await attempt(newest);
    } catch (e) {
      // The server does not have the cached commit complete: ask for the whole closure instead.
      if (!newest || !isRegistryError(e, 'E_NOT_FOUND') || e.details.commit !== newest.commit) throw e;
      await base?.close();
      base = undefined;
      return await attempt(undefined);
    }
  } catch (e) {
    if (isRegistryError(e, 'E_NOT_FOUND') && e.details.commit === commit) {
      throw new RegistryError('E_NOT_FOUND', `the server does not have commit ${commit}`, {
        object: objectId(commit, 'commit'),
        url: client.base,
      });
    }
    throw e;
  } finally {
    await base?.close();
  }
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
  const client = new RegistryClient(url, opts);
  const cache = await PackCache.open(opts.cacheDir);
  const present = await precheckDest(target, cache);
  if (present === undefined) loadWritingModules().catch(() => {});
  const commit = await resolveCommit(client, parsed);
  const mustVerify = opts.trust !== undefined && (parsed.pin === null || opts.verifyPinned === true);
  const signedBy = mustVerify ? await verifySignatures(client, commit, parsed.ref, opts.trust!) : undefined;
  const signed = signedBy ? { signedBy } : {};
  if (present !== undefined) {
    if (present !== commit) throw destNotEmpty(target);
    return {
      ...signed,
      commit,
      ref: parsed.ref,
      dest: target,
      fetched: { objects: 0, bytes: 0 },
      cached: 0,
      files: 0,
      dirs: 0,
      symlinks: 0,
      bytes: 0,
      ownershipApplied: process.getuid?.() === 0,
      noop: true,
    };
  }
  const progress = opts.progress ?? silentProgress;
  try {
    // A second round only happens when a cached pack turns out damaged (disk trouble, someone
    // editing files): it is evicted and the pull runs again, once.
    for (let round = 0; ; round++) {
      try {
        return { ...(await pullOnce(client, cache, parsed, commit, target, progress)), ...signed };
      } catch (e) {
        const bad = isRegistryError(e, 'E_BAD_PACK') ? e.details.pack : undefined;
        if (round > 0 || typeof bad !== 'string' || !isChecksum(bad)) throw e;
        opts.onNote?.(`pack ${bad} in the local cache is damaged (${(e as Error).message}); fetching again`);
        await cache.evict(bad);
      }
    }
  } finally {
    progress.stop();
  }
}
