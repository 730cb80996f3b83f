/**
 * The contract with OSTree, checked against the real `ostree` CLI (Debian's 2022.7):
 * same checksums for the same tree and commit metadata, `ostree fsck` clean on our repository,
 * `ostree checkout` of our commit reproduces the input, and we read what `ostree commit` wrote.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, unlinkSync } from 'node:fs';
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

  it('writes no ref binding by default, and matches ostree with --canonical-permissions', async () => {
    const both = await commitBoth(
      tree,
      'canon',
      [
        '--branch=x',
        '--canonical-permissions',
        '--timestamp=@1704067200',
        '--subject=stage3 sysroot v1 canonical',
      ],
      [
        '--ref=x',
        '--bind-ref',
        '--canonical-permissions',
        '--timestamp=@1704067200',
        '--subject=stage3 sysroot v1 canonical',
      ],
    );
    expect(both.sSum).toBe(both.oSum);
    expect(readCommitObject(both.sRepo, both.sSum).rootTree).toBe(vectors.commits.c3.root_dirtree);
    // Without --bind-ref: the same tree and no metadata at all (ostree's CLI always writes a binding,
    // even an empty one with --orphan; its library API writes none, as we do).
    const unbound = sysrootOk(['commit', '--repo', both.sRepo, '--ref=y', '--canonical-permissions', tree]);
    const c = readCommitObject(both.sRepo, unbound);
    expect(c.metadata).toEqual([]);
    expect(c.rootTree).toBe(vectors.commits.c3.root_dirtree);
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
    expect(out).toMatch(/no errors found/);
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
  let copy = '';
  beforeAll(async () => {
    tree = await ensureSysroot('amd64-v1');
    // ostree refuses device nodes, so it commits a copy without them (the copy is ours to change).
    copy = join(work, 'debian-tree');
    execFileSync('cp', ['-a', tree, copy]);
    execFileSync('find', [copy, '-type', 'c', '-o', '-type', 'b', '-o', '-type', 'p', '-o', '-type', 's'], {
      encoding: 'utf8',
    })
      .split('\n')
      .filter(Boolean)
      .forEach((p) => {
        unlinkSync(p);
      });
  });

  it('commits it byte-identically to ostree, fscks clean in both tools, and round-trips', async () => {
    const { oRepo, sRepo, oSum, sSum } = await commitBoth(
      copy,
      'debian',
      ['--branch=stage3-sysroot/x86_64', '--timestamp=@1704067200', '--subject=bookworm'],
      ['--ref=stage3-sysroot/x86_64', '--bind-ref', '--timestamp=@1704067200', '--subject=bookworm'],
    );
    expect(sSum).toBe(oSum);
    expect((await ostree(['fsck', `--repo=${sRepo}`])).trim()).toMatch(/no errors found/);
    expect(sysroot(['fsck', '--repo', sRepo]).status).toBe(0);
    expect(sysroot(['fsck', '--repo', oRepo]).status).toBe(0);

    const input = describeTree(copy);
    const viaOstree = join(work, 'debian-ostree-checkout');
    await ostree(['checkout', `--repo=${sRepo}`, sSum, viaOstree]);
    expect(diffTrees(input, describeTree(viaOstree))).toEqual([]);
    const viaSysroot = join(work, 'debian-sysroot-checkout');
    sysrootOk(['checkout', '--repo', oRepo, 'stage3-sysroot/x86_64', viaSysroot]);
    expect(diffTrees(input, describeTree(viaSysroot))).toEqual([]);

    // The original tree, device nodes and all, with --skip-special: the same tree, and the dropped
    // paths recorded in the commit.
    const skipped = sysrootOk(['commit', '--repo', sRepo, '--ref=with-dev', '--skip-special', tree]);
    const c = readCommitObject(sRepo, skipped);
    const theirs = readCommitObject(oRepo, oSum);
    expect([c.rootTree, c.rootMeta]).toEqual([theirs.rootTree, theirs.rootMeta]);
    const recorded = c.metadata.find(([k]) => k === 'sysroot.skipped-special')?.[1].value as string[];
    expect(recorded).toEqual(expect.arrayContaining(['dev/null', 'dev/zero']));
  });
});
