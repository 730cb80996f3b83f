/**
 * The contract with OSTree, checked against the real `ostree` CLI (Debian's 2022.7):
 * same checksums for the same tree and commit metadata, `ostree fsck` clean on our repository,
 * `ostree checkout` of our commit reproduces the input, and we read what `ostree commit` wrote.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeCommit } from '../src/objects/index.js';
import { sysroot, sysrootOk } from './helpers/cli.js';
import { ostree } from './helpers/ostree.js';
import { ensureSysroot } from './helpers/sysroot-fixture.js';
import { describeTree, diffTrees } from './helpers/tree-compare.js';
import { unpackFixture, vectors } from './helpers/vectors.js';

function readCommitObject(repo: string, sum: string) {
  return decodeCommit(readFileSync(join(repo, 'objects', sum.slice(0, 2), `${sum.slice(2)}.commit`)));
}

const work = mkdtempSync(join(tmpdir(), 'sysroot-interop-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Commit `tree` with ostree and with sysroot using equivalent flags; return both checksums and repos. */
async function commitBoth(tree: string, name: string, ostreeFlags: string[], sysrootFlags: string[]) {
  const oRepo = join(work, `${name}-ostree`);
  const sRepo = join(work, `${name}-sysroot`);
  await ostree(['init', `--repo=${oRepo}`, '--mode=archive']);
  const oSum = (await ostree(['commit', `--repo=${oRepo}`, ...ostreeFlags, tree])).trim();
  sysrootOk(['init', '--repo', sRepo]);
  const sSum = sysrootOk(['commit', '--repo', sRepo, ...sysrootFlags, tree]);
  return { oRepo, sRepo, oSum, sSum };
}

describe('interop with the real ostree CLI on the vectors tree', () => {
  const tree = unpackFixture('tree.tar');
  afterAll(() => rmSync(tree, { recursive: true, force: true }));

  it('reproduces ostree commit --branch byte for byte with --bind-ref, body and typed metadata', async () => {
    const { oSum, sSum, oRepo, sRepo } = await commitBoth(
      tree,
      'bind',
      [
        '--branch=stage3-sysroot/x86_64',
        '--owner-uid=0',
        '--owner-gid=0',
        '--timestamp=@1704153600',
        '--subject=stage3 sysroot v2',
        '--body=second commit\nwith a body',
        '--add-metadata-string=version=2.0',
        '--add-metadata=build=uint64 42',
      ],
      [
        '--ref=stage3-sysroot/x86_64',
        '--bind-ref',
        '--owner=0:0',
        '--timestamp=@1704153600',
        '--subject=stage3 sysroot v2',
        '--body=second commit\nwith a body',
        '--meta=version=2.0',
        '--meta=build:t=42',
      ],
    );
    expect(sSum).toMatch(/^[0-9a-f]{64}$/);
    expect(sSum).toBe(oSum);
    // Same bytes, and the root tree is the ground truth's C1 tree (the vectors come from this tree).
    const ours = readFileSync(join(sRepo, 'objects', sSum.slice(0, 2), `${sSum.slice(2)}.commit`));
    expect(
      ours.equals(readFileSync(join(oRepo, 'objects', oSum.slice(0, 2), `${oSum.slice(2)}.commit`))),
    ).toBe(true);
    expect(decodeCommit(ours).rootTree).toBe(vectors.commits.c1.root_dirtree);
  });

  it('matches without a ref binding too (the sysroot default) and with --canonical-permissions', async () => {
    const plain = await commitBoth(
      tree,
      'canon',
      [
        '--orphan',
        '--canonical-permissions',
        '--timestamp=@1704067200',
        '--subject=stage3 sysroot v1 canonical',
      ],
      [
        '--ref=x',
        '--canonical-permissions',
        '--timestamp=@1704067200',
        '--subject=stage3 sysroot v1 canonical',
      ],
    );
    expect(plain.sSum).toBe(plain.oSum);
  });

  let ourRepo = '';
  let ourCommit = '';
  beforeAll(() => {
    ourRepo = join(work, 'ours');
    sysrootOk(['init', '--repo', ourRepo]);
    ourCommit = sysrootOk([
      'commit',
      '--repo',
      ourRepo,
      '--ref',
      'r',
      '--owner',
      '0:0',
      '--subject',
      's',
      tree,
    ]);
  });

  it('ostree fsck passes on a repository written by sysroot', async () => {
    const out = await ostree(['fsck', `--repo=${ourRepo}`]);
    expect(out).not.toMatch(/corrupt|error/i);
    expect(sysroot(['fsck', '--repo', ourRepo]).status).toBe(0);
  });

  it('ostree checkout of our commit reproduces the input tree: content, modes, symlinks, xattrs', async () => {
    const dest = join(work, 'ostree-checkout');
    await ostree(['checkout', `--repo=${ourRepo}`, ourCommit, dest]);
    const diffs = diffTrees(describeTree(tree, { owners: false }), describeTree(dest, { owners: false }));
    expect(diffs).toEqual([]);
  });

  it('sysroot reads, fscks and checks out a repository written by ostree commit', async () => {
    const oRepo = join(work, 'theirs');
    await ostree(['init', `--repo=${oRepo}`, '--mode=archive']);
    const sum = (
      await ostree([
        'commit',
        `--repo=${oRepo}`,
        '--branch=t',
        '--owner-uid=0',
        '--owner-gid=0',
        '--subject=s',
        tree,
      ])
    ).trim();
    const fsck = sysroot(['fsck', '--repo', oRepo]);
    expect(fsck.status, fsck.stderr + fsck.stdout).toBe(0);
    expect(sysrootOk(['refs', '--repo', oRepo])).toBe(`t ${sum}`);
    const dest = join(work, 'sysroot-checkout-of-theirs');
    sysrootOk(['checkout', '--repo', oRepo, sum, dest]);
    expect(diffTrees(describeTree(tree, { owners: false }), describeTree(dest, { owners: false }))).toEqual(
      [],
    );
  });
});

