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
