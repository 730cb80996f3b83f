import { TokenStore } from '../../src/auth/tokens.js';
import { json, note, out } from '../output.js';
import { openRepo } from './_repo.js';

export async function run(opts: {
  repo: string;
  name: string;
  scope: string[];
  json?: boolean;
}): Promise<number> {
  const repo = await openRepo(opts.repo);
  const tokens = TokenStore.forRepo(repo);
  try {
    const { token, info } = await tokens.create({ name: opts.name, scopes: opts.scope });
    if (opts.json) {
      json({ ...info, token });
      return 0;
    }
    note(`created token ${info.id} (${info.name}) with scopes ${info.scopes.join(', ')}`);
    note('it is shown only this once; store it as a secret (e.g. SYSROOT_TOKEN in your CI)');
    // Last line of stdout, alone, so scripts can take it with `tail -n 1`.
    out(token);
    return 0;
  } finally {
    tokens.close();
    repo.close();
  }
}
