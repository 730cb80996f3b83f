/**
 * Extended attributes as OSTree hashes them: `a(ayay)` where each name is NUL-terminated inside its
 * `ay`, sorted bytewise by name (strcmp), and attributes with an empty value dropped (libglnx skips
 * them when reading a directory). Every import path canonicalises through here, so a tarball and a
 * directory of the same tree give the same checksums.
 */
import type { GvValue } from '../gvariant/index.js';

export interface Xattr {
  name: string;
  value: Buffer;
}

export function canonicalXattrs(xattrs: readonly Xattr[]): Xattr[] {
  return xattrs
    .filter((x) => x.value.length > 0)
    .sort((a, b) => Buffer.compare(Buffer.from(a.name, 'utf8'), Buffer.from(b.name, 'utf8')));
}

/** To the GVariant value of `a(ayay)`. The input must already be canonical. */
export function xattrsToGv(xattrs: readonly Xattr[]): GvValue {
  return xattrs.map((x) => [Buffer.from(`${x.name}\0`, 'utf8'), x.value]);
}

export function xattrsFromGv(v: GvValue): Xattr[] {
  return (v as [Buffer, Buffer][]).map(([name, value]) => {
    if (name.length === 0 || name[name.length - 1] !== 0) throw new Error('xattr name is not NUL-terminated');
    return { name: name.subarray(0, name.length - 1).toString('utf8'), value: Buffer.from(value) };
  });
}

export function isCanonicalXattrs(xattrs: readonly Xattr[]): boolean {
  const c = canonicalXattrs(xattrs);
  return c.length === xattrs.length && c.every((x, i) => x.name === xattrs[i]!.name);
}
