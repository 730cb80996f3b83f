/**
 * A streaming tar reader for untrusted sysroot tarballs.
 *
 * Formats: ustar (with the 155-byte prefix), POSIX pax ('x' and 'g'), GNU ('L'/'K' long names, base-256
 * numbers) and old v7. We parse headers ourselves instead of using node-tar because its pax parser decodes
 * record values as UTF-8, which destroys binary xattr values such as `security.capability`.
 *
 * Memory is bounded by the largest metadata block (pax header or GNU long name, capped by maxPaxBytes):
 * member bodies are handed out as slices of the input chunks, never collected.
 *
 * Anything two tar implementations could read differently is rejected rather than guessed at, because
 * the tree we import must be the tree the uploader's tools see:
 *  - a non-zero size on anything but a regular file (GNU tar skips such a body, Python's tarfile parses it
 *    as headers, Go's archive/tar ignores it);
 *  - a lone zero block followed by more data (GNU tar and tarfile stop, `tar -i` readers go on);
 *  - sparse files, in either GNU 'S' or pax GNU.sparse.* form (the body is a map, not the file);
 *  - path, linkpath or size in a pax global header (it would rename or resize every later member).
 * Reading stops at the end-of-archive marker; whatever follows it (record padding) is not consumed.
 */
import { isAscii } from 'node:buffer';
import { RegistryError } from '../errors.js';

export type TarEntryType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'chardev' | 'blockdev' | 'fifo';

export interface TarXattr {
  name: string;
  value: Buffer;
}

export interface TarEntry {
  /** Normalised relative path without './', '/' at either end or empty components; the root is '.'. */
  path: string;
  type: TarEntryType;
  /** Permission bits only (mode & 0o7777), setuid/setgid/sticky included. */
  mode: number;
  uid: number;
  gid: number;
  /** Body length in bytes for 'file', 0 otherwise. */
  size: number;
  /** A symlink's target verbatim, or a hardlink's target normalised like `path`; '' otherwise. */
  linkname: string;
  /** From pax SCHILY.xattr.* (raw bytes) and LIBARCHIVE.xattr.* (base64), in archive order. */
  xattrs: TarXattr[];
  devmajor: number;
  devminor: number;
}

export interface TarLimits {
  maxPathBytes: number;
  maxNameBytes: number;
  maxPaxBytes: number;
  maxEntries: number;
}

/** 4096 and 255 are Linux's PATH_MAX and NAME_MAX; 1 MiB of pax records fits any real xattr set. */
export const DEFAULT_TAR_LIMITS: TarLimits = Object.freeze({
  maxPathBytes: 4096,
  maxNameBytes: 255,
  maxPaxBytes: 1024 * 1024,
  maxEntries: 10_000_000,
});

const BLOCK = 512;
const EMPTY = Buffer.alloc(0);
// Keep BOMs: a leading U+FEFF is part of the file name, not an encoding marker to drop.
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
// Error messages quote at most this many name bytes; a 1 MiB pax path would drown the message.
const DISPLAY_MAX_BYTES = 512;

const TYPE_NAMES: Record<string, string> = {
  S: 'GNU sparse file',
  M: 'GNU multivolume continuation',
  V: 'GNU volume label',
  D: 'GNU incremental dumpdir',
  N: 'GNU old long name',
  A: 'Solaris ACL',
  X: 'Solaris extended header',
  E: 'Solaris extended attribute',
  I: 'inode-only member',
};

/** Decodes exactly what the archive holds, so there is no second reading of the same bytes. */
function decodeUtf8(bytes: Buffer): string | undefined {
  if (isAscii(bytes)) return bytes.toString('latin1');
  try {
    return UTF8.decode(bytes);
  } catch {
    return undefined;
  }
}

