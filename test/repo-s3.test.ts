/**
 * The repository on a real S3 server (Ceph RGW): the same commands as on a directory, and several
 * writers ("nodes", each its own Repository with its own index) moving one ref concurrently with no
 * shared lock — only the bucket's conditional writes keep the history linear.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fsck } from '../src/repo/fsck.js';
import { Repository } from '../src/repo/repository.js';
import { commitContent, tempDir } from './helpers/repo.js';
import { type S3Server, s3Env, startS3 } from './helpers/s3-server.js';

let s3: S3Server;
const saved = { ...process.env };

beforeAll(async () => {
  s3 = await startS3({ bucket: 'repos' });
  Object.assign(process.env, s3Env(s3), { SYSROOT_INDEX_DIR: tempDir('sysroot-s3-index-') });
}, 120_000);

afterAll(async () => {
  for (const k of [...Object.keys(s3Env(s3)), 'SYSROOT_INDEX_DIR']) {
    if (saved[k] === undefined) delete process.env[k];
    else process.env[k] = saved[k];
  }
  await s3?.stop();
});

describe('a repository in an S3 bucket', () => {
  it('commits, logs, resets and fscks exactly as on a directory', async () => {
    const repo = await Repository.init('s3://repos/basic');
    const c1 = await commitContent(repo, 'stage3-sysroot/x86_64', 'v1');
    const c2 = await commitContent(repo, 'stage3-sysroot/x86_64', 'v2');
    expect((await repo.readCommit(c2)).parent).toBe(c1);
    expect((await repo.log('stage3-sysroot/x86_64')).map((r) => r.to)).toEqual([c2, c1]);
    await repo.reset('stage3-sysroot/x86_64', c1, 'roll back');
    expect(await repo.readRef('stage3-sysroot/x86_64')).toBe(c1);
    expect((await fsck(repo)).problems).toEqual([]);
    // The index is node-local and rebuilt from the bucket alone.
    const other = await Repository.open('s3://repos/basic');
    expect((await other.reindex()).records).toBe(3);
    expect((await other.index()).getCommit(c2)).toMatchObject({ parent: c1, fileCount: 1 });
    repo.close();
    other.close();
  });

  it('keeps one linear history when several nodes push to one ref at once', async () => {
    await Repository.init('s3://repos/race');
    const nodes = await Promise.all(
      [0, 1, 2, 3].map(async (i) => {
        // Each node has its own index file, as separate machines would.
        process.env.SYSROOT_INDEX_DIR = join(tempDir(`sysroot-node${i}-`), 'index');
        return Repository.open('s3://repos/race');
      }),
    );
    const landed: string[] = [];
    const rounds = 3;
    for (let round = 0; round < rounds; round++) {
      const results = await Promise.allSettled(
        nodes.map((repo, i) => commitContent(repo, 'r', `round ${round} node ${i}`)),
      );
      for (const r of results) {
        // A push that does not land must say so clearly: a conflict, never anything else.
        if (r.status === 'fulfilled') landed.push(r.value);
        else expect((r.reason as { code?: string }).code).toBe('E_REF_CONFLICT');
      }
    }
    // Every commit that reported success is in the ref's linear history, and the log agrees.
    const repo = nodes[0]!;
    const history: string[] = [];
    for (let c: string | null = (await repo.readRef('r'))!; c; c = (await repo.readCommit(c)).parent)
      history.push(c);
    expect(new Set(history)).toEqual(new Set(landed));
    expect((await repo.log('r')).map((r) => r.to)).toEqual(history);
    expect(landed.length).toBeGreaterThanOrEqual(rounds);
    expect((await fsck(repo)).problems).toEqual([]);
    for (const n of nodes) n.close();
  }, 120_000);
});
