/**
 * Importer: a directory or a tarball → OSTree objects in an ObjectStore, returning the root dirtree
 * and dirmeta checksums. It writes objects only (never refs): the caller moves a ref after it succeeds,
 * so a failed import leaves at most some unreferenced objects, which a later import reuses.
 */
import { open, stat } from 'node:fs/promises';
import { errnoCode, RegistryError } from '../errors.js';
import type { ObjectStore } from '../store/object-store.js';
import { importDirectory } from './directory.js';
import { importTarball } from './tarball.js';
import type { ImportOptions, ImportResult } from './tree.js';

export { importDirectory } from './directory.js';
export { importTarball } from './tarball.js';
export type { ImportOptions, ImportResult } from './tree.js';

/** A directory, or a .tar / .tar.gz / .tar.zst file recognised by its first bytes (not its name). */
export async function importSource(
  objects: ObjectStore,
  source: string,
  opts: ImportOptions = {},
): Promise<ImportResult> {
  let st: Awaited<ReturnType<typeof stat>>;
  try {
    st = await stat(source);
  } catch (e) {
    const code = errnoCode(e) === 'ENOENT' ? 'E_NOT_FOUND' : 'E_IO';
    throw new RegistryError(code, `${source}: ${(e as Error).message}`, { path: source }, undefined, e);
  }
  if (st.isDirectory()) return importDirectory(objects, source, opts);
  if (!st.isFile()) {
    throw new RegistryError('E_USAGE', `${source} is neither a directory nor a tarball`, { path: source });
  }
  const kind = sniff(await head(source, 512));
  if (kind !== 'tar') {
    throw new RegistryError(
      'E_BAD_ARCHIVE',
      `${source}: ${kind === 'unknown' ? 'not a tar archive' : `${kind}-compressed, which is not supported`}`,
      { path: source, found: kind },
      'give a directory, or a tarball that is uncompressed, gzip (.tar.gz) or zstd (.tar.zst)',
    );
  }
  return importTarball(objects, source, opts);
}

async function head(path: string, n: number): Promise<Buffer> {
  try {
    const fh = await open(path, 'r');
    try {
      const b = Buffer.alloc(n);
      const { bytesRead } = await fh.read(b, 0, n, 0);
      return b.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  } catch (e) {
    throw new RegistryError('E_IO', `${path}: ${(e as Error).message}`, { path }, undefined, e);
  }
}

/** gzip and zstd are decompressed on the fly; plain tar has "ustar" at offset 257 (v7 tar has not). */
function sniff(b: Buffer): 'tar' | 'xz' | 'bzip2' | 'unknown' {
  if (b.length >= 2 && b[0] === 0x1f && b[1] === 0x8b) return 'tar';
  if (b.length >= 4 && b.readUInt32LE(0) === 0xfd2fb528) return 'tar';
  if (b.length >= 6 && b.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])))
    return 'xz';
  if (b.length >= 3 && b.toString('latin1', 0, 3) === 'BZh') return 'bzip2';
  if (b.length >= 262 && b.toString('latin1', 257, 262) === 'ustar') return 'tar';
  // An old v7 header has no magic: accept anything whose header checksum adds up.
  if (b.length === 512 && v7Checksum(b)) return 'tar';
  return 'unknown';
}

function v7Checksum(b: Buffer): boolean {
  const stored = Number.parseInt(
    b
      .toString('latin1', 148, 156)
      .replace(/[\0 ]+$/, '')
      .trim(),
    8,
  );
  if (!Number.isFinite(stored)) return false;
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : b[i]!;
  return sum === stored;
}
