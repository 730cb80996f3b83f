/**
 * Both BlobStore adapters against one contract (test/helpers/store-conformance.ts): the filesystem
 * on a temp directory, S3 on a real Ceph RADOS Gateway (scripts/s3-server.sh), a fresh key prefix per
 * test. Plus what only one adapter has: location parsing, the filesystem lock across processes.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isRegistryError } from '../src/errors.js';
import { FsBlobStore } from '../src/store/fs-blob-store.js';
import { openBlobStore, parseRepoUrl } from '../src/store/open.js';
import { S3BlobStore } from '../src/store/s3-blob-store.js';
import { type S3Server, s3Env, startS3 } from './helpers/s3-server.js';
import { blobStoreConformance } from './helpers/store-conformance.js';

blobStoreConformance('FsBlobStore', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'sysroot-store-'));
  return { store: new FsBlobStore(dir), cleanup: () => rm(dir, { recursive: true, force: true }) };
});

describe('S3BlobStore on a real RADOS Gateway', () => {
  let s3: S3Server;
  const opened: S3BlobStore[] = [];
  const saved = { ...process.env };

  beforeAll(async () => {
    s3 = await startS3({ bucket: 'conformance' });
    // The store is opened as a user would: s3://bucket/prefix, the client from the AWS_* environment.
    Object.assign(process.env, s3Env(s3));
  });
  afterAll(async () => {
    for (const k of Object.keys(s3Env(s3))) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
    for (const s of opened) s.close();
    await s3?.stop();
  });

  let n = 0;
  blobStoreConformance('S3BlobStore', async () => {
    const store = openBlobStore(`s3://${s3.bucket}/t${++n}-${randomBytes(4).toString('hex')}`);
    if (!(store instanceof S3BlobStore)) throw new Error('openBlobStore did not open an S3BlobStore');
    opened.push(store);
    return { store, cleanup: async () => {} };
  });

  it('keeps stores with different prefixes apart in one bucket', async () => {
    const a = openBlobStore(`s3://${s3.bucket}/apart/a`) as S3BlobStore;
    const b = openBlobStore(`s3://${s3.bucket}/apart/ab`) as S3BlobStore;
    opened.push(a, b);
    await a.createOnce('refs/heads/x', Buffer.from('a'));
    await b.createOnce('refs/heads/y', Buffer.from('b'));
    const listed: string[] = [];
    for await (const k of a.list('refs/')) listed.push(k);
    expect(listed).toEqual(['refs/heads/x']);
    expect(await b.read('refs/heads/x')).toBeUndefined();
    expect(a.location).toBe(`s3://${s3.bucket}/apart/a/`);
  });

  it('reports a missing bucket as E_IO naming the key and the S3 code', async () => {
    const store = new S3BlobStore({ bucket: 'no-such-bucket', retry: { attempts: 1 } });
    opened.push(store);
    const e = await store.read('config').then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(isRegistryError(e, 'E_IO')).toBe(true);
    expect(e).toMatchObject({ details: { key: 'config', s3Code: 'NoSuchBucket', httpStatus: 404 } });
  });
});

describe('parseRepoUrl', () => {
  it('tells directories from s3:// URLs', () => {
    expect(parseRepoUrl('./repo')).toEqual({ kind: 'fs', path: './repo' });
    expect(parseRepoUrl('/srv/repo')).toEqual({ kind: 'fs', path: '/srv/repo' });
    expect(parseRepoUrl('file:///srv/repo')).toEqual({ kind: 'fs', path: '/srv/repo' });
    expect(parseRepoUrl('s3://bucket')).toEqual({ kind: 's3', bucket: 'bucket', prefix: '' });
    expect(parseRepoUrl('s3://bucket/')).toEqual({ kind: 's3', bucket: 'bucket', prefix: '' });
    expect(parseRepoUrl('s3://my.bucket-1/a/b')).toEqual({
      kind: 's3',
      bucket: 'my.bucket-1',
      prefix: 'a/b/',
    });
    expect(parseRepoUrl('s3://bucket/a/b/')).toEqual({ kind: 's3', bucket: 'bucket', prefix: 'a/b/' });
  });

  it('refuses bad buckets, prefixes and schemes with E_USAGE', () => {
    for (const bad of [
      's3://',
      's3://B',
      's3://Bucket/x',
      's3://bucket//x',
      's3://bucket/a/../b',
      'http://host/repo',
    ]) {
      expect(() => parseRepoUrl(bad), bad).toThrow(expect.objectContaining({ code: 'E_USAGE' }));
    }
  });
});

describe('FsBlobStore conditional replace across processes', () => {
  it('lets exactly one of 4 processes x 5 racing replaces from one etag win', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sysroot-store-procs-'));
    try {
      // The children run this very source, transpiled (types stripped) beside the test's temp repo:
      // plain Node 20 cannot import .ts, and dist/ may be older than the source under test.
      const build = join(dir, 'build');
      await mkdir(join(build, 'store'), { recursive: true });
      const files = [
        'errors.ts',
        'young-generation.js',
        'store/fs-blob-store.ts',
        'store/fs-batch-writer.ts',
      ];
      for (const file of files) {
        const source = await readFile(fileURLToPath(new URL(`../src/${file}`, import.meta.url)), 'utf8');
        const js = ts.transpileModule(source, {
          compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
        }).outputText;
        await writeFile(join(build, file.replace(/\.ts$/, '.js')), js);
      }
      await writeFile(join(build, 'package.json'), '{"type":"module"}');
      const store = new FsBlobStore(join(dir, 'repo'));
      await store.replace('refs/heads/main', Buffer.from('base'));
      const etag = (await store.stat('refs/heads/main'))!.etag;
      const script = `
        const { FsBlobStore } = await import(${JSON.stringify(join(build, 'store/fs-blob-store.js'))});
        const s = new FsBlobStore(${JSON.stringify(join(dir, 'repo'))});
        const r = await Promise.all([0, 1, 2, 3, 4].map((i) =>
          s.replace('refs/heads/main', Buffer.from(process.argv[1] + '-' + i),
            { ifMatch: ${JSON.stringify(etag)} })));
        console.log(JSON.stringify(r));`;
      const run = promisify(execFile);
      const outs = await Promise.all(
        [0, 1, 2, 3].map((p) => run(process.execPath, ['--input-type=module', '-e', script, `p${p}`])),
      );
      const wins = outs.flatMap((o) => JSON.parse(o.stdout) as boolean[]).filter(Boolean);
      expect(wins).toHaveLength(1);
      expect((await store.read('refs/heads/main'))?.toString()).toMatch(/^p\d-\d$/);
      expect(await store.stat('sysroot/lock')).toBeUndefined();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('FsBlobStore.existsMany (synchronous stats on the store worker)', () => {
  it('answers false under a path component that is a file (ENOTDIR), and E_IO for other errors', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sysroot-exists-'));
    try {
      const store = new FsBlobStore(dir);
      await store.createOnce('objects/ab/file.filez', Buffer.from('x'));
      expect(await store.existsMany(['objects/ab/file.filez/below', 'objects/ab/file.filez'])).toEqual([
        false,
        true,
      ]);
      // A name longer than NAME_MAX (255) is no "missing" answer: the store cannot tell.
      const e = await store.existsMany([`objects/ab/${'n'.repeat(300)}`]).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(isRegistryError(e, 'E_IO')).toBe(true);
      expect((e as Error).message).toContain('ENAMETOOLONG');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('FsBlobStore write lock left by a dead process', () => {
  const lockOf = (dir: string) => join(dir, 'repo', 'sysroot', 'lock');

  async function storeWithLock(content: string, ageMs: number): Promise<{ dir: string; store: FsBlobStore }> {
    const dir = await mkdtemp(join(tmpdir(), 'sysroot-store-lock-'));
    const store = new FsBlobStore(join(dir, 'repo'));
    await mkdir(join(dir, 'repo', 'sysroot'), { recursive: true });
    await writeFile(lockOf(dir), content);
    const t = (Date.now() - ageMs) / 1000;
    await utimes(lockOf(dir), t, t);
    return { dir, store };
  }

  /** A pid that no process has: one of a child that has exited. */
  async function deadPid(): Promise<number> {
    const child = execFile(process.execPath, ['-e', '']);
    await new Promise((r) => child.once('exit', r));
    return child.pid!;
  }

  it('holds its pid in the lock file from the moment the file exists', async () => {
    const { dir, store } = await storeWithLock('', 0);
    try {
      await rm(lockOf(dir));
      const inside = await store.withLock(() => readFile(lockOf(dir), 'utf8'));
      expect(inside).toBe(`${process.pid}\n`);
      expect(await store.stat('sysroot/lock')).toBeUndefined();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('breaks a lock naming a process that is gone', async () => {
    const { dir, store } = await storeWithLock(`${await deadPid()}\n`, 0);
    try {
      const started = Date.now();
      expect(await store.withLock(async () => 'taken')).toBe('taken');
      expect(Date.now() - started).toBeLessThan(2_000);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('breaks a lock without a pid (an older version killed between create and write) once it is 5 s old', async () => {
    // Found by the server crash test: an empty lock was never broken, and the next server waited
    // 30 s for it. A fresh one is given the time to be written.
    const { dir, store } = await storeWithLock('', 0);
    try {
      let taken = false;
      const waiting = store.withLock(async () => {
        taken = true;
      });
      await new Promise((r) => setTimeout(r, 300));
      expect(taken).toBe(false);
      const t = (Date.now() - 6_000) / 1000;
      await utimes(lockOf(dir), t, t);
      await waiting;
      expect(taken).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
