/**
 * Issue 6, point 7: resource faults.
 *
 * - Disk full: the server's repository on a small tmpfs; a push that does not fit fails with 507
 *   E_NO_SPACE and a clear CLI message, leaves nothing partial (every object file verifies, no temp
 *   file left behind, the ref where it was), the server keeps serving pulls of what it had, and once
 *   the filesystem is grown the push run again succeeds. The same for a local `sysroot commit`.
 * - A client that goes away mid-stream: a pull that closes its socket in the middle of a pack, a push
 *   that disconnects in the middle of its upload (a pack, a single object) → the server answers the
 *   others, stores nothing partial, logs no internal error, and leaks no file descriptor.
 * - S3 answering 503 SlowDown and resetting connections, end to end: `sysroot serve` on a bucket
 *   reached through a faulty proxy; push and pull through it succeed and verify.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { deflateRawSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TokenStore } from '../src/auth/tokens.js';
import { contentChecksum, type FileMeta, filezHeader } from '../src/objects/index.js';
import { KIND, PackWriter } from '../src/pack/index.js';
import { Repository } from '../src/repo/repository.js';
import { sysroot } from './helpers/cli.js';
import { checkRepo, countObjects, makeTree, spawnCli } from './helpers/crash.js';
import { type Fault, type FaultProxy, startFaultProxy } from './helpers/fault-proxy.js';
import { type ServeProcess, startServe, stopAllServers } from './helpers/killable-serve.js';
import { tempDir } from './helpers/repo.js';
import { type S3Server, s3Env, startS3 } from './helpers/s3-server.js';

const mounts: string[] = [];

/** A tmpfs of `size` at a new directory (root only: CI runs as root, and this test needs it). */
function smallFilesystem(size: string): string {
  if (process.getuid?.() !== 0) {
    throw new Error('the disk-full tests mount a small tmpfs, which needs root (CI runs the tests as root)');
  }
  const dir = tempDir('sysroot-full-');
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
  mounts.push(dir);
  return dir;
}

function grow(dir: string, size: string): void {
  execFileSync('mount', ['-o', `remount,size=${size}`, dir]);
}

