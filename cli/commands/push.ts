import { RegistryError } from '../../src/errors.js';
import { parseMetaArg } from '../../src/objects/index.js';
import { RegistryClient } from '../../src/transfer/client.js';
import { createProgress } from '../../src/transfer/progress.js';
import { commandArgs, resolveTarget } from '../../src/transfer/remotes.js';
import { formatBytes, json, note, out } from '../output.js';
import { type CommitFlags, parseOwner, parseTimestamp } from './_commit-flags.js';

interface PushFlags extends CommitFlags {
  url?: string;
  token?: string;
  json?: boolean;
  signKey?: string[];
}

const USAGE = 'sysroot push (--url URL | REMOTE) --ref REF [options] SOURCE';

/** `sysroot push [REMOTE] SOURCE` (see main.ts); the arguments are sorted out by commandArgs. */
export async function run(...args: unknown[]): Promise<number> {
  const { positionals, flags } = commandArgs<PushFlags>(args);
  const { url, args: rest } = await resolveTarget(positionals, flags.url, 1, USAGE);
  const source = rest[0]!;
  if (!flags.ref) throw new RegistryError('E_USAGE', 'push needs --ref REF', {}, `usage: ${USAGE}`);
  const timestamp = parseTimestamp(flags.timestamp);
  const owner = parseOwner(flags.owner);
  const metadata = (flags.meta ?? []).map(parseMetaArg);
  if (flags.actor) note('note: --actor is not used by push; the server records the pusher from the token');
  const signKeys = [];
  if (flags.signKey?.length) {
    const { loadSigningKey } = await import('../../src/sign/keys.js');
    for (const spec of flags.signKey) signKeys.push(await loadSigningKey(spec));
  }
  const started = Date.now();
  const onRetry = (what: string, attempt: number, why: string, delayMs: number) =>
    note(`${what}: ${why}; retry ${attempt} in ${delayMs} ms`);
  // The ref's head is asked for before the importer loads (~50-100 ms of modules while the hash
  // workers start). Until the answer, the workers deflate on the guess of a new ref (push.ts), so an
  // answer that came after the first files were hashed made a push to an existing ref deflate
  // ~100-150 ms of files for nothing on each worker (a profile of push v2, 2026-12-07).
  const early = new RegistryClient(url, {
    ...(flags.token !== undefined ? { token: flags.token } : {}),
    onRetry,
  });
  const head = early.hasToken ? early.getRef(flags.ref) : undefined;
  // push() reports the error of the request it is handed; a push that fails before that (a bad
  // option) must not leave it unhandled.
  head?.catch(() => {});
  const { push } = await import('../../src/transfer/push.js');
  const r = await push(
    url,
    flags.token,
    source,
    {
      ref: flags.ref,
      subject: flags.subject,
      body: flags.body,
      timestamp,
      metadata,
      bindRef: flags.bindRef,
      owner,
      canonicalPermissions: flags.canonicalPermissions,
      skipSpecial: flags.skipSpecial,
      signKeys,
    },
    {
      progress: createProgress(),
      onNote: note,
      onRetry,
      ...(head ? { head } : {}),
    },
  );
  const secs = (Date.now() - started) / 1000;
  note(
    `${r.ref}: ${r.fileCount} files; uploaded ${r.uploaded.objects} object(s), ${formatBytes(r.uploaded.bytes)} ` +
      `(${r.present} already on the server) in ${secs.toFixed(2)} s` +
      (r.rebased ? `; rebased ${r.rebased} time(s) onto a concurrent push` : ''),
  );
  note(`pin: ${r.ref}@${r.commit}`);
  if (flags.json) json(r);
  else out(r.commit);
  return 0;
}
