/**
 * src/import/scan-dir.ts and native/files scanDir: one directory's entries, lstat and extended
 * attributes in one call, the same as Node's fs and @napi-rs/xattr read them one by one; and an
 * import that walks with it gives the same objects as one that does not.
 */
import { execFileSync } from 'node:child_process';
import {
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getAttributeSync, listAttributesSync } from '@napi-rs/xattr';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { isRegistryError } from '../src/errors.js';
import { importDirectory } from '../src/import/index.js';
import { scanDirectory } from '../src/import/scan-dir.js';
import { FsBlobStore } from '../src/store/fs-blob-store.js';
import { ObjectStore } from '../src/store/object-store.js';

const temps: string[] = [];
const temp = (p: string): string => {
  const d = mkdtempSync(join(tmpdir(), `sysroot-scan-${p}-`));
  temps.push(d);
  return d;
};
afterAll(() => {
  for (const d of temps) rmSync(d, { recursive: true, force: true });
});
afterEach(() => {
  vi.unstubAllEnvs();
});

/** A directory with what a walk meets: files with and without xattrs (a binary value), a
 * subdirectory with one, a symlink, a hard link, a fifo, a name that is not UTF-8. */
function sample(): string {
  const d = temp('tree');
  writeFileSync(join(d, 'plain'), 'plain');
  writeFileSync(join(d, 'attrs'), 'with attributes');
  execFileSync('setfattr', ['-n', 'user.first', '-v', 'one', join(d, 'attrs')]);
  execFileSync('setfattr', ['-n', 'user.binary', '-v', '0x00ff0010', join(d, 'attrs')]);
  mkdirSync(join(d, 'sub'));
  execFileSync('setfattr', ['-n', 'user.dir', '-v', 'x', join(d, 'sub')]);
  symlinkSync('plain', join(d, 'link'));
  linkSync(join(d, 'plain'), join(d, 'hard'));
  execFileSync('mkfifo', [join(d, 'fifo')]);
  writeFileSync(Buffer.from(`${d}/bad-\xff-name`, 'latin1'), 'bytes');
  return d;
}

/** The same facts through Node's fs and @napi-rs/xattr, one call at a time. */
function reference(dir: string) {
  return readdirSync(dir, { encoding: 'buffer' })
    .map((raw) => {
      const abs = Buffer.concat([Buffer.from(`${dir}/`), raw]).toString('latin1');
      const st = lstatSync(Buffer.from(abs, 'latin1'));
      const type = st.mode & 0o170000;
      const path = Buffer.from(abs, 'latin1').toString();
      // @napi-rs/xattr takes a string: a name that is not UTF-8 cannot be asked about.
      const utf8 = Buffer.from(path).equals(Buffer.from(abs, 'latin1'));
      const xattrs =
        utf8 && (type === 0o040000 || type === 0o100000 || type === 0o120000)
          ? listAttributesSync(path).map((name) => ({
              name,
              value: Buffer.from(getAttributeSync(path, name)!),
            }))
          : undefined;
      return {
        raw: raw.toString('hex'),
        stat: { mode: st.mode, uid: st.uid, gid: st.gid, size: st.size, nlink: st.nlink },
        xattrs,
      };
    })
    .sort((a, b) => a.raw.localeCompare(b.raw));
}

const shown = (entries: NonNullable<ReturnType<typeof scanDirectory>>) =>
  entries
    .map((e) => ({ raw: e.raw.toString('hex'), stat: e.stat, xattrs: e.xattrs }))
    .sort((a, b) => a.raw.localeCompare(b.raw));

describe('scanDirectory', () => {
  it('reads names, lstat and xattrs as Node’s fs and @napi-rs/xattr do', () => {
    const d = sample();
    const scanned = scanDirectory(d, true);
    expect(scanned, 'native/files is built by npm ci (scripts/build-native.mjs)').toBeDefined();
    const got = shown(scanned!);
    // Everything but the bad name can be read back through a string path; the bad name's entry
    // is compared on its name and lstat alone.
    const want = reference(d);
    expect(got.map((e) => e.raw)).toEqual(want.map((e) => e.raw));
    for (let i = 0; i < got.length; i++) {
      expect(got[i]!.stat, want[i]!.raw).toEqual(want[i]!.stat);
      if (!Buffer.from(want[i]!.raw, 'hex').includes(0xff))
        expect(got[i]!.xattrs, want[i]!.raw).toEqual(want[i]!.xattrs);
    }
    const byName = new Map(got.map((e) => [Buffer.from(e.raw, 'hex').toString('latin1'), e]));
    expect(byName.get('attrs')!.xattrs).toContainEqual({
      name: 'user.binary',
      value: Buffer.from([0, 0xff, 0, 0x10]),
    });
    expect(byName.get('sub')!.xattrs).toEqual([{ name: 'user.dir', value: Buffer.from('x') }]);
    expect(byName.get('hard')!.stat.nlink).toBe(2);
    expect(byName.get('fifo')!.xattrs, 'a fifo is not asked for xattrs').toBeUndefined();
    expect(byName.has('bad-\xff-name'), 'a name that is not UTF-8 comes back as its bytes').toBe(true);
  });

  it('asks for no xattrs when told not to', () => {
    const scanned = scanDirectory(sample(), false)!;
    expect(scanned.length).toBe(7);
    for (const e of scanned) expect(e.xattrs).toBeUndefined();
  });

  it('is off with SYSROOT_NATIVE_FILES=0, for the walk to make the calls itself', () => {
    vi.stubEnv('SYSROOT_NATIVE_FILES', '0');
    expect(scanDirectory(sample(), true)).toBeUndefined();
  });

  it('names the path it could not read (E_IO)', () => {
    const missing = join(temp('gone'), 'missing');
    let caught: unknown;
    try {
      scanDirectory(missing, true);
    } catch (e) {
      caught = e;
    }
    expect(isRegistryError(caught) && caught.code).toBe('E_IO');
    expect((caught as Error).message).toContain(missing);
    expect((caught as Error).message).toContain('ENOENT');
  });

  it('gives an import the same objects as the walk without it', async () => {
    const d = sample();
    rmSync(join(d, 'fifo'));
    rmSync(Buffer.from(`${d}/bad-\xff-name`, 'latin1'));
    const run = async (native: boolean) => {
      vi.stubEnv('SYSROOT_NATIVE_FILES', native ? '1' : '0');
      const objects = new ObjectStore(new FsBlobStore(temp('repo')));
      return importDirectory(objects, d);
    };
    const a = await run(true);
    const b = await run(false);
    expect(a.rootTree).toBe(b.rootTree);
    expect(a.rootMeta).toBe(b.rootMeta);
    expect(a.fileCount).toBe(b.fileCount);
  });
});
