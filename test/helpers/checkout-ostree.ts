/**
 * A small tree committed by the real `ostree` CLI into an archive repository: the ground truth for
 * checkout and export beyond the fixed vectors, including files over the 16 MiB streaming limit.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setAttributeSync } from '@napi-rs/xattr';
import { tempDir } from './checkout-tree.js';
import { ostree } from './ostree.js';

export interface OstreeRepo {
  /** The input tree. */
  tree: string;
  /** The archive repository. */
  repo: string;
  commit: string;
}

const MiB = 1024 * 1024;

/** Writes the test tree: modes, specials bits, xattrs, symlinks, shared content and two big files. */
export function makeTree(dir: string, opts: { big: boolean }): void {
  const file = (rel: string, data: string | Buffer, mode = 0o644): void => {
    writeFileSync(join(dir, rel), data);
    chmodSync(join(dir, rel), mode);
  };
  mkdirSync(join(dir, 'usr/bin'), { recursive: true });
  mkdirSync(join(dir, 'usr/lib/x86_64-linux-gnu'), { recursive: true });
  mkdirSync(join(dir, 'etc/empty.d'), { recursive: true });
  mkdirSync(join(dir, 'tmp'));
  mkdirSync(join(dir, 'ro'));
  file('usr/bin/tool', '#!/bin/sh\necho tool\n', 0o755);
  file('usr/bin/su', 'setuid\n', 0o4755);
  file('usr/bin/wall', 'setgid\n', 0o2755);
  file('etc/shadow', 'secret\n', 0o640);
  file('etc/a', 'same content\n');
  file('etc/b', 'same content\n');
  file('etc/tagged', 'xattrs here\n');
  setAttributeSync(join(dir, 'etc/tagged'), 'user.one', Buffer.from('1'));
  setAttributeSync(join(dir, 'etc/tagged'), 'user.raw', Buffer.from([0, 0xff, 0x10, 0]));
  setAttributeSync(join(dir, 'etc'), 'user.dir', Buffer.from('on a directory'));
  file('usr/lib/x86_64-linux-gnu/libz.so.1.2.13', randomBytes(300_000));
  symlinkSync('libz.so.1.2.13', join(dir, 'usr/lib/x86_64-linux-gnu/libz.so.1'));
  symlinkSync('/usr/bin/tool', join(dir, 'usr/bin/abs-link'));
  symlinkSync('../no/such/target', join(dir, 'usr/bin/dangling'));
  file('ro/readonly', 'read only\n', 0o444);
  chmodSync(join(dir, 'ro'), 0o555);
  chmodSync(join(dir, 'tmp'), 0o1777);
  if (opts.big) {
    // Over the 16 MiB limit on disk and inflated: streamed from the store.
    file('usr/lib/big-random.bin', randomBytes(17 * MiB));
    // Tiny on disk, 20 MiB inflated: streamed from memory. A copy of it shares the object.
    const zeros = Buffer.alloc(20 * MiB);
    zeros.write('header', 0);
    file('usr/lib/big-zeros.img', zeros);
    file('usr/lib/big-zeros-copy.img', zeros);
  }
}

/** Commit `tree` (made by makeTree unless given) with the real ostree, as the brief's command line. */
export async function ostreeRepo(opts: { big: boolean }): Promise<OstreeRepo> {
  const tree = tempDir('ostree-tree');
  makeTree(tree, opts);
  const repo = tempDir('ostree-repo');
  await ostree([`--repo=${repo}`, 'init', '--mode=archive']);
  await ostree([
    `--repo=${repo}`,
    'commit',
    '--branch=t',
    '--owner-uid=0',
    '--owner-gid=0',
    '--timestamp=@1704067200',
    '--subject=s',
    tree,
  ]);
  const commit = (await ostree([`--repo=${repo}`, 'rev-parse', 't'])).trim();
  return { tree, repo, commit };
}
