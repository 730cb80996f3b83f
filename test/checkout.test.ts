import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { setAttributeSync } from '@napi-rs/xattr';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHECKOUT_MTIME, type CheckoutResult, checkoutCommit } from '../src/checkout/checkout.js';
import { isRegistryError, RegistryError } from '../src/errors.js';
import {
  contentChecksum,
  encodeCommit,
  encodeDirMeta,
  encodeDirTree,
  type FileMeta,
  filezHeader,
  objectPath,
} from '../src/objects/index.js';
import { type OstreeRepo, ostreeRepo } from './helpers/checkout-ostree.js';
import {
  cleanup,
  comparable,
  copyRepo,
  isRoot,
  leftovers,
  type Node,
  openRepo,
  snapshot,
  tempDir,
} from './helpers/checkout-tree.js';
import { ostree } from './helpers/ostree.js';
import { unpackFixture, vectors } from './helpers/vectors.js';

const C1 = vectors.commits.c1.checksum;
const C3 = vectors.commits.c3.checksum;
const HELLO = 'd54de4d5e87b6e23a70888c184728279c0e3a0d9ed8d4bb4fe2151e05f9599e8';
const RANDOM_BIN = '1987df604de5678bc51488c8e1cf50416574991699835050d8f8ac274821a150';
const MANY_DIRTREE = '1801587f419a0a1a75336477ae94858588db725020c1127cd73000dbbb1399da';

const tree = unpackFixture('tree.tar');
const repo = unpackFixture('repo.tar');
const work = tempDir('work');
afterAll(() => cleanup(tree, repo, work));

let n = 0;
/** A path in the work directory that does not exist yet. */
const fresh = (): string => join(work, `dest-${++n}`);

async function thrown(p: Promise<unknown>): Promise<RegistryError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof RegistryError) return e;
    throw e;
  }
  throw new Error('expected a RegistryError, got success');
}

/**
 * What the checkout must hold: contents, symlink targets and xattrs from the input tree; modes from
 * vectors.json (what ostree recorded: a non-root `tar -x` of the fixture loses setuid and sticky bits);
 * owners 0:0 (--owner-uid=0 --owner-gid=0) when we can apply them.
 */
function expectedFromTree(commit: 'c1' | 'c3'): Record<string, Partial<Node>> {
  const modes = new Map<string, number>();
  for (const o of vectors.objects) {
    if (o.type === 'dirtree') continue;
    for (const p of o.paths[commit] ?? []) modes.set(p === '/' ? '' : p.slice(1), o.mode! & 0o7777);
  }
  const out: Record<string, Partial<Node>> = {};
  for (const [k, v] of Object.entries(comparable(snapshot(tree), { owners: false }))) {
    expect(modes.has(k), `vectors.json has a mode for ${k}`).toBe(true);
    const e: Partial<Node> = { ...v, mode: modes.get(k)!, xattrs: commit === 'c3' ? {} : v.xattrs! };
    out[k] = isRoot ? { ...e, uid: 0, gid: 0 } : e;
  }
  return out;
}

function countTree(s: Map<string, Node>): Omit<CheckoutResult, 'ownershipApplied'> {
  let files = 0;
  let dirs = 0;
  let symlinks = 0;
  let bytes = 0;
  for (const [k, v] of s) {
    if (v.type === 'file') {
      files++;
      bytes += statSync(join(tree, k)).size;
    } else if (v.type === 'dir') dirs++;
    else symlinks++;
  }
  return { files, dirs, symlinks, bytes };
}

