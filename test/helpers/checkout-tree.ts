/** Snapshots of directory trees, to compare a checkout with the tree it came from. */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getAttributeSync, listAttributesSync } from '@napi-rs/xattr';
import { FsBlobStore } from '../../src/store/fs-blob-store.js';
import { ObjectStore } from '../../src/store/object-store.js';

export interface Node {
  type: 'dir' | 'file' | 'symlink';
  /** mode & 07777 */
  mode: number;
  uid: number;
  gid: number;
  /** sha256 of a file's bytes */
  sha?: string;
  target?: string;
  /** user.* xattrs, name -> hex value, sorted by name; empty values left out (OSTree drops them). */
  xattrs: Record<string, string>;
  mtimeMs: number;
}

export const isRoot = process.getuid?.() === 0;

function userXattrs(path: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of listAttributesSync(path).sort()) {
    if (!name.startsWith('user.')) continue;
    const v = getAttributeSync(path, name);
    if (v && v.length > 0) out[name] = v.toString('hex');
  }
  return out;
}

/** Every entry under `root` ('' is the root itself), by relative path. */
export function snapshot(root: string): Map<string, Node> {
  const out = new Map<string, Node>();
  const visit = (rel: string): void => {
    const path = rel === '' ? root : join(root, rel);
    const st = lstatSync(path);
    const base = { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtimeMs: st.mtimeMs };
    if (st.isSymbolicLink()) {
      // Symlinks: user.* xattrs are impossible on Linux, so none to read.
      out.set(rel, { ...base, type: 'symlink', target: readlinkSync(path), xattrs: {} });
    } else if (st.isDirectory()) {
      out.set(rel, { ...base, type: 'dir', xattrs: userXattrs(path) });
      for (const name of readdirSync(path).sort()) visit(rel === '' ? name : `${rel}/${name}`);
    } else if (st.isFile()) {
      const sha = createHash('sha256').update(readFileSync(path)).digest('hex');
      out.set(rel, { ...base, type: 'file', sha, xattrs: userXattrs(path) });
    } else {
      throw new Error(`${path}: unexpected file type`);
    }
  };
  visit('');
  return out;
}

/** The snapshot without what a checkout does not take from the source tree: times, and owners if asked. */
export function comparable(s: Map<string, Node>, opts: { owners: boolean }): Record<string, Partial<Node>> {
  const out: Record<string, Partial<Node>> = {};
  for (const [k, v] of s) {
    const { mtimeMs: _m, uid, gid, ...rest } = v;
    out[k] = opts.owners ? { ...rest, uid, gid } : rest;
  }
  return out;
}

/** A fresh temp directory (removed by `cleanup`). */
export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `sysroot-checkout-${prefix}-`));
}

export function cleanup(...dirs: string[]): void {
  for (const d of dirs) {
    try {
      rmSync(d, { recursive: true, force: true });
    } catch {
      // Not root and a 0555 directory inside: make everything writable first.
      execFileSync('chmod', ['-R', 'u+rwx', d]);
      rmSync(d, { recursive: true, force: true });
    }
  }
}

export function openRepo(dir: string): ObjectStore {
  return new ObjectStore(new FsBlobStore(dir));
}

/** A copy of a repository directory (to corrupt it without touching the original). */
export function copyRepo(src: string): string {
  const dst = tempDir('repo-copy');
  cpSync(src, dst, { recursive: true });
  return dst;
}

/** Entries in a directory whose name starts with `.name.sysroot-tmp-` (leftover temp trees). */
export function leftovers(parent: string, name: string): string[] {
  return readdirSync(parent).filter((n) => n.startsWith(`.${name}.sysroot-tmp-`));
}
