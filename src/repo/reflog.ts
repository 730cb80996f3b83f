/**
 * The ref log: one write-once JSON record per move of a ref, stored in the repository
 * (sysroot/reflog/<ref>/<seq>.json, see layout.ts). Records are never rewritten or removed.
 *
 * Each record carries the sha256 of the previous record's bytes (`prev`), so an edit to any old
 * record breaks the chain and fsck notices. Creating record N+1 with a write-once put is also the
 * commit point of a ref move: two writers racing for the same N+1 cannot both succeed.
 */
import { z } from 'zod';
import { RegistryError } from '../errors.js';
import type { Checksum } from '../objects/index.js';
import { sha256 } from '../objects/index.js';
import type { BlobStore } from '../store/blob-store.js';
import { reflogDir, reflogKey } from './layout.js';

export const REFLOG_ACTIONS = ['commit', 'push', 'reset'] as const;

const hex64 = z.string().regex(/^[0-9a-f]{64}$/);

export const RefLogRecordSchema = z
  .object({
    version: z.literal(1),
    ref: z.string(),
    seq: z.number().int().positive(),
    /** The head before the move; null when the ref was created. */
    from: hex64.nullable(),
    to: hex64,
    /** ISO 8601, UTC. */
    time: z.string(),
    actor: z.string(),
    action: z.enum(REFLOG_ACTIONS),
    reason: z.string(),
    /** sha256 of the previous record's file bytes; null for seq 1. */
    prev: hex64.nullable(),
  })
  .strict();

export type RefLogRecord = z.infer<typeof RefLogRecordSchema>;

export interface StoredRecord {
  record: RefLogRecord;
  /** sha256 of the record's bytes, which the next record's `prev` must equal. */
  hash: Checksum;
}

/** Canonical bytes: keys in schema order, one line, trailing newline. */
export function encodeRecord(r: RefLogRecord): Buffer {
  const ordered: RefLogRecord = {
    version: r.version,
    ref: r.ref,
    seq: r.seq,
    from: r.from,
    to: r.to,
    time: r.time,
    actor: r.actor,
    action: r.action,
    reason: r.reason,
    prev: r.prev,
  };
  return Buffer.from(`${JSON.stringify(ordered)}\n`);
}

export function decodeRecord(bytes: Buffer, key: string): RefLogRecord {
  let parsed: unknown;
  try {
    parsed = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new RegistryError('E_CORRUPT_OBJECT', `ref log record ${key} is not JSON`, { path: key });
  }
  const r = RefLogRecordSchema.safeParse(parsed);
  if (!r.success) {
    throw new RegistryError(
      'E_CORRUPT_OBJECT',
      `ref log record ${key} is malformed: ${r.error.issues[0]?.message}`,
      {
        path: key,
      },
    );
  }
  return r.data;
}

async function recordKeys(blobs: BlobStore, ref: string): Promise<string[]> {
  const keys: string[] = [];
  const prefix = reflogDir(ref);
  for await (const key of blobs.list(prefix)) {
    // Only this ref's own records: sub-directories would belong to other refs (impossible, see refsClash).
    if (/^\d{16}\.json$/.test(key.slice(prefix.length))) keys.push(key);
  }
  // Zero-padded sequence numbers: lexical order is numeric order.
  return keys.sort();
}

/**
 * The newest record of a ref, reading one record rather than the whole log: a ref move needs only
 * this, and on S3 each read is a request (a ref with 200 moves would otherwise cost 200 GETs a push).
 */
export async function readLastRecord(blobs: BlobStore, ref: string): Promise<StoredRecord | undefined> {
  const keys = await recordKeys(blobs, ref);
  const key = keys[keys.length - 1];
  const bytes = key === undefined ? undefined : await blobs.read(key);
  return key && bytes ? { record: decodeRecord(bytes, key), hash: sha256(bytes) } : undefined;
}

/** All records of a ref, oldest first. */
export async function readRefLog(blobs: BlobStore, ref: string): Promise<StoredRecord[]> {
  const keys = await recordKeys(blobs, ref);
  const out: StoredRecord[] = [];
  for (const key of keys) {
    const bytes = await blobs.read(key);
    if (!bytes) continue;
    out.push({ record: decodeRecord(bytes, key), hash: sha256(bytes) });
  }
  return out;
}

/** Every ref that has a log, found by listing sysroot/reflog/. */
export async function listLoggedRefs(blobs: BlobStore): Promise<string[]> {
  const refs = new Set<string>();
  for await (const key of blobs.list('sysroot/reflog/')) {
    const m = /^sysroot\/reflog\/(.+)\/\d{16}\.json$/.exec(key);
    if (m) refs.add(m[1]!);
  }
  return [...refs].sort();
}

/**
 * Append the next record. Returns false (writing nothing) if record `seq` already exists: someone
 * else moved the ref first.
 */
export async function appendRecord(
  blobs: BlobStore,
  r: RefLogRecord,
): Promise<{ created: boolean; hash: Checksum }> {
  const bytes = encodeRecord(r);
  const created = await blobs.createOnce(reflogKey(r.ref, r.seq), bytes);
  return { created, hash: sha256(bytes) };
}

/** Problems in a ref's log chain: sequence gaps, broken `prev` hashes, from/to discontinuity. */
export function checkChain(ref: string, records: StoredRecord[]): string[] {
  const problems: string[] = [];
  records.forEach(({ record: r }, i) => {
    const where = `ref log ${ref} #${r.seq}`;
    if (r.ref !== ref) problems.push(`${where}: names ref ${r.ref}`);
    if (r.seq !== i + 1) problems.push(`${where}: expected sequence number ${i + 1}`);
    const before = records[i - 1];
    const expectedPrev = before ? before.hash : null;
    if (r.prev !== expectedPrev) {
      problems.push(
        `${where}: prev is ${r.prev}, but the previous record hashes to ${expectedPrev} (edited?)`,
      );
    }
    const expectedFrom = before ? before.record.to : null;
    if (r.from !== expectedFrom)
      problems.push(`${where}: from ${r.from}, but the ref was at ${expectedFrom}`);
  });
  return problems;
}
