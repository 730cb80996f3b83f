import { addRemote, remotesFile } from '../../src/transfer/remotes.js';
import { note } from '../output.js';

export async function run(name: string, url: string): Promise<number> {
  const r = await addRemote(name, url);
  note(`remote ${r.name} → ${r.url} (in ${remotesFile()})`);
  return 0;
}
