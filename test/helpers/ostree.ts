import { execFile, spawnSync } from 'node:child_process';

/**
 * Runs the real `ostree` CLI (Debian's 2022.7 is the reference implementation) and resolves with its
 * stdout. A non-zero exit rejects with an Error carrying the command line and ostree's stderr, which
 * is where ostree explains itself.
 *
 * `opts.env` is laid over `process.env` rather than replacing it: callers add a variable or two, and
 * ostree still needs PATH, HOME and the locale from the real environment.
 */
export async function ostree(
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<string> {
  const command = `ostree ${args.join(' ')}`;
  return new Promise((resolve, reject) => {
    execFile(
      'ostree',
      args,
      {
        cwd: opts.cwd,
        env: { ...process.env, ...opts.env },
        encoding: 'utf8',
        // `ostree cat`/`ls -R` on a sysroot print tens of MB; the default 1 MiB would truncate them.
        maxBuffer: 512 * 1024 * 1024,
      },
      (error, stdout, stderr) => {
        if (error === null) {
          resolve(stdout);
          return;
        }
        const code = (error as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') {
          reject(new Error(`${command}: the ostree CLI is not installed (Debian package "ostree")`));
          return;
        }
        const how = error.signal ? `killed by ${error.signal}` : `exit code ${String(code)}`;
        reject(new Error(`${command} failed (${how}):\n${stderr.trim() || stdout.trim()}`, { cause: error }));
      },
    );
  });
}

let found = false;

/**
 * Whether a working `ostree` is on PATH. Only a yes is remembered: test files may ask at collection
 * time, and a no must be re-checked after the global setup has installed it.
 */
export function hasOstree(): boolean {
  if (!found) {
    const probe = spawnSync('ostree', ['--version'], { stdio: 'ignore', timeout: 10_000 });
    found = probe.error === undefined && probe.status === 0;
  }
  return found;
}