/** Length of the valid UTF-8 sequence at `i`, or 0 (no overlongs, surrogates or values past U+10FFFF). */
function utf8SequenceLength(b: Buffer, i: number): number {
  const b0 = b[i]!;
  if (b0 < 0x80) return 1;
  let len: number;
  let lo = 0x80;
  let hi = 0xbf;
  if (b0 >= 0xc2 && b0 <= 0xdf) len = 2;
  else if (b0 >= 0xe0 && b0 <= 0xef) {
    len = 3;
    if (b0 === 0xe0) lo = 0xa0;
    if (b0 === 0xed) hi = 0x9f;
  } else if (b0 >= 0xf0 && b0 <= 0xf4) {
    len = 4;
    if (b0 === 0xf0) lo = 0x90;
    if (b0 === 0xf4) hi = 0x8f;
  } else return 0;
  if (i + len > b.length) return 0;
  const b1 = b[i + 1]!;
  if (b1 < lo || b1 > hi) return 0;
  for (let k = 2; k < len; k++) {
    const c = b[i + k]!;
    if (c < 0x80 || c > 0xbf) return 0;
  }
  return len;
}

/**
 * A name as it can be shown in a message: invalid UTF-8 and control bytes as \xNN, quotes and backslashes
 * escaped, so that any byte string has one unambiguous rendering.
 */
export function displayName(bytes: Buffer): string {
  const cut = bytes.length > DISPLAY_MAX_BYTES;
  const b = cut ? bytes.subarray(0, DISPLAY_MAX_BYTES) : bytes;
  let out = '';
  // Bytes from `run` to `i` need no escaping and are decoded in one go: this runs for every header.
  let run = 0;
  let i = 0;
  while (i < b.length) {
    const c = b[i]!;
    if (c >= 0x20 && c < 0x7f && c !== 0x22 && c !== 0x5c) {
      i++;
      continue;
    }
    if (c >= 0x80) {
      const n = utf8SequenceLength(b, i);
      if (n > 0) {
        i += n;
        continue;
      }
    }
    const escaped =
      c === 0x22 || c === 0x5c ? `\\${String.fromCharCode(c)}` : `\\x${c.toString(16).padStart(2, '0')}`;
    out += b.toString('utf8', run, i) + escaped;
    i++;
    run = i;
  }
  out += b.toString('utf8', run, i);
  return cut ? `${out}...` : out;
}

function memberError(
  code: 'E_BAD_ARCHIVE' | 'E_UNSAFE_PATH' | 'E_BAD_NAME' | 'E_LIMIT' | 'E_INTERNAL',
  member: string,
  problem: string,
  offset?: number,
): RegistryError {
  return new RegistryError(
    code,
    `tar member "${member}": ${problem}`,
    offset === undefined ? { path: member } : { path: member, offset },
  );
}

/**
 * Checks and normalises a member path (or hardlink target): strict relative paths only, '.' components
 * and repeated slashes dropped, any '..' rejected even when it would stay inside the tree, because an
 * extractor that resolves symlinks along the way could still be led outside.
 */
export function normalizeMemberPath(
  name: string,
  member: string,
  limits: Pick<TarLimits, 'maxPathBytes' | 'maxNameBytes'>,
  what = 'path',
): string {
  if (name.length === 0) throw memberError('E_BAD_NAME', member, `${what} is empty`);
  if (name.includes('\0')) throw memberError('E_BAD_NAME', member, `${what} contains a NUL byte`);
  if (name.charCodeAt(0) === 0x2f) {
    throw memberError('E_UNSAFE_PATH', member, `${what} is absolute`);
  }
  const parts = name.split('/');
  const kept: string[] = [];
  for (const part of parts) {
    if (part === '' || part === '.') continue;
    if (part === '..')
      throw memberError('E_UNSAFE_PATH', member, `${what} escapes the tree ('..' component)`);
    if (Buffer.byteLength(part) > limits.maxNameBytes) {
      throw memberError(
        'E_LIMIT',
        member,
        `${what} has a component longer than ${limits.maxNameBytes} bytes`,
      );
    }
    kept.push(part);
  }
  const path = kept.length === 0 ? '.' : kept.join('/');
  if (Buffer.byteLength(path) > limits.maxPathBytes) {
    throw memberError('E_LIMIT', member, `${what} is longer than ${limits.maxPathBytes} bytes`);
  }
  return path;
}

