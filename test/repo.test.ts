import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { decodeSummary, encodeCommit } from '../src/objects/index.js';
import { fsck } from '../src/repo/fsck.js';
import { reflogKey } from '../src/repo/layout.js';
import { isValidRef } from '../src/repo/refs.js';
import { Repository } from '../src/repo/repository.js';
import { rejects } from './helpers/expect-code.js';
import { commitContent, storeTree, tempDir, tempRepo } from './helpers/repo.js';

describe('repository', () => {
  it('initialises an archive-z2 repository that looks like ostree init made it', async () => {
    const repo = await tempRepo();
    expect(readFileSync(join(repo.location, 'config'), 'utf8')).toBe(
      '[core]\nrepo_version=1\nmode=archive-z2\n',
    );
    expect(decodeSummary(readFileSync(join(repo.location, 'summary'))).refs).toEqual([]);
    expect((await Repository.init(repo.location)).location).toBe(repo.location);
  });

  it('refuses to open a directory that is not a repository', async () => {
    await rejects(Repository.open(tempDir()), 'E_NOT_A_REPO');
  });

  it('chains commits on a ref, writes refs/heads and the summary, and logs every move', async () => {
    const repo = await tempRepo();
    const c1 = await commitContent(repo, 'stage3-sysroot/x86_64', 'v1');
    const c2 = await commitContent(repo, 'stage3-sysroot/x86_64', 'v2');
    expect((await repo.readCommit(c2)).parent).toBe(c1);
    expect(readFileSync(join(repo.location, 'refs/heads/stage3-sysroot/x86_64'), 'utf8')).toBe(`${c2}\n`);
    const summary = decodeSummary(readFileSync(join(repo.location, 'summary')));
    expect(summary.refs.map((r) => [r.name, r.checksum])).toEqual([['stage3-sysroot/x86_64', c2]]);
    const log = await repo.log('stage3-sysroot/x86_64');
    expect(log.map((r) => [r.seq, r.from, r.to, r.action])).toEqual([
      [2, c1, c2, 'commit'],
      [1, null, c1, 'commit'],
    ]);
    expect((await repo.resolve(`stage3-sysroot/x86_64@${c1}`)).commit).toBe(c1);
    expect((await fsck(repo)).problems).toEqual([]);
  });

  it('refuses to move a ref to a commit that does not descend from its head', async () => {
    const repo = await tempRepo();
    const c1 = await commitContent(repo, 'r', 'v1');
    await commitContent(repo, 'r', 'v2');
    const root = await storeTree(repo, 'v3');
    const stale = await repo.objects.putMetadata(
      'commit',
      encodeCommit({ metadata: [], parent: c1, related: [], subject: '', body: '', timestamp: 1, ...root }),
    );
    const head = await repo.readRef('r');
    await rejects(
      repo.moveRef({ ref: 'r', expected: head!, to: stale, action: 'push', reason: '' }),
      'E_NOT_FAST_FORWARD',
    );
    await rejects(
      repo.moveRef({ ref: 'r', expected: c1, to: stale, action: 'push', reason: '' }),
      'E_REF_CONFLICT',
    );
    expect(await repo.readRef('r')).toBe(head);
  });

  it('resets a ref only to a commit in its history, with a reason, and logs it', async () => {
    const repo = await tempRepo();
    const c1 = await commitContent(repo, 'r', 'v1');
    const c2 = await commitContent(repo, 'r', 'v2');
    const other = await commitContent(repo, 'other', 'x');
    await rejects(repo.reset('r', other, 'nope'), 'E_NOT_IN_HISTORY');
    await rejects(repo.reset('r', c1, ' '), 'E_USAGE');
    const rec = await repo.reset('r', c1, '2026.2 breaks the bootstrap', 'release-bot');
    expect([rec.from, rec.to, rec.action, rec.actor]).toEqual([c2, c1, 'reset', 'release-bot']);
    expect(await repo.readRef('r')).toBe(c1);
    // The next commit builds on the reset head; c2 stays pullable by its pin.
    const c3 = await commitContent(repo, 'r', 'v3');
    expect((await repo.readCommit(c3)).parent).toBe(c1);
    expect((await repo.resolve(`r@${c2}`)).commit).toBe(c2);
    expect((await fsck(repo)).problems).toEqual([]);
  });

  it('refuses invalid ref names and refs that would clash with existing ones', async () => {
    for (const bad of ['', '/a', 'a/', 'a//b', '../x', 'a/../b', '-x', '.hidden', 'a b', 'a@b', 'ä']) {
      expect(isValidRef(bad), bad).toBe(false);
    }
    for (const good of ['stage3-sysroot/x86_64', 'a', '_x/y.z-1', 'armv8l64'])
      expect(isValidRef(good)).toBe(true);
    const repo = await tempRepo();
    await commitContent(repo, 'a/b', 'v1');
    await rejects(commitContent(repo, 'a', 'v1'), 'E_INVALID_REF');
    await rejects(commitContent(repo, 'a/b/c', 'v1'), 'E_INVALID_REF');
  });

  it('a pin to a commit outside the ref history is refused', async () => {
    const repo = await tempRepo();
    await commitContent(repo, 'r', 'v1');
    const other = await commitContent(repo, 'other', 'x');
    await rejects(repo.resolve(`r@${other}`), 'E_NOT_IN_HISTORY');
    await rejects(repo.resolve('nope'), 'E_REF_NOT_FOUND');
    await rejects(repo.resolve(`r@${'0'.repeat(63)}`), 'E_INVALID_CHECKSUM');
  });

  it('rebuilds the index from the repository alone', async () => {
    const repo = await tempRepo();
    const c1 = await commitContent(repo, 'r', 'v1');
    const c2 = await commitContent(repo, 'r', 'v2');
    const before = (await repo.index()).getCommit(c2);
    const r = await repo.reindex();
    expect(r).toMatchObject({ commits: 2, refs: 1, records: 2 });
    const db = await repo.index();
    expect(db.getCommit(c2)).toEqual(before);
    expect(db.getCommit(c2)).toMatchObject({ parent: c1, totalSize: 2, fileCount: 1 });
    expect(db.refsOf(c1)).toEqual(['r']);
  });

  it('fsck catches an edited ref log record and a ref that disagrees with its log', async () => {
    const repo = await tempRepo();
    await commitContent(repo, 'r', 'v1');
    const c2 = await commitContent(repo, 'r', 'v2');
    const key = join(repo.location, reflogKey('r', 1));
    writeFileSync(key, readFileSync(key, 'utf8').replace('"reason":"v1"', '"reason":"edited"'));
    const problems = (await fsck(repo)).problems.map((p) => p.message).join('\n');
    expect(problems).toMatch(/ref log r #2: prev is .* \(edited\?\)/);
    writeFileSync(join(repo.location, 'refs/heads/r'), `${'a'.repeat(64)}\n`);
    const again = (await fsck(repo)).problems.map((p) => p.message).join('\n');
    expect(again).toContain(`but its ref log ends at ${c2}`);
  });
});
