/**
 * Directory trees: `(a(say)a(sayay))` — files as (name, content checksum) and subdirectories as
 * (name, dirtree checksum, dirmeta checksum), each list sorted bytewise (strcmp) by UTF-8 name.
 * The checksum is the sha256 of these bytes, which are also the `.dirtree` file.
 */
import { RegistryError } from '../errors.js';
import { GVariantError, offsetSize } from '../gvariant/index.js';
import { assertChecksum, bytesToChecksum, type Checksum } from './checksum.js';
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

function putOffset(b: Buffer, at: number, value: number, k: number): void {
  if (k === 1) b[at] = value;
  else if (k === 2) b.writeUInt16LE(value, at);
  else if (k === 4) b.writeUInt32LE(value, at);
  else b.writeBigUInt64LE(BigInt(value), at);
}

/**
 * The GVariant bytes of a dirtree, written directly: every part of `(a(say)a(sayay))` has alignment
 * 1, so each entry is its name, a NUL, its checksum(s) and its own framing offsets, and each list is
 * its entries and their end offsets. The same bytes as gvariant's encode(), which the tests check;
 * ~10x faster, and a push encodes a dirtree per directory while a pull re-encodes each to check it.
 */
export function encodeDirTree(t: DirTree): Buffer {
  const files = [...t.files].sort((a, b) => compareNames(a.name, b.name));
  const dirs = [...t.dirs].sort((a, b) => compareNames(a.name, b.name));
  const fileNames = files.map((f) => Buffer.from(`${f.name}\0`, 'utf8'));
  const dirNames = dirs.map((d) => Buffer.from(`${d.name}\0`, 'utf8'));
  for (const n of [...fileNames, ...dirNames]) {
    if (n.indexOf(0) !== n.length - 1) throw new GVariantError('a GVariant string cannot contain NUL');
  }
  // Entry sizes: body, then body plus its framing offsets.
  const fileSize = fileNames.map((n) => {
    const body = n.length + 32;
    return body + offsetSize(body, 1);
  });
  const dirSize = dirNames.map((n) => {
    const body = n.length + 64;
    return body + 2 * offsetSize(body, 2);
  });
  const listSize = (sizes: number[]): number => {
    const body = sizes.reduce((a, b) => a + b, 0);
    return body + sizes.length * offsetSize(body, sizes.length);
  };
  const filesLen = listSize(fileSize);
  const dirsLen = listSize(dirSize);
  const body = filesLen + dirsLen;
  const kTop = offsetSize(body, 1);
  const out = Buffer.alloc(body + kTop);
  let at = 0;
  const writeList = (
    names: Buffer[],
    sizes: number[],
    sums: (i: number) => Checksum[],
    len: number,
  ): void => {
    const start = at;
    const listBody = sizes.reduce((a, b) => a + b, 0);
    const k = offsetSize(listBody, sizes.length);
    const ends: number[] = [];
    names.forEach((n, i) => {
      const entry = at;
      n.copy(out, at);
      at += n.length;
      const cs = sums(i);
      for (const c of cs) at += out.write(assertChecksum(c), at, 'hex');
      // Framing offsets of the entry, last member's first: the end of the name is the last one.
      const ek = offsetSize(n.length + 32 * cs.length, cs.length);
      if (cs.length === 2) {
        putOffset(out, at, n.length + 32, ek);
        at += ek;
      }
      putOffset(out, at, n.length, ek);
      at += ek;
      ends.push(at - start);
      if (at - entry !== sizes[i]) throw new Error('encodeDirTree: entry size');
    });
    for (const e of ends) {
      putOffset(out, at, e, k);
      at += k;
    }
    if (at - start !== len) throw new Error('encodeDirTree: list size');
  };
  writeList(fileNames, fileSize, (i) => [files[i]!.checksum], filesLen);
  writeList(dirNames, dirSize, (i) => [dirs[i]!.tree, dirs[i]!.meta], dirsLen);
  putOffset(out, at, filesLen, kTop);
  return out;
}

/** What decodeDirTree found, before the checks on names. */
function checkEntries(t: DirTree, id: string): DirTree {
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
}

