/**
 * The `sysroot` command as scripts and release jobs use it: the contract forms of docs/cli.md,
 * their output and their exit codes, run as a separate process against real directories.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sysroot, sysrootOk } from './helpers/cli.js';
import { rawTar } from './helpers/import-tar-builder.js';
import { tempDir } from './helpers/repo.js';

const work = tempDir('sysroot-cli-');
afterAll(() => rmSync(work, { recursive: true, force: true }));

const repo = join(work, 'repo');
const ref = 'stage3-sysroot/x86_64';
let c1 = '';
let c2 = '';

function makeTree(dir: string, version: string): string {
  mkdirSync(join(dir, 'usr/lib'), { recursive: true });
  writeFileSync(join(dir, 'usr/lib/libc.so.6'), `libc ${version}\n`.repeat(200));
  writeFileSync(join(dir, 'os-release'), `VERSION=${version}\n`);
  return dir;
}

const sha256 = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');

beforeAll(() => {
  sysrootOk(['init', '--repo', repo]);
  c1 = sysrootOk([
    'commit',
    '--repo',
    repo,
    '--ref',
    ref,
    '--subject',
    'stage3 2026.1',
    '--timestamp',
    '@1704067200',
    '--meta',
    'version=2026.1',
    '--meta',
    'build:t=7',
    makeTree(join(work, 'v1'), '1'),
  ]);
  c2 = sysrootOk([
    'commit',
    '--repo',
    repo,
    '--ref',
    ref,
    '--subject',
    'stage3 2026.2',
    makeTree(join(work, 'v2'), '2'),
  ]);
});

describe('sysroot CLI', () => {
  it('stops quietly with 141 when whatever reads stdout has gone (`sysroot --help | head`)', () => {
    // `true` exits without reading, long before node has started: the first write fails with EPIPE.
    const bin = fileURLToPath(new URL('../bin/sysroot.js', import.meta.url));
    const r = spawnSync(
      'bash',
      ['-c', '"$0" "$1" --help | true; echo "$PIPESTATUS"', process.execPath, bin],
      {
        encoding: 'utf8',
      },
    );
    expect(r.stdout.trim()).toBe('141');
    expect(r.stderr).toBe('');
  });

  it('prints the commit checksum as the last line of stdout and the pin on stderr', () => {
    const r = sysroot(['commit', '--repo', repo, '--ref', 'other', makeTree(join(work, 'v3'), '3')]);
    expect(r.status).toBe(0);
    expect(r.stdout.trim().split('\n').pop()).toMatch(/^[0-9a-f]{64}$/);
    expect(r.stderr).toContain(`pin: other@${r.stdout.trim()}`);
  });

  it('lists refs, history (newest first, with pins) and commit details as JSON', () => {
    const refs = JSON.parse(sysroot(['refs', '--repo', repo, '--json']).stdout);
    expect(refs).toContainEqual({ ref, commit: c2 });
    const log = JSON.parse(sysroot(['log', '--repo', repo, ref, '--json']).stdout);
    expect(log.map((r: { pin: string }) => r.pin)).toEqual([`${ref}@${c2}`, `${ref}@${c1}`]);
    const show = JSON.parse(sysroot(['show', '--repo', repo, `${ref}@${c1}`, '--json']).stdout);
    expect(show).toMatchObject({
      commit: c1,
      parent: null,
      subject: 'stage3 2026.1',
      timestamp: 1704067200,
      metadata: { version: '2026.1', build: 7 },
      fileCount: 2,
      totalSize: 200 * 'libc 1\n'.length + 'VERSION=1\n'.length,
      refs: [ref],
    });
  });

  it('lists a directory and prints a file of a commit', () => {
    const ls = JSON.parse(sysroot(['ls', '--repo', repo, c1, '/usr/lib', '--json']).stdout);
    expect(ls).toMatchObject([{ name: 'libc.so.6', type: 'file', mode: 0o100644 }]);
    expect(sysroot(['cat', '--repo', repo, `${ref}@${c1}`, '/os-release']).stdout).toBe('VERSION=1\n');
  });

  it('exports the same bytes every time, plain and zstd', () => {
    for (const ext of ['tar', 'tar.zst']) {
      sysrootOk(['export', '--repo', repo, c1, '-o', join(work, `a.${ext}`)]);
      sysrootOk(['export', '--repo', repo, `${ref}@${c1}`, '-o', join(work, `b.${ext}`)]);
      expect(sha256(join(work, `a.${ext}`))).toBe(sha256(join(work, `b.${ext}`)));
    }
  });

  it('checks out a pin exactly, refuses a non-empty destination, and rolls back with a logged reason', () => {
    const dest = join(work, 'co');
    sysrootOk(['checkout', '--repo', repo, `${ref}@${c1}`, dest]);
    expect(readFileSync(join(dest, 'os-release'), 'utf8')).toBe('VERSION=1\n');
    const again = sysroot(['checkout', '--repo', repo, ref, dest]);
    expect(again.status).toBe(5);
    expect(again.stderr).toMatch(/not empty|E_DEST_NOT_EMPTY|exists/i);

    const reset = sysroot(['reset', '--repo', repo, ref, c1, '--reason', 'v2 breaks the bootstrap']);
    expect(reset.status).toBe(0);
    const log = JSON.parse(sysroot(['log', '--repo', repo, ref, '--json']).stdout);
    expect(log[0]).toMatchObject({ action: 'reset', from: c2, to: c1, reason: 'v2 breaks the bootstrap' });
    expect(sysroot(['reset', '--repo', repo, ref, 'f'.repeat(64), '--reason', 'x']).status).toBe(5);
  });

  it('answers usage errors with exit 2 and documents every command with examples', () => {
    expect(sysroot(['commit', '--repo', repo, '--ref', ref, '--timestamp', 'yesterday', work]).status).toBe(
      2,
    );
    expect(sysroot(['commit', '--repo', repo, '--ref', 'bad ref', work]).status).toBe(2);
    expect(sysroot(['refs', '--repo', repo, '--no-such-option']).status).toBe(2);
    const help = sysroot(['commit', '--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('Examples:');
    expect(sysroot(['show', '--repo', join(work, 'nowhere'), ref]).status).toBe(3);
  });

  it('rebuilds a deleted index from the repository', () => {
    rmSync(join(repo, 'sysroot/index.sqlite'), { force: true });
    expect(sysroot(['reindex', '--repo', repo]).status).toBe(0);
    expect(JSON.parse(sysroot(['show', '--repo', repo, c1, '--json']).stdout).fileCount).toBe(2);
  });
});

describe('bad input: a clear error, and nothing lost', () => {
  it('fsck and checkout name an object with a flipped byte; nothing is left at DEST', () => {
    const r = join(work, 'corrupt-repo');
    sysrootOk(['init', '--repo', r]);
    const c = sysrootOk(['commit', '--repo', r, '--ref', 'x', makeTree(join(work, 'c'), 'c')]);
    expect(sysroot(['fsck', '--repo', r]).status).toBe(0);
    // The largest .filez is libc.so.6; flip a byte in its deflate stream.
    const files: string[] = [];
    for (const d of readdirSync(join(r, 'objects'))) {
      for (const f of readdirSync(join(r, 'objects', d)))
        if (f.endsWith('.filez')) files.push(join(r, 'objects', d, f));
    }
    const victim = files.sort((a, b) => readFileSync(b).length - readFileSync(a).length)[0]!;
    const bytes = readFileSync(victim);
    bytes[bytes.length - 3]! ^= 0xff;
    writeFileSync(victim, bytes);
    const id = victim.split('/').slice(-2).join('').replace('.filez', '');

    const fsck = sysroot(['fsck', '--repo', r]);
    expect(fsck.status).toBe(4);
    expect(fsck.stdout).toContain(id);
    const dest = join(work, 'never');
    const co = sysroot(['checkout', '--repo', r, c, dest]);
    expect(co.status).toBe(4);
    expect(co.stderr).toContain(id);
    expect(existsSync(dest)).toBe(false);
    expect(readdirSync(work).filter((n) => n.startsWith('.never'))).toEqual([]);
  });

  it('refuses hostile tarballs naming the member, and moves no ref', () => {
    const r = join(work, 'hostile-repo');
    sysrootOk(['init', '--repo', r]);
    const good = sysrootOk(['commit', '--repo', r, '--ref', 'x', makeTree(join(work, 'h'), 'h')]);
    const cases: Array<[string, Parameters<typeof rawTar>[0], string]> = [
      ['dotdot', [{ name: '../evil', type: 'file', body: 'x' }], '../evil'],
      ['absolute', [{ name: '/etc/evil', type: 'file', body: 'x' }], '/etc/evil'],
      [
        'through-symlink',
        [
          { name: 'lib', type: 'symlink', linkname: '/etc' },
          { name: 'lib/passwd', type: 'file', body: 'x' },
        ],
        'lib/passwd',
      ],
      ['hardlink-outside', [{ name: 'h', type: 'hardlink', linkname: '../../etc/shadow' }], 'h'],
      ['device', [{ name: 'dev/null', type: 'chardev', devmajor: 1, devminor: 3 }], 'dev/null'],
    ];
    for (const [name, members, member] of cases) {
      const file = join(work, `${name}.tar`);
      writeFileSync(file, rawTar(members));
      const res = sysroot(['commit', '--repo', r, '--ref', 'x', file]);
      expect(res.status, `${name}: ${res.stderr}`).toBe(6);
      expect(res.stderr, name).toContain(member);
    }
    // A truncated archive, and a name that is not UTF-8.
    const truncated = rawTar([{ name: 'big', type: 'file', body: 'y'.repeat(5000) }]).subarray(0, 2000);
    writeFileSync(join(work, 'truncated.tar'), truncated);
    expect(sysroot(['commit', '--repo', r, '--ref', 'x', join(work, 'truncated.tar')]).status).toBe(6);
    const latin1 = rawTar([{ name: 'caf_', type: 'file', body: 'z' }]);
    latin1[3] = 0xe9;
    // Fix the header checksum after changing a name byte ('_' -> 0xe9).
    let sum = 0;
    latin1.fill(0x20, 148, 156);
    for (const c of latin1.subarray(0, 512)) sum += c;
    latin1.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
    writeFileSync(join(work, 'latin1.tar'), latin1);
    const bad = sysroot(['commit', '--repo', r, '--ref', 'x', join(work, 'latin1.tar')]);
    expect(bad.status).toBe(6);
    expect(bad.stderr).toContain('UTF-8');

    expect(sysrootOk(['refs', '--repo', r])).toBe(`x ${good}`);
    expect(existsSync(join(work, 'evil'))).toBe(false);
    expect(existsSync('/etc/evil')).toBe(false);
    expect(readdirSync(join(r, 'tmp')).filter((n) => n.startsWith('tmp-'))).toEqual([]);
  });
});
