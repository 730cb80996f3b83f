/** A comparable description of a directory tree: what a checkout must reproduce. */
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { getAttributeSync, listAttributesSync } from '@napi-rs/xattr';

export interface EntryInfo {
  type: 'file' | 'dir' | 'symlink' | 'special';
  mode: string;
  uid: number;
  gid: number;
  sha256?: string;
  target?: string;
  xattrs: Record<string, string>;
}

export function describeTree(
  root: string,
  opts: { owners?: boolean; skip?: (path: string) => boolean } = {},
): Map<string, EntryInfo> {
  const out = new Map<string, EntryInfo>();
  const visit = (rel: string) => {
    if (opts.skip?.(rel)) return;
    const abs = rel ? join(root, rel) : root;
    const st = lstatSync(abs);
    const xattrs: Record<string, string> = {};
    for (const name of listAttributesSync(abs).sort()) {
      const v = getAttributeSync(abs, name);
      // ostree drops empty-valued xattrs; so does a faithful checkout.
      if (v?.length) xattrs[name] = v.toString('hex');
    }
    const base = {
      mode: (st.mode & 0o7777).toString(8),
      uid: opts.owners === false ? 0 : st.uid,
      gid: opts.owners === false ? 0 : st.gid,
      xattrs,
    };
    if (st.isDirectory()) {
      out.set(rel || '.', { type: 'dir', ...base });
      for (const name of readdirSync(abs).sort()) visit(rel ? `${rel}/${name}` : name);
    } else if (st.isSymbolicLink()) {
      out.set(rel, { type: 'symlink', ...base, mode: '777', target: readlinkSync(abs) });
    } else if (st.isFile()) {
      out.set(rel, {
        type: 'file',
        ...base,
        sha256: createHash('sha256').update(readFileSync(abs)).digest('hex'),
      });
    } else out.set(rel, { type: 'special', ...base });
  };
  visit('');
  return out;
}

/** Human-readable differences, at most `limit`. */
export function diffTrees(a: Map<string, EntryInfo>, b: Map<string, EntryInfo>, limit = 20): string[] {
  const diffs: string[] = [];
  for (const [p, ea] of a) {
    const eb = b.get(p);
    if (!eb) diffs.push(`only in first: ${p}`);
    else if (JSON.stringify(ea) !== JSON.stringify(eb))
      diffs.push(`${p}: ${JSON.stringify(ea)} != ${JSON.stringify(eb)}`);
    if (diffs.length >= limit) return diffs;
  }
  for (const p of b.keys()) {
    if (!a.has(p)) diffs.push(`only in second: ${p}`);
    if (diffs.length >= limit) break;
  }
  return diffs;
}
