/**
 * fsck: trust nothing at rest. Re-hashes every object, checks that every commit a ref or the ref
 * log names is complete, that refs/heads, the summary and the ref log agree, and that the ref
 * log's hash chain is unbroken. Every problem names the object, ref or record.
 *
 * Signatures (docs/signing.md), against the keys the repository publishes (or `verifyKeys`):
 * every signature on a ref log record that names a known key must verify (one that does not is an
 * edited record), and signed records must not be followed by unsigned ones; a commitmeta or
 * summary.sig whose signatures are malformed is an error, one that no known key verifies a warning
 * (it may be a pusher's key the repository does not publish).
 */
import { RegistryError } from '../errors.js';
import {
  type Checksum,
  decodeCommit,
  decodeCommitMeta,
  decodeDirMeta,
  decodeDirTree,
  decodeSummary,
  objectId,
  sha256,
} from '../objects/index.js';
import type { VerifyKey } from '../sign/keys.js';
import { checkSignatures, readSignatures, signatureCount } from '../sign/signatures.js';
import { checkFilez, type ObjectRef } from '../store/object-store.js';
import { missingObjects } from './closure.js';
import { repoVerifyKeys } from './keys.js';
import { SUMMARY_KEY, SUMMARY_SIG_KEY } from './layout.js';
import { listLoggedRefs, readRefLog, verifyRefLog } from './reflog.js';
import type { Repository } from './repository.js';

export interface FsckProblem {
  severity: 'error' | 'warning';
  message: string;
  object?: string;
  ref?: string;
}

export interface FsckReport {
  objects: number;
  commits: number;
  refs: number;
  records: number;
  problems: FsckProblem[];
}

/** Objects are checked this many at a time: reads overlap with hashing and inflating. */
const CONCURRENCY = 16;

async function checkObject(repo: Repository, o: ObjectRef): Promise<FsckProblem | undefined> {
  const id = objectId(o.checksum, o.type);
  try {
    const bytes = await repo.objects.getRaw(o.checksum, o.type);
    if (!bytes) return { severity: 'error', object: id, message: `${id}: vanished while checking` };
    if (o.type === 'file') {
      checkFilez(o.checksum, bytes);
      return undefined;
    }
    if (o.type !== 'commitmeta') {
      const found = sha256(bytes);
      if (found !== o.checksum) {
        return { severity: 'error', object: id, message: `${id}: corrupt: its bytes hash to ${found}` };
      }
    }
    if (o.type === 'commit') decodeCommit(bytes, id);
    else if (o.type === 'dirtree') decodeDirTree(bytes, id);
    else if (o.type === 'dirmeta') decodeDirMeta(bytes, id);
    else decodeCommitMeta(bytes, id);
    return undefined;
  } catch (e) {
    if (e instanceof RegistryError) return { severity: 'error', object: id, message: e.message };
    throw e;
  }
}

export interface FsckOptions {
  onProgress?: (checked: number) => void;
  /** Keys to check signatures with, instead of the ones the repository publishes. */
  verifyKeys?: VerifyKey[];
}

