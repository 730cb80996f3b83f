/**
 * Issue 6, point 1, the long variants:
 *
 * - on a real Debian sysroot (scripts/make-sysroot.sh amd64-v1 then amd64-v2, ~6,100 objects and
 *   ~50 MB of .filez; built once, cached): in each cycle a fresh server repository, the first push
 *   of v1 killed at a random moment (the pushing CLI, or the server), then the update to v2 killed
 *   the same way, each followed by the checks and the completed push of helpers/kill-loop.ts;
 * - on the small tree of the CI tests, 150 kills of each kind instead of 50 (CRASH_SOAK_KILLS).
 */
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { TokenStore } from '../../src/auth/tokens.js';
import { Repository } from '../../src/repo/repository.js';
import { checkRepo, seededRandom, seedFromEnv, smallTreeVersions } from '../helpers/crash.js';
import {
  clientKills,
  describeTally,
  type KillLoop,
  type PushTiming,
  serverKills,
  timeOnePush,
  timePush,
} from '../helpers/kill-loop.js';
import { type ServeProcess, startServe, stopAllServers } from '../helpers/killable-serve.js';
import { tempDir } from '../helpers/repo.js';
import { ensureSysroot } from '../helpers/sysroot-fixture.js';

const CYCLES = Number(process.env.CRASH_SOAK_CYCLES ?? 8);
const KILLS = Number(process.env.CRASH_SOAK_KILLS ?? 150);

afterAll(stopAllServers);

async function freshServer(
  prefix: string,
): Promise<{ repoPath: string; token: string; server: ServeProcess }> {
  const repoPath = join(tempDir(prefix), 'repo');
  const repo = await Repository.init(repoPath);
  const tokens = TokenStore.forRepo(repo);
  const { token } = await tokens.create({ name: 'soak', scopes: ['push:soak/*'] });
  tokens.close();
  repo.close();
  return { repoPath, token, server: await startServe(repoPath) };
}

describe('soak: kill -9 during pushes of a real Debian sysroot', () => {
  for (const kind of ['client', 'server'] as const) {
    it(`${CYCLES} cycles of v1 then v2, the ${kind} killed in each push`, async () => {
      const seed = seedFromEnv('CRASH_SEED');
      const random = seededRandom(seed);
      const versions = [await ensureSysroot('amd64-v1'), await ensureSysroot('amd64-v2')];
      // Timing of the first push of v1 into an empty repository (the longest push of a cycle).
      let timing: PushTiming;
      {
        const f = await freshServer('sysroot-soak-time-');
        const l: KillLoop = {
          ...f,
          ref: 'soak/sysroot',
          env: { SYSROOT_TOKEN: f.token },
          random,
          nextVersion: () => versions[0]!,
          pushFlags: ['--skip-special'],
        };
        timing = await timeOnePush(l, 0);
        await f.server.stop();
      }
      const tally = new Map<string, number>();
      for (let cycle = 1; cycle <= CYCLES; cycle++) {
        const f = await freshServer(`sysroot-soak-${kind}-`);
        const l: KillLoop = {
          ...f,
          ref: 'soak/sysroot',
          env: { SYSROOT_TOKEN: f.token },
          random,
          // Round 1: v1 into the empty repository; round 2: the update to v2.
          nextVersion: (round) => versions[(round - 1) % 2]!,
          pushFlags: ['--skip-special'],
        };
        const ctx = `seed ${seed}, cycle ${cycle}`;
        const got =
          kind === 'client'
            ? await clientKills(l, timing, 1, 2, ctx)
            : await serverKills(l, timing, 1, 2, ctx);
        for (const [k, v] of got) tally.set(k, (tally.get(k) ?? 0) + v);
        await l.server.stop();
        const { report } = await checkRepo(f.repoPath);
        expect(report.problems, ctx).toEqual([]);
      }
      console.log(
        `soak ${kind} kills on amd64 v1/v2: ${2 * CYCLES} kills (seed ${seed}, ${JSON.stringify(timing)}): ${describeTally(tally)}`,
      );
    });
  }
});

describe(`soak: ${KILLS} kills of each kind on the small tree`, () => {
  for (const kind of ['client', 'server'] as const) {
    it(`kill -9 of the ${kind}, ${KILLS} times`, async () => {
      const seed = seedFromEnv('CRASH_SEED');
      const random = seededRandom(seed);
      const f = await freshServer(`sysroot-soak-small-${kind}-`);
      const tree = join(tempDir('sysroot-soak-tree-'), 'tree');
      const l: KillLoop = {
        ...f,
        ref: 'soak/small',
        env: { SYSROOT_TOKEN: f.token },
        random,
        nextVersion: smallTreeVersions(tree, random),
      };
      const timing = await timePush(l);
      const ctx = `seed ${seed}`;
      const got =
        kind === 'client'
          ? await clientKills(l, timing, 1, KILLS, ctx)
          : await serverKills(l, timing, 1, KILLS, ctx);
      console.log(
        `soak ${kind} kills, small tree: ${KILLS} kills (seed ${seed}, ${JSON.stringify(timing)}): ${describeTally(got)}`,
      );
      await l.server.stop();
      const { report } = await checkRepo(f.repoPath);
      expect(report.problems).toEqual([]);
    });
  }
});
