/**
 * Shared by the crash, race and load tests: trees that change a little per version, a seeded random
 * source (a failing run prints its seed), object counts, and "is this repository sound" checked by
 * our fsck and by the real `ostree fsck`.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type FsckReport, fsck } from '../../src/repo/fsck.js';
import { Repository } from '../../src/repo/repository.js';
import { ostree } from './ostree.js';

const BIN = fileURLToPath(new URL('../../bin/sysroot.js', import.meta.url));

/** mulberry32: a tiny seeded PRNG, so a failing kill schedule can be replayed with the printed seed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function seedFromEnv(name: string): number {
  const v = process.env[name];
  return v ? Number(v) : Date.now() % 2 ** 31;
}

/**
 * A tree of `dirs` directories × `files` files of `bytes` random (incompressible) bytes each, so
 * every version's new files are new objects and their upload is real work for both sides.
 */
export function makeTree(root: string, o: { dirs: number; files: number; bytes: number }): string[] {
  const paths: string[] = [];
  for (let d = 0; d < o.dirs; d++) {
    mkdirSync(join(root, `d${d}`), { recursive: true });
    for (let f = 0; f < o.files; f++) {
      const p = join(root, `d${d}`, `f${f}`);
      writeFileSync(p, randomBytes(o.bytes));
      paths.push(p);
    }
  }
  return paths;
}

/**
 * Rewrite `count` of `paths` (chosen by `random`) with fresh random bytes, and `blob` (if given) with
 * its size of them: a new version.
 */
export function mutateTree(
  paths: string[],
  count: number,
  bytes: number,
  random: () => number,
  blob?: { path: string; bytes: number },
): void {
  for (let i = 0; i < count; i++) {
    const p = paths[Math.floor(random() * paths.length)]!;
    writeFileSync(p, randomBytes(bytes));
  }
  if (blob) writeFileSync(blob.path, randomBytes(blob.bytes));
}

/**
 * The small tree the kill loops push, made at `root` (6 directories of 10 files of 8 KiB), and a
 * function that makes its next version: 6 files (chosen by `random`) and a 512 KiB blob rewritten.
 * The pack is then a few records and some real bytes, while the repository stays small enough
 * (~0.6 MiB more per push) for both fscks after every kill to take tens of milliseconds.
 */
export function smallTreeVersions(root: string, random: () => number): () => string {
  const paths = makeTree(root, { dirs: 6, files: 10, bytes: 8 * 1024 });
  return () => {
    mutateTree(paths, 6, 8 * 1024, random, { path: join(root, 'blob'), bytes: 512 * 1024 });
    return root;
  };
}

/** Objects in a directory repository: the files under objects/XX/. */
export function countObjects(repoPath: string): number {
  let n = 0;
  const dir = join(repoPath, 'objects');
  for (const sub of readdirSync(dir)) n += readdirSync(join(dir, sub)).length;
  return n;
}

/**
 * Our fsck and `ostree fsck` on a directory repository. With `underLock`, our fsck runs holding the
 * repository's write lock, the one every ref move holds: a live server cannot be between writing a
 * ref log record, refs/heads and the summary while it looks. (ostree fsck reads refs/heads only.)
 * fsck re-hashes every object and walks the closure of every ref head and every ref log record, so a
 * clean report also means no ref points at an incomplete commit.
 */
export async function checkRepo(
  repoPath: string,
  o: { underLock?: boolean } = {},
): Promise<{ report: FsckReport; ostree: string }> {
  const repo = await Repository.open(repoPath);
  try {
    const run = async () => {
      const [report, out] = await Promise.all([fsck(repo), ostree(['fsck', `--repo=${repoPath}`])]);
      return { report, ostree: out };
    };
    return o.underLock ? await repo.blobs.withLock(run) : await run();
  } finally {
    repo.close();
  }
}

/** The built CLI as a child process the test can kill; resolves when it exits. */
export interface CliChild {
  child: ChildProcess;
  started: number;
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
}

export function spawnCli(args: string[], env: NodeJS.ProcessEnv = {}): CliChild {
  const child = spawn(process.execPath, [BIN, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (c: string) => {
    stdout += c;
  });
  child.stderr!.setEncoding('utf8').on('data', (c: string) => {
    stderr += c;
  });
  const started = performance.now();
  const done = new Promise<{
    code: number | null;
    signal: NodeJS.Signals | null;
    stdout: string;
    stderr: string;
  }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
  return { child, started, done };
}

/** The `pack received` lines a server logged (server/pack-upload.ts), parsed. */
export function packLines(log: string): Array<{ records: number; stored: number; existing: number }> {
  return [...log.matchAll(/pack received: (\d+) records, (\d+) stored, (\d+) already there/g)].map((m) => ({
    records: Number(m[1]),
    stored: Number(m[2]),
    existing: Number(m[3]),
  }));
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}
