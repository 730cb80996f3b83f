/**
 * Signed releases end to end, with real `sysroot serve` processes and the CLI: the pusher's and the
 * server's ed25519 signatures, `sysroot pull --verify-key` and keys configured per remote, pinned
 * pulls, key rotation (sign with both, retire the old key) and revocation, GET /api/v1/keys, and
 * the signed ref log: `log --verify`, `--export`, `--since`, and an edited old record caught by
 * `fsck` and `log --verify`.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sysroot, sysrootAsync, sysrootOk } from './helpers/cli.js';
import { tempDir } from './helpers/repo.js';
import { type Served, startServe, stopServe } from './helpers/serve.js';

const REF = 'stage3-sysroot/x86_64';
const dir = tempDir('sysroot-signing-');
const repo = join(dir, 'repo');
const keyA = join(dir, 'a.key');
const keyB = join(dir, 'b.key');
const keyP = join(dir, 'pusher.key');
const env = { SYSROOT_CONFIG_DIR: join(dir, 'config'), XDG_CACHE_HOME: join(dir, 'cache') };
let server: Served | undefined;
let token: string;
const pub = (k: string) => readFileSync(`${k}.pub`, 'utf8').trim();
const commits: Record<string, string> = {};

function tree(name: string): string {
  const d = join(dir, `tree-${name}`);
  mkdirSync(d, { recursive: true });
  writeFileSync(join(d, 'version'), `${name}\n`);
  return d;
}

async function serveWith(...keys: string[]): Promise<void> {
  await stopServe(server);
  server = await startServe(['--repo', repo, ...keys.flatMap((k) => ['--sign-key', k])], env);
}

async function push(name: string, extra: string[] = []): Promise<string> {
  const r = await sysrootAsync(['push', '--url', server!.url, '--ref', REF, ...extra, tree(name)], {
    ...env,
    SYSROOT_TOKEN: token,
  });
  if (r.status !== 0) throw new Error(r.stderr);
  return r.stdout.trim().split('\n').pop()!;
}

/** `sysroot pull` into a new directory; the exit status, the JSON error (if any) and whether DEST exists. */
async function pull(args: string[]) {
  const dest = join(tempDir('sysroot-signing-dest-'), 'out');
  const r = await sysrootAsync(['pull', '--json', ...args, dest], env);
  const last = r.stderr.trim().split('\n').pop() ?? '';
  const error = r.status !== 0 && last.startsWith('{') ? JSON.parse(last).error : undefined;
  return { status: r.status, error, dest: existsSync(dest), stdout: r.stdout, stderr: r.stderr };
}

beforeAll(async () => {
  for (const k of [keyA, keyB, keyP])
    sysrootOk(['key', 'generate', '--type', 'ed25519', '--name', k, '-o', k]);
  sysrootOk(['init', '--repo', repo]);
  // A release made before any key existed: it stays unsigned (objects are never rewritten).
  commits.v0 = sysrootOk(['commit', '--repo', repo, '--ref', REF, tree('v0')], { env });
  token = sysrootOk(['token', 'create', '--repo', repo, '--name', 'ci', '--scope', 'push:**']);
  await serveWith(`old=${keyA}`);
  commits.v1 = await push('v1', ['--sign-key', keyP]);
});

afterAll(async () => {
  await stopServe(server);
});

describe('signed pushes and verifying pulls', () => {
  it('the server signs a commit on arrival, beside the pusher; either key verifies it', async () => {
    for (const k of [keyA, keyP]) {
      const r = await pull(['--url', server!.url, '--verify-key', `${k}.pub`, REF]);
      expect(r.status, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout).signedBy).toEqual([`ed25519:${pub(k)}`]);
    }
    const keys = (await (await fetch(`${server!.url}/api/v1/keys`)).json()) as {
      keys: Array<{ id: string; signing: boolean; revoked: unknown }>;
    };
    expect(keys.keys.map((k) => [k.id, k.signing, k.revoked])).toEqual([
      [`ed25519:${pub(keyA)}`, true, null],
    ]);
  });

  it('refuses a followed ref signed by no trusted key, with the evidence, and leaves DEST absent', async () => {
    const r = await pull(['--url', server!.url, '--verify-key', pub(keyB), REF]);
    expect(r.status).toBe(9);
    expect(r.error).toMatchObject({
      code: 'E_SIGNATURE',
      details: {
        reason: 'untrusted',
        ref: REF,
        commit: commits.v1,
        trusted: [`ed25519:${pub(keyB)}`],
        signatures: 2,
      },
    });
    expect(r.dest).toBe(false);
  });

  it('a remote with keys refuses an unsigned commit when following; a pin is verified by its hash, and by signature with --verify', async () => {
    sysrootOk(['remote', 'add', 'prod', server!.url, '--verify-key', `${keyA}.pub`], { env });
    expect((await pull(['prod', REF])).status).toBe(0);
    // The unsigned v0, pinned: its hash is the proof asked for.
    const pinned = await pull(['prod', `${REF}@${commits.v0}`]);
    expect(pinned.status, pinned.stderr).toBe(0);
    expect(pinned.dest).toBe(true);
    const strict = await pull(['prod', '--verify', `${REF}@${commits.v0}`]);
    expect(strict.status).toBe(9);
    expect(strict.error.details).toMatchObject({ reason: 'unsigned', commit: commits.v0, signatures: 0 });
    expect(strict.dest).toBe(false);
    // A pin with a key on the command line is checked too.
    expect(
      (await pull(['--url', server!.url, '--verify-key', pub(keyB), `${REF}@${commits.v1}`])).status,
    ).toBe(9);
  });
});

