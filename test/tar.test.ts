import { execFileSync, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ErrorCode, isRegistryError } from '../src/errors.js';
import { compressZstd, decompressStream, detectCompression } from '../src/tar/compression.js';
import { readTar, type TarEntry, type TarLimits } from '../src/tar/reader.js';
import { type TarWriteEntry, TarWriter } from '../src/tar/writer.js';

let base = '';

beforeAll(async () => {
  if (spawnSync('setfattr', ['--version']).error && process.getuid?.() === 0) {
    execFileSync('apt-get', ['install', '-y', 'attr'], { stdio: 'ignore' });
  }
  base = await fs.mkdtemp(path.join(os.tmpdir(), 'tar-test-'));
});

afterAll(async () => {
  if (base) await fs.rm(base, { recursive: true, force: true });
});

async function tempDir(): Promise<string> {
  return fs.mkdtemp(path.join(base, 'd-'));
}

function run(cmd: string, args: string[], cwd?: string): string {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  return r.stderr;
}

/** `buf` in `size`-byte chunks, optionally starting with a tiny one so sniffing has to span chunks. */
async function* chunksOf(buf: Buffer, size = 4096, first = size): AsyncGenerator<Buffer> {
  yield buf.subarray(0, first);
  for (let i = first; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function collect(source: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of source) parts.push(c);
  return Buffer.concat(parts);
}

interface Member {
  entry: TarEntry;
  data: Buffer;
}

async function readAll(source: AsyncIterable<Buffer>, limits?: Partial<TarLimits>): Promise<Member[]> {
  const out: Member[] = [];
  for await (const { entry, body } of readTar(source, limits)) out.push({ entry, data: await collect(body) });
  return out;
}

/** Entries with body digests: vitest's deep equality walks Buffers byte by byte, far too slowly. */
function summary(members: Member[]): (TarEntry & { sha: string })[] {
  return members.map((m) => ({ ...m.entry, sha: sha(m.data) }));
}

function byPath(members: Member[]): Map<string, Member> {
  return new Map(members.map((m) => [m.entry.path, m]));
}

async function expectTarError(p: Promise<unknown>, code: ErrorCode, ...fragments: string[]): Promise<void> {
  let caught: unknown;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  expect(caught, 'expected an error').toBeDefined();
  if (!isRegistryError(caught, code)) throw caught;
  for (const f of fragments) expect(caught.message).toContain(f);
}

function xattr(members: Map<string, Member>, p: string, name: string): Buffer | undefined {
  return members.get(p)?.entry.xattrs.find((x) => x.name === name)?.value;
}

// ---- hand-made archives ----

interface HeaderSpec {
  name: string | Buffer;
  type?: string;
  size?: number;
  sizeField?: Buffer;
  mode?: number;
  uid?: number;
  linkname?: string | Buffer;
  prefix?: string;
  format?: 'ustar' | 'gnu' | 'v7';
  checksum?: 'unsigned' | 'signed' | 'bad';
}

const octal = (n: number, width: number) => n.toString(8).padStart(width, '0');

function rawHeader(s: HeaderSpec): Buffer {
  const b = Buffer.alloc(512);
  Buffer.from(s.name).copy(b, 0, 0, 100);
  b.write(`${octal(s.mode ?? 0o644, 7)}\0`, 100, 'latin1');
  b.write(`${octal(s.uid ?? 0, 7)}\0`, 108, 'latin1');
  b.write(`${octal(0, 7)}\0`, 116, 'latin1');
  if (s.sizeField) s.sizeField.copy(b, 124);
  else b.write(`${octal(s.size ?? 0, 11)}\0`, 124, 'latin1');
  b.write(`${octal(0, 11)}\0`, 136, 'latin1');
  b.write(s.type ?? '0', 156, 'latin1');
  if (s.linkname !== undefined) Buffer.from(s.linkname).copy(b, 157, 0, 100);
  const format = s.format ?? 'ustar';
  if (format === 'ustar') b.write('ustar\x0000', 257, 'latin1');
  if (format === 'gnu') b.write('ustar  \0', 257, 'latin1');
  if (s.prefix) b.write(s.prefix, 345, 'utf8');
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of b) sum += s.checksum === 'signed' && x >= 0x80 ? x - 256 : x;
  if (s.checksum === 'bad') sum += 1;
  b.write(`${octal(sum, 6)}\0 `, 148, 'latin1');
  return b;
}