/** Pulls chunks from the source on demand and hands out slices of them. */
class Input {
  offset = 0;
  private readonly it: AsyncIterator<Buffer | Uint8Array>;
  private chunk: Buffer = EMPTY;
  private pos = 0;
  private eof = false;

  constructor(source: AsyncIterable<Buffer | Uint8Array>) {
    this.it = source[Symbol.asyncIterator]();
  }

  private async pull(): Promise<boolean> {
    while (!this.eof) {
      const r = await this.it.next();
      if (r.done) {
        this.eof = true;
        this.chunk = EMPTY;
        this.pos = 0;
        return false;
      }
      const v = r.value;
      if (v.length === 0) continue;
      this.chunk = Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
      this.pos = 0;
      return true;
    }
    return false;
  }

  /** Exactly `n` bytes (fewer only at EOF); a slice of the input when it lies inside one chunk. */
  async read(n: number): Promise<Buffer> {
    if (this.chunk.length - this.pos >= n) {
      const b = this.chunk.subarray(this.pos, this.pos + n);
      this.pos += n;
      this.offset += n;
      return b;
    }
    const out = Buffer.allocUnsafe(n);
    let got = 0;
    for (;;) {
      const take = Math.min(this.chunk.length - this.pos, n - got);
      this.chunk.copy(out, got, this.pos, this.pos + take);
      this.pos += take;
      got += take;
      if (got === n || !(await this.pull())) break;
    }
    this.offset += got;
    return got === n ? out : out.subarray(0, got);
  }

  /** Up to `max` bytes without copying; null at EOF. */
  async readSome(max: number): Promise<Buffer | null> {
    if (this.pos >= this.chunk.length && !(await this.pull())) return null;
    const take = Math.min(max, this.chunk.length - this.pos);
    const b = this.chunk.subarray(this.pos, this.pos + take);
    this.pos += take;
    this.offset += take;
    return b;
  }

  /** Discards up to `n` bytes; returns how many were there. */
  async skip(n: number): Promise<number> {
    let left = n;
    while (left > 0) {
      if (this.pos >= this.chunk.length && !(await this.pull())) break;
      const take = Math.min(left, this.chunk.length - this.pos);
      this.pos += take;
      left -= take;
    }
    this.offset += n - left;
    return n - left;
  }

  async close(): Promise<void> {
    this.chunk = EMPTY;
    if (this.eof) return;
    this.eof = true;
    await this.it.return?.();
  }
}

/** Bytes of a NUL-terminated header field. */
function field(block: Buffer, off: number, len: number): Buffer {
  const f = block.subarray(off, off + len);
  const nul = f.indexOf(0);
  return nul < 0 ? f : f.subarray(0, nul);
}

/**
 * A numeric header field: octal (leading spaces, then digits, then only spaces/NULs; all blank reads as 0,
 * as v7 and GNU writers leave unused fields blank) or GNU base-256 (first byte 0x80, big-endian).
 */
function parseNumeric(
  block: Buffer,
  off: number,
  len: number,
  name: string,
  member: string,
  at: number,
): number {
  const b0 = block[off]!;
  if (b0 & 0x80) {
    if (b0 & 0x40) throw memberError('E_BAD_ARCHIVE', member, `negative ${name} field`, at);
    let v = b0 & 0x3f;
    for (let i = off + 1; i < off + len; i++) {
      v = v * 256 + block[i]!;
      if (v > Number.MAX_SAFE_INTEGER)
        throw memberError('E_BAD_ARCHIVE', member, `${name} field too large`, at);
    }
    return v;
  }
  const end = off + len;
  let i = off;
  while (i < end && block[i] === 0x20) i++;
  let v = 0;
  for (; i < end; i++) {
    const c = block[i]!;
    if (c < 0x30 || c > 0x37) break;
    v = v * 8 + (c - 0x30);
  }
  for (; i < end; i++) {
    const c = block[i]!;
    if (c !== 0 && c !== 0x20) throw memberError('E_BAD_ARCHIVE', member, `malformed ${name} field`, at);
  }
  return v;
}

