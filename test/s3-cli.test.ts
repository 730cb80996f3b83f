/**
 * The `sysroot` CLI on a repository in a real S3 bucket (Ceph RGW): `--repo s3://BUCKET/PREFIX`,
 * endpoint and credentials from the standard AWS environment only. init, commit, log, refs, show,
 * checkout, fsck, reindex (node-local index in SYSROOT_INDEX_DIR) and token create/list.
 */
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sysroot } from './helpers/cli.js';
import { tempDir } from './helpers/repo.js';
import { type S3Server, s3Env, startS3 } from './helpers/s3-server.js';

const REF = 'stage3-sysroot/x86_64';

let s3: S3Server;
let env: NodeJS.ProcessEnv;
let repo: string;

beforeAll(async () => {
  s3 = await startS3({ bucket: 'sysroot-cli' });
  repo = `s3://${s3.bucket}/registry/main`;
  env = { ...s3Env(s3), SYSROOT_INDEX_DIR: tempDir('sysroot-s3cli-index-'), SYSROOT_ACTOR: 'tester@ci' };
});
afterAll(() => s3?.stop());

function run(args: string[], extra: NodeJS.ProcessEnv = {}) {
  const r = sysroot(args, { env: { ...env, ...extra } });
  if (r.status !== 0) throw new Error(`sysroot ${args.join(' ')} exited ${r.status}\n${r.stderr}`);
  return r;
}
const last = (stdout: string) => stdout.trimEnd().split('\n').pop() ?? '';

function makeTree(version: string): string {
  const dir = join(tempDir('sysroot-s3cli-src-'), 'tree');
  mkdirSync(join(dir, 'usr/lib'), { recursive: true });
  writeFileSync(join(dir, 'etc-version'), `VERSION=${version}\n`);
  writeFileSync(join(dir, 'usr/lib/libc.so.6'), Buffer.alloc(100_000, version.charCodeAt(0)));
  writeFileSync(join(dir, 'usr/tool'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
  return dir;
}

describe('sysroot CLI on s3://BUCKET/PREFIX', () => {
  const commits: string[] = [];

  it('init creates the repository in the bucket, and is idempotent', () => {
    expect(run(['init', '--repo', repo]).stderr).toMatch(/initialised/);
    run(['init', '--repo', repo]);
  });

  it('refuses a bucket prefix that holds no repository, with a hint', () => {
    const r = sysroot(['refs', '--repo', `s3://${s3.bucket}/nothing-here`], { env });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/not a repository/);
    expect(r.stderr).toMatch(/sysroot init --repo s3:\/\//);
  });

  it('commit stores a tree, twice on one ref', () => {
    for (const v of ['1', '2']) {
      const r = run(['commit', '--repo', repo, '--ref', REF, '--subject', `release ${v}`, makeTree(v)]);
      commits.push(last(r.stdout));
    }
    expect(commits[0]).toMatch(/^[0-9a-f]{64}$/);
    expect(commits[1]).toMatch(/^[0-9a-f]{64}$/);
    expect(commits[1]).not.toBe(commits[0]);
  });

  it('log, refs and show read the history back', () => {
    const log = run(['log', '--repo', repo, REF]).stdout;
    expect(log.indexOf(commits[1]!)).toBeGreaterThanOrEqual(0);
    expect(log.indexOf(commits[1]!)).toBeLessThan(log.indexOf(commits[0]!)); // newest first
    expect(log).toMatch(/release 2/);
    expect(run(['refs', '--repo', repo]).stdout).toContain(`${REF} ${commits[1]}`);
    const shown = run(['show', '--repo', repo, `${REF}@${commits[0]}`]).stdout;
    expect(shown).toContain(commits[0]);
    expect(shown).toMatch(/release 1/);
  });

  it('checkout writes the tree (a pin on the older commit too)', () => {
    for (const [i, c] of commits.entries()) {
      const dest = join(tempDir('sysroot-s3cli-co-'), 'out');
      run(['checkout', '--repo', repo, `${REF}@${c}`, dest]);
      expect(readFileSync(join(dest, 'etc-version'), 'utf8')).toBe(`VERSION=${i + 1}\n`);
      expect(lstatSync(join(dest, 'usr/tool')).mode & 0o777).toBe(0o755);
      expect(readFileSync(join(dest, 'usr/lib/libc.so.6')).length).toBe(100_000);
    }
    const dest = join(tempDir('sysroot-s3cli-co-'), 'head');
    run(['checkout', '--repo', repo, REF, dest]);
    expect(readFileSync(join(dest, 'etc-version'), 'utf8')).toBe('VERSION=2\n');
    expect(existsSync(join(dest, 'usr'))).toBe(true);
    expect(() => readlinkSync(join(dest, 'usr'))).toThrow();
  });

  it('fsck re-hashes everything in the bucket and finds nothing wrong', () => {
    const r = run(['fsck', '--repo', repo]);
    expect(r.stdout + r.stderr).toMatch(/2 commits, 1 refs, 2 ref log records: 0 error\(s\)/);
  });

  it('reindex rebuilds the node-local index in SYSROOT_INDEX_DIR, from the bucket alone', () => {
    const fresh = tempDir('sysroot-s3cli-index2-');
    const r = run(['reindex', '--repo', repo], { SYSROOT_INDEX_DIR: fresh });
    expect(r.stdout + r.stderr).toMatch(/1 refs, 2 commits, 2 ref log records/);
    expect(readdirSync(fresh).some((f) => f.endsWith('.sqlite'))).toBe(true);
    // The index built by commit (the other directory) is consistent with it.
    expect(run(['reindex', '--repo', repo]).stdout + run(['log', '--repo', repo, REF]).stdout).toContain(
      commits[1],
    );
  });

  it('token create stores only a hash in the bucket; token list shows it from another node', () => {
    const token = last(run(['token', 'create', '--repo', repo, '--name', 'ci', '--scope', 'push:**']).stdout);
    expect(token).toMatch(/^srt_/);
    const list = run(['token', 'list', '--repo', repo], { SYSROOT_INDEX_DIR: tempDir('sysroot-s3cli-n2-') });
    expect(list.stdout).toMatch(/ci/);
    expect(list.stdout).not.toContain(token);
  });

  it('an s3:// repository with no credentials in the environment fails with a clear error', () => {
    const r = sysroot(['refs', '--repo', repo], {
      env: { ...env, AWS_ACCESS_KEY_ID: 'WRONGKEY', AWS_SECRET_ACCESS_KEY: 'wrong' },
    });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/s3|S3|denied|403|InvalidAccessKeyId/);
  });
});