function member(spec: HeaderSpec, body: Buffer | string = ''): Buffer {
  const data = Buffer.from(body);
  return Buffer.concat([
    rawHeader({ size: data.length, ...spec }),
    data,
    Buffer.alloc((512 - (data.length % 512)) % 512),
  ]);
}

function paxBody(records: [string, string | Buffer][]): Buffer {
  return Buffer.concat(
    records.map(([k, v]) => {
      const rest = Buffer.concat([Buffer.from(` ${k}=`), Buffer.from(v), Buffer.from('\n')]);
      let len = rest.length + 1;
      while (String(len).length + rest.length !== len) len = String(len).length + rest.length;
      return Buffer.concat([Buffer.from(String(len)), rest]);
    }),
  );
}

function tarOf(...members: Buffer[]): Buffer {
  return Buffer.concat([...members, Buffer.alloc(1024)]);
}

// ---- archives made by GNU tar ----

describe('reading archives made by GNU tar', () => {
  it('posix format: xattrs with binary values, setuid/sticky modes, hardlinks, symlinks', async () => {
    const dir = await tempDir();
    const root = path.join(dir, 'root');
    await fs.mkdir(path.join(root, 'd'), { recursive: true });
    await fs.mkdir(path.join(root, 'sticky'));
    await fs.writeFile(path.join(root, 'f'), 'hello');
    await fs.writeFile(path.join(root, 'd', 'setuid'), '#!/bin/sh\n');
    await fs.chmod(path.join(root, 'd', 'setuid'), 0o4755);
    await fs.chmod(path.join(root, 'sticky'), 0o1777);
    await fs.link(path.join(root, 'f'), path.join(root, 'hl'));
    await fs.symlink('../outside/target', path.join(root, 'rel-link'));
    await fs.symlink('/etc/passwd', path.join(root, 'abs-link'));
    run('setfattr', ['-n', 'user.bin', '-v', '0x00ff00', path.join(root, 'f')]);
    run('setfattr', ['-n', 'user.text', '-v', 'some text', path.join(root, 'd', 'setuid')]);
    const tarPath = path.join(dir, 'posix.tar');
    run('tar', [
      '--format=posix',
      '--xattrs',
      '--xattrs-include=*',
      '--sort=name',
      '-C',
      root,
      '-cf',
      tarPath,
      '.',
    ]);

    const members = await readAll(createReadStream(tarPath));
    const m = byPath(members);
    expect([...m.keys()].sort()).toEqual(
      ['.', 'abs-link', 'd', 'd/setuid', 'f', 'hl', 'rel-link', 'sticky'].sort(),
    );
    expect(m.get('.')?.entry.type).toBe('dir');
    expect(m.get('f')?.entry).toMatchObject({
      type: 'file',
      size: 5,
      uid: 0,
      gid: 0,
      mode: 0o644,
      linkname: '',
    });
    expect(m.get('f')?.data.toString()).toBe('hello');
    expect(xattr(m, 'f', 'user.bin')).toEqual(Buffer.from([0x00, 0xff, 0x00]));
    expect(xattr(m, 'd/setuid', 'user.text')?.toString()).toBe('some text');
    expect(m.get('d/setuid')?.entry.mode).toBe(0o4755);
    expect(m.get('sticky')?.entry).toMatchObject({ type: 'dir', mode: 0o1777 });
    expect(m.get('hl')?.entry).toMatchObject({ type: 'hardlink', linkname: 'f', size: 0 });
    expect(m.get('rel-link')?.entry).toMatchObject({ type: 'symlink', linkname: '../outside/target' });
    expect(m.get('abs-link')?.entry).toMatchObject({ type: 'symlink', linkname: '/etc/passwd' });
  });

  it('gnu format: 300-character path, long symlink target, hardlink to the long path', async () => {
    const dir = await tempDir();
    const root = path.join(dir, 'root');
    const longDir = `${'a'.repeat(100)}/${'b'.repeat(100)}`;
    const longPath = `${longDir}/${'c'.repeat(98)}`;
    expect(longPath.length).toBe(300);
    const target = `${'x/'.repeat(75)}target`;
    await fs.mkdir(path.join(root, longDir), { recursive: true });
    await fs.writeFile(path.join(root, longPath), 'deep');
    await fs.symlink(target, path.join(root, 'link'));
    await fs.link(path.join(root, longPath), path.join(root, 'z-hardlink'));
    const tarPath = path.join(dir, 'gnu.tar');
    run('tar', ['--format=gnu', '--sort=name', '-C', root, '-cf', tarPath, '.']);
    const bytes = await fs.readFile(tarPath);
    expect(bytes.includes('././@LongLink')).toBe(true);

    const m = byPath(await readAll(chunksOf(bytes, 1000)));
    expect(m.get(longPath)?.data.toString()).toBe('deep');
    expect(m.get('link')?.entry).toMatchObject({ type: 'symlink', linkname: target });
    expect(m.get('z-hardlink')?.entry).toMatchObject({ type: 'hardlink', linkname: longPath });
  });

  it('ustar format: a path split into prefix and name', async () => {
    const dir = await tempDir();
    const root = path.join(dir, 'root');
    const rel = `${'p'.repeat(80)}/${'q'.repeat(60)}/file.txt`;
    await fs.mkdir(path.dirname(path.join(root, rel)), { recursive: true });
    await fs.writeFile(path.join(root, rel), 'split');
    const tarPath = path.join(dir, 'ustar.tar');
    run('tar', ['--format=ustar', '-C', root, '-cf', tarPath, rel]);
    const bytes = await fs.readFile(tarPath);
    // The prefix field (offset 345) holds the directory part, so the full path is nowhere contiguous.
    expect(bytes.subarray(345, 345 + 80).toString()).toBe('p'.repeat(80));
    expect(bytes.includes(rel)).toBe(false);
    const members = await readAll(chunksOf(bytes));
    expect(members.map((x) => x.entry.path)).toEqual([rel]);
    expect(members[0]?.data.toString()).toBe('split');
  });

  it('streams a 5 MB member in bounded chunks, and skips unread or half-read bodies', async () => {
    const dir = await tempDir();
    const root = path.join(dir, 'root');
    await fs.mkdir(root);
    const big = randomBytes(5 * 1024 * 1024 + 123);
    await fs.writeFile(path.join(root, 'big.bin'), big);
    await fs.writeFile(path.join(root, 'z-after'), 'after');
    const tarPath = path.join(dir, 'big.tar');
    run('tar', ['--format=posix', '--sort=name', '-C', root, '-cf', tarPath, 'big.bin', 'z-after']);

    const hash = createHash('sha256');
    let chunks = 0;
    let largest = 0;
    const seen: string[] = [];
    for await (const { entry, body } of readTar(createReadStream(tarPath, { highWaterMark: 64 * 1024 }))) {
      seen.push(entry.path);
      if (entry.path !== 'big.bin') continue;
      expect(entry.size).toBe(big.length);
      for await (const c of body) {
        hash.update(c);
        chunks++;
        largest = Math.max(largest, c.length);
      }
    }
    expect(seen).toEqual(['big.bin', 'z-after']);
    expect(hash.digest('hex')).toBe(createHash('sha256').update(big).digest('hex'));
    expect(chunks).toBeGreaterThan(50);
    expect(largest).toBeLessThanOrEqual(64 * 1024);

    for (const mode of ['skip', 'partial'] as const) {
      const after: string[] = [];
      for await (const { entry, body } of readTar(createReadStream(tarPath))) {
        if (entry.path === 'big.bin' && mode === 'partial') {
          for await (const _ of body) break;
        }
        if (entry.path === 'z-after') after.push((await collect(body)).toString());
      }
      expect(after).toEqual(['after']);
    }
  });

  it('reads gzip and zstd compressed archives through decompressStream', async () => {
    const dir = await tempDir();
    const root = path.join(dir, 'root');
    await fs.mkdir(path.join(root, 'sub'), { recursive: true });
    await fs.writeFile(path.join(root, 'sub', 'text'), 'compressible '.repeat(10_000));
    await fs.writeFile(path.join(root, 'random'), randomBytes(300_000));
    run('setfattr', ['-n', 'user.bin', '-v', '0x00ff00', path.join(root, 'random')]);
    const common = ['--format=posix', '--xattrs', '--xattrs-include=*', '--sort=name', '-C', root];
    run('tar', [...common, '-cf', path.join(dir, 't.tar'), '.']);
    run('tar', [...common, '-czf', path.join(dir, 't.tar.gz'), '.']);
    run('tar', [...common, '--zstd', '-cf', path.join(dir, 't.tar.zst'), '.']);

    const plain = await readAll(createReadStream(path.join(dir, 't.tar')));
    expect(plain.length).toBe(4);
    for (const [file, kind] of [
      ['t.tar', 'none'],
      ['t.tar.gz', 'gzip'],
      ['t.tar.zst', 'zstd'],
    ] as const) {
      const bytes = await fs.readFile(path.join(dir, file));
      expect(detectCompression(bytes.subarray(0, 8))).toBe(kind);
      const members = await readAll(decompressStream(chunksOf(bytes, 16 * 1024, 3)));
      expect(summary(members)).toEqual(summary(plain));
    }
    expect(xattr(byPath(plain), 'random', 'user.bin')).toEqual(Buffer.from([0, 0xff, 0]));
  });

  it('rejects corrupt and truncated compressed streams with E_BAD_ARCHIVE', async () => {
    const data = Buffer.concat([Buffer.from('some tar-ish data '.repeat(5000)), randomBytes(20_000)]);
    const gz = execFileSync('gzip', ['-c'], { input: data });
    const zst = execFileSync('zstd', ['-c', '-q'], { input: data });
    const flipped = Buffer.from(gz);
    flipped[Math.floor(gz.length / 2)]! ^= 0xff;
    await expectTarError(collect(decompressStream(chunksOf(flipped))), 'E_BAD_ARCHIVE', 'gzip');
    await expectTarError(
      collect(decompressStream(chunksOf(gz.subarray(0, gz.length - 10)))),
      'E_BAD_ARCHIVE',
    );
    await expectTarError(
      collect(decompressStream(chunksOf(zst.subarray(0, zst.length - 10)))),
      'E_BAD_ARCHIVE',
    );
    expect((await collect(decompressStream(chunksOf(gz, 1000, 1)))).equals(data)).toBe(true);
    expect((await collect(decompressStream(chunksOf(zst, 1000, 1)))).equals(data)).toBe(true);
    const zstCorrupt = Buffer.from(zst);
    zstCorrupt.fill(0x55, 20, 40);
    await expectTarError(collect(decompressStream(chunksOf(zstCorrupt))), 'E_BAD_ARCHIVE', 'zstd');
  });

  it('compressZstd output is decoded by the zstd CLI and does not depend on input chunking', async () => {
    const data = Buffer.concat([Buffer.from('abcdefgh'.repeat(200_000)), randomBytes(500_000)]);
    const a = await collect(compressZstd(chunksOf(data, 1000)));
    const b = await collect(compressZstd(chunksOf(data, 1 << 20)));
    expect(a.equals(b)).toBe(true);
    expect(a.length).toBeLessThan(data.length / 2);
    expect(execFileSync('zstd', ['-d', '-c', '-q'], { input: a, maxBuffer: 1 << 26 }).equals(data)).toBe(
      true,
    );
    const fast = await collect(compressZstd(chunksOf(data), 1));
    expect((await collect(decompressStream(chunksOf(fast)))).equals(data)).toBe(true);
  });
});

