/**
 * The ref log: one write-once JSON record per move of a ref, stored in the repository
 * (sysroot/reflog/<ref>/<seq>.json, see layout.ts). Records are never rewritten or removed.
 *
 * Each record carries the sha256 of the previous record's bytes (`prev`), so an edit to any old
 * record breaks the chain and fsck notices. Creating record N+1 with a write-once put is also the
 * commit point of a ref move: two writers racing for the same N+1 cannot both succeed.
 *
 * A version 2 record is a version 1 record with `"version": 2` and, last, `signatures`: one
 * `{key, sig}` per key the writer holds (the server's signing keys), `sig` the base64 signature of
 * the record's *signed bytes* — its canonical line without the `signatures` member:
 *
 *   stored   {"version":2,"ref":…,…,"prev":"…","signatures":[{"key":"ed25519:…","sig":"…"}]}\n
 *   signed   {"version":2,"ref":…,…,"prev":"…"}\n
 *
 * Since `prev` covers the previous record's stored bytes (signatures included), a valid signature
 * on the newest record vouches for the whole history before it: that is what `sysroot log --verify`
 * checks (verifyRefLog). Version 1 records (written without keys) stay valid and readable.
 */
import type { z } from 'zod';
import { RegistryError } from '../errors.js';
import { lazy } from '../lazy-zod.js';
import type { Checksum } from '../objects/index.js';
import { sha256 } from '../objects/index.js';
import type { SigningKey, VerifyKey } from '../sign/keys.js';
import type { BlobStore } from '../store/blob-store.js';
import { reflogDir, reflogKey } from './layout.js';

export const REFLOG_ACTIONS = ['commit', 'push', 'reset'] as const;

const schemas = lazy((z) => {
  const hex64 = z.string().regex(/^[0-9a-f]{64}$/);
  const recordFields = {
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
  };
  const signature = z.object({ key: z.string(), sig: z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/) }).strict();
  const record = z.discriminatedUnion('version', [
    z.object({ version: z.literal(1), ...recordFields }).strict(),
    z.object({ version: z.literal(2), ...recordFields, signatures: z.array(signature).min(1) }).strict(),
  ]);
  return { signature, record };
});

/** The schema of a ref log record (versions 1 and 2). */
export const refLogRecordSchema = () => schemas().record;

export type RecordSignature = z.infer<ReturnType<typeof schemas>['signature']>;
export type RefLogRecord = z.infer<ReturnType<typeof schemas>['record']>;

export interface StoredRecord {
  record: RefLogRecord;
  /** sha256 of the record's bytes, which the next record's `prev` must equal. */
  hash: Checksum;
  /** The bytes as stored (what `sysroot log --export` prints). */
  bytes: Buffer;
}

