/**
 * Directory trees: `(a(say)a(sayay))` — files as (name, content checksum) and subdirectories as
 * (name, dirtree checksum, dirmeta checksum), each list sorted bytewise (strcmp) by UTF-8 name.
 * The checksum is the sha256 of these bytes, which are also the `.dirtree` file.
 */
import { RegistryError } from '../errors.js';
import { GVariantError, offsetSize, sizeFromTotal, writeOffset } from '../gvariant/index.js';
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

/**
 * The dirtree's bytes, written straight into one buffer: what encode(TYPE, …) gives (the tests hold
 * the two together), without the generic codec's Buffer per string, checksum, entry and list, which
 * took ~65 ms of a push's main thread for the ~700 dirtrees of a sysroot (a CPU profile, 2026-12-07).
 *
 * Every part of the type has alignment 1, so the parts lie end to end:
 *
 *   entry (say):    name ‖ NUL ‖ checksum ‖ off(name end)
 *   entry (sayay):  name ‖ NUL ‖ tree ‖ meta ‖ off(tree end) ‖ off(name end)
 *   list:           entry ‖ entry ‖ … ‖ off(end of entry 0) ‖ off(end of entry 1) ‖ …
 *   dirtree:        files list ‖ dirs list ‖ off(files list end)
 *
 * Each container's offsets have the width its total size calls for (offsetSize), counted from its
 * own start.
 */
export function encodeDirTree(t: DirTree): Buffer {
  const files = [...t.files].sort((a, b) => compareNames(a.name, b.name));
  const dirs = [...t.dirs].sort((a, b) => compareNames(a.name, b.name));
  const fileSizes = entrySizes(files, 1);
  const dirSizes = entrySizes(dirs, 2);
  const filesLen = listSize(fileSizes);
  const dirsLen = listSize(dirSizes);
  const k = offsetSize(filesLen + dirsLen, 1);
  const out = Buffer.allocUnsafe(filesLen + dirsLen + k);
  let at = 0;
  for (let i = 0; i < files.length; i++) {
    const f = files[i]!;
    at = writeEntry(out, at, fileSizes[i]!, f.name, f.checksum, undefined);
  }
  writeTable(out, 0, at, fileSizes);
  at = filesLen;
  for (let i = 0; i < dirs.length; i++) {
    const d = dirs[i]!;
    at = writeEntry(out, at, dirSizes[i]!, d.name, d.tree, d.meta);
  }
  writeTable(out, filesLen, at, dirSizes);
  writeOffset(out, filesLen + dirsLen, filesLen, k);
  return out;
}

/** Each entry's size: its name, NUL and `sums` checksums, then as many framing offsets. */
function entrySizes(entries: readonly { name: string }[], sums: 1 | 2): number[] {
  return entries.map(({ name }) => {
    if (name.includes('\0')) throw new GVariantError('a GVariant string cannot contain NUL');
    const body = Buffer.byteLength(name, 'utf8') + 1 + 32 * sums;
    return body + sums * offsetSize(body, sums);
  });
}

/** A list's size: its entries, then one framing offset per entry. */
function listSize(sizes: readonly number[]): number {
  let body = 0;
  for (const s of sizes) body += s;
  return body + sizes.length * offsetSize(body, sizes.length);
}

/** One entry at `at` (`meta` for a directory's); returns where it ends. */
function writeEntry(
  out: Buffer,
  at: number,
  size: number,
  name: string,
  sum: Checksum,
  meta?: Checksum,
): number {
  const sums = meta === undefined ? 1 : 2;
  const nameEnd = out.write(name, at, 'utf8') + 1;
  out[at + nameEnd - 1] = 0;
  out.write(assertChecksum(sum), at + nameEnd, 'hex');
  if (meta !== undefined) out.write(assertChecksum(meta), at + nameEnd + 32, 'hex');
  const body = nameEnd + 32 * sums;
  const ke = (size - body) / sums;
  // Offsets of a tuple's members come last member first: the tree's end, then the name's.
  if (meta !== undefined) writeOffset(out, at + body, nameEnd + 32, ke);
  writeOffset(out, at + size - ke, nameEnd, ke);
  return at + size;
}

/** A list's offsets (each entry's end, from the list's start) after its entries, which end at `end`. */
function writeTable(out: Buffer, start: number, end: number, sizes: readonly number[]): void {
  const k = offsetSize(end - start, sizes.length);
  let entryEnd = 0;
  for (let i = 0; i < sizes.length; i++) {
    entryEnd += sizes[i]!;
    writeOffset(out, end + i * k, entryEnd, k);
  }
}

/** The checks on a decoded dirtree's names, whichever decoder read it. */
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

/** A framing offset of 1, 2 or 4 bytes (codec.ts's readOffset, without its view and BigInt). */
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
