/**
 * A deterministic tar writer: the bytes are a pure function of the entries added, so an export of the same
 * tree always hashes the same.
 *
 * Rules:
 *  - every member gets a POSIX ustar header ("ustar\0" "00"): mtime 0, uname and gname empty,
 *    devmajor/devminor 0; numeric fields are zero-padded octal ending in NUL (mode/uid/gid 7 digits,
 *    size/mtime 11 digits); the checksum is 6 octal digits, NUL, space, as GNU tar writes it;
 *  - paths are written normalised and relative (no './'), directories with a trailing '/', the root as './';
 *  - a pax 'x' header goes before a member only when ustar cannot carry it: a path that does not fit the
 *    100-byte name / 155-byte prefix split or is not ASCII, a link target over 100 bytes or not ASCII,
 *    uid/gid over 0o7777777, size over 0o77777777777, or any xattrs (as SCHILY.xattr.NAME=raw bytes);
 *    it is named PaxHeaders/<basename> (non-ASCII bytes as '_', cut to 100 bytes) with mode 0644,
 *    uid/gid 0, mtime 0, and its records are sorted bytewise by key; the ustar fields it overrides hold an
 *    ASCII stand-in (non-ASCII bytes as '_', cut to fit) or 0;
 *  - the archive ends with two zero blocks and is padded to a multiple of 10240 bytes, GNU tar's default
 *    record size (20 blocks).
 */
import { RegistryError } from '../errors.js';
import { DEFAULT_TAR_LIMITS, normalizeMemberPath, type TarXattr } from './reader.js';

export interface TarWriteEntry {
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'hardlink';
  /** Only mode & 0o7777 is written, so a full st_mode may be passed. */
  mode: number;
  uid: number;
  gid: number;
  size?: number;
  linkname?: string;
  xattrs?: TarXattr[];
}

const BLOCK = 512;
const RECORD = 10240;
const MAX_ID_OCTAL = 0o7777777;
const MAX_SIZE_OCTAL = 0o77777777777;
// Bodies up to this size are sent to the sink together with their header: one call instead of three.
const COALESCE_BYTES = 64 * 1024;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

function fail(code: 'E_BAD_ARCHIVE' | 'E_BAD_NAME', member: string, problem: string): RegistryError {
  return new RegistryError(code, `tar member "${member}": ${problem}`, { path: member });
}

function isAsciiBytes(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i]! >= 0x80) return false;
  return true;
}

/** An ASCII stand-in for a field that pax overrides: readers that ignore pax still get a sane name. */
function asciiStandIn(b: Buffer, max: number): Buffer {
  const out = Buffer.from(b.subarray(0, max));
  for (let i = 0; i < out.length; i++) if (out[i]! >= 0x80) out[i] = 0x5f;
  return out;
}

/** ustar's split: the rightmost '/' that leaves a prefix of at most 155 and a name of at most 100 bytes. */
function splitUstar(p: Buffer): { prefix: Buffer; name: Buffer } | undefined {
  if (p.length <= 100) return { prefix: Buffer.alloc(0), name: p };
  // p.length - 2: a directory's trailing '/' belongs to the name, which must not be empty.
  for (let i = Math.min(155, p.length - 2); i > 0; i--) {
    if (p[i] !== 0x2f) continue;
    if (p.length - i - 1 > 100) return undefined;
    return { prefix: p.subarray(0, i), name: p.subarray(i + 1) };
  }
  return undefined;
}

function writeOctal(b: Buffer, off: number, len: number, v: number): void {
  b.write(v.toString(8).padStart(len - 1, '0'), off, len - 1, 'latin1');
  b[off + len - 1] = 0;
}

interface HeaderFields {
  name: Buffer;
  prefix: Buffer;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  typeflag: string;
  linkname: Buffer;
}

function ustarHeader(f: HeaderFields): Buffer {
  const b = Buffer.alloc(BLOCK);
  f.name.copy(b, 0);
  writeOctal(b, 100, 8, f.mode);
  writeOctal(b, 108, 8, f.uid);
  writeOctal(b, 116, 8, f.gid);
  writeOctal(b, 124, 12, f.size);
  writeOctal(b, 136, 12, 0);
  b.fill(0x20, 148, 156);
  b.write(f.typeflag, 156, 1, 'latin1');
  f.linkname.copy(b, 157);
  b.write('ustar\x0000', 257, 8, 'latin1');
  writeOctal(b, 329, 8, 0);
  writeOctal(b, 337, 8, 0);
  f.prefix.copy(b, 345);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += b[i]!;
  b.write(sum.toString(8).padStart(6, '0'), 148, 6, 'latin1');
  b[154] = 0;
  b[155] = 0x20;
  return b;
}

