/**
 * The public keys a repository is signed with, published in the repository itself so that fsck,
 * `sysroot log --verify` and GET /api/v1/keys can find them (private keys never are: they are the
 * server's or the release job's configuration, files given by path):
 *
 *   sysroot/keys/<type>-<hex>.json           { version, type, id, name, public, published }
 *   sysroot/keys/<type>-<hex>.revoked.json   { version, id, revoked, reason }
 *
 * Both are write-once: a key is never unpublished and a revocation never withdrawn. Keys found here
 * are what the storage says; someone who reached the storage can add their own. So these are for
 * discovery and for checks at rest (fsck); a builder pins the keys it trusts itself (a
 * `--verify-key`, or the keys of a remote) and gets them out of band (docs/signing.md).
 */
import type { z as Z } from 'zod';
import { RegistryError } from '../errors.js';
import { lazy } from '../lazy-zod.js';
import { keyFileName, type PublicKeyInfo, type VerifyKey, verifyKeyOf } from '../sign/keys.js';
import type { BlobStore } from '../store/blob-store.js';
import { KEYS_PREFIX } from './layout.js';

// Built on first use (src/lazy-zod.ts): every command that opens a repository imports this module.
const schemas = lazy((z) => ({
  published: z
    .object({
      version: z.literal(1),
      type: z.enum(['ed25519', 'gpg']),
      id: z.string(),
      name: z.string().optional(),
      public: z.string(),
      published: z.string(),
    })
    .strict(),
  revoked: z
    .object({ version: z.literal(1), id: z.string(), revoked: z.string(), reason: z.string() })
    .strict(),
}));
type Schemas = ReturnType<typeof schemas>;

export type PublishedKey = Z.infer<Schemas['published']>;
export type Revocation = Z.infer<Schemas['revoked']>;

export interface RepoKeys {
  keys: PublishedKey[];
  revocations: Revocation[];
}

/** Publish a public key (idempotent: an existing record for the same id is kept as it is). */
export async function publishKey(blobs: BlobStore, key: PublicKeyInfo): Promise<boolean> {
  const record: PublishedKey = {
    version: 1,
    type: key.type,
    id: key.id,
    ...(key.name ? { name: key.name } : {}),
    public: key.public,
    published: new Date().toISOString(),
  };
  return blobs.createOnce(
    `${KEYS_PREFIX}${keyFileName(key.id)}.json`,
    Buffer.from(`${JSON.stringify(record, null, 2)}\n`),
  );
}

/** Publish a revocation of `id`; false if the key was revoked already. */
export async function revokeKey(blobs: BlobStore, id: string, reason: string): Promise<boolean> {
  if (!/^(ed25519:[A-Za-z0-9+/]{43}=|gpg:[0-9A-F]{40})$/.test(id)) {
    throw new RegistryError(
      'E_USAGE',
      `"${id.slice(0, 80)}" is not a key id`,
      { found: id.slice(0, 80) },
      'a key id is ed25519:<base64 public key> or gpg:<40 hex fingerprint> (see sysroot key list)',
    );
  }
  const record: Revocation = { version: 1, id, revoked: new Date().toISOString(), reason };
  return blobs.createOnce(
    `${KEYS_PREFIX}${keyFileName(id)}.revoked.json`,
    Buffer.from(`${JSON.stringify(record, null, 2)}\n`),
  );
}

function parse<T>(schema: Z.ZodType<T>, bytes: Buffer, key: string): T {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new RegistryError('E_CORRUPT_OBJECT', `${key} is not JSON`, { path: key });
  }
  const r = schema.safeParse(value);
  if (!r.success) {
    throw new RegistryError('E_CORRUPT_OBJECT', `${key} is malformed: ${r.error.issues[0]?.message}`, {
      path: key,
    });
  }
  return r.data;
}

/** Every published key and revocation, sorted by id. */
export async function readRepoKeys(blobs: BlobStore): Promise<RepoKeys> {
  const keys: PublishedKey[] = [];
  const revocations: Revocation[] = [];
  const names: string[] = [];
  for await (const k of blobs.list(KEYS_PREFIX)) names.push(k);
  for (const key of names.sort()) {
    const bytes = await blobs.read(key);
    if (!bytes) continue;
    if (key.endsWith('.revoked.json')) revocations.push(parse(schemas().revoked, bytes, key));
    else if (key.endsWith('.json')) {
      const k = parse(schemas().published, bytes, key);
      if (`${KEYS_PREFIX}${keyFileName(k.id)}.json` !== key) {
        throw new RegistryError('E_CORRUPT_OBJECT', `${key} holds key ${k.id}, which is not its name`, {
          path: key,
        });
      }
      keys.push(k);
    }
  }
  return { keys, revocations };
}

/** The published keys as verifiers: the unrevoked ones (trusted) and the revoked ones. */
export async function repoVerifyKeys(
  blobs: BlobStore,
): Promise<{ trusted: VerifyKey[]; revoked: VerifyKey[] }> {
  const { keys, revocations } = await readRepoKeys(blobs);
  const revokedIds = new Set(revocations.map((r) => r.id));
  const trusted: VerifyKey[] = [];
  const revoked: VerifyKey[] = [];
  for (const k of keys) {
    const v = await verifyKeyOf(k);
    (revokedIds.has(k.id) ? revoked : trusted).push(v);
  }
  return { trusted, revoked };
}
