/**
 * Receiving a pack (POST /api/v1/packs): many objects in one request body, each verified by
 * readPack (src/pack/reader.ts) before it is stored, and stored write-once exactly as a single PUT
 * (upload.ts) would store it. A push of a Debian sysroot is one pack of ~6,100 records instead of
 * 6,100 PUTs.
 *
 *   commit, dirtree, dirmeta, commitmeta   held whole (≤ 10 MiB), stored with putMetadata
 *   filez ≤ 1 MiB                          one Buffer, stored with createOnce (temp file + link(2))
 *   filez > 1 MiB                          streamed to a temp file as it arrives (memory stays at a
 *                                          few MiB whatever the size), linked into place once verified
 *   content                                refused (400 E_USAGE): clients send .filez, which the
 *                                          store keeps as is; deflating here would cost the server
 *                                          the CPU the client has to spare
 *
 * Commits and their commitmeta are held until the rest of the pack is stored, then written through
 * Repository.storeCommit: the commitmeta first (the pusher's signatures merged with the server's,
 * signed at this moment, since objects are write-once), the commit last. A commitmeta whose commit
 * is neither in the pack nor stored is refused; one for a commit stored before is left as it was.
 *
 * Nothing is stored under its name before the reader's `verified` event for that record. Writes of
 * verified objects overlap with reading and verifying the next records (WRITE_CONCURRENCY at a
 * time): the reader's inflate + sha256 runs on this thread while libuv's threads create, write and
 * link the files. A record that fails stops the request; objects verified before it stay stored
 * (they are correct, and objects are write-once), which makes a retried push cheaper.
 */
import { createReadStream } from 'node:fs';
import { type FileHandle, open, unlink } from 'node:fs/promises';
import { Hono } from 'hono';
import type { Principal } from '../src/auth/tokens.js';
import { RegistryError } from '../src/errors.js';
import { type Checksum, type DirTree, objectId, objectPath, sha256 } from '../src/objects/index.js';
import { KIND, objectTypeOf, type RecordKind, readPack } from '../src/pack/index.js';
import type { Repository } from '../src/repo/repository.js';
import { FsBatchWriter } from '../src/store/fs-batch-writer.js';
import { FsBlobStore } from '../src/store/fs-blob-store.js';
import { corrupt } from '../src/store/object-store.js';
import type { ApiLimits } from './api-routes.js';
import { type AppEnv, requireCommitmetaUpload, requireUpload } from './auth.js';
import { requestBody } from './body-stream.js';
import { jsonResponse } from './errors.js';
import type { Logger } from './logger.js';
import { tempFile, tooLarge } from './upload.js';

export interface PackUploadDeps {
  repo: Repository;
  limits: ApiLimits;
  logger: Logger;
}

export interface PackUploadResult {
  /** Records in the pack. */
  records: number;
  /** Objects created by this request. */
  stored: number;
  /** Objects the store had already (a no-op, as for a PUT). */
  existing: number;
  /** Payload bytes of every record (the `.filez` and metadata bytes, before zstd). */
  bytes: number;
}

/**
 * Store writes in flight while the next records are read and verified. 16 keeps libuv's 4 threads
 * busy with open/write/close/link of small files; each write holds at most one 1 MiB record.
 */
const WRITE_CONCURRENCY = 16;
/** Records up to this size arrive as one Buffer (readPack's `collect`): the .filez limit it holds whole. */
const COLLECT = 1024 * 1024;

export function packUploadRoutes(deps: PackUploadDeps): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.post('/packs', async (c) => {
    // Before a byte of the body is read: a client without the scope learns at once.
    const principal = requireUpload(c);
    const result = await receivePack(deps.repo, requestBody(c, deps.limits.bodyPace), deps.limits, principal);
    // What the access log cannot say: how many records were new. A retried push that re-sent objects
    // the server had shows up here as "already there" (the crash tests read this line).
    deps.logger.info(
      `pack received: ${result.records} records, ${result.stored} stored, ${result.existing} already there, ${result.bytes} bytes`,
    );
    return jsonResponse(result, 200);
  });
  return app;
}

/** One record being received: its bytes so far (small) or the temp file they go to (large). */
interface Receiving {
  kind: RecordKind;
  checksum: Checksum;
  size: number;
  chunks: Buffer[];
  tmp?: { path: string; fh: FileHandle };
  /** A dirtree's entries, as the reader decoded them (the closure check of the ref move uses them). */
  tree?: DirTree;
}

