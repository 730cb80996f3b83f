/**
 * Stock `ostree pull` straight from the bucket, with no registry node: the prefix of an s3://
 * repository is an OSTree archive repository key for key, so the S3 server's own HTTP endpoint (or a
 * CDN in front of it) serves it as any static web server would (docs/operations.md, "Serving the
 * bucket without a node").
 *
 * Making it anonymously readable on Ceph RGW 16, as observed here:
 *   - A bucket policy is honoured: `Allow` `s3:GetObject` to Principal "*" on
 *     `arn:aws:s3:::BUCKET/PREFIX/...` makes exactly those keys readable without a signature. The
 *     policy below lists only what OSTree fetches (config, summary, summary.sig, refs/…, objects/…),
 *     so the registry's own `sysroot/` (ref log, token hashes) stays private.
 *   - Without `s3:ListBucket` as well, a missing key answers 403 instead of 404 (as on AWS, which does
 *     not reveal whether a key exists). ostree 2022.7 takes a 403 like a 404, so the optional files
 *     (`summary.sig`, `.commitmeta`) need no ListBucket: the pull below gets 403s for those and
 *     succeeds. Granting ListBucket would turn them into 404s but let anyone list the whole bucket
 *     (RGW ignores an `s3:prefix` condition on a GET of a missing key: still 403).
 *   - A `public-read` bucket ACL is not enough: it allows listing, but each object keeps its own
 *     private ACL (403 on GET), and the registry writes objects without `x-amz-acl: public-read`.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GetBucketPolicyCommand, PutBucketPolicyCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sysrootOk } from './helpers/cli.js';
import { ostree } from './helpers/ostree.js';
import { tempDir } from './helpers/repo.js';
import { type S3Server, s3ClientConfig, s3Env, startS3 } from './helpers/s3-server.js';
import { describeTree, diffTrees } from './helpers/tree-compare.js';

const REF = 'stage3-sysroot/x86_64';
const PREFIX = 'releases/sysroots';

let s3: S3Server;
let client: S3Client;
let env: NodeJS.ProcessEnv;
let work: string;
/** `${endpoint}/${bucket}/${prefix}`: path-style, as RGW serves it (quirk 9). */
let base: string;
const trees: string[] = [];
const commits: string[] = [];

/**
 * Two versions of a small tree: text, an executable, a symlink, nested directories, and a 12 MiB
 * random file (above the 8 MiB part size, so its object goes up as a multipart upload).
 */
function makeTree(version: number, big: Buffer): string {
  const dir = join(work, `tree-v${version}`);
  mkdirSync(join(dir, 'usr/lib/gcc'), { recursive: true });
  mkdirSync(join(dir, 'etc'));
  writeFileSync(join(dir, 'etc/os-release'), `VERSION_ID=${version}\n`);
  writeFileSync(join(dir, 'usr/lib/libbig.so.1'), big);
  writeFileSync(join(dir, 'usr/lib/gcc/cc1'), `#!/bin/sh\necho cc1 v${version}\n`);
  chmodSync(join(dir, 'usr/lib/gcc/cc1'), 0o755);
  symlinkSync('libbig.so.1', join(dir, 'usr/lib/libbig.so'));
  if (version === 1) writeFileSync(join(dir, 'usr/lib/removed-in-v2'), 'old\n');
  else writeFileSync(join(dir, 'usr/lib/added-in-v2'), 'new\n');
  return dir;
}

beforeAll(async () => {
  s3 = await startS3({ bucket: 'sysroot-static' });
  client = new S3Client(s3ClientConfig(s3));
  work = tempDir('sysroot-s3-static-');
  env = { ...s3Env(s3), SYSROOT_INDEX_DIR: join(work, 'index'), SYSROOT_ACTOR: 'tester@ci' };
  base = `${s3.endpoint}/${s3.bucket}/${PREFIX}`;
  const repo = `s3://${s3.bucket}/${PREFIX}`;
  sysrootOk(['init', '--repo', repo], { env });
  const big = randomBytes(12 << 20);
  for (const v of [1, 2]) {
    trees.push(makeTree(v, big));
    commits.push(
      sysrootOk(['commit', '--repo', repo, '--ref', REF, '--subject', `release ${v}`, trees[v - 1]!], {
        env,
      }),
    );
  }
});

afterAll(async () => {
  client?.destroy();
  await s3?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

const anonymous = async (key: string) => {
  const r = await fetch(`${base}/${key}`);
  return { status: r.status, text: await r.text() };
};

describe('stock ostree pull straight from the bucket, no registry node', () => {
  it('the bucket starts private: an unsigned GET of the repository config is refused', async () => {
    expect(commits[0]).toMatch(/^[0-9a-f]{64}$/);
    expect(commits[1]).toMatch(/^[0-9a-f]{64}$/);
    expect((await anonymous('config')).status).toBe(403);
  });

  it('a bucket policy makes the OSTree part of the prefix anonymously readable, and only that', async () => {
    const arn = (key: string) => `arn:aws:s3:::${s3.bucket}/${PREFIX}/${key}`;
    const Policy = JSON.stringify({
      Version: '2012-10-17',
      Statement: [
        {
          Sid: 'OstreeStaticPull',
          Effect: 'Allow',
          Principal: '*',
          Action: ['s3:GetObject'],
          Resource: ['config', 'summary', 'summary.sig', 'refs/*', 'objects/*'].map(arn),
        },
      ],
    });
    await client.send(new PutBucketPolicyCommand({ Bucket: s3.bucket, Policy }));
    expect(
      JSON.parse((await client.send(new GetBucketPolicyCommand({ Bucket: s3.bucket }))).Policy!),
    ).toEqual(JSON.parse(Policy));

    expect(await anonymous('config')).toMatchObject({
      status: 200,
      text: expect.stringMatching(/mode=archive/),
    });
    expect(await anonymous(`refs/heads/${REF}`)).toEqual({ status: 200, text: `${commits[1]}\n` });
    expect((await anonymous('summary')).status).toBe(200);
    // The registry's own records are not part of the OSTree repository and stay private.
    expect((await anonymous(`sysroot/reflog/${REF}/${'1'.padStart(16, '0')}.json`)).status).toBe(403);
    // Without ListBucket a missing key is 403 too, which ostree takes as "not there".
    expect((await anonymous('summary.sig')).status).toBe(403);
  });

  it('ostree pull --depth=-1 from the bucket URL fetches both commits, and ostree fsck is clean', async () => {
    const repo = join(work, 'ostree-client');
    await ostree(['init', `--repo=${repo}`, '--mode=archive']);
    await ostree(['remote', 'add', `--repo=${repo}`, '--no-gpg-verify', 'bucket', base]);
    await ostree(['pull', `--repo=${repo}`, '--depth=-1', 'bucket', REF]);
    expect((await ostree(['rev-parse', `--repo=${repo}`, `bucket:${REF}`])).trim()).toBe(commits[1]);
    const logged = (await ostree(['log', `--repo=${repo}`, `bucket:${REF}`])).match(
      /^commit [0-9a-f]{64}$/gm,
    );
    expect(logged?.map((l) => l.slice('commit '.length))).toEqual([commits[1], commits[0]]);
    await ostree(['fsck', `--repo=${repo}`]);

    for (const [i, commit] of commits.entries()) {
      const dest = join(work, `ostree-checkout-v${i + 1}`);
      await ostree(['checkout', `--repo=${repo}`, commit!, dest]);
      expect(diffTrees(describeTree(trees[i]!), describeTree(dest)), `v${i + 1}`).toEqual([]);
    }
  });
});
