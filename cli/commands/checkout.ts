import { checkoutCommit } from '../../src/checkout/checkout.js';
import { json, note, out } from '../output.js';
import { openRepo } from './_repo.js';

export async function run(
  spec: string,
  dest: string,
  opts: { repo: string; json?: boolean },
): Promise<number> {
  const repo = await openRepo(opts.repo);
  try {
    const { commit, ref } = await repo.resolve(spec);
    const r = await checkoutCommit(repo.objects, commit, dest);
    if (!r.ownershipApplied)
      note('note: not running as root, so files are owned by you, not by the owners recorded in the commit');
    if (opts.json) json({ commit, ref: ref ?? null, dest, ...r });
    else {
      note(
        `checked out ${ref ? `${ref}@` : ''}${commit}: ${r.files} files, ${r.dirs} dirs, ${r.symlinks} symlinks`,
      );
      out(dest);
    }
    return 0;
  } finally {
    repo.close();
  }
}