describe('checkout of the ground-truth repository (written by ostree 2022.7)', () => {
  it('C1 = the input tree: bytes, modes (setuid, sticky), symlinks, xattrs, owners, mtime 0', async () => {
    const dest = fresh();
    const progress: number[] = [];
    const r = await checkoutCommit(openRepo(repo), C1, dest, { onProgress: (p) => progress.push(p.files) });
    const got = snapshot(dest);
    expect(comparable(got, { owners: isRoot })).toEqual(expectedFromTree('c1'));

    // The specific cases the brief names, spelled out so a failure reads clearly.
    expect(got.get('bin/suid')!.mode).toBe(0o4755);
    expect(got.get('bin/sgid-g+w')!.mode).toBe(0o2775);
    expect(got.get('sticky')!.mode).toBe(0o1777);
    expect(got.get('private')!.mode).toBe(0o700);
    expect(got.get('lib/link-rel')!.target).toBe('../hello.txt');
    expect(got.get('lib/link-abs')!.target).toBe('/usr/bin/env');
    expect(got.get('xattr.txt')!.xattrs).toEqual({
      'user.alpha': Buffer.from('first').toString('hex'),
      'user.bin': '00ff00',
      'user.zeta': Buffer.from('last').toString('hex'),
    });
    expect(got.get('sort')!.xattrs).toEqual({ 'user.dir': Buffer.from('dirvalue').toString('hex') });
    expect(readFileSync(join(dest, 'hello.txt'), 'utf8')).toBe('Hello, OSTree!\n');
    for (const [path, node] of got) {
      expect({ path, mtimeMs: node.mtimeMs }).toEqual({ path, mtimeMs: CHECKOUT_MTIME * 1000 });
      if (isRoot) expect({ path, uid: node.uid, gid: node.gid }).toEqual({ path, uid: 0, gid: 0 });
    }

    expect(r).toEqual({ ...countTree(snapshot(tree)), ownershipApplied: isRoot });
    expect(progress.at(-1)).toBe(r.files);
    expect(leftovers(work, 'dest-1')).toEqual([]);
  });

  it('writes separate copies, never hard links, for content shared by several paths', async () => {
    const dest = fresh();
    await checkoutCommit(openRepo(repo), C1, dest);
    // hl/one and hl/two are a hard-linked pair in the input; /many holds 1700 files of one object.
    expect(lstatSync(join(dest, 'hl/one')).nlink).toBe(1);
    expect(lstatSync(join(dest, 'hl/two')).nlink).toBe(1);
    expect(lstatSync(join(dest, 'many', readdirSync(join(dest, 'many'))[0]!)).nlink).toBe(1);
    writeFileSync(join(dest, 'hl/one'), 'edited\n');
    expect(readFileSync(join(dest, 'hl/two'), 'utf8')).toBe(readFileSync(join(tree, 'hl/two'), 'utf8'));
  });

  it('C3 (--canonical-permissions) gives 0755-masked modes, no xattrs, root owners', async () => {
    const dest = fresh();
    await checkoutCommit(openRepo(repo), C3, dest);
    const got = snapshot(dest);
    expect(comparable(got, { owners: isRoot })).toEqual(expectedFromTree('c3'));
    expect(got.get('bin/suid')!.mode).toBe(0o755);
    expect(got.get('sticky')!.mode).toBe(0o755);
    expect(got.get('xattr.txt')!.xattrs).toEqual({});
  });
});

describe('checkout of a commit made by the real ostree CLI', () => {
  let o: OstreeRepo;
  beforeAll(async () => {
    o = await ostreeRepo({ big: true });
  });
  afterAll(() => cleanup(o.tree, o.repo));

  it('reproduces the committed tree, including files over the 16 MiB streaming limit', async () => {
    const dest = fresh();
    const r = await checkoutCommit(openRepo(o.repo), o.commit, dest);
    const expected = comparable(snapshot(o.tree), { owners: false });
    if (isRoot) for (const v of Object.values(expected)) Object.assign(v, { uid: 0, gid: 0 });
    expect(comparable(snapshot(dest), { owners: isRoot })).toEqual(expected);
    expect(statSync(join(dest, 'usr/lib/big-random.bin')).size).toBe(17 * 1024 * 1024);
    expect(lstatSync(join(dest, 'usr/lib/big-zeros-copy.img')).nlink).toBe(1);
    expect(r.symlinks).toBe(3);
    // No temp names left inside the tree by the streamed files.
    expect(readdirSync(join(dest, 'usr/lib')).filter((f) => f.includes('sysroot-partial'))).toEqual([]);
  });

  it('agrees with `ostree checkout` of the same commit (everything but mtimes)', async () => {
    const dest = fresh();
    const theirs = fresh();
    await checkoutCommit(openRepo(o.repo), o.commit, dest);
    // -U (user mode) when not root: ostree would otherwise fail to chown.
    await ostree([`--repo=${o.repo}`, 'checkout', ...(isRoot ? [] : ['-U']), o.commit, theirs]);
    const ours = comparable(snapshot(dest), { owners: true });
    const want = comparable(snapshot(theirs), { owners: true });
    // `ostree checkout -U` writes no xattrs and drops setuid/setgid from files; the previous test checks
    // ours against the input tree.
    if (!isRoot) {
      for (const v of [...Object.values(ours), ...Object.values(want)]) {
        v.xattrs = {};
        if (v.type === 'file') v.mode = v.mode! & ~0o6000;
      }
    }
    expect(ours).toEqual(want);
  });
});

