/**
 * The kill -9 loops of issue 6, point 1, shared by the CI-sized tests (test/crash-*.test.ts: a small
 * tree, 50 kills each) and the soak (test/soak/crash-sysroot.test.ts: a real Debian sysroot).
 *
 * Each round pushes a new version with a fixed timestamp, so a retry builds the very same commit
 * unless the killed push got as far as moving the ref. Kill times are random over one measured push:
 * in even rounds uniform from its start to the server's answer to its ref move (start-up and hashing
 * included, ~75% of that for a small tree), in odd rounds uniform over the pack and the ref move,
 * counted from the server's answer to "which objects are missing" (the pack follows at once).
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'vitest';
import { checkRepo, countObjects, packLines, spawnCli } from './crash.js';
import type { ServeProcess } from './killable-serve.js';

export interface PushTiming {
  /** A whole push, spawn to exit (ms). */
  duration: number;
  /** From spawn to the server's answer to "missing" (to the ref's, for a new ref's push) (ms). */
  netStart: number;
  /** From that answer to the server's answer to the ref move: the pack and the move (ms). */
  netSpan: number;
}

export interface KillLoop {
  server: ServeProcess;
  repoPath: string;
  ref: string;
  env: NodeJS.ProcessEnv;
  random: () => number;
  /** The tree to push in round `round` (≥ 1; ≤ 0 for the timing pushes): a new version each time. */
  nextVersion(round: number): string;
  /** Timestamps: round r pushes with `base + r`. */
  base?: number;
  /** More `sysroot push` flags (a real sysroot needs --skip-special for /dev). */
  pushFlags?: string[];
}

const pushArgs = (l: KillLoop, round: number, tree: string) => [
  'push',
  '--url',
  l.server.url,
  '--ref',
  l.ref,
  '--timestamp',
  `@${(l.base ?? 1_700_000_000) + round}`,
  '--json',
  ...(l.pushFlags ?? []),
  tree,
];

