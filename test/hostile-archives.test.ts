/**
 * Hostile archives and trees, beyond test/tar.test.ts, test/import.test.ts and test/cli.test.ts
 * (which cover `..`, absolute paths, writes through symlinks, hard links outside, device nodes,
 * fifos in tarballs, truncation and names that are not UTF-8): enormous names and headers, 100,000
 * entries, gzip and zstd bombs, hostile directory trees, and commits whose dirtrees hold names a
 * checkout must not write. Refused or handled with a clear message; nothing written outside.
 */
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readlinkSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { checkoutCommit } from '../src/checkout/checkout.js';
import { isRegistryError } from '../src/errors.js';
import { importSource } from '../src/import/index.js';
import { encodeCommit, encodeDirMeta, encodeDirTree, objectPath, sha256 } from '../src/objects/index.js';
import { Repository } from '../src/repo/repository.js';
import { compressZstd } from '../src/tar/compression.js';
import { sysroot, sysrootOk } from './helpers/cli.js';
import { type RawMember, rawHeader, rawTar } from './helpers/import-tar-builder.js';
import { tempDir } from './helpers/repo.js';

const MiB = 1024 * 1024;

/** A header of `type` ('x' pax, 'L' GNU long name) declaring `size` bytes, checksum fixed. */
function typedHeader(type: string, size: number, name = 'PaxHeaders/x'): Buffer {
  const h = rawHeader({ name, type: 'file' }, 0);
  h.write(`${size.toString(8).padStart(11, '0')}\0`, 124, 12, 'latin1');
  h.write(type, 156, 1, 'latin1');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const c of h) sum += c;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
  return h;
}

function paxRecord(key: string, value: string): Buffer {
  const body = ` ${key}=${value}\n`;
  let len = body.length + 1;
  while (`${len}${body}`.length !== len) len = `${len}${body}`.length;
  return Buffer.from(`${len}${body}`);
}

function padded(b: Buffer): Buffer {
  return Buffer.concat([b, Buffer.alloc((512 - (b.length % 512)) % 512)]);
}

async function repoWith(): Promise<Repository> {
  return Repository.init(join(tempDir('sysroot-hostile-ar-'), 'repo'));
}

async function refused(p: Promise<unknown>, code: string): Promise<Error> {
  try {
    await p;
  } catch (e) {
    expect(isRegistryError(e, code as 'E_LIMIT'), String(e)).toBe(true);
    return e as Error;
  }
  throw new Error(`expected ${code}`);
}

/** A file on disk holding `bytes`, for importSource (which sniffs its first bytes). */
function file(bytes: Buffer, name = 'in.tar'): string {
  const p = join(tempDir('sysroot-hostile-in-'), name);
  writeFileSync(p, bytes);
  return p;
}

describe('enormous names and headers', () => {
  it('a 64 KiB pax path, a 100 MB pax header and a 100 MB GNU long name are refused from their headers', async () => {
    const repo = await repoWith();
    const longPath = paxRecord('path', `${'d/'.repeat(32 * 1024)}f`);
    const cases: Array<[string, Buffer, RegExp]> = [
      [
        '64 KiB pax path',
        Buffer.concat([
          typedHeader('x', longPath.length),
          padded(longPath),
          rawHeader({ name: 'f', type: 'file' }, 0),
        ]),
        /longer than|limit/,
      ],
      // Declared, never sent: the limit must act on the header, not after reading 100 MB.
      [
        '100 MB pax header',
        Buffer.concat([typedHeader('x', 100 * MiB), Buffer.alloc(4096)]),
        /extended header/,
      ],
      [
        '100 MB GNU long name',
        Buffer.concat([typedHeader('L', 100 * MiB, '././@LongLink'), Buffer.alloc(4096)]),
        /limit/,
      ],
    ];
    for (const [what, tar, message] of cases) {
      const t0 = performance.now();
      const e = await refused(
        importSource(repo.objects, file(Buffer.concat([tar, Buffer.alloc(1024)]))),
        'E_LIMIT',
      );
      expect(e.message, what).toMatch(message);
      expect(performance.now() - t0, what).toBeLessThan(2_000);
    }
    // Through the CLI: exit 6, a message of bounded length, and no ref.
    const r = join(tempDir('sysroot-hostile-cli-'), 'repo');
    sysrootOk(['init', '--repo', r]);
    const res = sysroot([
      'commit',
      '--repo',
      r,
      '--ref',
      'x',
      file(Buffer.concat([cases[0]![1], Buffer.alloc(1024)])),
    ]);
    expect(res.status).toBe(6);
    expect(res.stderr.length).toBeLessThan(4_000);
    expect(sysroot(['refs', '--repo', r]).stdout.trim()).toBe('');
    repo.close();
  });
});

