import { TokenStore } from '../../src/auth/tokens.js';
import { json, out } from '../output.js';
import { openRepo } from './_repo.js';

export async function run(opts: { repo: string; json?: boolean }): Promise<number> {
  const repo = await openRepo(opts.repo);
  const tokens = TokenStore.forRepo(repo);
  try {
    const list = await tokens.list();
    if (opts.json) {
      json(list);
      return 0;
    }
    for (const t of list) {
      const state = t.revoked ? `revoked ${t.revokedAt}` : 'active';
      out(
        `${t.id}  ${t.name}  [${t.scopes.join(' ')}]  created ${t.created}  last used ${t.lastUsed ?? 'never'}  ${state}`,
      );
    }
    return 0;
  } finally {
    tokens.close();
    repo.close();
  }
}