/** One push of `round`'s version, timed from the outside and from the server's access log. */
export async function timeOnePush(l: KillLoop, round: number): Promise<PushTiming> {
  const before = l.server.log().length;
  const p = spawnCli(pushArgs(l, round, l.nextVersion(round)), l.env);
  const r = await p.done;
  expect(r.code, r.stderr).toBe(0);
  const duration = performance.now() - p.started;
  // The access log stamps a line when the answer is sent: the missing-objects answer precedes the pack.
  // A new ref's push asks no such thing (its pack goes while it hashes): its ref's answer is the mark.
  const log = l.server.log().slice(before);
  const stamp = (re: RegExp) => Date.parse(new RegExp(`^(\\S+) info ${re.source}`, 'm').exec(log)![1]!);
  const missing = /POST \/api\/v1\/objects\/missing/;
  const missingAt = stamp(missing.test(log) ? missing : /GET \/api\/v1\/refs\//);
  return {
    duration,
    netStart: Math.max(0, missingAt - (performance.timeOrigin + p.started)),
    netSpan: Math.max(5, stamp(/PUT \/api\/v1\/refs\//) - missingAt),
  };
}

/** The median of three pushes of new versions (rounds -10, -9, -8). */
export async function timePush(l: KillLoop): Promise<PushTiming> {
  const t: PushTiming[] = [];
  for (let i = 0; i < 3; i++) t.push(await timeOnePush(l, -10 + i));
  const median = (f: (x: PushTiming) => number) => t.map(f).sort((a, b) => a - b)[1]!;
  return {
    duration: median((x) => x.duration),
    netStart: median((x) => x.netStart),
    netSpan: median((x) => x.netSpan),
  };
}

/** Sleep until the moment to kill, by the round's rule (see the top of this file). */
async function killMoment(l: KillLoop, round: number, t: PushTiming, logStart: number, alive: () => boolean) {
  if (round % 2 === 0) {
    // Up to the server's answer to the ref move: after it the push only prints and exits.
    await sleep(l.random() * Math.min(t.duration, t.netStart + t.netSpan));
    return;
  }
  while (!/POST \/api\/v1\/objects\/missing/.test(l.server.log().slice(logStart)) && alive()) await sleep(2);
  await sleep(l.random() * t.netSpan);
}

/**
 * Wait until the server is done with a killed push: nothing logged, no object added and no temp
 * file in tmp/ for `quietMs`. An aborted pack logs its line only at the end, and the server may still
 * be storing the records it had received (a sysroot's pack: ~1,500 objects after the client died).
 */
async function settle(server: ServeProcess, repoPath: string, quietMs = 100): Promise<void> {
  const state = () => `${server.log().length}/${countObjects(repoPath)}/${tempFiles(repoPath).length}`;
  let last = state();
  const deadline = Date.now() + 15_000;
  for (let since = Date.now(); Date.now() - since < quietMs || !last.endsWith('/0'); ) {
    if (Date.now() > deadline) return; // the caller's check of tmp/ says what is left
    await sleep(20);
    const now = state();
    if (now !== last) {
      last = now;
      since = Date.now();
    }
  }
}

/** Our temp files in a directory repository's tmp/ (FsBlobStore.tempPath names them tmp-…). */
function tempFiles(repoPath: string): string[] {
  return readdirSync(join(repoPath, 'tmp')).filter((n) => n.startsWith('tmp-'));
}

/** Which requests of one push the server answered, from its access log. */
function phaseOf(log: string): string {
  if (/PUT \/api\/v1\/refs\/\S+ 200/.test(log)) return 'after the ref move';
  if (/POST \/api\/v1\/packs \d{3}/.test(log)) return 'after the pack';
  if (/POST \/api\/v1\/objects\/missing 200/.test(log)) return 'during the pack';
  if (/GET \/api\/v1\/refs\//.test(log)) return 'while hashing';
  return 'before any request';
}

function tally(m: Map<string, number>, k: string): void {
  m.set(k, (m.get(k) ?? 0) + 1);
}

/**
 * Rounds `from`..`to`: kill -9 the pushing CLI; check the repository (under the write lock, the
 * server still running); push again, which must succeed and send only what the server lacks (the
 * server's own count: nothing "already there"; the object files added equal the records sent).
 */
export async function clientKills(l: KillLoop, t: PushTiming, from: number, to: number, ctx: string) {
  const phases = new Map<string, number>();
  for (let round = from; round <= to; round++) {
    const where = `${ctx}, round ${round}`;
    const tree = l.nextVersion(round);
    const logStart = l.server.log().length;
    const victim = spawnCli(pushArgs(l, round, tree), l.env);
    await killMoment(l, round, t, logStart, () => victim.child.exitCode === null);
    victim.child.kill('SIGKILL');
    const killed = await victim.done;
    if (killed.code !== 0) expect(killed.signal, where).toBe('SIGKILL');
    await settle(l.server, l.repoPath);
    // No temp file left behind by the request the kill cut off.
    expect(tempFiles(l.repoPath), where).toEqual([]);
    tally(phases, killed.code === 0 ? 'finished first' : phaseOf(l.server.log().slice(logStart)));

    // The retry starts at once: it spends its first ~250 ms starting up and hashing, long enough
    // for the check of the state the kill left (under the lock, so it cannot see a ref move halfway).
    const retryLog = l.server.log().length;
    const objectsBefore = countObjects(l.repoPath);
    const retrying = spawnCli(pushArgs(l, round, tree), l.env);
    const { report } = await checkRepo(l.repoPath, { underLock: true });
    expect(report.problems, where).toEqual([]);

    const retry = await retrying.done;
    expect(retry.code, `${where}: ${retry.stderr}`).toBe(0);
    const result = JSON.parse(retry.stdout) as { commit: string; uploaded: { objects: number } };
    const packs = packLines(l.server.log().slice(retryLog));
    expect(
      packs.every((p) => p.existing === 0),
      `${where}: ${JSON.stringify(packs)}`,
    ).toBe(true);
    expect(
      packs.reduce((n, p) => n + p.records, 0),
      where,
    ).toBe(result.uploaded.objects);
    expect(countObjects(l.repoPath) - objectsBefore, where).toBe(result.uploaded.objects);
    const head = (await (await fetch(`${l.server.url}/api/v1/refs/${l.ref}`)).json()) as { commit: string };
    expect(head.commit, where).toBe(result.commit);
  }
  return phases;
}

/** What fsck says about a ref move a crash cut between the ref log record and refs/heads or the summary. */
const INTERRUPTED_MOVE = /ref log ends at|^summary lists/;

/**
 * Rounds `from`..`to`: kill -9 the server during a push; check the repository the crash left (server
 * down); restart the server on the same port; the push completes by its own retries or, if they ran
 * out, when run again — and whatever reached the restarted server was new to it.
 */
export async function serverKills(l: KillLoop, t: PushTiming, from: number, to: number, ctx: string) {
  const outcomes = new Map<string, number>();
  for (let round = from; round <= to; round++) {
    const where = `${ctx}, round ${round}`;
    const tree = l.nextVersion(round);
    const logStart = l.server.log().length;
    const victim = spawnCli(pushArgs(l, round, tree), l.env);
    await killMoment(l, round, t, logStart, () => victim.child.exitCode === null);
    await l.server.kill9();

    // The state the crash left, server down: every object verifies, no ref (refs/heads or a ref log
    // record) names an incomplete commit; a move cut after its commit point is the one thing allowed.
    const crashed = await checkRepo(l.repoPath);
    const interrupted = crashed.report.problems.filter((p) => INTERRUPTED_MOVE.test(p.message));
    expect(
      crashed.report.problems.filter((p) => !INTERRUPTED_MOVE.test(p.message)),
      where,
    ).toEqual([]);
    if (interrupted.length) tally(outcomes, 'a ref move cut short');

    const objectsAtRestart = countObjects(l.repoPath);
    await l.server.restart();
    const r = await victim.done;
    const restarted = l.server.log();
    if (r.code === 0) {
      tally(
        outcomes,
        /retry \d+ in/.test(r.stderr) ? 'the push retried and completed' : 'the push had finished',
      );
    } else {
      tally(outcomes, 'the push failed; run again');
      const again = await spawnCli(pushArgs(l, round, tree), l.env).done;
      expect(again.code, `${where}: ${again.stderr}`).toBe(0);
      const result = JSON.parse(again.stdout) as { uploaded: { objects: number } };
      expect(countObjects(l.repoPath) - objectsAtRestart, where).toBe(result.uploaded.objects);
    }
    // Whatever reached the restarted server was new to it: nothing it had was sent again.
    const packs = packLines(l.server.log());
    expect(
      packs.every((p) => p.existing === 0),
      `${where}: ${JSON.stringify(packs)}\n${restarted}\n${r.stderr}`,
    ).toBe(true);
    expect(
      packs.reduce((n, p) => n + p.stored, 0),
      where,
    ).toBe(countObjects(l.repoPath) - objectsAtRestart);
    if (interrupted.length) {
      // The restart finished the move: clean without exception.
      const { report } = await checkRepo(l.repoPath, { underLock: true });
      expect(report.problems, where).toEqual([]);
    }
  }
  return outcomes;
}

export function describeTally(m: Map<string, number>): string {
  return [...m].map(([k, v]) => `${k} ${v}`).join(', ');
}