export async function fsck(repo: Repository, opts: FsckOptions = {}): Promise<FsckReport> {
  const onProgress = opts.onProgress;
  const problems: FsckProblem[] = [];
  let keys: { trusted: VerifyKey[]; revoked: VerifyKey[] };
  try {
    const published = await repoVerifyKeys(repo.blobs);
    keys = opts.verifyKeys?.length ? { trusted: opts.verifyKeys, revoked: published.revoked } : published;
  } catch (e) {
    if (!(e instanceof RegistryError)) throw e;
    problems.push({ severity: 'error', message: `published keys: ${e.message}` });
    keys = { trusted: opts.verifyKeys ?? [], revoked: [] };
  }
  const anyKey = [...keys.trusted, ...keys.revoked];
  const objects: ObjectRef[] = [];
  for await (const o of repo.objects.list()) objects.push(o);

  let next = 0;
  let checked = 0;
  const bad = new Set<string>();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < objects.length) {
        const o = objects[next++]!;
        const p = await checkObject(repo, o);
        if (p) {
          problems.push(p);
          bad.add(objectId(o.checksum, o.type));
        }
        if (++checked % 500 === 0) onProgress?.(checked);
      }
    }),
  );

  const commits = objects.filter((o) => o.type === 'commit').map((o) => o.checksum);
  const refs = await repo.listRefs();
  const needed = new Map<Checksum, string>();
  for (const r of refs) needed.set(r.head, `head of ${r.name}`);

  let records = 0;
  const loggedRefs = await listLoggedRefs(repo.blobs);
  for (const ref of new Set([...loggedRefs, ...refs.map((r) => r.name)])) {
    let log: Awaited<ReturnType<typeof readRefLog>>;
    try {
      log = await readRefLog(repo.blobs, ref);
    } catch (e) {
      problems.push({ severity: 'error', ref, message: (e as Error).message });
      continue;
    }
    records += log.length;
    const verified = await verifyRefLog(ref, log, keys.trusted, keys.revoked, { requireSignedHead: false });
    for (const message of verified.problems) problems.push({ severity: 'error', ref, message });
    for (const { record } of log)
      if (!needed.has(record.to)) needed.set(record.to, `ref log ${ref} #${record.seq}`);
    const head = refs.find((r) => r.name === ref)?.head;
    const last = log[log.length - 1]?.record;
    if (log.length === 0) {
      problems.push({
        severity: 'warning',
        ref,
        message: `ref ${ref} has no ref log (written by another tool?)`,
      });
    } else if (head !== last?.to) {
      problems.push({
        severity: 'error',
        ref,
        message: `ref ${ref} is at ${head ?? 'nothing'} but its ref log ends at ${last?.to}`,
      });
    }
  }

  for (const [commit, why] of needed) {
    const id = objectId(commit, 'commit');
    if (bad.has(id)) continue;
    try {
      const lacking = await missingObjects(repo.objects, commit);
      for (const o of lacking) {
        problems.push({
          severity: 'error',
          object: objectId(o.checksum, o.type),
          message: `${objectId(o.checksum, o.type)}: missing, needed by commit ${commit} (${why})`,
        });
      }
    } catch (e) {
      if (!(e instanceof RegistryError)) throw e;
      problems.push({ severity: 'error', object: e.details.object ?? id, message: `${e.message} (${why})` });
    }
  }

  // Detached signatures: well formed, and (a warning otherwise) by a key the repository knows.
  for (const o of objects) {
    if (o.type !== 'commitmeta' || bad.has(objectId(o.checksum, o.type))) continue;
    const id = objectId(o.checksum, 'commitmeta');
    const commit = await repo.objects.getRaw(o.checksum, 'commit');
    try {
      const sigs = readSignatures(await repo.objects.getRaw(o.checksum, 'commitmeta'), id);
      if (!commit || signatureCount(sigs) === 0 || anyKey.length === 0) continue;
      const check = await checkSignatures(commit, sigs, keys.trusted, keys.revoked);
      if (check.valid.length === 0 && check.revoked.length === 0) {
        problems.push({
          severity: 'warning',
          object: id,
          message: `${id}: none of its ${check.total} signature(s) verifies with a published key`,
        });
      }
    } catch (e) {
      if (!(e instanceof RegistryError)) throw e;
      problems.push({ severity: 'error', object: id, message: e.message });
    }
  }

  const summaryBytes = await repo.blobs.read(SUMMARY_KEY);
  const summarySig = await repo.blobs.read(SUMMARY_SIG_KEY);
  if (summaryBytes && summarySig?.length) {
    try {
      const sigs = readSignatures(summarySig, 'summary.sig');
      const check = await checkSignatures(summaryBytes, sigs, keys.trusted, keys.revoked);
      if (anyKey.length && check.valid.length === 0 && check.revoked.length === 0) {
        problems.push({
          severity: 'warning',
          message: 'summary.sig: no signature verifies over the summary with a published key (stale?)',
        });
      }
    } catch (e) {
      if (!(e instanceof RegistryError)) throw e;
      problems.push({ severity: 'error', message: e.message });
    }
  }
  if (!summaryBytes) {
    // ostree pull falls back to refs/heads without a summary, and `ostree commit` writes none, so
    // its absence is worth a note, not a failure; our next ref move writes one.
    if (refs.length)
      problems.push({ severity: 'warning', message: 'summary is missing (clients fall back to refs/heads)' });
  } else {
    try {
      const s = decodeSummary(summaryBytes);
      const inSummary = new Map(s.refs.map((r) => [r.name, r.checksum]));
      for (const r of refs) {
        if (inSummary.get(r.name) !== r.head) {
          problems.push({
            severity: 'error',
            ref: r.name,
            message: `summary lists ${r.name} at ${inSummary.get(r.name) ?? 'nothing'}, refs/heads at ${r.head}`,
          });
        }
      }
      for (const name of inSummary.keys()) {
        if (!refs.some((r) => r.name === name)) {
          problems.push({
            severity: 'error',
            ref: name,
            message: `summary lists ${name}, which is not in refs/heads`,
          });
        }
      }
    } catch (e) {
      problems.push({ severity: 'error', message: `summary: ${(e as Error).message}` });
    }
  }

  return { objects: objects.length, commits: commits.length, refs: refs.length, records, problems };
}