afterAll(async () => {
  await stopAllServers();
  for (const dir of mounts) {
    execFileSync('umount', ['-l', dir]);
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Names under the repository's tmp/ (our temp files live there) other than what was there before. */
function tmpLitter(repoPath: string, before: string[] = []): string[] {
  return readdirSync(join(repoPath, 'tmp')).filter((n) => !before.includes(n));
}

async function tokenFor(repoPath: string, scopes = ['push:**']): Promise<string> {
  const repo = await Repository.open(repoPath);
  const tokens = TokenStore.forRepo(repo);
  const { token } = await tokens.create({ name: 'faults', scopes });
  tokens.close();
  repo.close();
  return token;
}

describe('disk full', () => {
  it('a push that does not fit fails with 507 E_NO_SPACE, leaves nothing partial, and the server keeps serving', async () => {
    const mnt = smallFilesystem('12m');
    const repoPath = join(mnt, 'repo');
    expect(sysroot(['init', '--repo', repoPath]).status).toBe(0);
    const token = await tokenFor(repoPath);
    // Made now, first used once the disk is full (its first use is recorded in tokens.sqlite).
    const reader = await tokenFor(repoPath, ['pull']);
    const env = { SYSROOT_TOKEN: token };
    const server = await startServe(repoPath);

    const v1tree = join(tempDir('sysroot-full-src-'), 'v1');
    makeTree(v1tree, { dirs: 2, files: 10, bytes: 32 * 1024 });
    const v1 = sysroot(['push', '--url', server.url, '--ref', 'full/r', '--json', v1tree], { env });
    expect(v1.status, v1.stderr).toBe(0);
    const v1commit = (JSON.parse(v1.stdout) as { commit: string }).commit;
    // A pull before the disk fills generates (and stores) the pack later pulls are served from.
    const warm = sysroot(['pull', '--url', server.url, 'full/r', join(tempDir(), 'warm')], {
      env: { SYSROOT_CACHE_DIR: tempDir() },
    });
    expect(warm.status, warm.stderr).toBe(0);

    // 24 MiB of incompressible files into what is left of 12 MiB.
    const big = join(tempDir('sysroot-full-src-'), 'big');
    makeTree(big, { dirs: 4, files: 6, bytes: 1024 * 1024 });
    const tmpBefore = readdirSync(join(repoPath, 'tmp'));
    const failed = sysroot(['push', '--url', server.url, '--ref', 'full/r', big], { env });
    expect(failed.status, failed.stderr).toBe(8);
    expect(failed.stderr).toMatch(/no space left/i);
    expect(failed.stderr).toMatch(/hint: .*free space/);
    // Not retried: a full disk does not empty itself in 3 s (one pack request, one 507).
    expect(failed.stderr).not.toMatch(/retry \d+ in/);
    await server.waitForLog(/POST \/api\/v1\/packs 507/);
    expect(server.log()).not.toMatch(/internal error/);
    expect((server.log().match(/POST \/api\/v1\/packs/g) ?? []).length).toBe(2);

    // Nothing partial: every object there verifies, refs where they were, no temp file left.
    const { report } = await checkRepo(repoPath, { underLock: true });
    expect(report.problems).toEqual([]);
    expect(tmpLitter(repoPath, tmpBefore)).toEqual([]);
    expect(await (await fetch(`${server.url}/api/v1/refs/full/r`)).json()).toMatchObject({
      commit: v1commit,
    });

    // Not a byte left: what the push left free is taken too.
    try {
      execFileSync('dd', ['if=/dev/zero', `of=${join(mnt, 'filler')}`, 'bs=64k'], { stdio: 'ignore' });
    } catch {
      // dd stops with ENOSPC, as intended
    }

    // The server keeps serving what it had, to `sysroot pull` (with a token never used before, too)
    // and to stock ostree.
    for (const withToken of [{}, { SYSROOT_TOKEN: reader }]) {
      const dest = join(tempDir(), 'pulled');
      const pulled = sysroot(['pull', '--url', server.url, `full/r@${v1commit}`, dest], {
        env: { SYSROOT_CACHE_DIR: tempDir(), ...withToken },
      });
      expect(pulled.status, pulled.stderr).toBe(0);
    }
    const client = join(tempDir(), 'ostree');
    execFileSync('ostree', ['init', `--repo=${client}`, '--mode=archive']);
    execFileSync('ostree', [
      'remote',
      'add',
      `--repo=${client}`,
      '--no-gpg-verify',
      'reg',
      `${server.url}/repo`,
    ]);
    execFileSync('ostree', ['pull', `--repo=${client}`, 'reg', 'full/r']);
    expect(
      execFileSync('ostree', ['rev-parse', `--repo=${client}`, 'full/r'], { encoding: 'utf8' }).trim(),
    ).toBe(v1commit);

    // Room again: the push run again succeeds, sending only what did not fit the first time.
    const stored = countObjects(repoPath);
    grow(mnt, '64m');
    const again = sysroot(['push', '--url', server.url, '--ref', 'full/r', '--json', big], { env });
    expect(again.status, again.stderr).toBe(0);
    const result = JSON.parse(again.stdout) as { uploaded: { objects: number } };
    expect(countObjects(repoPath) - stored).toBe(result.uploaded.objects);
    await server.waitForLog(/pack received: \d+ records, \d+ stored, 0 already there/);
    await server.stop();
    const after = await checkRepo(repoPath);
    expect(after.report.problems).toEqual([]);
  });

  it('a pull whose cache fills up fails clearly: exit 8, DEST absent, no partial pack left', async () => {
    // The pack is written into the cache as it arrives (pack-cache.ts, PackTemp): a write that fails
    // must fail the pull before anything is checked out, and leave no partial pack behind.
    const repoPath = join(tempDir('sysroot-full-'), 'repo');
    expect(sysroot(['init', '--repo', repoPath]).status).toBe(0);
    const server = await startServe(repoPath);
    const tree = join(tempDir('sysroot-full-src-'), 'tree');
    makeTree(tree, { dirs: 2, files: 6, bytes: 1024 * 1024 }); // 12 MiB that do not compress
    const pushed = sysroot(['push', '--url', server.url, '--ref', 'full/pull', tree], {
      env: { SYSROOT_TOKEN: await tokenFor(repoPath) },
    });
    expect(pushed.status, pushed.stderr).toBe(0);

    const cache = smallFilesystem('4m');
    const dest = join(tempDir(), 'dest');
    const r = sysroot(['pull', '--url', server.url, 'full/pull', dest], {
      env: { SYSROOT_CACHE_DIR: cache },
    });
    expect(r.status, r.stderr).toBe(8);
    expect(r.stderr).toMatch(/no space left/i);
    expect(r.stderr).not.toMatch(/internal error/);
    expect(existsSync(dest)).toBe(false);
    // The cache's layout: packs/{tmp,commits,checkouts}/ and packs/<sha>.{pack,idx}.
    expect(readdirSync(join(cache, 'packs', 'tmp'))).toEqual([]);
    expect(readdirSync(join(cache, 'packs')).sort()).toEqual(['checkouts', 'commits', 'tmp']);

    // With room, the same pull succeeds.
    grow(cache, '64m');
    const again = sysroot(['pull', '--url', server.url, 'full/pull', dest], {
      env: { SYSROOT_CACHE_DIR: cache },
    });
    expect(again.status, again.stderr).toBe(0);
    expect(readdirSync(join(dest))).toEqual(readdirSync(tree));
    await server.stop();
  });

  it('a local `sysroot commit` into a full filesystem fails clearly and leaves nothing partial', async () => {
    const mnt = smallFilesystem('6m');
    const repoPath = join(mnt, 'repo');
    expect(sysroot(['init', '--repo', repoPath]).status).toBe(0);
    const small = join(tempDir('sysroot-full-src-'), 'small');
    makeTree(small, { dirs: 1, files: 4, bytes: 4096 });
    expect(sysroot(['commit', '--repo', repoPath, '--ref', 'local/r', small]).status).toBe(0);
    const head = readdirSync(join(repoPath, 'refs/heads/local'));
    const big = join(tempDir('sysroot-full-src-'), 'big');
    makeTree(big, { dirs: 2, files: 6, bytes: 1024 * 1024 });
    const tmpBefore = readdirSync(join(repoPath, 'tmp'));
    const r = sysroot(['commit', '--repo', repoPath, '--ref', 'local/r', big]);
    expect(r.status, r.stderr).toBe(8);
    expect(r.stderr).toMatch(/no space left/i);
    expect(r.stderr).not.toMatch(/internal error/);
    expect(readdirSync(join(repoPath, 'refs/heads/local'))).toEqual(head);
    expect(tmpLitter(repoPath, tmpBefore)).toEqual([]);
    const { report } = await checkRepo(repoPath);
    expect(report.problems).toEqual([]);
  });
});

/** Open file descriptors of a process (Linux): a leak per cut connection would show here. */
function openFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** A raw HTTP/1.1 request whose connection the "client" destroys after `after` bytes went one way. */
function cutRequest(
  port: number,
  head: string,
  o: { send?: Buffer; readBytes?: number },
): Promise<{ received: number }> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1');
    let received = 0;
    sock.on('error', () => {});
    sock.on('connect', () => {
      sock.write(head);
      if (o.send) {
        // Half of the body, then the client is gone.
        sock.write(o.send, () => setTimeout(() => sock.destroy(), 50));
      }
    });
    sock.on('data', (c: Buffer) => {
      received += c.length;
      if (o.readBytes !== undefined && received >= o.readBytes) sock.destroy();
    });
    sock.on('close', () => resolve({ received }));
    setTimeout(() => reject(new Error('the cut request never closed')), 15_000).unref();
  });
}