// ---- hostile and unusual input ----

describe('hostile archives', () => {
  const read = (bytes: Buffer, limits?: Partial<TarLimits>) => readAll(chunksOf(bytes, 700), limits);

  it('rejects parent-directory escapes and absolute paths with E_UNSAFE_PATH', async () => {
    await expectTarError(read(tarOf(member({ name: '../x' }, 'x'))), 'E_UNSAFE_PATH', '"../x"');
    await expectTarError(
      read(tarOf(member({ name: 'usr/../../etc/passwd' }))),
      'E_UNSAFE_PATH',
      'tar member "usr/../../etc/passwd"',
      'escapes the tree',
    );
    await expectTarError(
      read(tarOf(member({ name: '/etc/passwd' }))),
      'E_UNSAFE_PATH',
      '"/etc/passwd"',
      'absolute',
    );
    await expectTarError(
      read(tarOf(member({ name: 'ok', type: '1', linkname: '../../etc/shadow' }))),
      'E_UNSAFE_PATH',
      '"ok"',
      'hardlink target',
    );
    const pax = paxBody([['path', '/abs/via/pax']]);
    await expectTarError(
      read(tarOf(member({ name: 'PaxHeaders/x', type: 'x' }, pax), member({ name: 'x' }))),
      'E_UNSAFE_PATH',
      '"/abs/via/pax"',
    );
  });

  it('rejects names that are not UTF-8 or contain NUL with E_BAD_NAME', async () => {
    const name = Buffer.from([0x63, 0x61, 0x66, 0xe9]);
    await expectTarError(read(tarOf(member({ name }))), 'E_BAD_NAME', 'caf\\xe9', 'not valid UTF-8');
    const pax = paxBody([['path', Buffer.from('a\0b')]]);
    await expectTarError(
      read(tarOf(member({ name: 'PaxHeaders/a', type: 'x' }, pax), member({ name: 'placeholder' }))),
      'E_BAD_NAME',
      'a\\x00b',
      'NUL',
    );
  });

  it('rejects a truncated archive naming the member, whether or not its body is read', async () => {
    const whole = tarOf(member({ name: 'first' }, 'one'), member({ name: 'data.bin' }, randomBytes(2000)));
    const cut = whole.subarray(0, 1024 + 512 + 1000);
    await expectTarError(read(cut), 'E_BAD_ARCHIVE', '"data.bin"', 'truncated');
    const skipping = (async () => {
      for await (const _ of readTar(chunksOf(cut))) {
        // Bodies left unread: the reader must still notice the missing bytes while skipping.
      }
    })();
    await expectTarError(skipping, 'E_BAD_ARCHIVE', '"data.bin"', 'truncated');
    await expectTarError(read(whole.subarray(0, 512 + 512 + 300)), 'E_BAD_ARCHIVE', 'truncated');
  });

  it('rejects a bad header checksum and data that is not tar at all', async () => {
    await expectTarError(
      read(tarOf(member({ name: 'good' }), member({ name: 'tampered', checksum: 'bad' }))),
      'E_BAD_ARCHIVE',
      '"tampered"',
      'checksum',
    );
    await expectTarError(
      read(Buffer.from('hello world\n'.repeat(100))),
      'E_BAD_ARCHIVE',
      'not a tar archive',
    );
    await expectTarError(read(Buffer.from('short')), 'E_BAD_ARCHIVE', 'not a tar archive');
    await expectTarError(read(randomBytes(4096)), 'E_BAD_ARCHIVE');
  });

  it('rejects sparse members, in GNU and pax form, and other unsupported typeflags', async () => {
    await expectTarError(
      read(tarOf(member({ name: 'holes.img', type: 'S', format: 'gnu' }, 'x'))),
      'E_BAD_ARCHIVE',
      '"holes.img"',
      "'S'",
    );
    const pax = paxBody([
      ['GNU.sparse.major', '1'],
      ['GNU.sparse.minor', '0'],
    ]);
    await expectTarError(
      read(tarOf(member({ name: 'PaxHeaders/s', type: 'x' }, pax), member({ name: 's' }))),
      'E_BAD_ARCHIVE',
      'sparse',
    );
    await expectTarError(read(tarOf(member({ name: 'vol', type: 'V' }))), 'E_BAD_ARCHIVE', '"vol"', "'V'");
  });

  it('enforces the pax size, entry count, path and name limits with E_LIMIT', async () => {
    const pax = paxBody([['comment', 'y'.repeat(2000)]]);
    await expectTarError(
      read(tarOf(member({ name: 'PaxHeaders/big', type: 'x' }, pax), member({ name: 'big' })), {
        maxPaxBytes: 1024,
      }),
      'E_LIMIT',
      '"PaxHeaders/big"',
    );
    const three = tarOf(member({ name: 'a' }), member({ name: 'b' }), member({ name: 'c' }));
    expect((await read(three, { maxEntries: 3 })).length).toBe(3);
    await expectTarError(read(three, { maxEntries: 2 }), 'E_LIMIT', '"c"', 'more than 2');
    const longName = paxBody([['path', `dir/${'n'.repeat(256)}`]]);
    await expectTarError(
      read(tarOf(member({ name: 'PaxHeaders/n', type: 'x' }, longName), member({ name: 'n' }))),
      'E_LIMIT',
      '255',
    );
    await expectTarError(
      read(tarOf(member({ name: 'a/b/c/d' })), { maxPathBytes: 5 }),
      'E_LIMIT',
      '"a/b/c/d"',
    );
  });

  it('rejects ambiguous layouts other tar readers would parse differently', async () => {
    await expectTarError(
      read(tarOf(member({ name: 'link', type: '2', linkname: 't' }, 'hidden'))),
      'E_BAD_ARCHIVE',
      '"link"',
      'body',
    );
    const lone = Buffer.concat([member({ name: 'a' }), Buffer.alloc(512), member({ name: 'smuggled' })]);
    await expectTarError(read(lone), 'E_BAD_ARCHIVE', 'lone zero block');
    const globalPath = paxBody([['path', 'everything']]);
    await expectTarError(
      read(tarOf(member({ name: 'g', type: 'g' }, globalPath), member({ name: 'a' }))),
      'E_BAD_ARCHIVE',
      'global',
    );
    await expectTarError(
      read(member({ name: 'PaxHeaders/x', type: 'x' }, paxBody([['uid', '1']]))),
      'E_BAD_ARCHIVE',
    );
  });
});

