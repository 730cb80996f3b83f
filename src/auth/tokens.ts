/**
 * Tokens, stored in the repository itself so that every server node sharing the store (a directory
 * today, a bucket later) sees the same tokens, with the same write-once rules as everything else:
 *
 *   <repo>/sysroot/tokens/
 *   ├── <id>.json       {id, name, scopes, created, hash}; hash = sha256 of the secret, never the secret
 *   └── <id>.revoked    {id, revoked}: revocation is an appended marker; nothing is deleted
 *
 *   <repo>/sysroot/tokens.sqlite   node-local "last used" times (last-used.ts), not shared
 *
 * A token record never changes once written, so it is cached for the life of the process. A
 * revocation is cached once seen; "not revoked" is re-checked after `revocationTtlMs` (5 s), the
 * longest a token revoked on another node (or with the CLI) keeps working here.
 */
import { timingSafeEqual } from 'node:crypto';
import type { z as Z } from 'zod';
import { RegistryError } from '../errors.js';
import { lazy } from '../lazy-zod.js';
import type { BlobStore } from '../store/blob-store.js';
import { LastUsedDb } from './last-used.js';
import { formatScope, parseScope } from './scopes.js';
import { formatToken, hashSecret, isTokenId, newSecret, newTokenId, parseToken } from './token-string.js';

export const TOKENS_PREFIX = 'sysroot/tokens/';
/** Node-local (see Repository.nodeLocalPath): sysroot/tokens.sqlite in a directory repository. */
export const LAST_USED_FILE = 'tokens.sqlite';

const REVOCATION_TTL_MS = 5_000;
/** A name is a label for people (`release-ci`); 100 characters is plenty and keeps listings tidy. */
const MAX_NAME_LENGTH = 100;

/** Built on first use (src/lazy-zod.ts): `sysroot serve` warms it before it listens (warm()). */
const tokenRecordSchema = lazy((z) =>
  z.object({
    id: z.string().regex(/^[0-9a-f]{8}$/),
    name: z.string(),
    scopes: z.array(z.string()),
    created: z.string(),
    hash: z.string().regex(/^[0-9a-f]{64}$/),
  }),
);

export type TokenRecord = Z.infer<ReturnType<typeof tokenRecordSchema>>;

/** Who made a request: what the server needs to authorise it and to name it in the ref log. */
export interface Principal {
  id: string;
  name: string;
  scopes: string[];
}

export interface TokenInfo {
  id: string;
  name: string;
  scopes: string[];
  created: string;
  /** ISO time of the last use seen by this node, or null. */
  lastUsed: string | null;
  revoked: boolean;
  revokedAt: string | null;
}

export interface TokenStoreOptions {
  /** Path of the node-local last-use SQLite file; none = do not record uses. */
  lastUsedFile?: string;
  revocationTtlMs?: number;
  now?: () => number;
}

function recordKey(id: string): string {
  return `${TOKENS_PREFIX}${id}.json`;
}

function revokedKey(id: string): string {
  return `${TOKENS_PREFIX}${id}.revoked`;
}

export function assertTokenName(name: string): string {
  if (name.trim().length === 0 || name.length > MAX_NAME_LENGTH || /[\u0000-\u001f\u007f]/.test(name)) {
    throw new RegistryError(
      'E_USAGE',
      `invalid token name ${JSON.stringify(name.slice(0, MAX_NAME_LENGTH))}`,
      { found: name.slice(0, MAX_NAME_LENGTH) },
      `a name is 1 to ${MAX_NAME_LENGTH} printable characters, e.g. release-ci`,
    );
  }
  return name;
}

export class TokenStore {
  private readonly records = new Map<string, TokenRecord>();
  private readonly revocations = new Map<string, { revoked: boolean; checkedAt: number }>();
  private readonly lastUsed: LastUsedDb | undefined;
  private readonly revocationTtlMs: number;
  private readonly now: () => number;

  constructor(
    private readonly blobs: BlobStore,
    opts: TokenStoreOptions = {},
  ) {
    this.now = opts.now ?? Date.now;
    this.revocationTtlMs = opts.revocationTtlMs ?? REVOCATION_TTL_MS;
    this.lastUsed = opts.lastUsedFile ? new LastUsedDb(opts.lastUsedFile, this.now) : undefined;
  }

  /**
   * The token store of a repository: tokens in the repository (shared by every node of a bucket),
   * last uses in a node-local file beside the index.
   */
  static forRepo(
    repo: { blobs: BlobStore; nodeLocalPath(name: string): string },
    opts: TokenStoreOptions = {},
  ): TokenStore {
    return new TokenStore(repo.blobs, { lastUsedFile: repo.nodeLocalPath(LAST_USED_FILE), ...opts });
  }

