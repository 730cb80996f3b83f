import { importSource } from '../../src/import/index.js';
import { parseMetaArg } from '../../src/objects/index.js';
import { note, out } from '../output.js';
import { type CommitFlags, parseMaxExpansion, parseOwner, parseTimestamp } from './_commit-flags.js';
import { openRepo } from './_repo.js';

// The flag parsers live apart so `sysroot push` can use them without loading the repository.
export { type CommitFlags, parseOwner, parseTimestamp } from './_commit-flags.js';

export async function run(
  source: string,
  flags: CommitFlags & { repo: string; signKey?: string[] },
): Promise<number> {
  const timestamp = parseTimestamp(flags.timestamp);
  const owner = parseOwner(flags.owner);
  const metadata = flags.meta.map(parseMetaArg);
  // Keys are read before anything is imported: a wrong path costs nothing.
  const keys = [];
  if (flags.signKey?.length) {
    const { loadSigningKey } = await import('../../src/sign/keys.js');
    for (const spec of flags.signKey) keys.push(await loadSigningKey(spec));
  }
  const repo = await openRepo(flags.repo);
  try {
    if (keys.length) await repo.useSigningKeys(keys);
    const started = Date.now();
    const imported = await importSource(repo.objects, source, {
      owner,
      canonicalPermissions: flags.canonicalPermissions,
      skipSpecial: flags.skipSpecial,
      maxExpansion: parseMaxExpansion(flags.maxExpansion),
    });
    if (imported.skippedSpecial.length) {
      note(
        `skipped ${imported.skippedSpecial.length} special file(s): ${imported.skippedSpecial.join(', ')}`,
      );
    }
    const checksum = await repo.commit({
      ref: flags.ref,
      rootTree: imported.rootTree,
      rootMeta: imported.rootMeta,
      subject: flags.subject,
      body: flags.body,
      timestamp,
      metadata,
      bindRef: flags.bindRef,
      skippedSpecial: imported.skippedSpecial,
      actor: flags.actor,
      stats: { totalSize: imported.totalSize, fileCount: imported.fileCount },
    });
    note(
      `${flags.ref}: ${imported.fileCount} files, ${imported.objectsWritten} new objects ` +
        `(${imported.objectsExisting} already stored) in ${((Date.now() - started) / 1000).toFixed(2)} s`,
    );
    for (const k of keys) note(`signed by ${k.id}`);
    note(`pin: ${flags.ref}@${checksum}`);
    out(checksum);
    return 0;
  } finally {
    repo.close();
  }
}
