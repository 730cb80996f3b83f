/**
 * Issue 6, point 1 (the client half): `sysroot push` killed with SIGKILL at random moments, at least
 * 50 times, against a live `sysroot serve` → after each kill the repository is sound (our fsck and
 * `ostree fsck` clean, so no ref points at an incomplete commit), and the push run again succeeds,
 * sending only the objects the server lacks (the server's own count of what it stored vs. had).
 *
 * Each round pushes a new version (7 files rewritten, ~560 KiB new) with a fixed timestamp, so a
 * retry builds the very same commit unless the killed push got as far as moving the ref. Kill times
 * are random over one measured push: in even rounds uniform over the whole of it (start-up and
 * hashing included, ~75% of it), in odd rounds uniform over the pack and the ref move, counted from
 * the server's answer to "which objects are missing" (the pack follows at once).
 */
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TokenStore } from '../src/auth/tokens.js';
import { Repository } from '../src/repo/repository.js';
import { sysroot } from './helpers/cli.js';
import {
  checkRepo,
  countObjects,
  makeTree,
  mutateTree,
  packLines,
  seededRandom,
  seedFromEnv,
  spawnCli,
} from './helpers/crash.js';
import { tempDir } from './helpers/repo.js';
import { type ServeProcess, startServe, stopAllServers } from './helpers/serve-process.js';

const KILLS = Number(process.env.CRASH_KILLS ?? 50);
/** ~1 s a round on 2 idle cores; far more when other test files share them. */
const LOOP_TIMEOUT_MS = 60_000 + KILLS * 6_000;
const REF = 'crash/client';
/**
 * Per version: 6 of 60 small files and one 512 KiB file rewritten. The pack is then a few records
 * and some real bytes, while the repository stays small enough (~0.6 MiB more per push) for both
 * fscks after every kill to take tens of milliseconds.
 */
const FILE_BYTES = 8 * 1024;
const CHANGED_PER_ROUND = 6;
const BLOB_BYTES = 512 * 1024;

/**
 * Wait until the server has logged nothing for `quietMs`: a request of the killed push still being
 * handled (an aborted pack flushing the records it verified) logs its line when it is done.
 */
async function settle(server: ServeProcess, quietMs = 100): Promise<void> {
  let last = server.log().length;
  for (let since = Date.now(); Date.now() - since < quietMs; ) {
    await sleep(20);
    if (server.log().length !== last) {
      last = server.log().length;
      since = Date.now();
    }
  }
}