function parseDecimal(value: Buffer, key: string, member: string, at: number): number {
  // 15 digits keep every value below 2^53; no real size, uid or gid needs more.
  if (value.length === 0 || value.length > 15) {
    throw memberError(
      'E_BAD_ARCHIVE',
      member,
      `pax ${key} "${displayName(value)}" is not a valid number`,
      at,
    );
  }
  let v = 0;
  for (const c of value) {
    if (c < 0x30 || c > 0x39) {
      throw memberError(
        'E_BAD_ARCHIVE',
        member,
        `pax ${key} "${displayName(value)}" is not a valid number`,
        at,
      );
    }
    v = v * 10 + (c - 0x30);
  }
  return v;
}

/** Sum of the header with the checksum field read as spaces, both as unsigned and as signed bytes. */
function checksums(block: Buffer): { unsigned: number; signed: number } {
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = block[i]!;
    unsigned += b;
    if (b >= 0x80) signed += b - 256;
    else signed += b;
  }
  for (let i = 148; i < 156; i++) {
    const b = block[i]!;
    unsigned += 0x20 - b;
    signed += 0x20 - (b >= 0x80 ? b - 256 : b);
  }
  return { unsigned, signed };
}

/** The stored checksum, or -1 when the field is not octal (then it matches nothing). */
function parseChecksum(block: Buffer): number {
  try {
    return parseNumeric(block, 148, 8, 'checksum', '', 0);
  } catch {
    return -1;
  }
}

function isZeroBlock(block: Buffer): boolean {
  for (let i = 0; i < block.length; i++) if (block[i] !== 0) return false;
  return true;
}

function decodeBase64(value: Buffer): Buffer | undefined {
  const s = value.toString('latin1');
  // Buffer.from(s, 'base64') skips junk silently; only accept what a base64 encoder can produce.
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s)) return undefined;
  return Buffer.from(s, 'base64');
}

/** libarchive %-encodes xattr names byte by byte (RFC 3986 style), so decode to bytes, then UTF-8. */
function percentDecode(s: string): Buffer | undefined {
  const raw = Buffer.from(s, 'utf8');
  if (!raw.includes(0x25)) return raw;
  const out = Buffer.allocUnsafe(raw.length);
  let n = 0;
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i]!;
    if (c !== 0x25) {
      out[n++] = c;
      continue;
    }
    const hex = raw.toString('latin1', i + 1, i + 3);
    if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return undefined;
    out[n++] = Number.parseInt(hex, 16);
    i += 2;
  }
  return out.subarray(0, n);
}

/** Metadata gathered from pax / GNU long-name headers, waiting for the member it describes. */
class Meta {
  path: Buffer | undefined;
  linkpath: Buffer | undefined;
  size: number | undefined;
  uid: number | undefined;
  gid: number | undefined;
  longName: Buffer | undefined;
  longLink: Buffer | undefined;
  xattrs = new Map<string, Buffer>();
  /** Metadata bytes read so far; several headers in a row must not add up past maxPaxBytes. */
  bytes = 0;
  /** The last metadata header, to name in errors when no member follows. */
  header = '';
  used = false;
}

