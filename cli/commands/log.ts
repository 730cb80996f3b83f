import { RegistryError } from '../../src/errors.js';
import type { RefLogRecord, StoredRecord } from '../../src/repo/reflog.js';
import type { VerifyKey } from '../../src/sign/keys.js';
import type { TrustedKeys } from '../../src/sign/verify.js';
import { json, note, out } from '../output.js';
import { openRepo } from './_repo.js';

interface LogFlags {
  repo?: string;
  url?: string;
  json?: boolean;
  verify?: boolean;
  export?: boolean;
  verifyKey?: string[];
  revokedKey?: string[];
  since?: string;
  records?: string;
}

/** The stored records (oldest first) and the keys the repository or server publishes. */
async function source(
  ref: string,
  opts: LogFlags,
): Promise<{ records: StoredRecord[]; published: TrustedKeys; revokedIds: string[] }> {
  const { parseExport, readRefLog } = await import('../../src/repo/reflog.js');
  const none: TrustedKeys = { trusted: [], revoked: [] };
  if (opts.records) {
    const { readFile } = await import('node:fs/promises');
    const text = await readFile(opts.records).catch((e: Error) => {
      throw new RegistryError('E_NOT_FOUND', `cannot read ${opts.records}: ${e.message}`, {
        path: opts.records,
      });
    });
    return { records: parseExport(text, opts.records), published: none, revokedIds: [] };
  }
  if (opts.url) {
    const { RegistryClient } = await import('../../src/transfer/client.js');
    const client = new RegistryClient(opts.url);
    const records = parseExport(await client.rawLog(ref), `${opts.url} log of ${ref}`);
    const { verifyKeyOf } = await import('../../src/sign/keys.js');
    const listed = (await client.keys()) as Array<{
      type: 'ed25519' | 'gpg';
      id: string;
      public: string;
      revoked: unknown;
    }>;
    const trusted: VerifyKey[] = [];
    const revoked: VerifyKey[] = [];
    for (const k of listed) (k.revoked ? revoked : trusted).push(await verifyKeyOf(k));
    return { records, published: { trusted, revoked }, revokedIds: revoked.map((k) => k.id) };
  }
  if (!opts.repo)
    throw new RegistryError('E_USAGE', 'sysroot log needs --repo DIR, --url URL or --records FILE');
  const repo = await openRepo(opts.repo);
  try {
    const records = await readRefLog(repo.blobs, ref);
    if (records.length === 0) await repo.log(ref); // E_REF_NOT_FOUND for an unknown ref
    const { repoVerifyKeys } = await import('../../src/repo/keys.js');
    const published = await repoVerifyKeys(repo.blobs);
    return { records, published, revokedIds: published.revoked.map((k) => k.id) };
  } finally {
    repo.close();
  }
}

async function verify(ref: string, opts: LogFlags): Promise<number> {
  const { checkAppendOnly, parseExport, verifyRefLog } = await import('../../src/repo/reflog.js');
  const { applyRevocations, loadKeySpecs } = await import('../../src/sign/trust.js');
  const { records, published, revokedIds } = await source(ref, opts);
  const given = await loadKeySpecs(opts.verifyKey ?? []);
  if (given.length === 0) {
    if (published.trusted.length === 0 && published.revoked.length === 0) {
      throw new RegistryError(
        'E_USAGE',
        'no keys to verify with: pass --verify-key KEY',
        { ref },
        'the ref log is verified against keys you trust; see docs/signing.md',
      );
    }
    note(
      'note: verifying with the keys the repository publishes; pin yours with --verify-key (docs/signing.md)',
    );
  }
  const keys = applyRevocations(
    given.length ? given : published.trusted,
    [...published.revoked, ...(await loadKeySpecs(opts.revokedKey ?? []))],
    revokedIds,
  );
  const v = await verifyRefLog(ref, records, keys.trusted, keys.revoked);
  if (opts.since) {
    const { readFile } = await import('node:fs/promises');
    const earlier = parseExport(await readFile(opts.since), opts.since);
    v.problems.push(...checkAppendOnly(ref, earlier, records));
  }
  const head = records[records.length - 1];
  if (opts.json)
    json({ ok: v.problems.length === 0, ref, records: records.length, headRecord: head?.hash ?? null, ...v });
  else {
    for (const p of v.problems) out(`error: ${p}`);
    note(
      `${ref}: ${records.length} record(s), ${v.signed} signed by trusted keys, ${v.covered} vouched for by the chain` +
        (head ? `; head record sha256 ${head.hash}` : ''),
    );
  }
  if (v.problems.length) {
    throw new RegistryError(
      'E_SIGNATURE',
      `the ref log of ${ref} does not verify: ${v.problems.length} problem(s)`,
      { ref, problems: v.problems.slice(0, 20), trusted: keys.trusted.map((k) => k.id) },
    );
  }
  note(`${ref}: the history verifies: hash-chained and signed at its head by ${v.head.join(', ')}`);
  return 0;
}

async function localLog(repoPath: string, ref: string): Promise<RefLogRecord[]> {
  const repo = await openRepo(repoPath);
  try {
    return await repo.log(ref);
  } finally {
    repo.close();
  }
}

export async function run(ref: string, opts: LogFlags): Promise<number> {
  if (opts.verify) return verify(ref, opts);
  if (opts.export) {
    // The records exactly as stored, oldest first, one per line: an outsider re-hashes and verifies them.
    const { records } = await source(ref, opts);
    for (const r of records) process.stdout.write(r.bytes);
    return 0;
  }
  let records: RefLogRecord[];
  if (opts.records) records = (await source(ref, opts)).records.map((r) => r.record).reverse();
  else if (opts.url) {
    const { remoteLog } = await import('../../src/transfer/client.js');
    records = await remoteLog(opts.url, ref);
  } else if (opts.repo) records = await localLog(opts.repo, ref);
  else throw new RegistryError('E_USAGE', 'sysroot log needs --repo DIR or --url URL');
  if (opts.json) {
    json(records.map((r) => ({ ...r, pin: `${r.ref}@${r.to}` })));
    return 0;
  }
  for (const r of records) {
    out(`${r.ref}@${r.to}`);
    out(
      `  #${r.seq} ${r.action} ${r.time} by ${r.actor}${r.from ? ` (from ${r.from.slice(0, 12)})` : ' (created)'}` +
        (r.version === 2 ? `; signed by ${r.signatures.map((s) => s.key).join(', ')}` : ''),
    );
    if (r.reason) out(`  ${r.reason}`);
    out();
  }
  return 0;
}