describe('destination', () => {
  it('refuses a non-empty directory with E_DEST_NOT_EMPTY and changes nothing', async () => {
    const dest = fresh();
    mkdirSync(dest);
    writeFileSync(join(dest, 'keep.txt'), 'mine');
    const e = await thrown(checkoutCommit(openRepo(repo), C1, dest));
    expect(e.code).toBe('E_DEST_NOT_EMPTY');
    expect(e.details.path).toBe(dest);
    expect(readdirSync(dest)).toEqual(['keep.txt']);
    expect(readFileSync(join(dest, 'keep.txt'), 'utf8')).toBe('mine');
    expect(leftovers(work, `dest-${n}`)).toEqual([]);
  });

  it('refuses a regular file', async () => {
    const dest = fresh();
    writeFileSync(dest, 'x');
    expect((await thrown(checkoutCommit(openRepo(repo), C1, dest))).code).toBe('E_DEST_NOT_EMPTY');
    expect(readFileSync(dest, 'utf8')).toBe('x');
  });

  it('fills an existing empty directory', async () => {
    const dest = fresh();
    mkdirSync(dest);
    await checkoutCommit(openRepo(repo), C1, dest);
    expect(readFileSync(join(dest, 'hello.txt'), 'utf8')).toBe('Hello, OSTree!\n');
    expect(lstatSync(dest).mtimeMs).toBe(0);
    expect(lstatSync(dest).mode & 0o7777).toBe(0o755);
  });
});

describe.runIf(isRoot)('ownership as root', () => {
  it('owners are right under a setgid parent directory (whose group new files inherit)', async () => {
    const parent = join(work, 'setgid-parent');
    mkdirSync(parent);
    chownSync(parent, 0, 4321);
    chmodSync(parent, 0o2775);
    const dest = join(parent, 'dest');
    await checkoutCommit(openRepo(repo), C1, dest);
    for (const [path, node] of snapshot(dest)) {
      expect({ path, uid: node.uid, gid: node.gid }).toEqual({ path, uid: 0, gid: 0 });
    }
    expect(lstatSync(join(dest, 'bin/suid')).mode & 0o7777).toBe(0o4755);
  });
});