function parsePax(body: Buffer, meta: Meta, global: boolean, member: string, at: number): void {
  const bad = (problem: string) => memberError('E_BAD_ARCHIVE', member, problem, at);
  let i = 0;
  while (i < body.length) {
    // Some writers pad the record area with NULs; nothing may follow them.
    if (body[i] === 0) {
      if (!isZeroBlock(body.subarray(i))) throw bad('malformed pax record (data after NUL padding)');
      break;
    }
    let len = 0;
    let j = i;
    // At most 8 digits: a record cannot be longer than the (maxPaxBytes-capped) header holding it.
    while (j < body.length && body[j]! >= 0x30 && body[j]! <= 0x39 && j - i < 8) {
      len = len * 10 + (body[j]! - 0x30);
      j++;
    }
    if (j === i || body[j] !== 0x20) throw bad(`malformed pax record at byte ${i} (bad length)`);
    const end = i + len;
    if (end > body.length || end <= j + 2 || body[end - 1] !== 0x0a) {
      throw bad(`malformed pax record at byte ${i} (length ${len} does not end at a newline)`);
    }
    const record = body.subarray(j + 1, end - 1);
    const eq = record.indexOf(0x3d);
    if (eq <= 0) throw bad(`malformed pax record at byte ${i} (no key)`);
    const keyBytes = record.subarray(0, eq);
    const key = decodeUtf8(keyBytes);
    if (key === undefined) {
      throw memberError('E_BAD_NAME', member, `pax key "${displayName(keyBytes)}" is not valid UTF-8`, at);
    }
    applyPaxRecord(key, record.subarray(eq + 1), meta, global, member, at);
    i = end;
  }
}

function applyPaxRecord(
  key: string,
  value: Buffer,
  meta: Meta,
  global: boolean,
  member: string,
  at: number,
): void {
  if (key.startsWith('SCHILY.xattr.')) {
    setXattr(meta, key.slice(13), Buffer.from(value), member, at);
    return;
  }
  if (key.startsWith('LIBARCHIVE.xattr.')) {
    const nameBytes = percentDecode(key.slice(17));
    const name = nameBytes === undefined ? undefined : decodeUtf8(nameBytes);
    if (name === undefined) {
      throw memberError('E_BAD_NAME', member, `pax key "${key}" has a malformed xattr name`, at);
    }
    const v = decodeBase64(value);
    if (v === undefined) throw memberError('E_BAD_ARCHIVE', member, `pax ${key} is not valid base64`, at);
    setXattr(meta, name, v, member, at);
    return;
  }
  if (key.startsWith('GNU.sparse.')) {
    throw memberError('E_BAD_ARCHIVE', member, `sparse files are not supported (pax ${key})`, at);
  }
  switch (key) {
    case 'path':
    case 'linkpath':
    case 'size':
      if (global) {
        throw memberError('E_BAD_ARCHIVE', member, `pax global header sets "${key}" for every member`, at);
      }
      // An empty value removes the override (POSIX: the header field applies again).
      if (key === 'size') meta.size = value.length === 0 ? undefined : parseDecimal(value, key, member, at);
      else if (key === 'path') meta.path = value.length === 0 ? undefined : Buffer.from(value);
      else meta.linkpath = value.length === 0 ? undefined : Buffer.from(value);
      return;
    case 'uid':
    case 'gid': {
      const v = value.length === 0 ? undefined : parseDecimal(value, key, member, at);
      if (v !== undefined && v > 0xffffffff) {
        throw memberError('E_BAD_ARCHIVE', member, `pax ${key} ${v} does not fit in 32 bits`, at);
      }
      if (key === 'uid') meta.uid = v;
      else meta.gid = v;
      return;
    }
    default:
    // mtime, atime, ctime, uname, gname, comment, charset, SCHILY.acl.* ...: nothing we store.
  }
}

function setXattr(meta: Meta, name: string, value: Buffer, member: string, at: number): void {
  if (name.length === 0 || name.includes('\0')) {
    throw memberError('E_BAD_NAME', member, `xattr name "${name.replaceAll('\0', '\\x00')}" is invalid`, at);
  }
  // libarchive writes each xattr twice (SCHILY and LIBARCHIVE); the later record wins, like any pax key.
  meta.xattrs.set(name, value);
}

