/**
 * One directory's entries for an import's walk, read by the native/files addon in one call
 * (readdir, then lstat and, when asked, the extended attributes of each entry): the walk of the
 * Debian sysroot's 6,665 entries took ~125 ms through Node's fs and @napi-rs/xattr and ~45 ms of
 * the same system calls from C (2026-12-07, a fresh process each). Without the addon, or with
 * SYSROOT_NATIVE_FILES=0, scanDirectory returns undefined and the walk makes the calls itself.
 */
import { getSystemErrorName } from 'node:util';
import { RegistryError } from '../errors.js';
import { loadAddon } from '../native-addon.js';
import type { Xattr } from '../objects/index.js';

/** What the walk uses of an entry's lstat. */
export interface EntryStat {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
}

export interface DirEntry {
  /** The name's bytes, as the kernel gives them. */
  raw: Buffer;
  stat: EntryStat;
  /** In llistxattr's order, not yet canonical; undefined when not asked for, or not a directory, file or symlink. */
  xattrs: Xattr[] | undefined;
}

interface Scan {
  names: Buffer;
  stats: Float64Array;
  xattrs: Buffer;
  xattrEnds: Uint32Array;
}

interface ScanFailure {
  errno: number;
  syscall: string;
  name: Buffer;
}

interface FilesAddon {
  scanDir?(dir: string, xattrs: boolean): Scan | ScanFailure;
}

const addon = loadAddon('files').addon as FilesAddon | null;

const S_IFMT = 0o170000;
const WITH_XATTRS = new Set([0o040000, 0o100000, 0o120000]);

/**
 * The entries of `dir` (an absolute path), in readdir order; undefined when the addon cannot do it
 * (the caller walks with Node's fs then). Throws E_IO naming the path that failed.
 */
export function scanDirectory(dir: string, xattrs: boolean): DirEntry[] | undefined {
  if (!addon?.scanDir || process.env.SYSROOT_NATIVE_FILES === '0') return undefined;
  const r = addon.scanDir(dir, xattrs);
  if ('errno' in r) throw scanError(dir, r);
  const out: DirEntry[] = [];
  let at = 0;
  for (let i = 0; at < r.names.length; i++) {
    const end = r.names.indexOf(0, at);
    const s = r.stats;
    const stat = {
      mode: s[5 * i]!,
      uid: s[5 * i + 1]!,
      gid: s[5 * i + 2]!,
      size: s[5 * i + 3]!,
      nlink: s[5 * i + 4]!,
    };
    out.push({
      raw: r.names.subarray(at, end),
      stat,
      xattrs:
        xattrs && WITH_XATTRS.has(stat.mode & S_IFMT)
          ? parseXattrs(r.xattrs, r.xattrEnds[i]!, r.xattrEnds[i + 1]!)
          : undefined,
    });
    at = end + 1;
  }
  return out;
}

/** `u32 length ‖ name ‖ u32 length ‖ value` per attribute (files.c); values copied out of the scan's buffer. */
function parseXattrs(b: Buffer, start: number, end: number): Xattr[] {
  const out: Xattr[] = [];
  for (let at = start; at < end; ) {
    const nameLength = b.readUInt32LE(at);
    const name = b.toString('utf8', at + 4, at + 4 + nameLength);
    at += 4 + nameLength;
    const valueLength = b.readUInt32LE(at);
    out.push({ name, value: Buffer.from(b.subarray(at + 4, at + 4 + valueLength)) });
    at += 4 + valueLength;
  }
  return out;
}

function scanError(dir: string, f: ScanFailure): RegistryError {
  const code = getSystemErrorName(-f.errno);
  const path = f.name.length > 0 ? `${dir === '/' ? '' : dir}/${f.name.toString()}` : dir;
  const xattr = f.syscall === 'llistxattr' || f.syscall === 'lgetxattr';
  return new RegistryError(
    'E_IO',
    xattr ? `${path}: reading xattrs: ${code}` : `${path}: ${code}: ${f.syscall} '${path}'`,
    { path, errno: code },
  );
}