  /** Make a token. The returned string is the only copy of the secret: show it once. */
  async create(o: { name: string; scopes: string[] }): Promise<{ token: string; info: TokenInfo }> {
    assertTokenName(o.name);
    if (o.scopes.length === 0) {
      throw new RegistryError('E_USAGE', 'a token needs at least one scope', {}, 'e.g. --scope pull');
    }
    const scopes = [...new Set(o.scopes.map((s) => formatScope(parseScope(s))))];
    // 32-bit ids: a clash is rare (1 in 4 billion per existing token) and createOnce catches it.
    for (let attempt = 0; attempt < 10; attempt++) {
      const id = newTokenId();
      const secret = newSecret();
      const record: TokenRecord = {
        id,
        name: o.name,
        scopes,
        created: new Date(this.now()).toISOString(),
        hash: hashSecret(secret),
      };
      const bytes = Buffer.from(`${JSON.stringify(record)}\n`);
      if (await this.blobs.createOnce(recordKey(id), bytes)) {
        this.records.set(id, record);
        return { token: formatToken(id, secret), info: this.info(record, null) };
      }
    }
    throw new RegistryError('E_INTERNAL', 'could not find a free token id after 10 attempts');
  }

  /**
   * The principal a token stands for, or undefined if it is malformed, unknown, wrong or revoked.
   * The four cases are not told apart to the caller: the answer to a guesser is always "no".
   */
  async verify(token: string): Promise<Principal | undefined> {
    const parsed = parseToken(token);
    if (!parsed) return undefined;
    const record = await this.read(parsed.id);
    if (!record) return undefined;
    const presented = Buffer.from(hashSecret(parsed.secret), 'hex');
    if (!timingSafeEqual(presented, Buffer.from(record.hash, 'hex'))) return undefined;
    if (await this.isRevoked(parsed.id)) return undefined;
    this.lastUsed?.touch(parsed.id);
    return { id: record.id, name: record.name, scopes: record.scopes };
  }

  /**
   * Load what the first verify() would (the last-used file, the record schema's parse path), so
   * that a server's first request does not pay for it: ~25 ms on a fresh `sysroot serve`.
   */
  warm(): void {
    this.lastUsed?.warm();
    tokenRecordSchema().safeParse({ id: '', name: '', scopes: [], hash: '', created: '' });
  }

  /** Revoke a token. Returns false if it was revoked already. */
  async revoke(id: string): Promise<boolean> {
    if (!isTokenId(id) || !(await this.read(id))) {
      throw new RegistryError(
        'E_NOT_FOUND',
        `no token with id ${JSON.stringify(id.slice(0, 20))}`,
        { found: id.slice(0, 20) },
        'list tokens with: sysroot token list',
      );
    }
    const marker = Buffer.from(`${JSON.stringify({ id, revoked: new Date(this.now()).toISOString() })}\n`);
    const created = await this.blobs.createOnce(revokedKey(id), marker);
    this.revocations.set(id, { revoked: true, checkedAt: this.now() });
    return created;
  }

  /** Every token, oldest first; never a secret or a hash. */
  async list(): Promise<TokenInfo[]> {
    const ids = new Set<string>();
    for await (const key of this.blobs.list(TOKENS_PREFIX)) {
      const m = /^sysroot\/tokens\/([0-9a-f]{8})\.json$/.exec(key);
      if (m) ids.add(m[1]!);
    }
    const out: TokenInfo[] = [];
    for (const id of ids) {
      const record = await this.read(id);
      if (!record) continue;
      out.push(this.info(record, await this.revokedAt(id)));
    }
    return out.sort((a, b) =>
      a.created < b.created ? -1 : a.created > b.created ? 1 : a.id < b.id ? -1 : 1,
    );
  }

  close(): void {
    this.lastUsed?.close();
  }

  private info(record: TokenRecord, revokedAt: string | null): TokenInfo {
    const used = this.lastUsed?.get(record.id);
    return {
      id: record.id,
      name: record.name,
      scopes: record.scopes,
      created: record.created,
      lastUsed: used === undefined ? null : new Date(used).toISOString(),
      revoked: revokedAt !== null,
      revokedAt,
    };
  }

  private async read(id: string): Promise<TokenRecord | undefined> {
    const cached = this.records.get(id);
    if (cached) return cached;
    const bytes = await this.blobs.read(recordKey(id));
    if (!bytes) return undefined;
    let parsed: unknown;
    try {
      parsed = JSON.parse(bytes.toString('utf8'));
    } catch {
      parsed = undefined;
    }
    const r = tokenRecordSchema().safeParse(parsed);
    if (!r.success || r.data.id !== id) {
      throw new RegistryError('E_CORRUPT_OBJECT', `token record ${recordKey(id)} is malformed`, {
        path: recordKey(id),
      });
    }
    this.records.set(id, r.data);
    return r.data;
  }

  private async isRevoked(id: string): Promise<boolean> {
    const cached = this.revocations.get(id);
    if (cached && (cached.revoked || this.now() - cached.checkedAt < this.revocationTtlMs)) {
      return cached.revoked;
    }
    const revoked = (await this.blobs.stat(revokedKey(id))) !== undefined;
    this.revocations.set(id, { revoked, checkedAt: this.now() });
    return revoked;
  }

  private async revokedAt(id: string): Promise<string | null> {
    const bytes = await this.blobs.read(revokedKey(id));
    if (!bytes) return null;
    try {
      const v = JSON.parse(bytes.toString('utf8')) as { revoked?: unknown };
      return typeof v.revoked === 'string' ? v.revoked : 'unknown';
    } catch {
      return 'unknown';
    }
  }
}
