/**
 * GPG signatures with the stock client: Debian's `ostree` 2022.7 verifies only GPG (gpgme), so a
 * remote with gpg-verify=true and our public key must accept a commit `sysroot serve --sign-key`
 * signed, and refuse an unsigned commit, a signature that was tampered with, and a signature moved
 * onto another commit; gpg-verify-summary=true must accept our summary.sig and refuse it under
 * another key. `sysroot pull --verify-key` with the same OpenPGP public key agrees.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { objectPath } from '../src/objects/index.js';
import { sysroot, sysrootAsync, sysrootOk } from './helpers/cli.js';
import { ostree } from './helpers/ostree.js';
import { tempDir } from './helpers/repo.js';
import { type Served, startServe, stopServe } from './helpers/serve.js';

const dir = tempDir('sysroot-gpg-');
const repo = join(dir, 'repo');
const key = join(dir, 'release.gpg');
const other = join(dir, 'other.gpg');
let server: Served | undefined;
let signed: string;
let unsigned: string;
let forged: string;
let badSig: string;

function tree(name: string): string {
  const d = join(dir, `tree-${name}`);
  mkdirSync(join(d, 'etc'), { recursive: true });
  writeFileSync(join(d, 'etc', 'release'), `${name}\n`);
  return d;
}

function objectFile(checksum: string, type: 'commitmeta' | 'commit'): string {
  return join(repo, objectPath(checksum, type));
}

beforeAll(async () => {
  sysrootOk(['key', 'generate', '--type', 'gpg', '--name', 'sysroot release test', '-o', key]);
  sysrootOk(['key', 'generate', '--type', 'gpg', '--name', 'someone else', '-o', other]);
  sysrootOk(['init', '--repo', repo]);
  // Made before the server had a key (and by a writer without one): unsigned, and stays so.
  unsigned = sysrootOk(['commit', '--repo', repo, '--ref', 'unsigned/x86_64', tree('unsigned')]);
  forged = sysrootOk(['commit', '--repo', repo, '--ref', 'forged/x86_64', tree('forged')]);
  server = await startServe(['--repo', repo, '--sign-key', `release=${key}`]);
  const token = sysrootOk(['token', 'create', '--repo', repo, '--name', 'ci', '--scope', 'push:**']);
  const push = async (ref: string, name: string) => {
    const r = await sysrootAsync(['push', '--url', server!.url, '--ref', ref, tree(name)], {
      SYSROOT_TOKEN: token,
    });
    if (r.status !== 0) throw new Error(r.stderr);
    return r.stdout.trim().split('\n').pop()!;
  };
  badSig = await push('tampered/x86_64', 'tampered');
  signed = await push('stage3-sysroot/x86_64', 'release');
  // Someone who reached the storage: flips a byte inside one commit's signature, and copies a valid
  // signature onto a commit it does not belong to.
  const meta = readFileSync(objectFile(badSig, 'commitmeta'));
  meta[Math.floor(meta.length / 2)]! ^= 0x01;
  writeFileSync(objectFile(badSig, 'commitmeta'), meta);
  copyFileSync(objectFile(signed, 'commitmeta'), objectFile(forged, 'commitmeta'));
});

afterAll(async () => {
  await stopServe(server);
});

async function client(opts: { summary?: boolean; keyring?: string } = {}): Promise<string> {
  const c = join(tempDir('sysroot-gpg-client-'), 'repo');
  await ostree(['init', `--repo=${c}`, '--mode=archive']);
  await ostree([
    'remote',
    'add',
    `--repo=${c}`,
    '--set=gpg-verify=true',
    `--set=gpg-verify-summary=${opts.summary ? 'true' : 'false'}`,
    'reg',
    `${server!.url}/repo`,
  ]);
  await ostree(['remote', 'gpg-import', `--repo=${c}`, `--keyring=${opts.keyring ?? `${key}.pub`}`, 'reg']);
  return c;
}

describe('stock ostree with gpg-verify=true and our public key', () => {
  it('accepts the commit the server signed, and shows the signature', async () => {
    const c = await client();
    await ostree(['pull', `--repo=${c}`, 'reg', 'stage3-sysroot/x86_64']);
    expect((await ostree(['rev-parse', `--repo=${c}`, 'reg:stage3-sysroot/x86_64'])).trim()).toBe(signed);
    const shown = await ostree(['show', `--repo=${c}`, signed]);
    expect(shown).toMatch(/Found 1 signature:[\s\S]*Good signature from "sysroot release test/);
  });

  it('refuses an unsigned commit', async () => {
    const c = await client();
    await expect(ostree(['pull', `--repo=${c}`, 'reg', 'unsigned/x86_64'])).rejects.toThrow(
      /GPG verification enabled, but no signatures found/,
    );
    expect(existsSync(join(c, objectPath(unsigned, 'commit')))).toBe(false);
  });

  it('refuses a commit whose signature was tampered with, and a signature moved onto another commit', async () => {
    const c = await client();
    await expect(ostree(['pull', `--repo=${c}`, 'reg', 'tampered/x86_64'])).rejects.toThrow(/signature/i);
    await expect(ostree(['pull', `--repo=${c}`, 'reg', 'forged/x86_64'])).rejects.toThrow(/signature/i);
    expect(existsSync(join(c, objectPath(forged, 'commit')))).toBe(false);
  });

  it('with gpg-verify-summary=true, accepts our summary.sig, and refuses it under another key', async () => {
    const c = await client({ summary: true });
    await ostree(['pull', `--repo=${c}`, 'reg', 'stage3-sysroot/x86_64']);
    const wrong = await client({ summary: true, keyring: `${other}.pub` });
    await expect(ostree(['pull', `--repo=${wrong}`, 'reg', 'stage3-sysroot/x86_64'])).rejects.toThrow(
      /signature|GPG/i,
    );
  });
});

describe('sysroot pull --verify-key with the same OpenPGP key', () => {
  it('accepts the signed commit and refuses the unsigned, tampered and forged ones, leaving DEST absent', async () => {
    const ok = join(tempDir(), 'ok');
    const r = await sysrootAsync([
      'pull',
      '--url',
      server!.url,
      '--verify-key',
      `${key}.pub`,
      'stage3-sysroot/x86_64',
      ok,
    ]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain('signature verified');
    expect(readFileSync(join(ok, 'etc/release'), 'utf8')).toBe('release\n');
    for (const ref of ['unsigned/x86_64', 'tampered/x86_64', 'forged/x86_64']) {
      const dest = join(tempDir(), 'no');
      const bad = await sysrootAsync([
        'pull',
        '--url',
        server!.url,
        '--verify-key',
        `${key}.pub`,
        '--json',
        ref,
        dest,
      ]);
      expect(bad.status, `${ref}: ${bad.stderr}`).toBe(9);
      const err = JSON.parse(bad.stderr.trim().split('\n').pop()!).error;
      expect(err.code).toBe('E_SIGNATURE');
      expect(err.details.ref).toBe(ref);
      expect(err.details.trusted[0]).toMatch(/^gpg:[0-9A-F]{40}$/);
      expect(existsSync(dest)).toBe(false);
    }
    // Another key is not trusted.
    const dest = join(tempDir(), 'other');
    expect(
      sysroot(['pull', '--url', server!.url, '--verify-key', `${other}.pub`, 'stage3-sysroot/x86_64', dest])
        .status,
    ).toBe(9);
  });
});
