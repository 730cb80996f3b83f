import { RegistryError } from '../../src/errors.js';
import { importSource } from '../../src/import/index.js';
import { parseMetaArg } from '../../src/objects/index.js';
import { note, out } from '../output.js';
import { openRepo } from './_repo.js';

export interface CommitFlags {
  ref: string;
  subject: string;
  body: string;
  timestamp?: string;
  owner?: string;
  canonicalPermissions?: boolean;
  meta: string[];
  bindRef?: boolean;
  skipSpecial?: boolean;
  actor?: string;
}

export function parseTimestamp(s: string | undefined): number | undefined {
  if (s === undefined) return undefined;
  const m = /^@(\d+)$/.exec(s);
  if (!m)
    throw new RegistryError('E_USAGE', `--timestamp ${s}: expected @SECONDS since 1970, e.g. @1704067200`);
  return Number(m[1]);
}

export function parseOwner(s: string | undefined): { uid: number; gid: number } | undefined {
  if (s === undefined) return undefined;
  const m = /^(\d+):(\d+)$/.exec(s);
  if (!m || Number(m[1]) > 0xffffffff || Number(m[2]) > 0xffffffff) {
    throw new RegistryError('E_USAGE', `--owner ${s}: expected numeric UID:GID, e.g. 0:0`);
  }
  return { uid: Number(m[1]), gid: Number(m[2]) };
}

export async function run(source: string, flags: CommitFlags & { repo: string }): Promise<number> {
  const timestamp = parseTimestamp(flags.timestamp);
  const owner = parseOwner(flags.owner);
  const metadata = flags.meta.map(parseMetaArg);
  const repo = await openRepo(flags.repo);
  try {
    const started = Date.now();
    const imported = await importSource(repo.objects, source, {
      owner,
      canonicalPermissions: flags.canonicalPermissions,
      skipSpecial: flags.skipSpecial,
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
    note(`pin: ${flags.ref}@${checksum}`);
    out(checksum);
    return 0;
  } finally {
    repo.close();
  }
}
