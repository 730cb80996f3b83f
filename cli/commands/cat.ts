import { once } from 'node:events';
import { readFileContent } from '../../src/checkout/walk.js';
import { openRepo } from './_repo.js';

export async function run(spec: string, path: string, opts: { repo: string }): Promise<number> {
  const repo = await openRepo(opts.repo);
  try {
    const { commit } = await repo.resolve(spec);
    for await (const chunk of await readFileContent(repo.objects, commit, path)) {
      if (!process.stdout.write(chunk)) await once(process.stdout, 'drain');
    }
    return 0;
  } finally {
    repo.close();
  }
}
