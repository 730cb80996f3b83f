/**
 * `sysroot serve` as a real child process on 127.0.0.1 and a free port: for tests that must see the
 * server survive (a crash is an exit, not a thrown exception in the test's own process). Stopped by
 * its pid, never by name.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../../bin/sysroot.js', import.meta.url));
const DIST = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));

export interface ServeProcess {
  url: string;
  port: number;
  pid: number;
  /** Everything it wrote to stderr so far: the access log and any error. */
  stderr(): string;
  /** Still running? */
  alive(): boolean;
  /** SIGTERM, then SIGKILL after 5 s; resolves with the exit code (or the signal). */
  stop(): Promise<number | string>;
}

export async function startServe(args: string[], env: NodeJS.ProcessEnv = {}): Promise<ServeProcess> {
  if (!existsSync(DIST)) throw new Error(`${DIST} is missing: run \`npm run build\` first (npm test does)`);
  const child: ChildProcess = spawn(process.execPath, [BIN, 'serve', '--listen', '127.0.0.1:0', ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (c: string) => {
    err += c;
  });
  let exit: number | string | undefined;
  const exited = new Promise<number | string>((resolve) =>
    child.on('exit', (code, signal) => {
      exit = code ?? signal ?? -1;
      resolve(exit);
    }),
  );
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`sysroot serve did not start in 20 s:\n${err}`)), 20_000);
    const poll = setInterval(() => {
      const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(err);
      if (m || exit !== undefined) {
        clearInterval(poll);
        clearTimeout(timer);
        if (m) resolve(m[1]!);
        else reject(new Error(`sysroot serve exited ${exit}:\n${err}`));
      }
    }, 20);
  });
  return {
    url,
    port: Number(new URL(url).port),
    pid: child.pid!,
    stderr: () => err,
    alive: () => exit === undefined && child.exitCode === null,
    async stop() {
      if (exit !== undefined) return exit;
      process.kill(child.pid!, 'SIGTERM');
      const timer = setTimeout(() => {
        if (exit === undefined) process.kill(child.pid!, 'SIGKILL');
      }, 5_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}