interface Header {
  typeflag: number;
  name: Buffer;
  linkname: Buffer;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  devmajor: number;
  devminor: number;
  display: string;
}

function decodeHeader(block: Buffer, at: number): Header {
  let name = field(block, 0, 100);
  // "ustar\0" is POSIX (with a prefix field); "ustar  \0" is old GNU, which keeps times in that area.
  const ustar =
    block[257] === 0x75 &&
    block[258] === 0x73 &&
    block[259] === 0x74 &&
    block[260] === 0x61 &&
    block[261] === 0x72 &&
    block[262] === 0;
  if (ustar && block[345] !== 0) {
    // star's xstar variant ends the block with "tar\0" and shortens the prefix to 131 bytes.
    const xstar = block[508] === 0x74 && block[509] === 0x61 && block[510] === 0x72 && block[511] === 0;
    const prefix = field(block, 345, xstar ? 131 : 155);
    name = Buffer.concat([prefix, Buffer.from('/'), name]);
  }
  const display = displayName(name);
  const typeflag = block[156]!;
  // Only device members carry numbers here; GNU writers leave the fields of other members unset.
  const device = typeflag === 0x33 || typeflag === 0x34;
  return {
    typeflag,
    name,
    linkname: field(block, 157, 100),
    mode: parseNumeric(block, 100, 8, 'mode', display, at) & 0o7777,
    uid: parseNumeric(block, 108, 8, 'uid', display, at),
    gid: parseNumeric(block, 116, 8, 'gid', display, at),
    size: parseNumeric(block, 124, 12, 'size', display, at),
    devmajor: device ? parseNumeric(block, 329, 8, 'devmajor', display, at) : 0,
    devminor: device ? parseNumeric(block, 337, 8, 'devminor', display, at) : 0,
    display,
  };
}

function typeflagText(t: number): string {
  const c = String.fromCharCode(t);
  const shown = t >= 0x21 && t <= 0x7e ? `'${c}'` : `\\x${t.toString(16).padStart(2, '0')}`;
  const what = TYPE_NAMES[c];
  return what ? `${shown} (${what})` : shown;
}

function decodeName(raw: Buffer, member: string, what: string, at: number): string {
  if (raw.includes(0)) throw memberError('E_BAD_NAME', member, `${what} contains a NUL byte`, at);
  const s = decodeUtf8(raw);
  if (s === undefined) throw memberError('E_BAD_NAME', member, `${what} is not valid UTF-8`, at);
  return s;
}

