import { createProgress } from '../../src/transfer/progress.js';
import { pull } from '../../src/transfer/pull.js';
import { commandArgs, resolveTarget } from '../../src/transfer/remotes.js';
import { formatBytes, json, note, out } from '../output.js';

interface PullFlags {
  url?: string;
  token?: string;
  json?: boolean;
}

const USAGE = 'sysroot pull (--url URL | REMOTE) (REF | REF@SHA256 | SHA256) DEST';

/** `sysroot pull [REMOTE] SPEC DEST` (see main.ts); the arguments are sorted out by commandArgs. */
export async function run(...args: unknown[]): Promise<number> {
  const { positionals, flags } = commandArgs<PullFlags>(args);
  const { url, args: rest } = await resolveTarget(positionals, flags.url, 2, USAGE);
  const [spec, dest] = rest as [string, string];
  const started = Date.now();
  const r = await pull(url, spec, dest, {
    ...(flags.token !== undefined ? { token: flags.token } : {}),
    progress: createProgress(),
    onNote: note,
    onRetry: (what, attempt, why, delayMs) => note(`${what}: ${why}; retry ${attempt} in ${delayMs} ms`),
  });
  const secs = (Date.now() - started) / 1000;
  if (r.noop) note(`${r.dest} already is a checkout of ${r.commit}: nothing to do`);
  else if (!r.ownershipApplied)
    note('note: not running as root, so files are owned by you, not by the owners recorded in the commit');
  if (!r.noop)
    note(
      `pulled ${r.ref ? `${r.ref}@` : ''}${r.commit}: fetched ${r.fetched.objects} object(s), ` +
        `${formatBytes(r.fetched.bytes)} (${r.cached} cached); ${r.files} files at ${r.dest} in ${secs.toFixed(2)} s`,
    );
  if (flags.json) {
    json({
      commit: r.commit,
      ref: r.ref,
      dest: r.dest,
      fetched: r.fetched,
      cached: r.cached,
      files: r.files,
    });
  } else out(r.commit);
  return 0;
}
