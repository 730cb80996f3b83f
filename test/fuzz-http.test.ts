/**
 * Hostile HTTP, at random: 10,000 fuzzed requests (http-fuzz.ts) against a registry with real
 * commits, 7,000 in process and 3,000 as raw bytes over real sockets to a `sysroot serve` process.
 * Zero 5xx, the server process alive, and the repository exactly as it was and fsck-clean. The seed
 * is random per run and printed; SYSROOT_FUZZ_SEED=<n> replays one. `npm run soak` runs 200,000.
 */
import { spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { sysroot } from './helpers/cli.js';
import { type FuzzRun, runFuzz } from './helpers/fuzz-run.js';

const SEED = Number(process.env.SYSROOT_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));

let run: FuzzRun | undefined;
afterAll(async () => {
  await run?.serve.stop();
  run?.fixture.tokenStore.close();
  run?.fixture.repo.close();
});

describe('HTTP fuzzing', () => {
  it('answers 10,000 random requests without a 5xx, stays up, and stores nothing', async () => {
    run = await runFuzz({ seed: SEED, inProcess: 7_000, socket: 3_000 });
    const { report, fixture, serve } = run;
    console.log(`fuzz seed ${SEED}: ${JSON.stringify(report)}`);
    const total = Object.values(report.statuses).reduce((a, b) => a + b, 0);
    expect(total, `seed ${SEED}`).toBe(10_000);
    expect(report.serverErrors, `seed ${SEED}`).toEqual([]);
    expect(report.logErrors, `seed ${SEED}`).toEqual([]);
    expect(report.unclearErrors, `seed ${SEED}`).toEqual([]);
    expect(serve.alive(), `seed ${SEED}: the server process died\n${serve.stderr().slice(-2000)}`).toBe(true);
    // Most requests must reach the handlers, not stop at the router or the parser.
    const served = Object.entries(report.statuses).filter(([s]) => s !== '404' && s !== '0');
    expect(served.reduce((a, [, n]) => a + n, 0)).toBeGreaterThan(5_000);
    expect(report.statuses['200']).toBeGreaterThan(500);

    // Nothing stored, no ref moved, no ref log record, no token changed.
    expect([...fixture.snapshot()]).toEqual([...run.before]);
    expect(sysroot(['fsck', '--repo', fixture.repo.location]).status).toBe(0);
    const ostree = spawnSync('ostree', ['fsck', `--repo=${fixture.repo.location}`], { encoding: 'utf8' });
    expect(ostree.status, ostree.stderr).toBe(0);
  });
});
