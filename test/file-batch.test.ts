import {
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  type FileBatches,
  fileBatches,
  filesAddonBuilt,
  MAX_BATCH_BYTES,
} from '../src/checkout/file-batch.js';

const dir = mkdtempSync(join(tmpdir(), 'file-batch-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
const fresh = (): string => {
  const d = join(dir, `t${++n}`);
  rmSync(d, { recursive: true, force: true });
  mkdirSync(d);
  return d;
};

class Failed extends Error {
  constructor(
    readonly errnoError: NodeJS.ErrnoException,
    readonly rel: string,
  ) {
    super(`${rel}: ${errnoError.message}`);
  }
}

const batches = (time = 0): FileBatches => {
  const b = fileBatches(time, (e, rel) => new Failed(e, rel));
  if (!b) throw new Error('native/files is not built (npm ci builds it; see scripts/build-native.mjs)');
  return b;
};

describe('FileBatches (native/files)', () => {
  it('the addon is built', () => {
    expect(filesAddonBuilt).toBe(true);
  });

  it('writes files and symlinks with their bytes, modes and times', async () => {
    const d = fresh();
    const b = batches(0);
    const old = process.umask(0o022);
    try {
      // Created with 0644 (nothing for the umask to take), and created 0600 then fchmod'ed to 04755.
      b.file(join(d, 'plain'), 'plain', 0o644, undefined, Buffer.from('plain bytes'));
      b.file(join(d, 'suid'), 'suid', 0o600, 0o4755, Buffer.from('#!/bin/sh\n'));
      b.file(join(d, 'empty'), 'empty', 0o600, 0o444, Buffer.alloc(0));
      b.file(join(d, 'é日本'), 'é日本', 0o644, undefined, Buffer.from('utf-8 name'));
      b.symlink(join(d, 'link'), 'link', '../somewhere/é');
      await b.flush();
    } finally {
      process.umask(old);
    }
    // Times first: reading a file moves its atime.
    for (const name of ['plain', 'suid', 'empty', 'é日本', 'link']) {
      const st = lstatSync(join(d, name));
      expect({ name, mtime: st.mtimeMs, atime: st.atimeMs }).toEqual({ name, mtime: 0, atime: 0 });
    }
    expect(readFileSync(join(d, 'plain'), 'utf8')).toBe('plain bytes');
    expect(lstatSync(join(d, 'plain')).mode & 0o7777).toBe(0o644);
    expect(lstatSync(join(d, 'suid')).mode & 0o7777).toBe(0o4755);
    expect(lstatSync(join(d, 'empty')).size).toBe(0);
    expect(lstatSync(join(d, 'empty')).mode & 0o7777).toBe(0o444);
    expect(readFileSync(join(d, 'é日本'), 'utf8')).toBe('utf-8 name');
    expect(readlinkSync(join(d, 'link'))).toBe('../somewhere/é');
  });

  it('copy: the caller may change its buffer once file() returns; done runs when the batch is over', async () => {
    const d = fresh();
    const b = batches(1_000_000_000);
    const payload = Buffer.from('original');
    let done = false;
    b.file(join(d, 'f'), 'f', 0o644, undefined, payload, () => (done = true));
    payload.write('CHANGED!');
    expect(done).toBe(false);
    await b.flush();
    expect(done).toBe(true);
    expect(readFileSync(join(d, 'f'), 'utf8')).toBe('original');
    expect(lstatSync(join(d, 'f')).mtimeMs).toBe(1_000_000_000_000);
  });

  it('backpressure: file() returns a promise once a batch is full, and every file gets written', async () => {
    const d = fresh();
    const b = batches();
    let waits = 0;
    const count = 1000;
    for (let i = 0; i < count; i++) {
      const w = b.file(join(d, `f${i}`), `f${i}`, 0o644, undefined, Buffer.from(`file ${i}`));
      if (w) {
        waits++;
        await w;
      }
    }
    await b.flush();
    // 64 entries a batch: a wait at the end of each full one.
    expect(waits).toBe(Math.floor(count / 64));
    for (let i = 0; i < count; i += 97) expect(readFileSync(join(d, `f${i}`), 'utf8')).toBe(`file ${i}`);
  });

  it('copies up to MAX_BATCH_BYTES, across arenas, and refuses more', async () => {
    const d = fresh();
    const b = batches();
    const big = Buffer.alloc(MAX_BATCH_BYTES, 7);
    const mid = Buffer.alloc(MAX_BATCH_BYTES / 2 + 1, 9);
    for (const [name, p] of [
      ['a', mid],
      ['b', mid],
      ['c', big],
      ['d', mid],
    ] as const) {
      await b.file(join(d, name), name, 0o644, undefined, p);
    }
    expect(() => b.file(join(d, 'e'), 'e', 0o644, undefined, Buffer.alloc(MAX_BATCH_BYTES + 1))).toThrow(
      RangeError,
    );
    await b.flush();
    expect(readFileSync(join(d, 'c')).equals(big)).toBe(true);
    for (const name of ['a', 'b', 'd']) expect(readFileSync(join(d, name)).equals(mid)).toBe(true);
  });

  it('a failed syscall: the error names the path and errno, later calls throw it, done still runs', async () => {
    const d = fresh();
    writeFileSync(join(d, 'taken'), 'already here');
    const b = batches();
    const dones: string[] = [];
    for (const name of ['first', 'taken', 'after']) {
      b.file(join(d, name), `rel/${name}`, 0o644, undefined, Buffer.from(name), () => dones.push(name));
    }
    const err = await b.flush().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(Failed);
    const f = err as Failed;
    expect(f.rel).toBe('rel/taken');
    expect(f.errnoError.code).toBe('EEXIST');
    expect(f.errnoError.syscall).toBe('open');
    expect(f.errnoError.path).toBe(join(d, 'taken'));
    // Entries before the failure are complete; the one that failed and those after are not written.
    expect(readFileSync(join(d, 'first'), 'utf8')).toBe('first');
    expect(readFileSync(join(d, 'taken'), 'utf8')).toBe('already here');
    expect(dones.sort()).toEqual(['after', 'first', 'taken']);
    expect(() => b.file(join(d, 'x'), 'x', 0o644, undefined, Buffer.from('x'))).toThrow(f);
    await b.settle();
  });

  it('a directory that is not there: ENOENT from open, with the path', async () => {
    const d = fresh();
    const b = batches();
    b.symlink(join(d, 'no-such-dir', 'link'), 'no-such-dir/link', 'target');
    const err = (await b.flush().catch((e: unknown) => e)) as Failed;
    expect(err.errnoError.code).toBe('ENOENT');
    expect(err.errnoError.syscall).toBe('symlink');
    expect(err.rel).toBe('no-such-dir/link');
  });
});
