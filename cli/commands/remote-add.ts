import { addRemote, remotesFile } from '../../src/transfer/remotes.js';
import { note } from '../output.js';

export async function run(
  name: string,
  url: string,
  opts: { verifyKey?: string[]; revokedKey?: string[] } = {},
): Promise<number> {
  // Keys are read now and stored as public key text, so the remote does not depend on a file that
  // moves; a key that does not parse is refused here rather than at the first pull.
  const material = async (specs: string[] | undefined): Promise<string[]> => {
    if (!specs?.length) return [];
    const { loadKeySpecs } = await import('../../src/sign/trust.js');
    return (await loadKeySpecs(specs)).map((k) => k.public.trim());
  };
  const verifyKeys = await material(opts.verifyKey);
  const revokedKeys = await material(opts.revokedKey);
  const r = await addRemote(name, url, remotesFile(), { verifyKeys, revokedKeys });
  note(`remote ${r.name} → ${r.url} (in ${remotesFile()})`);
  if (verifyKeys.length)
    note(`pulls of a ref from ${r.name} must be signed by one of ${verifyKeys.length} key(s)`);
  return 0;
}
