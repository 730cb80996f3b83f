import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export type SysrootName = 'amd64-v1' | 'amd64-v2';

const script = fileURLToPath(new URL('../../scripts/make-sysroot.sh', import.meta.url));

// A first build takes 30-90 s per tree, depending on the mirror. Past 9 min something hangs; stopping
// then (the script kills debootstrap's whole process group) beats vitest's 10 min hookTimeout, which
// would fail the hook without saying why.
const BUILD_TIMEOUT_MS = 9 * 60_000;

// One build per tree per worker process; the script's flock covers the other workers.
const pending = new Map<SysrootName, Promise<string>>();

/**
 * The path of a real Debian bookworm sysroot tree, built by scripts/make-sysroot.sh on first use and
 * cached between runs (in $SYSROOT_FIXTURE_DIR or /var/cache/sysroot-registry/sysroots).
 *
 * Rejects, never skips: a test that asked for a real sysroot must fail loudly when it cannot get one
 * (not root, no route to the Debian mirror), so a green run always means the real tree was tested.
 */
export async function ensureSysroot(name: SysrootName): Promise<string> {
  let promise = pending.get(name);
  if (promise === undefined) {
    promise = build(name);
    pending.set(name, promise);
    // Let a later call retry after a failure (e.g. the network came back) instead of replaying it.
    promise.catch(() => pending.delete(name));
  }
  return promise;
}

function build(name: SysrootName): Promise<string> {
  const fail = (why: string): Error =>
    new Error(
      `REAL-SYSROOT TEST CANNOT RUN: could not get the ${name} sysroot fixture.\n` +
        `${why}\n` +
        `Build it once as root with: sudo ${script} ${name}\n` +
        '(it needs root for debootstrap and network access to a Debian mirror; the tree is then cached)',
    );

  return new Promise((resolve, reject) => {
    const child = spawn('bash', [script, name], {
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: BUILD_TIMEOUT_MS,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
      // Forwarded as it comes: a first build runs for minutes and should not look like a hang.
      process.stderr.write(chunk);
    });
    child.on('error', (error) => reject(fail(`could not start ${script}: ${error.message}`)));
    child.on('close', (code, signal) => {
      const path = stdout.trim().split('\n').at(-1);
      if (code === 0 && path) {
        resolve(path);
        return;
      }
      const how = signal
        ? `was killed by ${signal} (timeout ${BUILD_TIMEOUT_MS / 60_000} min?)`
        : `exited with code ${String(code)}`;
      const tail = stderr.trim().split('\n').slice(-15).join('\n');
      reject(fail(`${script} ${name} ${how}:\n${tail}`));
    });
  });
}