/** One pax record, "LEN KEY=VALUE\n", where LEN counts its own digits too. */
function paxRecord(key: Buffer, value: Buffer): Buffer {
  const rest = key.length + value.length + 3;
  let digits = String(rest).length;
  while (String(rest + digits).length !== digits) digits++;
  const len = rest + digits;
  return Buffer.concat([Buffer.from(`${len} `, 'latin1'), key, Buffer.from('='), value, Buffer.from('\n')]);
}

function zeroPad(n: number): number {
  return (BLOCK - (n % BLOCK)) % BLOCK;
}

function checkId(v: number, what: string, member: string): void {
  if (!Number.isSafeInteger(v) || v < 0 || v > 0xffffffff) {
    throw fail('E_BAD_ARCHIVE', member, `${what} ${v} is not a 32-bit unsigned integer`);
  }
}

function checkUnicode(s: string, what: string, member: string): void {
  if (LONE_SURROGATE.test(s)) throw fail('E_BAD_NAME', member, `${what} is not valid Unicode`);
}

function toBuffer(chunk: Buffer | Uint8Array): Buffer {
  return Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
}

export class TarWriter {
  private written = 0;
  private busy = false;
  private state: 'open' | 'finished' | 'failed' = 'open';

  constructor(private readonly sink: (chunk: Buffer) => void | Promise<void>) {}

  /** Writes one member; a 'file' body must be exactly `size` bytes (default: the Buffer's length). */
  async add(entry: TarWriteEntry, body?: AsyncIterable<Buffer> | Buffer): Promise<void> {
    this.enter();
    const before = this.written;
    try {
      await this.addMember(entry, body);
    } catch (e) {
      // A rejected entry leaves the archive as it was, but a half-written member makes it unusable.
      if (this.written !== before) this.state = 'failed';
      throw e;
    } finally {
      this.busy = false;
    }
  }

  /** Ends the archive: two zero blocks, then zeros up to the next 10240-byte record boundary. */
  async finish(): Promise<void> {
    this.enter();
    this.state = 'finished';
    const end = this.written + 2 * BLOCK;
    const total = Math.ceil(end / RECORD) * RECORD;
    try {
      await this.emit(Buffer.alloc(total - this.written));
    } finally {
      this.busy = false;
    }
  }

  private enter(): void {
    if (this.state !== 'open') {
      throw new RegistryError('E_INTERNAL', `tar writer has ${this.state}; nothing more can be written`);
    }
    if (this.busy) {
      throw new RegistryError('E_INTERNAL', 'tar writer: called again before the last add() finished');
    }
    this.busy = true;
  }

  private async emit(chunk: Buffer): Promise<void> {
    if (chunk.length === 0) return;
    this.written += chunk.length;
    await this.sink(chunk);
  }

