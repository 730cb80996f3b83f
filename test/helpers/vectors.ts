/** Ground truth from ostree 2022.7, copied into fixtures/ostree-vectors (see its README). */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const VECTORS_DIR = fileURLToPath(new URL('../../fixtures/ostree-vectors/', import.meta.url));

export interface VectorXattr {
  name: string;
  name_hex: string;
  value_hex: string;
}

export interface VectorObject {
  type: 'file' | 'dirtree' | 'dirmeta';
  checksum: string;
  paths: Record<string, string[]>;
  uid?: number;
  gid?: number;
  mode?: number;
  xattrs?: VectorXattr[];
  kind?: 'regular' | 'symlink';
  symlink_target?: string;
  size?: number;
  bytes_hex?: string;
  entries?: { files: [string, string][]; dirs: [string, string, string][] };
}

export interface VectorCommit {
  checksum: string;
  parent: string | null;
  subject: string;
  body: string;
  timestamp: number;
  root_dirtree: string;
  root_dirmeta: string;
  metadata_keys_in_order: string[];
  bytes_hex: string;
  ref: string;
}

export interface Vectors {
  refs: Record<string, string>;
  commits: Record<'c1' | 'c2' | 'c3', VectorCommit>;
  objects: VectorObject[];
  all_repo_objects: { checksum: string; type: string }[];
  summary: { bytes_hex: string; sig_bytes_hex: string };
  ed25519: Record<string, unknown>;
}

export const vectors: Vectors = JSON.parse(readFileSync(join(VECTORS_DIR, 'vectors.json'), 'utf8'));

/** Unpack a fixture tarball (tree.tar or repo.tar) into a fresh temp directory, with xattrs. */
export function unpackFixture(name: 'tree.tar' | 'repo.tar'): string {
  const dir = mkdtempSync(join(tmpdir(), `sysroot-${name.replace('.tar', '')}-`));
  execFileSync('tar', [
    '-x',
    '--xattrs',
    '--xattrs-include=*',
    '--numeric-owner',
    '-f',
    join(VECTORS_DIR, name),
    '-C',
    dir,
  ]);
  return dir;
}