describe('corrupt and missing objects', () => {
  const flipMiddle = (file: string): void => {
    const b = readFileSync(file);
    b[b.length >> 1]! ^= 0x55;
    writeFileSync(file, b);
  };

  for (const [what, csum, type] of [
    ['a .filez', RANDOM_BIN, 'file'],
    ['a .dirtree', MANY_DIRTREE, 'dirtree'],
  ] as const) {
    it(`one flipped byte in ${what}: E_CORRUPT_OBJECT naming it, nothing at DEST, no temp dir`, async () => {
      const bad = copyRepo(repo);
      try {
        flipMiddle(join(bad, objectPath(csum, type)));
        const dest = fresh();
        const e = await thrown(checkoutCommit(openRepo(bad), C1, dest));
        expect(e.code).toBe('E_CORRUPT_OBJECT');
        expect(e.message).toContain(csum);
        expect(e.details.object).toBe(`${csum}.${type}`);
        expect(existsSync(dest)).toBe(false);
        expect(leftovers(work, `dest-${n}`)).toEqual([]);
      } finally {
        cleanup(bad);
      }
    });
  }

  it('bytes after the deflate stream of a .filez: E_CORRUPT_OBJECT (as ObjectStore.verifyFilez)', async () => {
    // hello.txt is inflated on the main thread, random.bin on the thread pool.
    for (const csum of [HELLO, RANDOM_BIN]) {
      const bad = copyRepo(repo);
      try {
        const f = join(bad, objectPath(csum, 'file'));
        writeFileSync(f, Buffer.concat([readFileSync(f), Buffer.from('junk')]));
        const dest = fresh();
        const e = await thrown(checkoutCommit(openRepo(bad), C1, dest));
        expect(e.code).toBe('E_CORRUPT_OBJECT');
        expect(e.message).toContain(csum);
        expect(existsSync(dest)).toBe(false);
      } finally {
        cleanup(bad);
      }
    }
  });

  it('a missing object: E_OBJECT_MISSING, nothing at DEST', async () => {
    const bad = copyRepo(repo);
    try {
      rmSync(join(bad, objectPath(RANDOM_BIN, 'file')));
      const dest = fresh();
      const e = await thrown(checkoutCommit(openRepo(bad), C1, dest));
      expect(isRegistryError(e, 'E_OBJECT_MISSING')).toBe(true);
      expect(e.message).toContain(RANDOM_BIN);
      expect(existsSync(dest)).toBe(false);
      expect(leftovers(work, `dest-${n}`)).toEqual([]);
    } finally {
      cleanup(bad);
    }
  });
});

/** A parentless commit of `rootTree` and `rootMeta`, stored in `objects`. */
function putCommit(
  objects: ReturnType<typeof openRepo>,
  rootTree: string,
  rootMeta: string,
  subject: string,
): Promise<string> {
  const commit = encodeCommit({
    metadata: [],
    parent: null,
    related: [],
    subject,
    body: '',
    timestamp: 1704067200,
    rootTree,
    rootMeta,
  });
  return objects.putMetadata('commit', commit);
}

describe('a commit built with our encoders', () => {
  /** One commit: a symlink at `link` with the given xattrs, in a 0555 directory `ro`. */
  async function build(
    linkXattrs: { name: string; value: Buffer }[],
  ): Promise<{ dir: string; commit: string }> {
    const dir = tempDir('built-repo');
    const objects = openRepo(dir);
    const link: FileMeta = { uid: 0, gid: 0, mode: 0o120777, symlinkTarget: 'target', xattrs: linkXattrs };
    const linkSum = contentChecksum(link);
    await objects.putFilez(linkSum, filezHeader(link, 0));
    const body = Buffer.from('inside a read-only directory\n');
    const file: FileMeta = { uid: 0, gid: 0, mode: 0o100444, symlinkTarget: '', xattrs: [] };
    const fileSum = contentChecksum(file, body);
    await objects.putFilez(fileSum, Buffer.concat([filezHeader(file, body.length), deflateRawSync(body)]));
    const roMeta = await objects.putMetadata(
      'dirmeta',
      encodeDirMeta({ uid: 0, gid: 0, mode: 0o40555, xattrs: [] }),
    );
    const rootMeta = await objects.putMetadata(
      'dirmeta',
      encodeDirMeta({ uid: 0, gid: 0, mode: 0o40755, xattrs: [] }),
    );
    const ro = await objects.putMetadata(
      'dirtree',
      encodeDirTree({ files: [{ name: 'f', checksum: fileSum }], dirs: [] }),
    );
    const root = await objects.putMetadata(
      'dirtree',
      encodeDirTree({
        files: [{ name: 'link', checksum: linkSum }],
        dirs: [{ name: 'ro', tree: ro, meta: roMeta }],
      }),
    );
    return { dir, commit: await putCommit(objects, root, rootMeta, 'built') };
  }

  it('checks out a read-only directory (its mode is set last) and a plain symlink', async () => {
    const b = await build([]);
    try {
      const dest = fresh();
      await checkoutCommit(openRepo(b.dir), b.commit, dest);
      expect(lstatSync(join(dest, 'ro')).mode & 0o7777).toBe(0o555);
      expect(readFileSync(join(dest, 'ro/f'), 'utf8')).toBe('inside a read-only directory\n');
      expect(lstatSync(join(dest, 'link')).isSymbolicLink()).toBe(true);
      cleanup(dest);
    } finally {
      cleanup(b.dir);
    }
  });

  it('a user.* xattr on a symlink (Linux refuses it): error naming the path, nothing at DEST', async () => {
    const b = await build([{ name: 'user.note', value: Buffer.from('x') }]);
    try {
      const dest = fresh();
      const e = await thrown(checkoutCommit(openRepo(b.dir), b.commit, dest));
      expect(e.code).toBe('E_IO');
      expect(e.message).toContain('link');
      expect(e.message).toContain('user.note');
      expect(e.details.path).toBe('link');
      expect(existsSync(dest)).toBe(false);
      expect(leftovers(work, `dest-${n}`)).toEqual([]);
    } finally {
      cleanup(b.dir);
    }
  });
});

