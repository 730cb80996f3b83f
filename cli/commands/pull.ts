import { RegistryError } from '../../src/errors.js';
import type { TrustedKeys } from '../../src/sign/verify.js';
import { createProgress } from '../../src/transfer/progress.js';
import { pull } from '../../src/transfer/pull.js';
import { commandArgs, lookupRemote, resolveTarget } from '../../src/transfer/remotes.js';
import { formatBytes, json, note, out } from '../output.js';

interface PullFlags {
  url?: string;
  token?: string;
  json?: boolean;
  verifyKey?: string[];
  revokedKey?: string[];
  /** --verify (true), --no-verify (false), neither (undefined). */
  verify?: boolean;
}

const USAGE = 'sysroot pull (--url URL | REMOTE) (REF | REF@SHA256 | SHA256) DEST';

/** `sysroot pull [REMOTE] SPEC DEST` (see main.ts); the arguments are sorted out by commandArgs. */
export async function run(...args: unknown[]): Promise<number> {
  const { positionals, flags } = commandArgs<PullFlags>(args);
  const { url, args: rest } = await resolveTarget(positionals, flags.url, 2, USAGE);
  // A named remote (no --url, one more positional) may carry the keys its pulls are verified with.
  const remote =
    flags.url === undefined && positionals.length === 3 ? await lookupRemote(positionals[0]!) : undefined;
  const [spec, dest] = rest as [string, string];
  const trust = await trustFor(flags, remote?.verifyKeys ?? [], remote?.revokedKeys ?? []);
  const started = Date.now();
  const r = await pull(url, spec, dest, {
    ...(flags.token !== undefined ? { token: flags.token } : {}),
    ...(trust ? { trust, verifyPinned: flags.verify === true || (flags.verifyKey?.length ?? 0) > 0 } : {}),
    progress: createProgress(),
    onNote: note,
    onRetry: (what, attempt, why, delayMs) => note(`${what}: ${why}; retry ${attempt} in ${delayMs} ms`),
  });
  const secs = (Date.now() - started) / 1000;
  if (r.signedBy) note(`signature verified: ${r.commit} is signed by ${r.signedBy.join(', ')}`);
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
      ...(r.signedBy ? { signedBy: r.signedBy } : {}),
    });
  } else out(r.commit);
  return 0;
}

/**
 * The keys to verify with: --verify-key and the remote's keys (together), less --revoked-key and the
 * remote's revoked keys. None (no keys, or --no-verify): signatures are not checked.
 */
async function trustFor(
  flags: PullFlags,
  remoteKeys: string[],
  remoteRevoked: string[],
): Promise<TrustedKeys | undefined> {
  if (flags.verify === false) {
    note('note: --no-verify: signatures are not checked');
    return undefined;
  }
  const specs = [...(flags.verifyKey ?? []), ...remoteKeys];
  if (specs.length === 0) {
    if (flags.verify) {
      throw new RegistryError(
        'E_USAGE',
        '--verify needs keys: pass --verify-key KEY or add them to the remote',
        {},
        'sysroot remote add NAME URL --verify-key release.pub',
      );
    }
    return undefined;
  }
  const { applyRevocations, loadKeySpecs } = await import('../../src/sign/trust.js');
  return applyRevocations(
    await loadKeySpecs(specs),
    await loadKeySpecs([...(flags.revokedKey ?? []), ...remoteRevoked]),
  );
}
