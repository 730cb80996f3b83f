// `sysroot serve` for the benchmarks that need a registry (transfer.mjs, s3.mjs).
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { BIN, track } from './common.mjs';
import { stopChild } from './nginx.mjs';

/**
 * `sysroot serve --repo REPO` on a free port, its log (one line per request) appended to `logFile`.
 * Resolves once it prints its address (polled every 50 ms, for at most `polls` polls).
 */
export async function startServe(repo, env, logFile, polls = 400) {
  const fd = openSync(logFile, 'a');
  const child = track(
    spawn(process.execPath, [BIN, 'serve', '--repo', repo, '--listen', '127.0.0.1:0'], {
      env,
      stdio: ['ignore', 'ignore', fd],
    }),
  );
  closeSync(fd);
  const stop = () => stopChild(child, 'SIGTERM');
  for (let i = 0; i < polls && child.exitCode === null; i++) {
    const m = /listening on (http:\/\/\S+)/.exec(readFileSync(logFile, 'utf8'));
    if (m) return { url: m[1], pid: child.pid, log: logFile, stop };
    await sleep(50);
  }
  await stop();
  throw new Error(`sysroot serve --repo ${repo} did not start:\n${readFileSync(logFile, 'utf8')}`);
}

/**
 * Wait (at most `timeoutMs`) until `logFile` has a line matching `pattern`: a pushed commit's packs
 * are generated in the background after its ref moves ("packs of … ready"), and a measurement that
 * starts before they are, or a node stopped before, measures that generation instead.
 */
export async function waitForLog(logFile, pattern, timeoutMs = 120_000) {
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(readFileSync(logFile, 'utf8'))) {
    if (Date.now() > deadline) throw new Error(`${logFile}: no line matching ${pattern} in ${timeoutMs} ms`);
    await sleep(50);
  }
}
