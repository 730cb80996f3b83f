import { revokeKey } from '../../src/repo/keys.js';
import { note } from '../output.js';
import { openRepo } from './_repo.js';

/** `sysroot key revoke`: publish a key's revocation in the repository (write-once, never withdrawn). */
export async function run(id: string, opts: { repo: string; reason: string }): Promise<number> {
  const repo = await openRepo(opts.repo);
  try {
    const done = await revokeKey(repo.blobs, id, opts.reason);
    note(done ? `revoked ${id}` : `${id} was revoked already`);
    note('remove it from every signer (serve --sign-key, signingKeys) and tell builders (docs/signing.md)');
    return 0;
  } finally {
    repo.close();
  }
}
