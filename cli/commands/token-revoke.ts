import { TokenStore } from '../../src/auth/tokens.js';
import { note } from '../output.js';
import { openRepo } from './_repo.js';

export async function run(id: string, opts: { repo: string }): Promise<number> {
  const repo = await openRepo(opts.repo);
  const tokens = TokenStore.forRepo(repo);
  try {
    const revoked = await tokens.revoke(id);
    // Servers notice within 5 s (they re-check "not revoked" at most that often).
    note(revoked ? `revoked token ${id}` : `token ${id} was already revoked`);
    return 0;
  } finally {
    tokens.close();
    repo.close();
  }
}