describe('file modes set when the file is created', () => {
  /** Every kind of mode open(2) may or may not give as asked: umask bits, setuid, setgid, sticky, none. */
  const MODES = [0o644, 0o755, 0o600, 0o444, 0o000, 0o666, 0o777, 0o620, 0o4755, 0o2755, 0o1644, 0o6711];

  /** A commit whose root holds one file per mode, named after it. */
  async function build(): Promise<{ dir: string; commit: string }> {
    const dir = tempDir('modes-repo');
    const objects = openRepo(dir);
    const files = [];
    for (const mode of MODES) {
      const body = Buffer.from(`mode ${mode.toString(8)}\n`);
      const meta: FileMeta = { uid: 0, gid: 0, mode: 0o100000 | mode, symlinkTarget: '', xattrs: [] };
      const checksum = contentChecksum(meta, body);
      await objects.putFilez(checksum, Buffer.concat([filezHeader(meta, body.length), deflateRawSync(body)]));
      files.push({ name: `m${mode.toString(8).padStart(4, '0')}`, checksum });
    }
    const rootMeta = await objects.putMetadata(
      'dirmeta',
      encodeDirMeta({ uid: 0, gid: 0, mode: 0o40755, xattrs: [] }),
    );
    const root = await objects.putMetadata('dirtree', encodeDirTree({ files, dirs: [] }));
    return { dir, commit: await putCommit(objects, root, rootMeta, 'modes') };
  }

  const modesOf = (dest: string): number[] =>
    MODES.map((m) => lstatSync(join(dest, `m${m.toString(8).padStart(4, '0')}`)).mode & 0o7777);

  it('every mode exactly as committed, whatever the umask would take off', async () => {
    const b = await build();
    try {
      const dest = fresh();
      await checkoutCommit(openRepo(b.dir), b.commit, dest);
      expect(modesOf(dest).map((m) => m.toString(8))).toEqual(MODES.map((m) => m.toString(8)));
      cleanup(dest);
    } finally {
      cleanup(b.dir);
    }
  });

  it('every mode exactly as committed under a default ACL, which replaces the umask', async () => {
    const b = await build();
    const parent = tempDir('acl-parent');
    try {
      // system.posix_acl_default as the kernel stores it: version 2, then (tag, perms, id) entries:
      // owner rwx, group none, other none. New files then get only their owner's bits.
      const entry = (tag: number, perm: number) => {
        const e = Buffer.alloc(8);
        e.writeUInt16LE(tag, 0);
        e.writeUInt16LE(perm, 2);
        e.writeUInt32LE(0xffffffff, 4);
        return e;
      };
      const acl = Buffer.concat([Buffer.from([2, 0, 0, 0]), entry(0x01, 7), entry(0x04, 0), entry(0x20, 0)]);
      setAttributeSync(parent, 'system.posix_acl_default', acl);
      // The ACL is in force: a file asked for 0644 is made 0600.
      const probe = join(parent, 'probe');
      writeFileSync(probe, '', { mode: 0o644 });
      expect(lstatSync(probe).mode & 0o777).toBe(0o600);
      const dest = join(parent, 'dest');
      await checkoutCommit(openRepo(b.dir), b.commit, dest);
      expect(modesOf(dest).map((m) => m.toString(8))).toEqual(MODES.map((m) => m.toString(8)));
    } finally {
      cleanup(b.dir, parent);
    }
  });
});
