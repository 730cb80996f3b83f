/**
 * Issue 6, point 1 (the client half): `sysroot push` killed with SIGKILL at random moments, at least
 * 50 times, against a live `sysroot serve` → after each kill the repository is sound (our fsck and
 * `ostree fsck` clean, so no ref points at an incomplete commit), and the push run again succeeds,
 * sending only the objects the server lacks (the server's own count of what it stored vs. had).
 * How kill times are chosen: helpers/kill-loop.ts. The real-sysroot variant is in test/soak/.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TokenStore } from '../src/auth/tokens.js';
import { Repository } from '../src/repo/repository.js';
import { sysroot } from './helpers/cli.js';
import { checkRepo, seededRandom, seedFromEnv, smallTreeVersions } from './helpers/crash.js';
import { clientKills, describeTally, type KillLoop, timePush } from './helpers/kill-loop.js';
import { type ServeProcess, startServe, stopAllServers } from './helpers/killable-serve.js';
import { tempDir } from './helpers/repo.js';

const KILLS = Number(process.env.CRASH_KILLS ?? 50);
/** ~1 s a round on 2 idle cores; far more when other test files share them. */
const LOOP_TIMEOUT_MS = 60_000 + KILLS * 6_000;
describe(`kill -9 of the pushing client, ${KILLS} times`, () => {
  const seed = seedFromEnv('CRASH_SEED');
  const random = seededRandom(seed);
  let repoPath: string;
  let token: string;
  let server: ServeProcess;

  beforeAll(async () => {
    repoPath = join(tempDir('sysroot-crash-client-'), 'repo');
    const repo = await Repository.init(repoPath);
    const tokens = TokenStore.forRepo(repo);
    ({ token } = await tokens.create({ name: 'crash', scopes: ['push:crash/*'] }));
    tokens.close();
    repo.close();
    server = await startServe(repoPath);
  });

  afterAll(async () => {
    await server?.stop();
    await stopAllServers();
  });

  it(
    'leaves a sound repository after every kill, and the retried push sends only what is missing',
    async () => {
      const tree = join(tempDir('sysroot-crash-tree-'), 'tree');
      const loop: KillLoop = {
        server,
        repoPath,
        ref: 'crash/client',
        env: { SYSROOT_TOKEN: token },
        random,
        nextVersion: smallTreeVersions(tree, random),
      };
      const timing = await timePush(loop);
      const phases = await clientKills(loop, timing, 1, KILLS, `seed ${seed}`);
      console.log(
        `crash-client: ${KILLS} kills (seed ${seed}, ${JSON.stringify(timing)}): ${describeTally(phases)}`,
      );
      expect(phases.get('finished first') ?? 0).toBeLessThan(KILLS / 2);

      await server.stop();
      // The CLI's fsck too, on the server's repository at rest.
      const cliFsck = sysroot(['fsck', '--repo', repoPath]);
      expect(cliFsck.status, cliFsck.stderr).toBe(0);
      expect(cliFsck.stderr + cliFsck.stdout).toMatch(/0 error\(s\), 0 warning\(s\)/);
      const { report } = await checkRepo(repoPath);
      expect(report.problems).toEqual([]);
    },
    LOOP_TIMEOUT_MS,
  );
});