describe('format corners', () => {
  it('accepts signed checksums, base-256 sizes, v7 headers and a missing end-of-archive marker', async () => {
    const body = Buffer.from('base-256 size');
    const sizeField = Buffer.alloc(12);
    sizeField[0] = 0x80;
    sizeField.writeUInt32BE(body.length, 8);
    const bytes = Buffer.concat([
      member({ name: 'café', checksum: 'signed' }, 'signed'),
      member({ name: 'b256', sizeField }, body),
      member({ name: 'olddir/', type: '\0', format: 'v7', mode: 0o40755 }),
      member({ name: 'oldfile', type: '\0', format: 'v7' }, 'v7'),
      member({ name: 'name', prefix: 'the/prefix' }, 'prefixed'),
    ]);
    const m = byPath(await readAll(chunksOf(bytes, 100)));
    expect(m.get('café')?.data.toString()).toBe('signed');
    expect(m.get('b256')?.data).toEqual(body);
    expect(m.get('olddir')?.entry).toMatchObject({ type: 'dir', mode: 0o755 });
    expect(m.get('oldfile')?.data.toString()).toBe('v7');
    expect(m.get('the/prefix/name')?.data.toString()).toBe('prefixed');
  });

  it('normalises paths, applies pax overrides, globals and libarchive xattrs', async () => {
    const pax = paxBody([
      ['path', './usr//lib/./libfoo.so'],
      ['uid', '3000000'],
      ['mtime', '1700000000.5'],
      ['SCHILY.xattr.user.raw', Buffer.from([0, 0xff, 0, 0x0a, 0x3d])],
      ['LIBARCHIVE.xattr.user.a%3Db', Buffer.from([1, 2, 3]).toString('base64')],
      ['SCHILY.xattr.user.a=b', 'ignored: = ends the key'],
    ]);
    const global = paxBody([
      ['comment', 'git archive puts the commit id here'],
      ['gid', '42'],
    ]);
    const bytes = tarOf(
      member({ name: './', type: '5' }),
      member({ name: 'pax_global_header', type: 'g' }, global),
      member({ name: 'PaxHeaders/libfoo.so', type: 'x' }, pax),
      member({ name: 'truncated-name' }, 'lib'),
      member({ name: 'dev/null', type: '3' }),
    );
    const members = await readAll(chunksOf(bytes, 64));
    expect(members.map((x) => x.entry.path)).toEqual(['.', 'usr/lib/libfoo.so', 'dev/null']);
    const lib = members[1]!.entry;
    expect(lib).toMatchObject({ uid: 3000000, gid: 42, size: 3 });
    expect(lib.xattrs).toEqual([
      { name: 'user.raw', value: Buffer.from([0, 0xff, 0, 0x0a, 0x3d]) },
      { name: 'user.a=b', value: Buffer.from([1, 2, 3]) },
      { name: 'user.a', value: Buffer.from('b=ignored: = ends the key') },
    ]);
    expect(members[2]!.entry).toMatchObject({ type: 'chardev', gid: 42, devmajor: 0, devminor: 0 });
  });

  it('refuses a body read after moving on to the next member', async () => {
    const it = readTar(chunksOf(tarOf(member({ name: 'a' }, 'aaa'), member({ name: 'b' }, 'bbb'))));
    const first = await it.next();
    await it.next();
    const stale = first.done ? undefined : first.value.body;
    await expectTarError(collect(stale!), 'E_INTERNAL', '"a"');
    await it.return(undefined);
  });
});