  private async addMember(
    entry: TarWriteEntry,
    body: AsyncIterable<Buffer> | Buffer | undefined,
  ): Promise<void> {
    const member = entry.path;
    checkUnicode(entry.path, 'path', member);
    const path = normalizeMemberPath(entry.path, member, DEFAULT_TAR_LIMITS);
    const { type } = entry;
    if (path === '.' && type !== 'dir') throw fail('E_BAD_ARCHIVE', member, `the root cannot be a ${type}`);
    if (!Number.isInteger(entry.mode) || entry.mode < 0) {
      throw fail('E_BAD_ARCHIVE', member, `mode ${entry.mode} is not a non-negative integer`);
    }
    checkId(entry.uid, 'uid', member);
    checkId(entry.gid, 'gid', member);

    let size = 0;
    if (type === 'file') {
      size = entry.size ?? (body === undefined ? 0 : Buffer.isBuffer(body) ? body.length : -1);
      if (!Number.isSafeInteger(size) || size < 0) {
        throw fail('E_BAD_ARCHIVE', member, 'a streamed file body needs a non-negative integer size');
      }
      if (size > 0 && body === undefined) throw fail('E_BAD_ARCHIVE', member, `no body for ${size} bytes`);
    } else {
      if (body !== undefined) throw fail('E_BAD_ARCHIVE', member, `a ${type} cannot have a body`);
      if (entry.size !== undefined && entry.size !== 0) {
        throw fail('E_BAD_ARCHIVE', member, `a ${type} cannot have size ${entry.size}`);
      }
    }

    let link = '';
    if (type === 'symlink') {
      link = entry.linkname ?? '';
      if (link === '' || link.includes('\0')) {
        throw fail('E_BAD_NAME', member, 'symlink target is empty or contains NUL');
      }
      checkUnicode(link, 'symlink target', member);
    } else if (type === 'hardlink') {
      checkUnicode(entry.linkname ?? '', 'hardlink target', member);
      link = normalizeMemberPath(entry.linkname ?? '', member, DEFAULT_TAR_LIMITS, 'hardlink target');
    } else if (entry.linkname) {
      throw fail('E_BAD_ARCHIVE', member, `a ${type} cannot have a link target`);
    }

    const pathBytes = Buffer.from(path === '.' ? './' : type === 'dir' ? `${path}/` : path, 'utf8');
    const linkBytes = Buffer.from(link, 'utf8');
    const records: [Buffer, Buffer][] = [];
    let split = isAsciiBytes(pathBytes) ? splitUstar(pathBytes) : undefined;
    if (!split) {
      records.push([Buffer.from('path'), Buffer.from(path, 'utf8')]);
      const standIn = asciiStandIn(pathBytes, pathBytes.length);
      split = splitUstar(standIn) ?? { prefix: Buffer.alloc(0), name: standIn.subarray(0, 100) };
    }
    let linkField: Buffer = linkBytes;
    if (linkBytes.length > 100 || !isAsciiBytes(linkBytes)) {
      records.push([Buffer.from('linkpath'), linkBytes]);
      linkField = asciiStandIn(linkBytes, 100);
    }
    let uid = entry.uid;
    let gid = entry.gid;
    if (uid > MAX_ID_OCTAL) {
      records.push([Buffer.from('uid'), Buffer.from(String(uid))]);
      uid = 0;
    }
    if (gid > MAX_ID_OCTAL) {
      records.push([Buffer.from('gid'), Buffer.from(String(gid))]);
      gid = 0;
    }
    let sizeField = size;
    if (size > MAX_SIZE_OCTAL) {
      records.push([Buffer.from('size'), Buffer.from(String(size))]);
      sizeField = 0;
    }
    const seen = new Set<string>();
    for (const x of entry.xattrs ?? []) {
      if (x.name === '' || x.name.includes('=') || x.name.includes('\0')) {
        throw fail('E_BAD_NAME', member, `xattr name "${x.name}" cannot be written (empty, '=' or NUL)`);
      }
      checkUnicode(x.name, 'xattr name', member);
      if (seen.has(x.name)) throw fail('E_BAD_NAME', member, `xattr "${x.name}" given twice`);
      seen.add(x.name);
      records.push([Buffer.from(`SCHILY.xattr.${x.name}`, 'utf8'), toBuffer(x.value)]);
    }

    const parts: Buffer[] = [];
    if (records.length > 0) {
      records.sort((a, b) => Buffer.compare(a[0], b[0]));
      const pax = Buffer.concat(records.map(([k, v]) => paxRecord(k, v)));
      const base = path === '.' ? '.' : path.slice(path.lastIndexOf('/') + 1);
      const paxName = asciiStandIn(Buffer.from(`PaxHeaders/${base}`, 'utf8'), 100);
      parts.push(
        ustarHeader({
          name: paxName,
          prefix: Buffer.alloc(0),
          mode: 0o644,
          uid: 0,
          gid: 0,
          size: pax.length,
          typeflag: 'x',
          linkname: Buffer.alloc(0),
        }),
        pax,
        Buffer.alloc(zeroPad(pax.length)),
      );
    }
    const typeflag = { file: '0', hardlink: '1', symlink: '2', dir: '5' }[type];
    parts.push(
      ustarHeader({
        name: split.name,
        prefix: split.prefix,
        mode: entry.mode & 0o7777,
        uid,
        gid,
        size: sizeField,
        typeflag,
        linkname: linkField,
      }),
    );

    if (type !== 'file' || size === 0) {
      await this.emit(Buffer.concat(parts));
      return;
    }
    if (Buffer.isBuffer(body) && body.length <= COALESCE_BYTES) {
      if (body.length !== size) throw this.sizeMismatch(member, size, body.length);
      parts.push(body, Buffer.alloc(zeroPad(size)));
      await this.emit(Buffer.concat(parts));
      return;
    }
    await this.emit(Buffer.concat(parts));
    let got = 0;
    for await (const raw of Buffer.isBuffer(body) ? [body] : (body as AsyncIterable<Buffer>)) {
      const chunk = toBuffer(raw);
      got += chunk.length;
      // Checked before writing, so an over-long body never reaches the sink.
      if (got > size) throw this.sizeMismatch(member, size, got);
      await this.emit(chunk);
    }
    if (got !== size) throw this.sizeMismatch(member, size, got);
    await this.emit(Buffer.alloc(zeroPad(size)));
  }

  private sizeMismatch(member: string, size: number, got: number): RegistryError {
    return fail(
      'E_BAD_ARCHIVE',
      member,
      `body is ${got > size ? 'longer' : 'shorter'} than its size ${size}`,
    );
  }
}