/** Which requests of one push the server answered, from its access log. */
function phaseOf(log: string): string {
  if (/PUT \/api\/v1\/refs\/\S+ 200/.test(log)) return 'after the ref move';
  if (/POST \/api\/v1\/packs \d{3}/.test(log)) return 'after the pack';
  if (/POST \/api\/v1\/objects\/missing 200/.test(log)) return 'during the pack';
  if (/GET \/api\/v1\/refs\//.test(log)) return 'while hashing';
  return 'before any request';
}

describe(`kill -9 of the pushing client, ${KILLS} times`, () => {
  const seed = seedFromEnv('CRASH_SEED');
  const random = seededRandom(seed);
  let repoPath: string;
  let tree: string;
  let paths: string[];
  let server: ServeProcess;
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    repoPath = join(tempDir('sysroot-crash-client-'), 'repo');
    const repo = await Repository.init(repoPath);
    const tokens = TokenStore.forRepo(repo);
    env = { SYSROOT_TOKEN: (await tokens.create({ name: 'crash', scopes: ['push:crash/*'] })).token };
    tokens.close();
    repo.close();
    tree = join(tempDir('sysroot-crash-tree-'), 'tree');
    paths = makeTree(tree, { dirs: 6, files: 10, bytes: FILE_BYTES });
    server = await startServe(repoPath);
  });

  afterAll(async () => {
    await server?.stop();
    await stopAllServers();
  });

  it(
    'leaves a sound repository after every kill, and the retried push sends only what is missing',
    async () => {
      const args = (ts: number) => [
        'push',
        '--url',
        server.url,
        '--ref',
        REF,
        '--timestamp',
        `@${ts}`,
        '--json',
        tree,
      ];
      const base = 1_700_000_000;

      // One push of a new version, timed: its whole duration, and when it starts sending the pack.
      const durations: number[] = [];
      const netStarts: number[] = [];
      const netSpans: number[] = [];
      const first = await spawnCli(args(base - 20), env).done;
      expect(first.code, first.stderr).toBe(0);
      for (let i = 0; i < 3; i++) {
        mutateTree(paths, CHANGED_PER_ROUND, FILE_BYTES, random, {
          path: join(tree, 'blob'),
          bytes: BLOB_BYTES,
        });
        const before = server.log().length;
        const p = spawnCli(args(base - 10 + i), env);
        const r = await p.done;
        expect(r.code, r.stderr).toBe(0);
        durations.push(performance.now() - p.started);
        // The access log stamps a line when the answer is sent: the missing-objects answer precedes the pack.
        const log = server.log().slice(before);
        const stamp = (re: RegExp) => Date.parse(new RegExp(`^(\\S+) info ${re.source}`, 'm').exec(log)![1]!);
        const missingAt = stamp(/POST \/api\/v1\/objects\/missing/);
        netStarts.push(missingAt - (performance.timeOrigin + p.started));
        netSpans.push(stamp(/PUT \/api\/v1\/refs\//) - missingAt);
      }
      const duration = durations.sort((a, b) => a - b)[1]!;
      const netStart = Math.max(0, netStarts.sort((a, b) => a - b)[1]!);
      // From the server's answer to "missing" to its answer to the ref move: the pack and the move.
      const netSpan = Math.max(5, netSpans.sort((a, b) => a - b)[1]!);

      const phases = new Map<string, number>();
      let completedBeforeKill = 0;
      for (let round = 1; round <= KILLS; round++) {
        const ctx = `seed ${seed}, round ${round}`;
        mutateTree(paths, CHANGED_PER_ROUND, FILE_BYTES, random, {
          path: join(tree, 'blob'),
          bytes: BLOB_BYTES,
        });
        const ts = base + round;
        const logStart = server.log().length;
        const victim = spawnCli(args(ts), env);
        if (round % 2 === 0) {
          await sleep(random() * duration);
        } else {
          // Anchored on the server's answer to "which objects are missing": the pack follows at once.
          while (
            !/POST \/api\/v1\/objects\/missing/.test(server.log().slice(logStart)) &&
            victim.child.exitCode === null
          )
            await sleep(2);
          await sleep(random() * netSpan);
        }
        victim.child.kill('SIGKILL');
        const killed = await victim.done;
        if (killed.code === 0) completedBeforeKill++;
        else expect(killed.signal, ctx).toBe('SIGKILL');
        await settle(server);
        const phase = killed.code === 0 ? 'finished first' : phaseOf(server.log().slice(logStart));
        phases.set(phase, (phases.get(phase) ?? 0) + 1);

        // The retry starts at once: it spends its first ~250 ms starting up and hashing, long enough
        // for the check of the state the kill left (under the lock, so it cannot see a ref move halfway).
        const retryLog = server.log().length;
        const objectsBefore = countObjects(repoPath);
        const retrying = spawnCli(args(ts), env);
        const { report } = await checkRepo(repoPath, { underLock: true });
        expect(report.problems, ctx).toEqual([]);

        const retry = await retrying.done;
        expect(retry.code, `${ctx}: ${retry.stderr}`).toBe(0);
        const result = JSON.parse(retry.stdout) as { commit: string; uploaded: { objects: number } };
        // The server's own account: every record of the retry's pack was new to it.
        const packs = packLines(server.log().slice(retryLog));
        expect(
          packs.every((p) => p.existing === 0),
          `${ctx}: ${JSON.stringify(packs)}`,
        ).toBe(true);
        expect(
          packs.reduce((n, p) => n + p.records, 0),
          ctx,
        ).toBe(result.uploaded.objects);
        expect(countObjects(repoPath) - objectsBefore, ctx).toBe(result.uploaded.objects);
        const head = (await (await fetch(`${server.url}/api/v1/refs/${REF}`)).json()) as { commit: string };
        expect(head.commit, ctx).toBe(result.commit);
      }

      console.log(
        `crash-client: ${KILLS} kills (seed ${seed}, push ${Math.round(duration)} ms, pack from ~${Math.round(netStart)} ms, pack and ref move ~${Math.round(netSpan)} ms): ` +
          [...phases].map(([k, v]) => `${k} ${v}`).join(', '),
      );
      expect(completedBeforeKill).toBeLessThan(KILLS / 2);
      const { report } = await checkRepo(repoPath, { underLock: true });
      expect(report.problems).toEqual([]);
      await server.stop();
      // The CLI's fsck too, on the server's repository at rest.
      const cliFsck = sysroot(['fsck', '--repo', repoPath]);
      expect(cliFsck.status, cliFsck.stderr).toBe(0);
      expect(cliFsck.stderr + cliFsck.stdout).toMatch(/0 error\(s\), 0 warning\(s\)/);
    },
    LOOP_TIMEOUT_MS,
  );
});