describe('interop on a real Debian sysroot (debootstrap minbase, amd64)', () => {
  let tree = '';
  let devices: string[] = [];
  beforeAll(async () => {
    tree = await ensureSysroot('amd64-v1');
    devices = ['console', 'full', 'null', 'ptmx', 'random', 'tty', 'urandom', 'zero'].map((d) => `/dev/${d}`);
  });

  it('gives the same root tree as ostree commit, fscks clean in both tools and round-trips', async () => {
    const skipList = join(work, 'skip-list');
    writeFileSync(skipList, `${devices.join('\n')}\n`);
    const { oRepo, sRepo, oSum, sSum } = await commitBoth(
      tree,
      'debian',
      [
        '--branch=stage3-sysroot/x86_64',
        `--skip-list=${skipList}`,
        '--timestamp=@1704067200',
        '--subject=bookworm',
      ],
      ['--ref=stage3-sysroot/x86_64', '--skip-special', '--timestamp=@1704067200', '--subject=bookworm'],
    );
    // sysroot records the skipped device nodes in the commit metadata, so the commits differ by that
    // key alone; the trees must be identical.
    const ours = readCommitObject(sRepo, sSum);
    const theirs = readCommitObject(oRepo, oSum);
    expect([ours.rootTree, ours.rootMeta]).toEqual([theirs.rootTree, theirs.rootMeta]);
    expect(ours.metadata.map(([k]) => k)).toContain('sysroot.skipped-special');

    expect(await ostree(['fsck', `--repo=${sRepo}`])).not.toMatch(/corrupt/i);
    expect(sysroot(['fsck', '--repo', sRepo]).status).toBe(0);
    expect(sysroot(['fsck', '--repo', oRepo]).status).toBe(0);

    const isDev = (p: string) => devices.includes(`/${p}`);
    const input = describeTree(tree, { skip: isDev });
    const viaOstree = join(work, 'debian-ostree-checkout');
    await ostree(['checkout', `--repo=${sRepo}`, sSum, viaOstree]);
    expect(diffTrees(input, describeTree(viaOstree))).toEqual([]);
    const viaSysroot = join(work, 'debian-sysroot-checkout');
    sysrootOk(['checkout', '--repo', oRepo, `stage3-sysroot/x86_64`, viaSysroot]);
    expect(diffTrees(input, describeTree(viaSysroot))).toEqual([]);
  });
});