// ---- writer ----

interface Spec {
  entry: TarWriteEntry;
  body?: Buffer;
  streamed?: boolean;
}

const capability = Buffer.from('0100000200200000000000000000000000000000', 'hex');
const longDir = `usr/share/${'d'.repeat(120)}/${'e'.repeat(120)}`;
const deepFile = `${longDir}/${'f'.repeat(80)}.txt`;
const splitFile = `usr/share/${'s'.repeat(100)}/${'t'.repeat(60)}.txt`;
const linkTarget = `../../${'x'.repeat(150)}/libc.so.6`;

function roundTripSpecs(): Spec[] {
  const dir = (p: string, mode = 0o755): Spec => ({ entry: { path: p, type: 'dir', mode, uid: 0, gid: 0 } });
  return [
    dir('.'),
    dir('usr'),
    dir('usr/bin'),
    {
      entry: {
        path: 'usr/bin/ping',
        type: 'file',
        mode: 0o4755,
        uid: 0,
        gid: 0,
        xattrs: [
          { name: 'user.bin', value: Buffer.from([0x00, 0xff, 0x00]) },
          { name: 'user.cap', value: capability },
        ],
      },
      body: Buffer.from('ping body'),
    },
    {
      entry: {
        path: 'usr/bin/ping6',
        type: 'hardlink',
        mode: 0o4755,
        uid: 0,
        gid: 0,
        linkname: 'usr/bin/ping',
      },
    },
    dir('usr/lib'),
    {
      entry: { path: 'usr/lib/libc.so', type: 'symlink', mode: 0o777, uid: 0, gid: 0, linkname: linkTarget },
    },
    dir('usr/share'),
    dir(`usr/share/${'d'.repeat(120)}`),
    dir(longDir),
    { entry: { path: deepFile, type: 'file', mode: 0o644, uid: 0, gid: 0 }, body: Buffer.from('deep') },
    dir(`usr/share/${'s'.repeat(100)}`),
    { entry: { path: splitFile, type: 'file', mode: 0o644, uid: 0, gid: 0 }, body: Buffer.from('split') },
    {
      entry: { path: 'usr/share/ünïcødé.txt', type: 'file', mode: 0o600, uid: 3_000_000, gid: 1000 },
      body: Buffer.from('unicode'),
    },
    dir('tmp', 0o1777),
    {
      entry: { path: 'big.bin', type: 'file', mode: 0o644, uid: 0, gid: 0, size: 300_000 },
      body: Buffer.alloc(300_000, 7),
      streamed: true,
    },
    { entry: { path: 'empty', type: 'file', mode: 0o644, uid: 0, gid: 0 }, body: Buffer.alloc(0) },
  ];
}

