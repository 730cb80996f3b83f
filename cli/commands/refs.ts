import { json, out } from '../output.js';
import { openRepo } from './_repo.js';

export async function run(opts: { repo: string; json?: boolean }): Promise<number> {
  const repo = await openRepo(opts.repo);
  try {
    const refs = await repo.listRefs();
    if (opts.json) json(refs.map((r) => ({ ref: r.name, commit: r.head })));
    else for (const r of refs) out(`${r.name} ${r.head}`);
    return 0;
  } finally {
    repo.close();
  }
}
