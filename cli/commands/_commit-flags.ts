/** Flags shared by `sysroot commit` and `sysroot push`, and their parsers (no repository needed). */
import { RegistryError } from '../../src/errors.js';

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
  maxExpansion?: string;
}

export function parseMaxExpansion(s: string | undefined): number | undefined {
  if (s === undefined) return undefined;
  if (!/^\d+$/.test(s)) {
    throw new RegistryError(
      'E_USAGE',
      `--max-expansion ${s}: expected a whole ratio, e.g. 1000 (0: no limit)`,
    );
  }
  return Number(s);
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