async function writeArchive(specs: Spec[]): Promise<Buffer> {
  const parts: Buffer[] = [];
  const w = new TarWriter((c) => {
    parts.push(c);
  });
  for (const s of specs) {
    const body = s.body && s.streamed ? chunksOf(s.body, 10_000) : s.body;
    await w.add(s.entry, body);
  }
  await w.finish();
  return Buffer.concat(parts);
}

describe('TarWriter', () => {
  it('round-trips through readTar and GNU tar, binary xattrs included', async () => {
    const specs = roundTripSpecs();
    const bytes = await writeArchive(specs);
    expect(bytes.length % 10240).toBe(0);

    const members = await readAll(chunksOf(bytes, 5000));
    expect(members.map((m) => m.entry.path)).toEqual(specs.map((s) => s.entry.path));
    for (const [i, s] of specs.entries()) {
      const got = members[i]!;
      expect(got.entry).toEqual({
        path: s.entry.path,
        type: s.entry.type,
        mode: s.entry.mode,
        uid: s.entry.uid,
        gid: s.entry.gid,
        size: s.body?.length ?? 0,
        linkname: s.entry.linkname ?? '',
        xattrs: s.entry.xattrs ?? [],
        devmajor: 0,
        devminor: 0,
      });
      expect(sha(got.data)).toBe(sha(s.body ?? Buffer.alloc(0)));
    }

    const dir = await tempDir();
    const tarPath = path.join(dir, 'out.tar');
    await fs.writeFile(tarPath, bytes);
    const dest = path.join(dir, 'x');
    await fs.mkdir(dest);
    const warnings = run('tar', [
      '-x',
      '--xattrs',
      '--xattrs-include=*',
      '--numeric-owner',
      '-f',
      tarPath,
      '-C',
      dest,
    ]);
    expect(warnings).toBe('');
    const ping = path.join(dest, 'usr/bin/ping');
    expect(await fs.readFile(ping, 'utf8')).toBe('ping body');
    expect(execFileSync('getfattr', ['--absolute-names', '--only-values', '-n', 'user.bin', ping])).toEqual(
      Buffer.from([0, 0xff, 0]),
    );
    expect(execFileSync('getfattr', ['--absolute-names', '--only-values', '-n', 'user.cap', ping])).toEqual(
      capability,
    );
    expect((await fs.stat(path.join(dest, 'usr/bin/ping6'))).ino).toBe((await fs.stat(ping)).ino);
    expect(await fs.readlink(path.join(dest, 'usr/lib/libc.so'))).toBe(linkTarget);
    expect(await fs.readFile(path.join(dest, deepFile), 'utf8')).toBe('deep');
    expect(await fs.readFile(path.join(dest, splitFile), 'utf8')).toBe('split');
    expect((await fs.stat(path.join(dest, 'big.bin'))).size).toBe(300_000);
    expect((await fs.stat(path.join(dest, 'tmp'))).mode & 0o7777).toBe(0o1777);
    if (process.getuid?.() === 0) {
      expect((await fs.stat(ping)).mode & 0o7777).toBe(0o4755);
      const uni = await fs.stat(path.join(dest, 'usr/share/ünïcødé.txt'));
      expect([uni.uid, uni.gid, uni.mode & 0o7777]).toEqual([3_000_000, 1000, 0o600]);
    }
    // GNU tar lists it without a single warning on stderr.
    expect(run('tar', ['-tvf', tarPath])).toBe('');
  });

  it('writes byte-identical archives for the same entries, however bodies arrive', async () => {
    const a = await writeArchive(roundTripSpecs());
    const flipped = roundTripSpecs().map((s) =>
      s.body ? { ...s, entry: { ...s.entry, size: s.body.length }, streamed: !s.streamed } : s,
    );
    const b = await writeArchive(flipped);
    expect(a.equals(b)).toBe(true);
    expect(createHash('sha256').update(a).digest('hex')).toBe(
      createHash('sha256')
        .update(await writeArchive(roundTripSpecs()))
        .digest('hex'),
    );
    // mtime 0 and empty uname/gname: nothing about the writing machine leaks in.
    const header = a.subarray(0, 512);
    expect(header.subarray(136, 148).toString('latin1')).toBe('00000000000\0');
    expect(header.subarray(265, 329).every((x) => x === 0)).toBe(true);
    expect(header.subarray(0, 3).toString()).toBe('./\0');
  });

  it('rejects bodies that do not match their size, and unsafe paths', async () => {
    const sink = () => {};
    const file = { path: 'f', type: 'file', mode: 0o644, uid: 0, gid: 0 } as const;
    await expectTarError(
      new TarWriter(sink).add({ ...file, size: 10 }, Buffer.from('short')),
      'E_BAD_ARCHIVE',
      '"f"',
    );
    await expectTarError(
      new TarWriter(sink).add({ ...file, size: 3 }, chunksOf(Buffer.from('too long'), 2)),
      'E_BAD_ARCHIVE',
      'longer',
    );
    await expectTarError(new TarWriter(sink).add({ ...file, path: '../x' }), 'E_UNSAFE_PATH', '"../x"');
    await expectTarError(new TarWriter(sink).add({ ...file, path: '/abs' }), 'E_UNSAFE_PATH');
    // A rejected entry leaves the writer usable; a member cut short after its header does not.
    const w = new TarWriter(sink);
    await expectTarError(w.add({ ...file, size: 1 }, Buffer.from('ab')), 'E_BAD_ARCHIVE');
    await w.add(file);
    await expectTarError(
      w.add({ ...file, size: 5 }, chunksOf(Buffer.from('ab'))),
      'E_BAD_ARCHIVE',
      'shorter',
    );
    await expectTarError(w.add(file), 'E_INTERNAL', 'failed');
  });
});