/** Verify and store every record of a pack; see the top of this file. */
export async function receivePack(
  repo: Repository,
  body: AsyncIterable<Buffer>,
  limits: ApiLimits,
  /** Who sends it: a commitmeta record without its commit needs admin (auth.ts requireCommitmetaUpload). */
  principal?: Principal,
): Promise<PackUploadResult> {
  const result: PackUploadResult = { records: 0, stored: 0, existing: 0, bytes: 0 };
  const writes = new Set<Promise<void>>();
  /** Writes through the store's own API (the batch writer bounds its own). */
  const direct = new Set<Promise<void>>();
  let writeFailure: { error: unknown } | undefined;
  const track = (w: Promise<boolean>): Promise<void> => {
    const p = w.then(
      (created) => {
        if (created) result.stored++;
        else result.existing++;
      },
      (e: unknown) => {
        writeFailure ??= { error: e };
      },
    );
    writes.add(p);
    void p.finally(() => writes.delete(p));
    return p;
  };
  const startWrite = async (w: Promise<boolean>): Promise<void> => {
    const p = track(w);
    direct.add(p);
    void p.finally(() => direct.delete(p));
    while (direct.size >= WRITE_CONCURRENCY) await Promise.race(direct);
    if (writeFailure) throw writeFailure.error;
  };

  // Small .filez on a directory store go to the batch writer's worker (see fs-batch-writer.ts).
  const batch = repo.blobs instanceof FsBlobStore ? new FsBatchWriter(repo.blobs) : undefined;
  let cur: Receiving | undefined;
  /** Commits and commitmeta, verified, stored at the end (see the top of this file). */
  const commits = new Map<Checksum, Buffer>();
  const detached = new Map<Checksum, Buffer>();
  try {
    // The reader decodes into one buffer again and again (reuse): a record's bytes are valid until
    // the next event is asked for, so what is kept past its `verified` is copied (see keep()).
    for await (const ev of readPack(body, { collect: COLLECT, reuse: true })) {
      if (ev.type === 'record') {
        const type = objectTypeOf(ev.kind);
        const id = objectId(ev.checksum, type);
        if (ev.kind === KIND.content) {
          throw new RegistryError(
            'E_USAGE',
            `pack record ${id}: content records are not accepted by POST /api/v1/packs`,
            { object: id, found: 'content', expected: 'filez' },
            'send each file as a filez record (its archive-z2 .filez bytes)',
          );
        }
        const limit = type === 'file' ? limits.maxFileBytes : limits.maxMetadataBytes;
        if (ev.length > limit) throw tooLarge(id, limit, ev.length);
        cur = { kind: ev.kind, checksum: ev.checksum, size: ev.file?.size ?? ev.length, chunks: [] };
        result.records++;
        result.bytes += ev.length;
        if (ev.kind === KIND.filez && ev.length > COLLECT) {
          const path = await tempFile(repo);
          cur.tmp = { path, fh: await open(path, 'wx') };
        }
      } else if (ev.type === 'data') {
        if (cur?.tmp) await cur.tmp.fh.write(ev.chunk);
        else cur?.chunks.push(ev.chunk);
      } else if (ev.type === 'verified') {
        const r = cur!;
        cur = undefined;
        if (ev.tree) r.tree = ev.tree;
        if (r.kind === KIND.commit) commits.set(r.checksum, keep(r));
        else if (r.kind === KIND.commitmeta) detached.set(r.checksum, keep(r));
        else if (batch && !r.tmp) {
          // The batch writer copies a .filez at once; a metadata object is used after this turn.
          if (r.kind !== KIND.filez) r.chunks = [keep(r)];
          track(storeBatched(repo, batch, r));
          // Awaited only when it waits: ~6,100 records a push, each an async call and a turn otherwise.
          if (batch.full) await batch.ready();
          if (writeFailure) throw writeFailure.error;
        } else {
          if (!r.tmp) r.chunks = [keep(r)];
          await startWrite(store(repo, r));
        }
      }
    }
    await batch?.flush();
    while (writes.size > 0) await Promise.race(writes);
    if (writeFailure) throw writeFailure.error;
    await storeCommits(repo, commits, detached, result, principal);
    return result;
  } finally {
    // A failure stopped the reader: verified records still queued are written (they are correct),
    // and writes in flight finish (they own temp files).
    await batch?.flush();
    await Promise.allSettled([...writes]);
    if (cur?.tmp) {
      await cur.tmp.fh.close().catch(() => {});
      await unlink(cur.tmp.path).catch(() => {});
    }
  }
}