describe('100,000 entries', () => {
  it('imports them in bounded memory, and the commit checks out to the same 100,000 paths', async () => {
    // 100 directories of 1,000 files; the files hold 10 distinct contents (so 10 content objects).
    const members: RawMember[] = [];
    for (let d = 0; d < 100; d++) {
      members.push({ name: `d${d}/`, type: 'dir' });
      for (let f = 0; f < 1000; f++)
        members.push({ name: `d${d}/f${f}`, type: 'file', body: `c${f % 10}\n` });
    }
    const tar = file(rawTar(members));
    const r = join(tempDir('sysroot-hostile-100k-'), 'repo');
    sysrootOk(['init', '--repo', r]);
    // GNU time's maximum resident set size of the CLI, in KiB.
    const t0 = performance.now();
    const res = spawnSync(
      '/usr/bin/time',
      ['-f', 'maxrss=%M', process.execPath, 'bin/sysroot.js', 'commit', '--repo', r, '--ref', 'big', tar],
      { encoding: 'utf8' },
    );
    const seconds = (performance.now() - t0) / 1000;
    expect(res.status, res.stderr).toBe(0);
    const maxrss = Number(/maxrss=(\d+)/.exec(res.stderr)?.[1]);
    console.log(`100,000 entries: ${seconds.toFixed(1)} s, max RSS ${(maxrss / 1024).toFixed(0)} MB`);
    // Names and checksums of 100,000 entries are ~10 MB; the process baseline is ~100 MB.
    expect(maxrss).toBeLessThan(400 * 1024);
    const commit = res.stdout.trim().split('\n').pop()!;
    const repo = await Repository.open(r);
    const dest = join(tempDir('sysroot-hostile-100k-out-'), 'out');
    const result = await checkoutCommit(repo.objects, commit, dest);
    expect(result.files).toBe(100_000);
    expect(readdirSync(dest)).toHaveLength(100);
    expect(readdirSync(join(dest, 'd42'))).toHaveLength(1000);
    repo.close();
  });
});

describe('compression bombs', () => {
  /** A tarball of one 4 GiB file of zeros, as `frames` repeated compressed frames (multi-member gzip, multi-frame zstd). */
  async function bomb(kind: 'gzip' | 'zstd'): Promise<Buffer> {
    const size = 4 * 1024 * MiB;
    const head = Buffer.concat([rawHeader({ name: 'zeros', type: 'file' }, 0)]);
    head.write(`${size.toString(8).padStart(11, '0')}\0`, 124, 12, 'latin1');
    head.fill(0x20, 148, 156);
    let sum = 0;
    for (const c of head) sum += c;
    head.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
    const zeros = Buffer.alloc(MiB);
    const compress = async (b: Buffer): Promise<Buffer> => {
      if (kind === 'gzip') return gzipSync(b, { level: 9 });
      const out: Buffer[] = [];
      for await (const c of compressZstd(
        (async function* () {
          yield b;
        })(),
        19,
      ))
        out.push(c);
      return Buffer.concat(out);
    };
    const first = await compress(Buffer.concat([head, zeros.subarray(512)]));
    const frame = await compress(zeros);
    return Buffer.concat([first, ...Array.from({ length: 4096 }, () => frame)]);
  }

  it.each(['gzip', 'zstd'] as const)(
    'a %s bomb (4 GiB of zeros) is refused after at most ~100 MiB of output, quickly, writing nothing big',
    async (kind) => {
      const bytes = await bomb(kind);
      // 4 GiB from a few MB (gzip, ~1,000x) or a few hundred KB (zstd, ~30,000x).
      expect(bytes.length).toBeLessThan(8 * MiB);
      const r = join(tempDir('sysroot-hostile-bomb-'), 'repo');
      sysrootOk(['init', '--repo', r]);
      const t0 = performance.now();
      const res = sysroot(['commit', '--repo', r, '--ref', 'bomb', file(bytes, `bomb.tar.${kind}`)]);
      const ms = performance.now() - t0;
      expect(res.status, res.stderr).toBe(6);
      expect(res.stderr).toContain('refused as a compression bomb');
      expect(res.stderr).toContain('--max-expansion');
      expect(ms).toBeLessThan(15_000);
      const du = spawnSync('du', ['-sk', r], { encoding: 'utf8' });
      expect(Number(du.stdout.split('\t')[0])).toBeLessThan(16 * 1024);
      expect(readdirSync(join(r, 'tmp')).filter((n) => n.startsWith('tmp-'))).toEqual([]);
      expect(sysroot(['refs', '--repo', r]).stdout.trim()).toBe('');
    },
  );

  it('a real tarball well under the limit goes through, and --max-expansion 0 lifts it', async () => {
    // 80 MiB of one repeated line compresses far past 100x: refused by default, accepted with 0.
    const big = Buffer.alloc(80 * MiB, 'x');
    const tar = gzipSync(rawTar([{ name: 'big', type: 'file', body: big }]), { level: 1 });
    const r = join(tempDir('sysroot-hostile-ok-'), 'repo');
    sysrootOk(['init', '--repo', r]);
    expect(sysroot(['commit', '--repo', r, '--ref', 'a', file(tar, 'a.tar.gz')]).status).toBe(6);
    const c = sysrootOk(['commit', '--repo', r, '--ref', 'a', '--max-expansion', '0', file(tar, 'a.tar.gz')]);
    expect(c).toMatch(/^[0-9a-f]{64}$/);
    const small = gzipSync(rawTar([{ name: 'etc/os-release', type: 'file', body: 'VERSION=1\n' }]));
    expect(sysrootOk(['commit', '--repo', r, '--ref', 'b', file(small, 'b.tar.gz')])).toMatch(
      /^[0-9a-f]{64}$/,
    );
  });
});

