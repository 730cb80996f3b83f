import { Repository } from '../../src/repo/repository.js';
import { note } from '../output.js';

export async function run(opts: { repo: string }): Promise<number> {
  const repo = await Repository.init(opts.repo);
  note(`initialised archive-z2 repository in ${repo.location}`);
  repo.close();
  return 0;
}
