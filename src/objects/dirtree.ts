/**
 * Directory trees: `(a(say)a(sayay))` — files as (name, content checksum) and subdirectories as
 * (name, dirtree checksum, dirmeta checksum), each list sorted bytewise (strcmp) by UTF-8 name.
 * The checksum is the sha256 of these bytes, which are also the `.dirtree` file.
 */
import { RegistryError } from '../errors.js';
import { encode } from '../gvariant/index.js';
import { bytesToChecksum, type Checksum, checksumToBytes } from './checksum.js';
import { decodeObject } from './metadata-object.js';

export interface DirTreeFile {
  name: string;
  checksum: Checksum;
}

export interface DirTreeDir {
  name: string;
  tree: Checksum;
  meta: Checksum;
}

export interface DirTree {
  files: DirTreeFile[];
  dirs: DirTreeDir[];
}

const TYPE = '(a(say)a(sayay))';

/** OSTree's name rule: non-empty, no '/', not '.' or '..' (UTF-8 validity is checked by the codec). */
export function checkEntryName(name: string, where = 'directory entry'): void {
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    throw new RegistryError('E_BAD_NAME', `${where}: invalid file name ${JSON.stringify(name)}`, {
      found: name,
    });
  }
}

/**
 * strcmp order on UTF-8 bytes, which is not JavaScript's UTF-16 order for astral characters. UTF-8
 * byte order is code point order, and UTF-16 code units are in code point order except that
 * surrogates (0xD800-0xDFFF, which encode code points above 0xFFFF) sort below 0xE000-0xFFFF: the
 * first differing units are compared with that one range moved. No bytes are made: decoding a
 * sysroot's dirtrees compared ~6,000 names, two Buffers each, a sixth of the decode.
 */
export function compareNames(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return codePointOrder(x) - codePointOrder(y);
  }
  return a.length - b.length;
}

/** A UTF-16 code unit moved so that units compare in code point order (surrogates above all BMP). */
function codePointOrder(unit: number): number {
  if (unit < 0xd800) return unit;
  return unit < 0xe000 ? unit + 0x2000 : unit - 0x800;
}

export function encodeDirTree(t: DirTree): Buffer {
  const files = [...t.files].sort((a, b) => compareNames(a.name, b.name));
  const dirs = [...t.dirs].sort((a, b) => compareNames(a.name, b.name));
  return encode(TYPE, [
    files.map((f) => [f.name, checksumToBytes(f.checksum)]),
    dirs.map((d) => [d.name, checksumToBytes(d.tree), checksumToBytes(d.meta)]),
  ]);
}

export function decodeDirTree(bytes: Uint8Array, id = 'dirtree'): DirTree {
  return decodeObject(TYPE, bytes, id, (v) => {
    const [files, dirs] = v as [[string, Buffer][], [string, Buffer, Buffer][]];
    const t: DirTree = {
      files: files.map(([name, c]) => ({ name, checksum: bytesToChecksum(c, `checksum of "${name}"`) })),
      dirs: dirs.map(([name, tree, meta]) => ({
        name,
        tree: bytesToChecksum(tree, `dirtree checksum of "${name}"`),
        meta: bytesToChecksum(meta, `dirmeta checksum of "${name}"`),
      })),
    };
    // Names must be valid, sorted and unique within each list, and a name cannot be both a file and a
    // directory: a checkout could not represent it, and ostree would refuse it too.
    const seen = new Set<string>();
    for (const list of [t.files, t.dirs]) {
      for (let i = 0; i < list.length; i++) {
        const name = list[i]!.name;
        checkEntryName(name, id);
        if (i > 0 && compareNames(list[i - 1]!.name, name) >= 0)
          throw new Error(`entries not sorted at "${name}"`);
        if (seen.has(name)) throw new Error(`"${name}" is both a file and a directory`);
        seen.add(name);
      }
    }
    return t;
  });
}