describe('hostile directory trees for `sysroot commit DIR`', () => {
  it('stores symlinks that point outside as symlinks, never follows them, and refuses or skips fifos and sockets', async () => {
    const outside = tempDir('sysroot-hostile-outside-');
    writeFileSync(join(outside, 'secret'), 'not yours\n');
    const dir = join(tempDir('sysroot-hostile-tree-'), 'tree');
    mkdirSync(join(dir, 'usr'), { recursive: true });
    writeFileSync(join(dir, 'usr/ok'), 'fine\n');
    symlinkSync(outside, join(dir, 'lib'));
    symlinkSync('../../../../../../etc/passwd', join(dir, 'usr/passwd'));
    symlinkSync(join(outside, 'secret'), join(dir, 'secret'));
    expect(spawnSync('mkfifo', [join(dir, 'usr/fifo')]).status).toBe(0);
    const sock = createServer();
    await new Promise<void>((resolve) => sock.listen(join(dir, 'usr/sock'), resolve));
    try {
      const r = join(tempDir('sysroot-hostile-tree-repo-'), 'repo');
      sysrootOk(['init', '--repo', r]);
      const refusedRun = sysroot(['commit', '--repo', r, '--ref', 't', dir]);
      expect(refusedRun.status).toBe(6);
      expect(refusedRun.stderr).toContain('usr/fifo');
      expect(refusedRun.stderr).toContain('usr/sock');
      const c = sysrootOk(['commit', '--repo', r, '--ref', 't', '--skip-special', dir]);
      const dest = join(tempDir('sysroot-hostile-tree-out-'), 'out');
      sysrootOk(['checkout', '--repo', r, c, dest]);
      expect(lstatSync(join(dest, 'lib')).isSymbolicLink()).toBe(true);
      expect(readlinkSync(join(dest, 'lib'))).toBe(outside);
      expect(readlinkSync(join(dest, 'usr/passwd'))).toBe('../../../../../../etc/passwd');
      expect(readlinkSync(join(dest, 'secret'))).toBe(join(outside, 'secret'));
      expect(readdirSync(join(dest, 'usr')).sort()).toEqual(['ok', 'passwd']);
      // Nothing of what the symlinks point at was read into the commit.
      const ls = sysrootOk(['ls', '--repo', r, c, '/']);
      expect(ls).not.toContain('secret\n  ');
      expect(sysroot(['cat', '--repo', r, c, 'lib/secret']).status).not.toBe(0);
      expect(readdirSync(outside)).toEqual(['secret']);
    } finally {
      sock.close();
    }
  });
});

describe('hostile commits: dirtrees with names a checkout must not write', () => {
  it.each([['..'], ['a/b'], [''], ['.'], ['../escape']])(
    'a dirtree entry named %j: checkout and fsck refuse it; nothing is written, DEST stays absent',
    async (name) => {
      const repo = await repoWith();
      // Written raw, past the store's own checks, as a damaged or malicious store would hold them.
      const put = async (type: 'dirtree' | 'dirmeta' | 'commit', bytes: Buffer): Promise<string> => {
        const sha = sha256(bytes);
        await repo.blobs.createOnce(objectPath(sha, type), bytes);
        return sha;
      };
      const meta = await put('dirmeta', encodeDirMeta({ uid: 0, gid: 0, mode: 0o40755, xattrs: [] }));
      const empty = await put('dirtree', encodeDirTree({ files: [], dirs: [] }));
      // The hostile name as a directory (its subtree would be created outside DEST).
      const root = await put('dirtree', encodeDirTree({ files: [], dirs: [{ name, tree: empty, meta }] }));
      const commit = await put(
        'commit',
        encodeCommit({
          metadata: [],
          parent: null,
          related: [],
          subject: 'x',
          body: '',
          timestamp: 1,
          rootTree: root,
          rootMeta: meta,
        }),
      );
      const parent = tempDir('sysroot-hostile-co-');
      const dest = join(parent, 'dest');
      await expect(checkoutCommit(repo.objects, commit, dest)).rejects.toSatisfy(
        (e) => isRegistryError(e, 'E_BAD_NAME') || isRegistryError(e, 'E_NOT_NORMAL_FORM'),
      );
      expect(existsSync(dest)).toBe(false);
      expect(readdirSync(parent)).toEqual([]);
      const co = sysroot(['checkout', '--repo', repo.location, commit, dest]);
      expect(co.status).not.toBe(0);
      expect(co.status).not.toBe(1);
      expect(readdirSync(parent)).toEqual([]);
      expect(statSync(repo.location).isDirectory()).toBe(true);
      const fsck = sysroot(['fsck', '--repo', repo.location]);
      expect(fsck.status).toBe(4);
      expect(fsck.stdout).toContain(`${root}.dirtree`);
      repo.close();
    },
  );
});
