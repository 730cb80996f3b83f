/**
 * The long variant of test/fuzz-http.test.ts: 200,000 requests (150,000 in process, 50,000 over
 * sockets to a `sysroot serve` process), same assertions. `npm run soak`; SYSROOT_FUZZ_SEED=<n>
 * replays a run.
 */
import { spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { sysroot } from '../helpers/cli.js';
import { type FuzzRun, runFuzz } from '../helpers/fuzz-run.js';

const SEED = Number(process.env.SYSROOT_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const IN_PROCESS = 150_000;
const SOCKET = 50_000;

let run: FuzzRun | undefined;
afterAll(async () => {
  await run?.serve.stop();
  run?.fixture.tokenStore.close();
  run?.fixture.repo.close();
});

describe('HTTP fuzzing, soak', () => {
  it('answers 200,000 random requests without a 5xx, stays up, and stores nothing', async () => {
    run = await runFuzz({ seed: SEED, inProcess: IN_PROCESS, socket: SOCKET });
    const { report, fixture, serve } = run;
    console.log(`fuzz soak seed ${SEED}: ${JSON.stringify(report)}`);
    const total = Object.values(report.statuses).reduce((a, b) => a + b, 0);
    expect(total, `seed ${SEED}`).toBe(IN_PROCESS + SOCKET);
    expect(report.serverErrors, `seed ${SEED}`).toEqual([]);
    expect(report.logErrors, `seed ${SEED}`).toEqual([]);
    expect(report.unclearErrors, `seed ${SEED}`).toEqual([]);
    expect(serve.alive(), `seed ${SEED}: the server process died\n${serve.stderr().slice(-2000)}`).toBe(true);
    expect([...fixture.snapshot()]).toEqual([...run.before]);
    expect(sysroot(['fsck', '--repo', fixture.repo.location]).status).toBe(0);
    const ostree = spawnSync('ostree', ['fsck', `--repo=${fixture.repo.location}`], { encoding: 'utf8' });
    expect(ostree.status, ostree.stderr).toBe(0);
  });
});
