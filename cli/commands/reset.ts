import { assertChecksum } from '../../src/objects/index.js';
import { json, note, out } from '../output.js';
import { openRepo } from './_repo.js';

export async function run(
  ref: string,
  commit: string,
  opts: { repo: string; reason: string; actor?: string; json?: boolean },
): Promise<number> {
  const repo = await openRepo(opts.repo);
  try {
    const rec = await repo.reset(ref, assertChecksum(commit, 'commit'), opts.reason, opts.actor);
    if (opts.json) json(rec);
    else {
      note(`${ref} reset from ${rec.from} to ${rec.to} (ref log #${rec.seq})`);
      out(rec.to);
    }
    return 0;
  } finally {
    repo.close();
  }
}
