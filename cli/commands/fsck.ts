import { RegistryError } from '../../src/errors.js';
import { fsck } from '../../src/repo/fsck.js';
import type { VerifyKey } from '../../src/sign/keys.js';
import { json, note, out } from '../output.js';
import { openRepo } from './_repo.js';

export async function run(opts: { repo: string; json?: boolean; verifyKey?: string[] }): Promise<number> {
  let verifyKeys: VerifyKey[] | undefined;
  if (opts.verifyKey?.length) {
    const { loadKeySpecs } = await import('../../src/sign/trust.js');
    verifyKeys = await loadKeySpecs(opts.verifyKey);
  }
  const repo = await openRepo(opts.repo);
  try {
    const r = await fsck(repo, {
      verifyKeys,
      onProgress: (n) => {
        if (process.stderr.isTTY) process.stderr.write(`\rchecked ${n} objects`);
      },
    });
    if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
    const errors = r.problems.filter((p) => p.severity === 'error');
    if (opts.json) json({ ok: errors.length === 0, ...r });
    else {
      for (const p of r.problems) out(`${p.severity}: ${p.message}`);
      note(
        `checked ${r.objects} objects, ${r.commits} commits, ${r.refs} refs, ${r.records} ref log records: ` +
          `${errors.length} error(s), ${r.problems.length - errors.length} warning(s)`,
      );
    }
    if (errors.length) {
      // Reported above; the error carries the count for the exit code mapping.
      throw new RegistryError('E_FSCK', `fsck found ${errors.length} problem(s) in ${repo.location}`, {
        object: errors.find((e) => e.object)?.object,
      });
    }
    return 0;
  } finally {
    repo.close();
  }
}