export function decodeDirTree(bytes: Uint8Array, id = 'dirtree'): DirTree {
  const fast = parseDirTree(bytes);
  if (fast) {
    try {
      return checkEntries(fast, id);
    } catch (e) {
      if (e instanceof RegistryError) throw e;
      throw new RegistryError('E_CORRUPT_OBJECT', `${id}: ${(e as Error).message}`, { object: id });
    }
  }
  // Anything the fast parser does not take goes through the generic codec, which says what is wrong.
  return decodeObject(TYPE, bytes, id, (v) => {
    const [files, dirs] = v as [[string, Buffer][], [string, Buffer, Buffer][]];
    return checkEntries(
      {
        files: files.map(([name, c]) => ({ name, checksum: bytesToChecksum(c, `checksum of "${name}"`) })),
        dirs: dirs.map(([name, tree, meta]) => ({
          name,
          tree: bytesToChecksum(tree, `dirtree checksum of "${name}"`),
          meta: bytesToChecksum(meta, `dirmeta checksum of "${name}"`),
        })),
      },
      id,
    );
  });
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** A reader derives the offset size from the container's total size alone. */
function sizeFromTotal(total: number): number {
  return total <= 0xff ? 1 : total <= 0xffff ? 2 : 4;
}

function getOffset(b: Buffer, at: number, k: number): number {
  return k === 1 ? b[at]! : k === 2 ? b.readUInt16LE(at) : b.readUInt32LE(at);
}

/**
 * The entries of a dirtree in GVariant normal form, or undefined for anything else (then the
 * generic decoder runs and names the fault). Decoding the ~700 dirtrees of a sysroot took ~80 ms
 * through the generic codec in a fresh process (its first calls run unoptimised), most of a pull's
 * directory phase; this takes ~10 ms there.
 *
 * Normal form, for a type whose every part has alignment 1: each container's parts lie end to end
 * (the parse reads them so), strings end in their only NUL and are UTF-8, and each container's
 * framing offsets have the width GVariant gives them, offsetSize(body, n), which is what
 * re-encoding the value would check (codec.ts's decode). The tests hold this against the generic
 * codec on every dirtree of a sysroot and on damaged ones.
 */
function parseDirTree(bytes: Uint8Array): DirTree | undefined {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const total = b.length;
  // Past 4 GiB offsets take 8 bytes: no dirtree is that big, and the generic codec handles it.
  if (total === 0 || total > 0xffffffff) return undefined;
  const k = sizeFromTotal(total);
  if (offsetSize(total - k, 1) !== k) return undefined;
  const filesEnd = getOffset(b, total - k, k);
  if (filesEnd > total - k) return undefined;
  const files: DirTreeFile[] = [];
  const dirs: DirTreeDir[] = [];
  /** The entries in b[start, end): `sums` checksums each (1: files, 2: dirs), as many framing offsets. */
  const list = (start: number, end: number, sums: 1 | 2): boolean => {
    const len = end - start;
    if (len === 0) return true;
    const ka = sizeFromTotal(len);
    if (len < ka) return false;
    const tableStart = getOffset(b, end - ka, ka);
    if (tableStart > len - ka || (len - tableStart) % ka !== 0) return false;
    const n = (len - tableStart) / ka;
    if (offsetSize(tableStart, n) !== ka) return false;
    let pos = 0;
    for (let i = 0; i < n; i++) {
      const e = getOffset(b, start + tableStart + i * ka, ka);
      if (e < pos || e > tableStart) return false;
      // The entry: name, NUL, checksum(s), then its framing offsets (the name's end last).
      const elen = e - pos;
      const entry = start + pos;
      const ke = sizeFromTotal(elen);
      const body = elen - sums * ke;
      if (body < 1 + 32 * sums || offsetSize(body, sums) !== ke) return false;
      const nameEnd = getOffset(b, entry + elen - ke, ke); // the NUL included
      if (nameEnd !== body - 32 * sums || b[entry + nameEnd - 1] !== 0) return false;
      if (sums === 2 && getOffset(b, entry + elen - 2 * ke, ke) !== nameEnd + 32) return false;
      const name = entryName(b, entry, entry + nameEnd - 1);
      if (name === undefined) return false;
      const sum = entry + nameEnd;
      if (sums === 1) files.push({ name, checksum: b.toString('hex', sum, sum + 32) });
      else {
        dirs.push({
          name,
          tree: b.toString('hex', sum, sum + 32),
          meta: b.toString('hex', sum + 32, sum + 64),
        });
      }
      pos = e;
    }
    return true;
  };
  if (!list(0, filesEnd, 1) || !list(filesEnd, total - k, 2)) return undefined;
  return { files, dirs };
}

/** A name's bytes as a string: ASCII without NUL directly, else through a strict UTF-8 decoder. */
function entryName(b: Buffer, start: number, end: number): string | undefined {
  let ascii = true;
  for (let i = start; i < end; i++) {
    const c = b[i]!;
    if (c === 0) return undefined;
    if (c >= 0x80) ascii = false;
  }
  if (ascii) return b.toString('latin1', start, end);
  try {
    return utf8.decode(b.subarray(start, end));
  } catch {
    return undefined;
  }
}
