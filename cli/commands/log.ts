import { RegistryError } from '../../src/errors.js';
import type { RefLogRecord } from '../../src/repo/reflog.js';
import { json, out } from '../output.js';
import { openRepo } from './_repo.js';

async function localLog(repoPath: string, ref: string): Promise<RefLogRecord[]> {
  const repo = await openRepo(repoPath);
  try {
    return await repo.log(ref);
  } finally {
    repo.close();
  }
}

export async function run(
  ref: string,
  opts: { repo?: string; url?: string; json?: boolean },
): Promise<number> {
  let records: RefLogRecord[];
  if (opts.url) {
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
      `  #${r.seq} ${r.action} ${r.time} by ${r.actor}${r.from ? ` (from ${r.from.slice(0, 12)})` : ' (created)'}`,
    );
    if (r.reason) out(`  ${r.reason}`);
    out();
  }
  return 0;
}
