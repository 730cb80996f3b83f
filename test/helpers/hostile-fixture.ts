/**
 * A registry with real commits, for tests that attack it (hostile HTTP, fuzzing, auth): a repository
 * with two commits of a small tree on one ref, their packs already generated, and tokens of every
 * kind. `snapshot()` fingerprints everything that must never change under attack, so a test can
 * assert "nothing stored, no ref moved" byte for byte.
 */
import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join, relative } from 'node:path';
import { TokenStore } from '../../src/auth/tokens.js';
import { importSource } from '../../src/import/index.js';
import { type Checksum, decodeDirTree, objectId } from '../../src/objects/index.js';
import { CommitPacks } from '../../src/repo/packs.js';
import { Repository } from '../../src/repo/repository.js';
import { tempDir } from './repo.js';

export const HOSTILE_REF = 'stage3-sysroot/x86_64';

export interface HostileTokens {
  admin: string;
  /** push:stage3-sysroot/* */
  pusher: string;
  /** push:fuzz-never/*: may upload objects, may move no ref a test makes. */
  strayPusher: string;
  puller: string;
  /** A real token, revoked. */
  revoked: string;
  /** The pusher's id with a different secret. */
  wrongSecret: string;
}

export interface HostileFixture {
  repo: Repository;
  tokenStore: TokenStore;
  tokens: HostileTokens;
  /** Oldest first; the last is the head of HOSTILE_REF. */
  commits: Checksum[];
  /** Every object of the commits' closures, as `<sha>.<type>`. */
  objects: string[];
  /** path → sha256 of everything that must not change: objects, refs, ref log, summary, config, tokens. */
  snapshot(): Map<string, string>;
}

/** A small tree: nested directories, a symlink, an executable, an empty file and a 300 KB file. */
export function makeSmallTree(version: string): string {
  const dir = join(tempDir('sysroot-hostile-src-'), 'tree');
  mkdirSync(join(dir, 'usr/lib/deep/er'), { recursive: true });
  mkdirSync(join(dir, 'etc'), { recursive: true });
  writeFileSync(join(dir, 'etc/os-release'), `VERSION=${version}\n`);
  writeFileSync(join(dir, 'etc/empty'), '');
  writeFileSync(join(dir, 'usr/lib/libc.so.6'), Buffer.alloc(300_000, version.charCodeAt(0)));
  writeFileSync(join(dir, 'usr/lib/deep/er/x.txt'), `deep ${version}\n`);
  writeFileSync(join(dir, 'usr/tool'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
  symlinkSync('libc.so.6', join(dir, 'usr/lib/libc.so'));
  return dir;
}

const KEPT = ['objects', 'refs', 'summary', 'config', join('sysroot', 'reflog'), join('sysroot', 'tokens')];

export function snapshotRepo(location: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (p: string): void => {
    if (!existsSync(p)) return;
    const st = statSync(p);
    if (st.isDirectory()) {
      for (const n of readdirSync(p).sort()) walk(join(p, n));
    } else {
      out.set(relative(location, p), createHash('sha256').update(readFileSync(p)).digest('hex'));
    }
  };
  for (const k of KEPT) walk(join(location, k));
  return out;
}

async function closureIds(repo: Repository, commit: Checksum, into: Set<string>): Promise<void> {
  into.add(objectId(commit, 'commit'));
  const c = await repo.readCommit(commit);
  const walk = async (tree: Checksum, meta: Checksum): Promise<void> => {
    into.add(objectId(meta, 'dirmeta'));
    into.add(objectId(tree, 'dirtree'));
    const t = decodeDirTree(await repo.objects.getMetadata(tree, 'dirtree'));
    for (const f of t.files) into.add(objectId(f.checksum, 'file'));
    for (const d of t.dirs) await walk(d.tree, d.meta);
  };
  await walk(c.rootTree, c.rootMeta);
}

export async function hostileFixture(): Promise<HostileFixture> {
  const repo = await Repository.init(join(tempDir('sysroot-hostile-'), 'repo'));
  const commits: Checksum[] = [];
  for (const v of ['1', '2']) {
    const imported = await importSource(repo.objects, makeSmallTree(v));
    commits.push(
      await repo.commit({
        ref: HOSTILE_REF,
        rootTree: imported.rootTree,
        rootMeta: imported.rootMeta,
        subject: `v${v}`,
        timestamp: 1704067200 + Number(v),
        actor: 'fixture',
      }),
    );
  }
  // Packs a GET would generate are made now, so that reads leave the repository as it was.
  const packs = new CommitPacks(repo);
  await packs.get(commits[0]!);
  await packs.get(commits[1]!);
  await packs.get(commits[1]!, commits[0]!);
  const objects = new Set<string>();
  for (const c of commits) await closureIds(repo, c, objects);

  const tokenStore = TokenStore.forRepo(repo);
  const make = async (name: string, scope: string) =>
    (await tokenStore.create({ name, scopes: [scope] })).token;
  const pusher = await make('release-ci', 'push:stage3-sysroot/*');
  const revoked = await tokenStore.create({ name: 'old', scopes: ['admin'] });
  await tokenStore.revoke(revoked.info.id);
  const tokens: HostileTokens = {
    admin: await make('admin', 'admin'),
    pusher,
    strayPusher: await make('stray', 'push:fuzz-never/*'),
    puller: await make('builder', 'pull'),
    revoked: revoked.token,
    wrongSecret: `${pusher.slice(0, -4)}${pusher.endsWith('AAAA') ? 'BBBB' : 'AAAA'}`,
  };
  return {
    repo,
    tokenStore,
    tokens,
    commits,
    objects: [...objects].sort(),
    snapshot: () => snapshotRepo(repo.location),
  };
}