function buildEntry(h: Header, meta: Meta, globals: Meta, limits: TarLimits, at: number): TarEntry {
  const rawPath = meta.path ?? meta.longName ?? h.name;
  const member = rawPath === h.name ? h.display : displayName(rawPath);
  const t = h.typeflag;
  let type: TarEntryType;
  if (t === 0x30 || t === 0 || t === 0x37) {
    // v7 and BSD tar mark directories only by the trailing slash; GNU tar extracts these as directories.
    type = rawPath[rawPath.length - 1] === 0x2f ? 'dir' : 'file';
  } else if (t === 0x31) type = 'hardlink';
  else if (t === 0x32) type = 'symlink';
  else if (t === 0x33) type = 'chardev';
  else if (t === 0x34) type = 'blockdev';
  else if (t === 0x35) type = 'dir';
  else if (t === 0x36) type = 'fifo';
  else throw memberError('E_BAD_ARCHIVE', member, `unsupported typeflag ${typeflagText(t)}`, at);

  const path = normalizeMemberPath(decodeName(rawPath, member, 'name', at), member, limits, 'name');
  if (path === '.' && type !== 'dir') {
    throw memberError('E_UNSAFE_PATH', member, `the archive root must be a directory, not a ${type}`, at);
  }
  const size = meta.size ?? h.size;
  if (size !== 0 && type !== 'file') {
    throw memberError('E_BAD_ARCHIVE', member, `a ${type} member has a body of ${size} bytes`, at);
  }

  let linkname = '';
  if (type === 'symlink' || type === 'hardlink') {
    const rawLink = meta.linkpath ?? meta.longLink ?? h.linkname;
    if (type === 'symlink') {
      linkname = decodeName(rawLink, member, 'symlink target', at);
      if (linkname === '') throw memberError('E_BAD_NAME', member, 'symlink target is empty', at);
      if (rawLink.length > limits.maxPathBytes) {
        throw memberError(
          'E_LIMIT',
          member,
          `symlink target is longer than ${limits.maxPathBytes} bytes`,
          at,
        );
      }
    } else {
      const target = decodeName(rawLink, member, 'hardlink target', at);
      linkname = normalizeMemberPath(target, member, limits, 'hardlink target');
      if (linkname === '.') throw memberError('E_UNSAFE_PATH', member, 'hardlink to the archive root', at);
    }
  }

  const xattrs: TarXattr[] = [];
  if (globals.xattrs.size > 0 || meta.xattrs.size > 0) {
    const merged = new Map(globals.xattrs);
    for (const [name, value] of meta.xattrs) merged.set(name, value);
    for (const [name, value] of merged) xattrs.push({ name, value });
  }

  return {
    path,
    type,
    mode: h.mode,
    uid: meta.uid ?? globals.uid ?? h.uid,
    gid: meta.gid ?? globals.gid ?? h.gid,
    size: type === 'file' ? size : 0,
    linkname,
    xattrs,
    devmajor: h.devmajor,
    devminor: h.devminor,
  };
}

/** The body of the current member; reading it after asking for the next member is a caller bug. */
class Body implements AsyncIterable<Buffer> {
  stale = false;

  constructor(
    private readonly input: Input,
    public remaining: number,
    private readonly member: string,
    private readonly size: number,
  ) {}

  async *[Symbol.asyncIterator](): AsyncGenerator<Buffer> {
    while (this.remaining > 0) {
      if (this.stale) {
        throw memberError('E_INTERNAL', this.member, 'body read after moving on to the next member');
      }
      const chunk = await this.input.readSome(this.remaining);
      if (chunk === null) throw truncatedBody(this.member, this.size, this.size - this.remaining);
      this.remaining -= chunk.length;
      yield chunk;
    }
  }
}

function truncatedBody(member: string, size: number, got: number): RegistryError {
  return memberError(
    'E_BAD_ARCHIVE',
    member,
    `archive is truncated (EOF after ${got} of ${size} body bytes)`,
  );
}

function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

/**
 * Reads a tar stream member by member. Each `body` streams that member's bytes; whatever the consumer does
 * not read is skipped when it asks for the next member.
 */
