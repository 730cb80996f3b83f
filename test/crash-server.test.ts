/**
 * Issue 6, point 1 (the server half): `sysroot serve` killed with SIGKILL at random moments of a
 * push, at least 50 times, and started again on the same repository and port, as a supervisor would.
 *
 * After each kill, with the server down (the state the crash left): every object verifies (our fsck
 * and `ostree fsck`), and no ref — refs/heads or any ref log record — points at an incomplete commit.
 * The one thing a crash may leave is a ref move cut between its commit point (the ref log record)
 * and refs/heads or the summary; `sysroot serve` finishes such a move when it starts, so after the
 * restart fsck is clean without exception. The push then completes — by its own retries once the
 * server is back, or run again — and the server's own account shows that nothing it already had was
 * sent again.
 */
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { TokenStore } from '../src/auth/tokens.js';
import { encodeCommit } from '../src/objects/index.js';
import { SUMMARY_KEY } from '../src/repo/layout.js';
import { appendRecord, readLastRecord } from '../src/repo/reflog.js';
import { Repository } from '../src/repo/repository.js';
import { sysroot } from './helpers/cli.js';
import {
  checkRepo,
  countObjects,
  makeTree,
  packLines,
  seededRandom,
  seedFromEnv,
  smallTreeVersions,
  spawnCli,
} from './helpers/crash.js';
import { describeTally, type KillLoop, serverKills, timePush } from './helpers/kill-loop.js';
import { startServe, stopAllServers } from './helpers/killable-serve.js';
import { tempDir } from './helpers/repo.js';

const KILLS = Number(process.env.CRASH_KILLS ?? 50);
/** ~1 s a round on 2 idle cores; far more when other test files share them. */
const LOOP_TIMEOUT_MS = 60_000 + KILLS * 6_000;
async function newRepo(prefix: string): Promise<{ path: string; token: string }> {
  const path = join(tempDir(prefix), 'repo');
  const repo = await Repository.init(path);
  const tokens = TokenStore.forRepo(repo);
  const { token } = await tokens.create({ name: 'crash', scopes: ['push:crash/*'] });
  tokens.close();
  repo.close();
  return { path, token };
}

async function headOf(url: string, ref: string): Promise<string> {
  return ((await (await fetch(`${url}/api/v1/refs/${ref}`)).json()) as { commit: string }).commit;
}