/** The record's members in schema order, without `signatures`. */
function ordered(r: RefLogRecord): Record<string, unknown> {
  return {
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
}

/** Canonical bytes: keys in schema order, one line, trailing newline. */
export function encodeRecord(r: RefLogRecord): Buffer {
  const o = ordered(r);
  if (r.version === 2) o.signatures = r.signatures.map((x) => ({ key: x.key, sig: x.sig }));
  return Buffer.from(`${JSON.stringify(o)}\n`);
}

/** What a version 2 record's signatures sign: its canonical line without `signatures`. */
export function signedBytes(r: RefLogRecord): Buffer {
  return Buffer.from(`${JSON.stringify(ordered(r))}\n`);
}

/** `r` signed by every key (a version 2 record), or `r` as a version 1 record without keys. */
export async function signRecord(r: RefLogRecord, keys: readonly SigningKey[]): Promise<RefLogRecord> {
  const { signatures: _drop, ...fields } = r as RefLogRecord & { signatures?: unknown };
  if (keys.length === 0) return { ...(fields as Omit<RefLogRecord, 'version'>), version: 1 };
  const v2 = { ...(fields as Omit<RefLogRecord, 'version'>), version: 2 as const };
  const data = signedBytes({ ...v2, signatures: [{ key: '', sig: '' }] });
  const signatures: RecordSignature[] = [];
  for (const k of keys) signatures.push({ key: k.id, sig: (await k.sign(data)).toString('base64') });
  return { ...v2, signatures };
}

export function decodeRecord(bytes: Buffer, key: string): RefLogRecord {
  let parsed: unknown;
  try {
    parsed = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new RegistryError('E_CORRUPT_OBJECT', `ref log record ${key} is not JSON`, { path: key });
  }
  const r = refLogRecordSchema().safeParse(parsed);
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
  return key && bytes ? { record: decodeRecord(bytes, key), hash: sha256(bytes), bytes } : undefined;
}

/** All records of a ref, oldest first. */
export async function readRefLog(blobs: BlobStore, ref: string): Promise<StoredRecord[]> {
  const keys = await recordKeys(blobs, ref);
  const out: StoredRecord[] = [];
  for (const key of keys) {
    const bytes = await blobs.read(key);
    if (!bytes) continue;
    out.push({ record: decodeRecord(bytes, key), hash: sha256(bytes), bytes });
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

export interface RefLogVerification {
  /** Problems that make the history unproven: a broken chain, a bad or missing signature. */
  problems: string[];
  /** Records with a valid signature by a trusted key (revoked keys included). */
  signed: number;
  /** Keys whose valid signatures were found, with how many records each signed. */
  keys: Record<string, number>;
  /** Records vouched for only by the chain under a later signed record (v1, or revoked/unknown keys). */
  covered: number;
  /** Trusted, unrevoked keys with a valid signature on the newest record. */
  head: string[];
}

/**
 * Check a ref's history for proof that it was only ever appended to: the hash chain (checkChain),
 * and signatures. Every signature naming a key we know must verify (one that does not is an edited
 * record); the newest record must carry a valid signature by a trusted key that is not revoked,
 * which through `prev` vouches for every record before it. With `requireSignedHead` false (fsck on
 * a repository never signed) only the chain and the signatures present are checked.
 */
export async function verifyRefLog(
  ref: string,
  records: StoredRecord[],
  trusted: readonly VerifyKey[],
  revoked: readonly VerifyKey[],
  opts: { requireSignedHead: boolean } = { requireSignedHead: true },
): Promise<RefLogVerification> {
  const problems = checkChain(ref, records);
  const out: RefLogVerification = { problems, signed: 0, keys: {}, covered: 0, head: [] };
  const byId = new Map<string, { key: VerifyKey; revoked: boolean }>();
  for (const k of trusted) byId.set(k.id, { key: k, revoked: false });
  for (const k of revoked) byId.set(k.id, { key: k, revoked: true });
  let headOk = false;
  let seenSigned = false;
  for (const [i, { record: r }] of records.entries()) {
    const where = `ref log ${ref} #${r.seq}`;
    const isHead = i === records.length - 1;
    if (r.version === 1) {
      if (seenSigned) problems.push(`${where}: unsigned, after signed records`);
      out.covered++;
      continue;
    }
    seenSigned = true;
    const data = signedBytes(r);
    let good = false;
    let goodUnrevoked = false;
    for (const { key, sig } of r.signatures) {
      const k = byId.get(key);
      if (!k) continue;
      if (await k.key.verify(data, Buffer.from(sig, 'base64'))) {
        good = true;
        if (!k.revoked) goodUnrevoked = true;
        if (!k.revoked && isHead) out.head.push(key);
        out.keys[key] = (out.keys[key] ?? 0) + 1;
      } else {
        problems.push(`${where}: the signature by ${key} does not verify (edited?)`);
      }
    }
    if (good) out.signed++;
    else out.covered++;
    if (isHead) headOk = goodUnrevoked;
    if (!good && isHead) {
      problems.push(`${where}: signed only by unknown keys (${r.signatures.map((x) => x.key).join(', ')})`);
    }
  }
  if (records.length === 0 && opts.requireSignedHead) problems.push(`ref log ${ref} is empty`);
  const head = records[records.length - 1]?.record;
  if (head && opts.requireSignedHead && !headOk) {
    if (head.version === 1) problems.push(`ref log ${ref} #${head.seq}: the newest record is unsigned`);
    else if (head.signatures.some((x) => byId.get(x.key)?.revoked))
      problems.push(`ref log ${ref} #${head.seq}: the newest record is signed only by revoked keys`);
    else if (!problems.some((p) => p.startsWith(`ref log ${ref} #${head.seq}:`)))
      problems.push(`ref log ${ref} #${head.seq}: no valid signature by a trusted key`);
  }
  return out;
}

/** Records from an export (`sysroot log --export`: the stored bytes, one record per line). */
export function parseExport(text: Buffer, what: string): StoredRecord[] {
  const out: StoredRecord[] = [];
  let at = 0;
  while (at < text.length) {
    const nl = text.indexOf(0x0a, at);
    const end = nl < 0 ? text.length : nl + 1;
    const bytes = text.subarray(at, end);
    at = end;
    if (bytes.toString('utf8').trim() === '') continue;
    out.push({ record: decodeRecord(bytes, `${what} line ${out.length + 1}`), hash: sha256(bytes), bytes });
  }
  return out;
}

/** Problems if `earlier` (an older export of the same ref) is not a prefix of `records`. */
export function checkAppendOnly(ref: string, earlier: StoredRecord[], records: StoredRecord[]): string[] {
  const problems: string[] = [];
  for (const [i, old] of earlier.entries()) {
    const now = records[i];
    if (!now) {
      problems.push(
        `ref log ${ref}: the earlier export has ${earlier.length} records, the log only ${records.length} (records lost)`,
      );
      break;
    }
    if (now.hash !== old.hash) {
      problems.push(`ref log ${ref} #${old.record.seq}: differs from the earlier export (history rewritten)`);
      break;
    }
  }
  return problems;
}