describe('rotation and revocation', () => {
  it('rotates: sign with both keys, then retire the old one; builders move to the new key', async () => {
    await serveWith(`old=${keyA}`, `new=${keyB}`);
    commits.v2 = await push('v2');
    for (const k of [keyA, keyB])
      expect((await pull(['--url', server!.url, '--verify-key', pub(k), REF])).status).toBe(0);
    await serveWith(`new=${keyB}`);
    commits.v3 = await push('v3');
    // A builder still on the old key only is refused the new release; one on the new key gets it.
    const stale = await pull(['--url', server!.url, '--verify-key', pub(keyA), REF]);
    expect(stale.error?.details).toMatchObject({ reason: 'untrusted', commit: commits.v3 });
    expect((await pull(['--url', server!.url, '--verify-key', pub(keyB), REF])).status).toBe(0);
    // Old releases keep the signatures they were stored with: v1 was never signed by the new key.
    expect(
      (await pull(['--url', server!.url, '--verify-key', pub(keyB), `${REF}@${commits.v1}`])).status,
    ).toBe(9);
    expect(
      (await pull(['--url', server!.url, '--verify-key', pub(keyB), `${REF}@${commits.v2}`])).status,
    ).toBe(0);
  });

  it('revokes: signatures by a revoked key alone are refused; the revocation is published', async () => {
    sysrootOk(['key', 'revoke', '--repo', repo, `ed25519:${pub(keyA)}`, '--reason', 'left on a CI runner']);
    const both = ['--verify-key', pub(keyA), '--verify-key', pub(keyB), '--revoked-key', pub(keyA)];
    const v1 = await pull(['--url', server!.url, ...both, '--verify', `${REF}@${commits.v1}`]);
    expect(v1.error).toMatchObject({
      code: 'E_SIGNATURE',
      details: { reason: 'revoked', revokedSigners: [`ed25519:${pub(keyA)}`] },
    });
    expect(v1.dest).toBe(false);
    // v2 also carries the new key's signature.
    expect((await pull(['--url', server!.url, ...both, '--verify', `${REF}@${commits.v2}`])).status).toBe(0);
    const list = sysroot(['key', 'list', '--url', server!.url, '--json']);
    expect(list.status, list.stderr).toBe(0);
    const listed = JSON.parse(list.stdout);
    expect(listed.find((k: { id: string }) => k.id === `ed25519:${pub(keyA)}`).revoked.reason).toBe(
      'left on a CI runner',
    );
    expect(listed.find((k: { id: string }) => k.id === `ed25519:${pub(keyB)}`).signing).toBe(true);
  });
});

describe('the signed ref log', () => {
  it('verifies, exports, and an outsider verifies the export against an earlier one', async () => {
    const v = sysroot(['log', '--url', server!.url, '--verify', '--verify-key', pub(keyB), REF]);
    expect(v.status, v.stderr).toBe(0);
    expect(v.stderr).toContain(`signed at its head by ed25519:${pub(keyB)}`);
    const exported = join(dir, 'log-1.jsonl');
    writeFileSync(exported, sysroot(['log', '--url', server!.url, '--export', REF]).stdout);
    const lines = readFileSync(exported, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.map((r) => r.version)).toEqual([1, 2, 2, 2]);
    expect(lines[3].signatures.map((s: { key: string }) => s.key)).toEqual([`ed25519:${pub(keyB)}`]);
    await push('v4');
    const later = sysroot([
      'log',
      '--url',
      server!.url,
      '--verify',
      '--verify-key',
      pub(keyB),
      '--since',
      exported,
      REF,
    ]);
    expect(later.status, later.stderr).toBe(0);
    const offline = sysroot(['log', '--records', exported, '--verify', '--verify-key', pub(keyB), REF]);
    expect(offline.status, offline.stderr).toBe(0);
    // The head of that export is signed only by B: with A alone it proves nothing.
    expect(sysroot(['log', '--records', exported, '--verify', '--verify-key', pub(keyA), REF]).status).toBe(
      9,
    );
  });

  it('an old record edited in storage is caught by fsck and log --verify', async () => {
    const exported = join(dir, 'log-2.jsonl');
    writeFileSync(exported, sysroot(['log', '--repo', repo, '--export', REF]).stdout);
    const logDir = join(repo, 'sysroot/reflog', REF);
    const second = join(logDir, readdirSync(logDir).sort()[1]!);
    const text = readFileSync(second, 'utf8');
    writeFileSync(second, text.replace(/"reason":"[^"]*"/, '"reason":"nothing to see here"'));
    const f = sysroot(['fsck', '--repo', repo]);
    expect(f.status).toBe(4);
    expect(f.stdout).toMatch(/#2: the signature by ed25519:\S+ does not verify \(edited\?\)/);
    expect(f.stdout).toMatch(/#3: prev is \w+, but the previous record hashes to \w+ \(edited\?\)/);
    const v = sysroot([
      'log',
      '--repo',
      repo,
      '--verify',
      '--verify-key',
      pub(keyB),
      '--since',
      exported,
      REF,
    ]);
    expect(v.status).toBe(9);
    expect(v.stdout).toContain('#2: differs from the earlier export (history rewritten)');
    expect(v.stdout).toMatch(/#3: prev is/);
    writeFileSync(second, text);
    expect(sysroot(['fsck', '--repo', repo]).status).toBe(0);
  });
});