describe(`kill -9 of the server during a push, ${KILLS} times`, () => {
  const seed = seedFromEnv('CRASH_SEED');
  const random = seededRandom(seed);

  afterAll(stopAllServers);

  it(
    'leaves no ref at an incomplete commit, starts clean, and the push completes sending only what is missing',
    async () => {
      const { path: repoPath, token } = await newRepo('sysroot-crash-server-');
      const tree = join(tempDir('sysroot-crash-tree-'), 'tree');
      const server = await startServe(repoPath);
      const loop: KillLoop = {
        server,
        repoPath,
        ref: 'crash/server',
        env: { SYSROOT_TOKEN: token },
        random,
        nextVersion: smallTreeVersions(tree, random),
      };
      const timing = await timePush(loop);
      const outcomes = await serverKills(loop, timing, 1, KILLS, `seed ${seed}`);
      console.log(
        `crash-server: ${KILLS} kills (seed ${seed}, ${JSON.stringify(timing)}): ${describeTally(outcomes)}`,
      );

      const head = await headOf(server.url, loop.ref);
      await server.stop();
      const { report } = await checkRepo(repoPath);
      expect(report.problems).toEqual([]);
      const cliFsck = sysroot(['fsck', '--repo', repoPath]);
      expect(cliFsck.status, cliFsck.stderr).toBe(0);
      const repo = await Repository.open(repoPath);
      expect(await repo.readRef(loop.ref)).toBe(head);
      repo.close();
    },
    LOOP_TIMEOUT_MS,
  );

  it('a push whose server dies halfway through the pack resends, after the restart, only what did not land', async () => {
    const REF = 'crash/midpack';
    const { path: repoPath, token } = await newRepo('sysroot-crash-midpack-');
    const tree = join(tempDir('sysroot-crash-tree-'), 'tree');
    // 48 files of 512 KiB: a 24 MiB pack, long enough to be killed in the middle of.
    makeTree(tree, { dirs: 4, files: 12, bytes: 512 * 1024 });
    const server = await startServe(repoPath);
    const before = countObjects(repoPath);
    const victim = spawnCli(['push', '--url', server.url, '--ref', REF, '--json', tree], {
      SYSROOT_TOKEN: token,
    });
    // Some files of the pack are stored, but not all of them (48 files + 5 dirtrees/dirmetas + commit).
    while (countObjects(repoPath) - before < 8 && victim.child.exitCode === null) await sleep(2);
    await server.kill9();
    const landed = countObjects(repoPath) - before;
    expect(landed).toBeGreaterThanOrEqual(8);
    expect(landed).toBeLessThan(48);
    await server.restart();
    const r = await victim.done;
    expect(r.code, r.stderr).toBe(0);
    // A new ref's pack goes while the tree is hashed, once; cut off, the push asks what is lacking
    // (retried until the server is back) and sends that.
    expect(r.stderr).toMatch(/POST \/api\/v1\/packs: .*asking which objects the server lacks/);
    expect(r.stderr).toMatch(/POST \/api\/v1\/objects\/missing: .*retry 1/);
    const packs = packLines(server.log());
    expect(packs).toHaveLength(1);
    expect(packs[0]!.existing).toBe(0);
    const result = JSON.parse(r.stdout) as { commit: string; uploaded: { objects: number } };
    expect(result.uploaded.objects).toBe(packs[0]!.records);
    expect(landed + packs[0]!.stored).toBe(countObjects(repoPath) - before);
    expect(await headOf(server.url, REF)).toBe(result.commit);
    await server.stop();
    const { report } = await checkRepo(repoPath);
    expect(report.problems).toEqual([]);
  });

  it('finishes, when it starts, a ref move a crash cut between the ref log and refs/heads', async () => {
    const REF = 'crash/cut';
    const { path: repoPath, token } = await newRepo('sysroot-crash-cut-');
    const tree = join(tempDir('sysroot-crash-tree-'), 'tree');
    makeTree(tree, { dirs: 1, files: 3, bytes: 1000 });
    let server = await startServe(repoPath);
    const pushed = sysroot(['push', '--url', server.url, '--ref', REF, '--json', tree], {
      env: { SYSROOT_TOKEN: token },
    });
    expect(pushed.status, pushed.stderr).toBe(0);
    const v1 = (JSON.parse(pushed.stdout) as { commit: string }).commit;
    await server.stop();

    // What a crash right after the commit point leaves: record 2 written, refs/heads and summary not.
    const repo = await Repository.open(repoPath);
    const c1 = await repo.readCommit(v1);
    const v2 = await repo.objects.putMetadata('commit', encodeCommit({ ...c1, parent: v1, subject: 'v2' }));
    const last = (await readLastRecord(repo.blobs, REF))!;
    await appendRecord(repo.blobs, {
      ...last.record,
      seq: 2,
      from: v1,
      to: v2,
      reason: 'v2',
      prev: last.hash,
      time: new Date().toISOString(),
    });
    const staleSummary = await repo.blobs.read(SUMMARY_KEY);
    repo.close();
    const cut = await checkRepo(repoPath);
    expect(cut.report.problems.map((p) => p.message)).toEqual([
      expect.stringMatching(new RegExp(`ref ${REF} is at ${v1} but its ref log ends at ${v2}`)),
    ]);

    server = await startServe(repoPath);
    expect(server.log()).toMatch(new RegExp(`finished an interrupted move of ${REF} to ${v2}`));
    expect(await (await fetch(`${server.url}/repo/refs/heads/${REF}`)).text()).toBe(`${v2}\n`);
    const summary = Buffer.from(await (await fetch(`${server.url}/repo/summary`)).arrayBuffer());
    expect(summary.equals(staleSummary!)).toBe(false);
    await server.stop();
    const { report } = await checkRepo(repoPath);
    expect(report.problems).toEqual([]);
  });
});
