/** `sysroot pack`: generate and store a commit's pack (or an update pack), as the server would. */
import { assertChecksum } from '../../src/objects/index.js';
import { CommitPacks } from '../../src/repo/packs.js';
import { formatBytes, json, note, out } from '../output.js';
import { openRepo } from './_repo.js';

export async function run(
  spec: string,
  opts: { repo: string; from?: string; json?: boolean },
): Promise<number> {
  const repo = await openRepo(opts.repo);
  try {
    const { commit } = await repo.resolve(spec);
    const from = opts.from === undefined ? undefined : assertChecksum(opts.from, '--from');
    const started = performance.now();
    const pack = await new CommitPacks(repo).get(commit, from);
    const ms = Math.round(performance.now() - started);
    const result = { key: pack.key, size: pack.stat.size, generated: pack.generated, ms };
    if (opts.json) json(result);
    else {
      out(`${pack.key} ${pack.stat.size}`);
      note(
        `${pack.generated ? 'generated' : 'already stored'}: ${formatBytes(pack.stat.size)}` +
          (pack.contents
            ? `, ${pack.contents.files} files, ${pack.contents.metadata} metadata objects`
            : '') +
          ` in ${ms} ms`,
      );
    }
    return 0;
  } finally {
    repo.close();
  }
}