/** .filez bytes of a random file of `size` bytes, and its checksum. */
function randomFilez(size: number): { checksum: string; filez: Buffer } {
  const meta: FileMeta = { uid: 0, gid: 0, mode: 0o100644, symlinkTarget: '', xattrs: [] };
  const payload = randomBytes(size);
  return {
    checksum: contentChecksum(meta, payload),
    filez: Buffer.concat([filezHeader(meta, payload.length), deflateRawSync(payload, { level: 1 })]),
  };
}

describe('a client that goes away mid-stream', () => {
  let server: ServeProcess;
  let repoPath: string;
  let token: string;
  let commit: string;

  beforeAll(async () => {
    repoPath = join(tempDir('sysroot-cut-'), 'repo');
    expect(sysroot(['init', '--repo', repoPath]).status).toBe(0);
    token = await tokenFor(repoPath);
    server = await startServe(repoPath);
    const tree = join(tempDir('sysroot-cut-src-'), 'tree');
    // 6 MiB of incompressible files: a pack that takes many socket writes to send.
    makeTree(tree, { dirs: 3, files: 8, bytes: 256 * 1024 });
    const pushed = sysroot(['push', '--url', server.url, '--ref', 'cut/r', '--json', tree], {
      env: { SYSROOT_TOKEN: token },
    });
    expect(pushed.status, pushed.stderr).toBe(0);
    commit = (JSON.parse(pushed.stdout) as { commit: string }).commit;
    // The pack exists before the cuts start (a pull generates it).
    const pulled = sysroot(['pull', '--url', server.url, 'cut/r', join(tempDir(), 'first')], {
      env: { SYSROOT_CACHE_DIR: tempDir() },
    });
    expect(pulled.status, pulled.stderr).toBe(0);
  });

  afterAll(async () => {
    await server?.stop();
  });

  it('pulls cut off mid-pack: the others are served, nothing leaks, no internal error', async () => {
    const fdsBefore = openFds(server.pid);
    const logStart = server.log().length;
    // 20 clients that hang up after 64 KiB of a ~6 MiB pack, while a full pull runs beside them.
    const cuts = Promise.all(
      Array.from({ length: 20 }, () =>
        cutRequest(server.port, `GET /api/v1/packs/${commit} HTTP/1.1\r\nHost: t\r\n\r\n`, {
          readBytes: 64 * 1024,
        }),
      ),
    );
    const dest = join(tempDir(), 'beside');
    const beside = spawnCli(['pull', '--url', server.url, '--json', 'cut/r', dest], {
      SYSROOT_CACHE_DIR: tempDir(),
    });
    const cut = await cuts;
    expect(cut.every((c) => c.received >= 64 * 1024)).toBe(true);
    const full = await beside.done;
    expect(full.code, full.stderr).toBe(0);
    expect((JSON.parse(full.stdout) as { commit: string }).commit).toBe(commit);
    await server.waitForLog(/(GET \/api\/v1\/packs\/\S+ 200 \d+ \d+ms aborted[\s\S]*){20}/);
    const log = server.log().slice(logStart);
    expect(log).not.toMatch(/ error /);
    await sleep(200);
    expect(openFds(server.pid)).toBeLessThanOrEqual(fdsBefore + 2);
  });

  it('pushes cut off mid-upload: 400 in the log (not a 500), nothing partial stored, no temp file left', async () => {
    const fdsBefore = openFds(server.pid);
    const tmpBefore = readdirSync(join(repoPath, 'tmp'));
    const objectsBefore = countObjects(repoPath);
    const logStart = server.log().length;
    // A pack of 4 files of 2 MiB (each > 1 MiB: streamed to a temp file as it arrives), cut halfway.
    const files = Array.from({ length: 4 }, () => randomFilez(2 * 1024 * 1024));
    const chunks: Buffer[] = [];
    const pack = new PackWriter(async (c) => void chunks.push(c), { level: 0, threads: false });
    for (const f of files) await pack.add(KIND.filez, f.checksum, f.filez);
    await pack.finish();
    const body = Buffer.concat(chunks);
    const auth = `Authorization: Bearer ${token}\r\n`;
    for (let i = 0; i < 3; i++) {
      await cutRequest(
        server.port,
        `POST /api/v1/packs HTTP/1.1\r\nHost: t\r\n${auth}Content-Type: application/octet-stream\r\nContent-Length: ${body.length}\r\n\r\n`,
        { send: body.subarray(0, body.length >> 1) },
      );
    }
    // One object by PUT, cut halfway too.
    const one = files[3]!;
    await cutRequest(
      server.port,
      `PUT /api/v1/objects/${one.checksum}.file HTTP/1.1\r\nHost: t\r\n${auth}Content-Length: ${one.filez.length}\r\n\r\n`,
      { send: one.filez.subarray(0, one.filez.length >> 1) },
    );
    await server.waitForLog(/(POST \/api\/v1\/packs 400[\s\S]*){3}/);
    await server.waitForLog(/PUT \/api\/v1\/objects\/\S+ 400/);
    const log = server.log().slice(logStart);
    expect(log).not.toMatch(/ error |internal error| 500 /);
    // Whatever got stored is whole: the first file (verified before the cut) at most, never the last.
    const stored = countObjects(repoPath) - objectsBefore;
    expect(stored).toBeLessThanOrEqual(2);
    expect(tmpLitter(repoPath, tmpBefore)).toEqual([]);
    const { report } = await checkRepo(repoPath, { underLock: true });
    expect(report.problems).toEqual([]);
    expect(openFds(server.pid)).toBeLessThanOrEqual(fdsBefore + 2);
    // And it still takes a whole upload.
    const put = await fetch(`${server.url}/api/v1/objects/${one.checksum}.file`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${token}` },
      body: new Uint8Array(one.filez),
    });
    expect(put.status).toBe(201);
  });
});

describe('S3 answering 503 and resetting connections, through a whole server', () => {
  let s3: S3Server;
  let proxy: FaultProxy;

  beforeAll(async () => {
    s3 = await startS3({ bucket: 'faulty' });
    proxy = await startFaultProxy(new URL(s3.endpoint));
  });
  afterAll(async () => {
    await proxy?.close();
    await s3?.stop();
  });

  it('push and pull through `sysroot serve` on a bucket whose every 4th request fails succeed and verify', async () => {
    const location = `s3://${s3.bucket}/e2e`;
    const direct = { ...s3Env(s3), SYSROOT_INDEX_DIR: tempDir('sysroot-s3f-index-') };
    expect(sysroot(['init', '--repo', location], { env: direct }).status).toBe(0);
    const created = sysroot(['token', 'create', '--repo', location, '--name', 'ci', '--scope', 'push:**'], {
      env: direct,
    });
    expect(created.status, created.stderr).toBe(0);
    const token = created.stdout.trim().split('\n').pop()!;

    // Every 4th request the server makes to the bucket fails, in turn: 503 SlowDown, 500, a reset
    // before RGW sees it, a reset halfway through the answer, an answer lost after RGW applied it.
    const kinds: Fault[] = ['slowdown', 'error500', 'reset-request', 'reset-response', 'lose-response'];
    let k = 0;
    proxy.policy = (_req, n) => (n % 4 === 3 ? kinds[k++ % kinds.length]! : 'pass');
    const server = await startServe(location, {
      env: {
        ...s3Env(s3),
        AWS_ENDPOINT_URL: proxy.endpoint,
        SYSROOT_INDEX_DIR: tempDir('sysroot-s3f-index-'),
      },
    });
    try {
      const tree = join(tempDir('sysroot-s3f-src-'), 'tree');
      makeTree(tree, { dirs: 2, files: 10, bytes: 16 * 1024 });
      writeFileSync(join(tree, 'big'), randomBytes(3 * 1024 * 1024));
      // Asynchronously: the proxy runs in this process, and a spawnSync would stop it.
      const pushed = await spawnCli(['push', '--url', server.url, '--ref', 's3/faulty', '--json', tree], {
        SYSROOT_TOKEN: token,
      }).done;
      expect(pushed.code, `${pushed.stderr}\n${server.log()}`).toBe(0);
      const commit = (JSON.parse(pushed.stdout) as { commit: string }).commit;

      const dest = join(tempDir('sysroot-s3f-dest-'), 'd');
      const pulled = await spawnCli(['pull', '--url', server.url, `s3/faulty@${commit}`, dest], {
        SYSROOT_CACHE_DIR: tempDir(),
      }).done;
      expect(pulled.code, `${pulled.stderr}\n${server.log()}`).toBe(0);
      expect(execFileSync('diff', ['-r', tree, dest], { encoding: 'utf8' })).toBe('');
      const faults = new Set(proxy.seen.filter((s) => s.fault !== 'pass').map((s) => s.fault));
      expect([...faults].sort()).toEqual([...kinds].sort());
      expect(server.log()).not.toMatch(/internal error/);
    } finally {
      proxy.policy = () => 'pass';
      await server.stop();
    }
    // The bucket, read straight from RGW: sound.
    const fsck = sysroot(['fsck', '--repo', location], { env: direct });
    expect(fsck.status, fsck.stderr).toBe(0);
  });
});
