import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { ostree } from './helpers/ostree.js';

const vectorsPath = new URL('../fixtures/ostree-vectors/vectors.json', import.meta.url);

interface Vectors {
  repo_mode: string;
  refs: Record<string, string>;
  commits: Record<string, { checksum: string; parent: string | null; subject: string }>;
}

describe('test environment', () => {
  it('has the ostree ground-truth vectors, naming commits C1, C2 and C3', async () => {
    const vectors = JSON.parse(await readFile(vectorsPath, 'utf8')) as Vectors;

    expect(vectors.repo_mode).toBe('archive-z2');
    expect(Object.keys(vectors.commits).sort()).toEqual(['c1', 'c2', 'c3']);
    for (const commit of Object.values(vectors.commits)) {
      expect(commit.checksum).toMatch(/^[0-9a-f]{64}$/);
    }
    const { c1, c2, c3 } = vectors.commits;
    expect(c2?.parent).toBe(c1?.checksum);
    expect(vectors.refs['stage3-sysroot/x86_64']).toBe(c2?.checksum);
    expect(vectors.refs['stage3-sysroot/x86_64-canonical']).toBe(c3?.checksum);
  });

  it('runs the real ostree CLI, version 2022 or later', async () => {
    const out = await ostree(['--version']);
    // `ostree --version` prints YAML: "libostree:\n Version: '2022.7'\n ...".
    const version = /Version:\s*'?(\d+)\.(\d+)/.exec(out);
    expect(version, out).not.toBeNull();
    expect(Number(version?.[1])).toBeGreaterThanOrEqual(2022);
  });
});
