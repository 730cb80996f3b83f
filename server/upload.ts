/**
 * Receiving one object (PUT /api/v1/objects/<sha>.<type>): bytes are verified before anything is
 * stored, and stored write-once.
 *
 *   file (.filez)  streamed to a temp file beside the store while it is inflated and hashed in the
 *                  same pass (bounded memory for any size); linked into place only if it verifies.
 *   metadata       read into memory (at most 10 MiB, OSTree's own cap on metadata objects), hashed,
 *                  and decoded to check it is the GVariant normal form ostree would produce.
 *
 * Every object stored (or found already there) is noted in the repository's index, a file with its
 * size, so that the ref move that follows a push need not ask the store about each object again.
 */

import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RegistryError } from '../src/errors.js';
import {
  type Checksum,
  type DirTree,
  decodeCommit,
  decodeCommitMeta,
  decodeDirMeta,
  decodeDirTree,
  type ObjectType,
  objectId,
  objectPath,
  sha256,
} from '../src/objects/index.js';
import type { Repository } from '../src/repo/repository.js';
import { FsBlobStore } from '../src/store/fs-blob-store.js';
import { corrupt, inflateVerified } from '../src/store/object-store.js';

export interface UploadLimits {
  /** Largest `.filez` accepted; 2 GiB by default. */
  maxFileBytes: number;
  /** Largest metadata object accepted; 10 MiB, OSTREE_MAX_METADATA_SIZE. */
  maxMetadataBytes: number;
}

export const DEFAULT_UPLOAD_LIMITS: UploadLimits = {
  maxFileBytes: 2 * 1024 ** 3,
  maxMetadataBytes: 10 * 1024 ** 2,
};

/** E_LIMIT for an object over `limit`; `length` when it is known (a declared or pack record length). */
export function tooLarge(id: string, limit: number, length?: number): RegistryError {
  return new RegistryError('E_LIMIT', `object ${id} is larger than the server accepts (${limit} bytes)`, {
    object: id,
    expected: `<= ${limit} bytes`,
    found: length === undefined ? `> ${limit} bytes` : `${length} bytes`,
  });
}

/** Counts bytes as they pass and stops with E_LIMIT as soon as there are more than `limit`. */
async function* capped(source: AsyncIterable<Buffer>, limit: number, id: string): AsyncGenerator<Buffer> {
  let n = 0;
  for await (const chunk of source) {
    n += chunk.length;
    if (n > limit) throw tooLarge(id, limit);
    yield chunk;
  }
}

export async function readCapped(source: AsyncIterable<Buffer>, limit: number, id: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of capped(source, limit, id)) chunks.push(c);
  return Buffer.concat(chunks);
}

/** Decodes the object in normal form (throws if it is not); returns a dirtree's entries. */
function checkNormalForm(type: Exclude<ObjectType, 'file'>, bytes: Buffer, id: string): DirTree | undefined {
  if (type === 'commit') decodeCommit(bytes, id);
  else if (type === 'dirtree') return decodeDirTree(bytes, id);
  else if (type === 'dirmeta') decodeDirMeta(bytes, id);
  else decodeCommitMeta(bytes, id);
  return undefined;
}

async function receiveMetadata(
  repo: Repository,
  checksum: Checksum,
  type: Exclude<ObjectType, 'file'>,
  body: AsyncIterable<Buffer>,
  limits: UploadLimits,
): Promise<boolean> {
  const id = objectId(checksum, type);
  const bytes = await readCapped(body, limits.maxMetadataBytes, id);
  // commitmeta is named after its commit, not hashed (signatures are added to it later).
  if (type !== 'commitmeta') {
    const found = sha256(bytes);
    if (found !== checksum)
      throw corrupt(checksum, type, found, 'the uploaded bytes do not hash to the name');
  }
  const tree = checkNormalForm(type, bytes, id);
  if (type === 'commit') {
    // Signed here, on arrival, with the server's keys (Repository.storeCommit).
    const { created } = await repo.storeCommit(bytes);
    repo.noteStored({ checksum, type });
    return created;
  }
  if (type === 'commitmeta') {
    // Signatures are fixed when the commit arrives (objects are write-once, and the commit's packs
    // are made from what is stored then): they travel in the same pack as the commit.
    const stored = await repo.objects.has(checksum, 'commit');
    throw new RegistryError(
      stored ? 'E_EXISTS' : 'E_USAGE',
      stored
        ? `commit ${checksum} is stored already: its detached metadata was fixed when it arrived`
        : `${id}: detached metadata is accepted only together with its commit`,
      { object: id },
      'send the commitmeta and the commit in one pack (POST /api/v1/packs), as `sysroot push --sign-key` does',
    );
  }
  const existed = await repo.objects.has(checksum, type);
  await repo.objects.putMetadata(type, bytes, checksum);
  repo.noteStored({ checksum, type }, tree);
  return !existed;
}

/** A temp file on the store's own filesystem when it has one, so the final step is a link(2). */
export async function tempFile(repo: Repository): Promise<string> {
  if (repo.blobs instanceof FsBlobStore) return repo.blobs.tempPath();
  return join(tmpdir(), `sysroot-upload-${process.pid}-${randomBytes(8).toString('hex')}`);
}

async function receiveFilez(
  repo: Repository,
  checksum: Checksum,
  body: AsyncIterable<Buffer>,
  limits: UploadLimits,
): Promise<boolean> {
  const id = objectId(checksum, 'file');
  const tmp = await tempFile(repo);
  const fh = await open(tmp, 'wx');
  try {
    const tee = async function* (): AsyncGenerator<Buffer> {
      for await (const chunk of capped(body, limits.maxFileBytes, id)) {
        await fh.write(chunk);
        yield chunk;
      }
    };
    let size = 0;
    // Throws E_CORRUPT_OBJECT (expected/found) at the first byte that proves the object wrong.
    for await (const _ of inflateVerified(checksum, tee(), (h) => {
      size = h.size;
    })) {
      // the inflated payload is only hashed, not kept
    }
    await fh.close();
    const key = objectPath(checksum, 'file');
    const created =
      repo.blobs instanceof FsBlobStore
        ? await repo.blobs.linkInto(tmp, key)
        : await repo.blobs.createOnce(key, createReadStream(tmp));
    // Not created: the store had it already (objects are write-once), so it is there all the same.
    repo.noteStored({ checksum, type: 'file', size });
    return created;
  } finally {
    await fh.close().catch(() => {});
    await unlink(tmp).catch(() => {});
  }
}

/** Verify and store one uploaded object. Returns true if it was created, false if it was there. */
export async function receiveObject(
  repo: Repository,
  checksum: Checksum,
  type: ObjectType,
  body: AsyncIterable<Buffer>,
  declaredLength: number | undefined,
  limits: UploadLimits,
): Promise<boolean> {
  const limit = type === 'file' ? limits.maxFileBytes : limits.maxMetadataBytes;
  if (declaredLength !== undefined && declaredLength > limit) throw tooLarge(objectId(checksum, type), limit);
  if (type === 'file') return receiveFilez(repo, checksum, body, limits);
  return receiveMetadata(repo, checksum, type, body, limits);
}
