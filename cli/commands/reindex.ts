import { json, note } from '../output.js';
import { openRepo } from './_repo.js';

export async function run(opts: { repo: string; json?: boolean }): Promise<number> {
  const repo = await openRepo(opts.repo);
  try {
    const r = await repo.reindex();
    if (opts.json) json(r);
    else
      note(
        `reindexed: ${r.refs} refs, ${r.commits} commits, ${r.records} ref log records, ${r.objects} objects`,
      );
    return 0;
  } finally {
    repo.close();
  }
}
