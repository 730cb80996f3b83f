import { listRemotes } from '../../src/transfer/remotes.js';
import { json, out } from '../output.js';

export async function run(opts: { json?: boolean }): Promise<number> {
  const remotes = await listRemotes();
  if (opts.json) json(remotes);
  else
    for (const r of remotes)
      out(`${r.name}\t${r.url}${r.verifyKeys?.length ? `\t(${r.verifyKeys.length} verify key(s))` : ''}`);
  return 0;
}
