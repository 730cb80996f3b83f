import { listDir } from '../../src/checkout/walk.js';
import { json, out } from '../output.js';
import { openRepo } from './_repo.js';

export async function run(
  spec: string,
  path: string,
  opts: { repo: string; json?: boolean },
): Promise<number> {
  const repo = await openRepo(opts.repo);
  try {
    const { commit } = await repo.resolve(spec);
    const entries = await listDir(repo.objects, commit, path);
    if (opts.json) {
      json(entries);
      return 0;
    }
    for (const e of entries) {
      const mode = `0${e.mode.toString(8)}`.padStart(7, ' ');
      const size = e.type === 'file' ? String(e.size ?? 0) : '-';
      out(
        `${mode} ${e.uid}:${e.gid} ${size.padStart(10)} ${e.name}${e.type === 'dir' ? '/' : ''}${e.target ? ` -> ${e.target}` : ''}`,
      );
    }
    return 0;
  } finally {
    repo.close();
  }
}
