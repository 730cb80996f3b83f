/** A real `sysroot serve` process on a free port (127.0.0.1:0), stopped by its pid. */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../../bin/sysroot.js', import.meta.url));

export interface Served {
  url: string;
  child: ChildProcess;
  stderr: string[];
}

/** Spawn `sysroot serve ARGS --listen 127.0.0.1:0`, resolved once it prints its address. */
export function startServe(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Served> {
  const child = spawn(process.execPath, [BIN, 'serve', ...args, '--listen', '127.0.0.1:0'], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const stderr: string[] = [];
  return new Promise((resolve, reject) => {
    let buf = '';
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      buf += chunk;
      const lines = buf.split('\n');
      buf = lines.pop()!;
      for (const line of lines) {
        stderr.push(line);
        const m = /listening on (http:\/\/\S+)/.exec(line);
        if (m) resolve({ url: m[1]!, child, stderr });
      }
    });
    child.once('exit', (code) => reject(new Error(`sysroot serve exited ${code}:\n${stderr.join('\n')}`)));
  });
}

/** SIGTERM by pid; the server drains and exits. */
export function stopServe(s: Served | undefined): Promise<number | null> {
  if (!s || s.child.exitCode !== null) return Promise.resolve(s?.child.exitCode ?? null);
  return new Promise((resolve) => {
    s.child.once('exit', (code) => resolve(code));
    process.kill(s.child.pid!, 'SIGTERM');
  });
}
