/**
 * The repository on disk (or in a bucket). Everything OSTree knows is laid out exactly as
 * `ostree init --mode=archive` makes it, so stock ostree can read, fsck and pull it:
 *
 *   <repo>/
 *   ├── config                          [core] repo_version=1, mode=archive-z2
 *   ├── objects/XX/<62 hex>.<ext>       commit, commitmeta, dirtree, dirmeta, filez — write-once
 *   ├── refs/heads/<ref>                "<64 hex>\n"; replaced atomically on every ref move
 *   ├── refs/remotes/  refs/mirrors/    empty; ostree expects them
 *   ├── summary                         rewritten on every ref move, from refs/heads
 *   ├── state/  extensions/  tmp/       as ostree makes them; tmp/ holds our temp files
 *   └── sysroot/                        the registry's own data; ostree ignores it
 *       ├── reflog/<ref>/<seq>.json     one write-once record per ref move (seq: 16 digits, from 1)
 *       ├── packs/<to>.pack             a commit's whole closure as one pack (derived, write-once,
 *       │                               kept forever: made from immutable objects, never stale)
 *       ├── packs/<from>-<to>.pack      the update from one commit to another: closure(to) less
 *       │                               closure(from); both generated on first request or ref move
 *       ├── keys/<type>-<hex>.json      public keys the registry signs with, published write-once
 *       ├── keys/<type>-<hex>.revoked.json  a key's revocation (write-once; verification honours it)
 *       ├── summary-sigs/<sha256>.sig   summary.sig of the summary with that sha256, write-once: the
 *       │                               server serves the one matching the summary it serves
 *       ├── index.sqlite                derived index; `sysroot reindex` rebuilds it from the above
 *       └── lock                        held while a ref moves (filesystem store only)
 *
 * The ref log lives under sysroot/ rather than in SQLite so that the repository directory alone is
 * the whole truth: copy it (or serve the bucket) and nothing is lost.
 */
export const CONFIG_KEY = 'config';
export const SUMMARY_KEY = 'summary';
export const SUMMARY_SIG_KEY = 'summary.sig';
export const REFS_PREFIX = 'refs/heads/';
export const REFLOG_PREFIX = 'sysroot/reflog/';
export const INDEX_FILE = 'sysroot/index.sqlite';
export const PACKS_PREFIX = 'sysroot/packs/';
export const KEYS_PREFIX = 'sysroot/keys/';
export const SUMMARY_SIGS_PREFIX = 'sysroot/summary-sigs/';

export const ARCHIVE_CONFIG = '[core]\nrepo_version=1\nmode=archive-z2\n';

/** Directories `ostree init --mode=archive` creates; made on init so the repo looks the same. */
export const INIT_DIRS = [
  'objects',
  'refs/heads',
  'refs/remotes',
  'refs/mirrors',
  'state',
  'extensions',
  'tmp',
  'tmp/cache',
  'sysroot/reflog',
];

export function refKey(ref: string): string {
  return `${REFS_PREFIX}${ref}`;
}

export function reflogDir(ref: string): string {
  return `${REFLOG_PREFIX}${ref}/`;
}

export function reflogKey(ref: string, seq: number): string {
  return `${reflogDir(ref)}${String(seq).padStart(16, '0')}.json`;
}

/** The pack of `to`'s closure, or of the update from `from` to `to` (src/repo/packs.ts). */
export function packKey(to: string, from?: string): string {
  return from === undefined ? `${PACKS_PREFIX}${to}.pack` : `${PACKS_PREFIX}${from}-${to}.pack`;
}

/** The summary.sig made for the summary whose bytes hash to `summarySha256`. */
export function summarySigKey(summarySha256: string): string {
  return `${SUMMARY_SIGS_PREFIX}${summarySha256}.sig`;
}