/** The pack's commits, each with its commitmeta (signed here: Repository.storeCommit), then the rest. */
async function storeCommits(
  repo: Repository,
  commits: Map<Checksum, Buffer>,
  detached: Map<Checksum, Buffer>,
  result: PackUploadResult,
  principal: Principal | undefined,
): Promise<void> {
  for (const checksum of detached.keys()) {
    if (commits.has(checksum)) continue;
    if (await repo.objects.has(checksum, 'commit')) {
      // Another release's commit, maybe: not for a push token (and never written over: storeCommit).
      if (principal) requireCommitmetaUpload(principal, objectId(checksum, 'commitmeta'));
      continue;
    }
    throw new RegistryError(
      'E_USAGE',
      `pack record ${objectId(checksum, 'commitmeta')}: its commit is neither in the pack nor stored`,
      { object: objectId(checksum, 'commitmeta') },
      "send a commit's detached metadata (its signatures) in the same pack as the commit",
    );
  }
  for (const [checksum, bytes] of commits) {
    const meta = detached.get(checksum);
    const { created } = await repo.storeCommit(bytes, meta);
    // The commitmeta record counts with its commit: both are new, or both were there.
    const n = meta ? 2 : 1;
    if (created) result.stored += n;
    else result.existing += n;
    repo.noteStored({ checksum, type: 'commit' });
  }
  for (const checksum of detached.keys()) if (!commits.has(checksum)) result.existing++;
}

/** A small record's bytes (readPack's `collect` hands them over as one chunk). */
function bytesOf(r: Receiving): Buffer {
  return r.chunks.length === 1 ? r.chunks[0]! : Buffer.concat(r.chunks);
}

/** A record's bytes in a buffer of their own, kept after the reader moves on. */
function keep(r: Receiving): Buffer {
  return r.chunks.length === 1 ? Buffer.from(r.chunks[0]!) : Buffer.concat(r.chunks);
}

/** store(), through the batch writer: a small record on a directory store. */
async function storeBatched(repo: Repository, batch: FsBatchWriter, r: Receiving): Promise<boolean> {
  const type = objectTypeOf(r.kind);
  const bytes = bytesOf(r);
  const key = objectPath(r.checksum, type);
  const created = await batch.write(key, bytes);
  if (!created && type !== 'file' && type !== 'commitmeta') {
    // As putMetadata: an existing copy must be the same bytes, else the store holds a corrupt one.
    const existing = await repo.blobs.read(key);
    if (!existing?.equals(bytes)) {
      throw corrupt(r.checksum, type, existing ? sha256(existing) : 'nothing', 'existing copy differs');
    }
  }
  if (type === 'file') repo.noteStored({ checksum: r.checksum, type, size: r.size });
  else repo.noteStored({ checksum: r.checksum, type }, r.tree);
  return created;
}

/** Store one verified record write-once and note it in the index; true if it was created. */
async function store(repo: Repository, r: Receiving): Promise<boolean> {
  const type = objectTypeOf(r.kind);
  if (type !== 'file') {
    const bytes = bytesOf(r);
    const existed = await repo.objects.has(r.checksum, type);
    await repo.objects.putMetadata(type, bytes, r.checksum);
    repo.noteStored({ checksum: r.checksum, type }, r.tree);
    return !existed;
  }
  const key = objectPath(r.checksum, 'file');
  let created: boolean;
  if (r.tmp) {
    try {
      await r.tmp.fh.close();
      created =
        repo.blobs instanceof FsBlobStore
          ? await repo.blobs.linkInto(r.tmp.path, key)
          : await repo.blobs.createOnce(key, createReadStream(r.tmp.path));
    } finally {
      await unlink(r.tmp.path).catch(() => {});
    }
  } else {
    const bytes = bytesOf(r);
    created = await repo.blobs.createOnce(key, bytes);
  }
  repo.noteStored({ checksum: r.checksum, type: 'file', size: r.size });
  return created;
}