export async function* readTar(
  source: AsyncIterable<Buffer | Uint8Array>,
  limits: Partial<TarLimits> = {},
): AsyncGenerator<{ entry: TarEntry; body: AsyncIterable<Buffer> }> {
  const lim: TarLimits = { ...DEFAULT_TAR_LIMITS, ...limits };
  const input = new Input(source);
  const globals = new Meta();
  let meta = new Meta();
  let entries = 0;
  let previous = '';
  let body: Body | undefined;
  try {
    for (;;) {
      const at = input.offset;
      const block = await input.read(BLOCK);
      if (block.length === 0 || isZeroBlock(block)) {
        if (meta.used) {
          throw memberError('E_BAD_ARCHIVE', meta.header, 'extended header is not followed by a member', at);
        }
        if (block.length === 0) {
          // Like GNU tar, a clean EOF at a header boundary ends the archive.
          return;
        }
        const next = await input.read(BLOCK);
        if (!isZeroBlock(next)) {
          const after = previous === '' ? 'at the start of the archive' : `after member "${previous}"`;
          throw new RegistryError(
            'E_BAD_ARCHIVE',
            `tar archive has a lone zero block ${after} (offset ${at})`,
            {
              path: previous,
              offset: at,
            },
          );
        }
        return;
      }
      if (block.length < BLOCK) throw truncatedHeader(block, at, previous);

      const sums = checksums(block);
      const stored = parseChecksum(block);
      if (stored !== sums.unsigned && stored !== sums.signed) {
        const member = displayName(field(block, 0, 100));
        if (at === 0) {
          const compressed = (block[0] === 0x1f && block[1] === 0x8b) || block.readUInt32LE(0) === 0xfd2fb528;
          throw new RegistryError(
            'E_BAD_ARCHIVE',
            `tar member "${member}": not a tar archive (header checksum mismatch at offset 0)`,
            { path: member, offset: 0 },
            compressed
              ? 'the input looks gzip- or zstd-compressed; pass it through decompressStream()'
              : undefined,
          );
        }
        throw memberError('E_BAD_ARCHIVE', member, `header checksum mismatch at offset ${at}`, at);
      }

      const h = decodeHeader(block, at);
      const t = h.typeflag;
      // 'x' pax, 'g' pax global, 'L' GNU long name, 'K' GNU long link name.
      if (t === 0x78 || t === 0x67 || t === 0x4c || t === 0x4b) {
        const target = t === 0x67 ? globals : meta;
        if (target.bytes + h.size > lim.maxPaxBytes) {
          throw memberError(
            'E_LIMIT',
            h.display,
            `extended header of ${h.size} bytes exceeds the limit of ${lim.maxPaxBytes} bytes`,
            at,
          );
        }
        target.bytes += h.size;
        target.header = h.display;
        if (t !== 0x67) meta.used = true;
        const data = await input.read(h.size);
        if (data.length < h.size) throw truncatedBody(h.display, h.size, data.length);
        await skipPadding(input, h.size, h.display);
        if (t === 0x78 || t === 0x67) parsePax(data, target, t === 0x67, h.display, at);
        else {
          const nul = data.indexOf(0);
          const value = Buffer.from(nul < 0 ? data : data.subarray(0, nul));
          if (t === 0x4c) meta.longName = value;
          else meta.longLink = value;
        }
        continue;
      }

      const entry = buildEntry(h, meta, globals, lim, at);
      meta = new Meta();
      if (++entries > lim.maxEntries) {
        throw memberError('E_LIMIT', entry.path, `archive has more than ${lim.maxEntries} entries`, at);
      }
      previous = entry.path;
      body = new Body(input, entry.size, entry.path, entry.size);
      yield { entry, body };
      body.stale = true;
      const left = body.remaining;
      const skipped = await input.skip(left);
      if (skipped !== left) throw truncatedBody(entry.path, entry.size, entry.size - left + skipped);
      await skipPadding(input, entry.size, entry.path);
    }
  } finally {
    if (body) body.stale = true;
    await input.close();
  }
}

async function skipPadding(input: Input, size: number, member: string): Promise<void> {
  const pad = padding(size);
  if (pad > 0 && (await input.skip(pad)) !== pad) {
    throw memberError('E_BAD_ARCHIVE', member, 'archive is truncated (EOF in the padding after the body)');
  }
}

function truncatedHeader(partial: Buffer, at: number, previous: string): RegistryError {
  if (at === 0) {
    return new RegistryError('E_BAD_ARCHIVE', `not a tar archive (only ${partial.length} bytes)`, {
      offset: 0,
    });
  }
  const member = partial.length >= 100 && partial[0] !== 0 ? displayName(field(partial, 0, 100)) : previous;
  return memberError(
    'E_BAD_ARCHIVE',
    member,
    `archive is truncated (EOF after ${partial.length} bytes of the header at offset ${at})`,
    at,
  );
}
