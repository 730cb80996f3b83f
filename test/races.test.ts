/**
 * Issue 6, point 2: races, against `sysroot serve` processes and the real CLIs.
 *
 * - Concurrent compare-and-swap moves of one ref (two server processes on one repository, racers
 *   split between them): exactly one wins each round, every loser gets a clean 409, the ref log has
 *   no gaps.
 * - Concurrent `sysroot push`es to one ref: each lands (rebased on the ones before it) or fails with
 *   a clear conflict; no success is lost from the history.
 * - Concurrent pushes to different refs while a reader polls the summary: every summary served
 *   parses and agrees with refs/heads; every commit it names is there whole.
 * - `sysroot pull` and `ostree pull` while pushes land: every pull is a whole, verified version.
 * - A token revoked (by `sysroot token revoke`, another process) while a push is under way: the
 *   push's next request after the revocation is visible (TokenStore re-checks within 5 s) is refused
 *   with 401, and the ref does not move.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TokenStore } from '../src/auth/tokens.js';
import { decodeSummary, encodeCommit, sha256 } from '../src/objects/index.js';
import { Repository } from '../src/repo/repository.js';
import { sysroot } from './helpers/cli.js';
import { checkRepo, spawnCli } from './helpers/crash.js';
import { type ServeProcess, startServe, stopAllServers } from './helpers/killable-serve.js';
import { ostree } from './helpers/ostree.js';
import { tempDir } from './helpers/repo.js';

const FILES = 40;
const FILE_BYTES = 4096;
/** Files 0..7 change with every version; the rest stay, so updates are small and packs shared. */
const CHANGING = 8;

function fileContent(version: number, i: number, salt: string): Buffer {
  const seed = createHash('sha256')
    .update(`${salt}:${i < CHANGING ? version : 0}:${i}`)
    .digest();
  return Buffer.alloc(FILE_BYTES, seed);
}

/** Version `v` of a tree: VERSION names it, and every other file follows from it (and the salt). */
function versionTree(v: number, salt = ''): string {
  const dir = join(tempDir('sysroot-race-src-'), 'tree');
  mkdirSync(join(dir, 'lib'), { recursive: true });
  writeFileSync(join(dir, 'VERSION'), `${salt}${v}\n`);
  for (let i = 0; i < FILES; i++) writeFileSync(join(dir, 'lib', `f${i}`), fileContent(v, i, salt));
  return dir;
}

/** A checkout is exactly one version, whole: the files VERSION names, and nothing else. */
function verifiedVersion(dest: string, salt = ''): number {
  const v = Number(readFileSync(join(dest, 'VERSION'), 'utf8').trim().slice(salt.length));
  expect(readdirSync(dest).sort()).toEqual(['VERSION', 'lib']);
  expect(readdirSync(join(dest, 'lib')).length).toBe(FILES);
  for (let i = 0; i < FILES; i++) {
    const got = readFileSync(join(dest, 'lib', `f${i}`));
    if (!got.equals(fileContent(v, i, salt))) throw new Error(`${dest}/lib/f${i} is not version ${v}'s`);
  }
  return v;
}

async function newRepo(scopes: string[]): Promise<{ path: string; token: string; id: string }> {
  const path = join(tempDir('sysroot-race-'), 'repo');
  const repo = await Repository.init(path);
  const tokens = TokenStore.forRepo(repo);
  const { token, info } = await tokens.create({ name: 'racer', scopes });
  tokens.close();
  repo.close();
  return { path, token, id: info.id };
}

async function getJson(url: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await fetch(url);
  return { status: r.status, body: (await r.json()) as Record<string, unknown> };
}

afterAll(stopAllServers);

describe('concurrent moves of one ref', () => {
  let repoPath: string;
  let token: string;
  let servers: ServeProcess[];

  beforeAll(async () => {
    ({ path: repoPath, token } = await newRepo(['push:race/*']));
    // Two processes on one directory: the compare-and-swap must hold across processes, not only
    // within one event loop.
    servers = await Promise.all([startServe(repoPath), startServe(repoPath)]);
  });
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.stop()));
  });

  it('lets exactly one of 8 racing compare-and-swaps win each round; the losers get a clean 409', async () => {
    const REF = 'race/cas';
    const pushed = sysroot(['push', '--url', servers[0]!.url, '--ref', REF, '--json', versionTree(0)], {
      env: { SYSROOT_TOKEN: token },
    });
    expect(pushed.status, pushed.stderr).toBe(0);
    const repo = await Repository.open(repoPath);
    const winners: string[] = [];
    try {
      for (let round = 1; round <= 6; round++) {
        const head = await repo.readRef(REF);
        const c = await repo.readCommit(head!);
        // Eight different commits on the same parent (subjects differ), stored beside the server.
        const candidates = await Promise.all(
          Array.from({ length: 8 }, (_, i) =>
            repo.objects.putMetadata(
              'commit',
              encodeCommit({ ...c, parent: head!, subject: `round ${round} racer ${i}` }),
            ),
          ),
        );
        const answers = await Promise.all(
          candidates.map(async (to, i) => {
            const r = await fetch(`${servers[i % 2]!.url}/api/v1/refs/${REF}`, {
              method: 'PUT',
              headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
              body: JSON.stringify({ from: head, to, reason: `racer ${i}` }),
            });
            return {
              to,
              status: r.status,
              body: (await r.json()) as { error?: { code: string; message: string } },
            };
          }),
        );
        const won = answers.filter((a) => a.status === 200);
        expect(won, `round ${round}: ${JSON.stringify(answers)}`).toHaveLength(1);
        for (const lost of answers.filter((a) => a.status !== 200)) {
          expect(lost.status).toBe(409);
          expect(lost.body.error?.code).toBe('E_REF_CONFLICT');
          expect(lost.body.error?.message).toMatch(/moved/);
        }
        winners.push(won[0]!.to);
        expect(await repo.readRef(REF)).toBe(won[0]!.to);
      }
      // One record per round, no gap, each the round's winner.
      const log = (await repo.log(REF)).reverse();
      expect(log.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5, 6, 7]);
      expect(log.slice(1).map((r) => r.to)).toEqual(winners);
    } finally {
      repo.close();
    }
    const { report } = await checkRepo(repoPath, { underLock: true });
    expect(report.problems).toEqual([]);
  });

  it('6 concurrent `sysroot push`es to one ref: each lands in one linear history or fails with a clear conflict', async () => {
    const REF = 'race/push';
    const trees = Array.from({ length: 6 }, (_, i) => versionTree(i + 1, 'p'));
    const runs = await Promise.all(
      trees.map(
        (tree, i) =>
          spawnCli(
            ['push', '--url', servers[i % 2]!.url, '--ref', REF, '--subject', `push ${i}`, '--json', tree],
            {
              SYSROOT_TOKEN: token,
            },
          ).done,
      ),
    );
    const landed: string[] = [];
    for (const r of runs) {
      if (r.code === 0) {
        landed.push((JSON.parse(r.stdout) as { commit: string }).commit);
      } else {
        // Three rebases were not enough: a conflict, said plainly (--json: as JSON on stderr), exit 5.
        expect(r.code, r.stderr).toBe(5);
        expect(r.stderr).toMatch(
          /rebase 3 of 3[\s\S]*"code":"E_REF_CONFLICT","message":"ref race\/push moved/,
        );
      }
    }
    expect(landed.length).toBeGreaterThanOrEqual(1);
    // No lost update: every push that said it landed is in the history, which is linear.
    const repo = await Repository.open(repoPath);
    const log = (await repo.log(REF)).reverse();
    repo.close();
    expect(log.map((r) => r.seq)).toEqual(log.map((_, i) => i + 1));
    expect(log.map((r) => r.to).sort()).toEqual([...landed].sort());
    for (let i = 1; i < log.length; i++) expect(log[i]!.from).toBe(log[i - 1]!.to);
    // Each landed version pulls back whole.
    const dest = join(tempDir('sysroot-race-dest-'), 'd');
    const pulled = sysroot(['pull', '--url', servers[1]!.url, REF, dest], {
      env: { SYSROOT_CACHE_DIR: tempDir('sysroot-race-cache-') },
    });
    expect(pulled.status, pulled.stderr).toBe(0);
    expect(verifiedVersion(dest, 'p')).toBeGreaterThan(0);
    const { report } = await checkRepo(repoPath, { underLock: true });
    expect(report.problems).toEqual([]);
  });
});

describe('concurrent pushes to different refs', () => {
  it('all land; every summary served meanwhile parses and agrees with refs/heads', async () => {
    const { path: repoPath, token } = await newRepo(['push:race/**']);
    const server = await startServe(repoPath);
    try {
      const refs = Array.from({ length: 6 }, (_, i) => `race/refs/r${i}`);
      let pushing = true;
      const snapshots: number[] = [];
      const poller = (async () => {
        while (pushing) {
          const bytes = Buffer.from(await (await fetch(`${server.url}/repo/summary`)).arrayBuffer());
          const listed = decodeSummary(bytes).refs; // a torn summary would not decode
          for (const r of listed) {
            // Each ref moves once, from nothing: a summary that lists it must agree with refs/heads.
            const head = await (await fetch(`${server.url}/repo/refs/heads/${r.name}`)).text();
            expect(head, r.name).toBe(`${r.checksum}\n`);
            // And the commit is there, whole.
            const commit = Buffer.from(
              await (
                await fetch(
                  `${server.url}/repo/objects/${r.checksum.slice(0, 2)}/${r.checksum.slice(2)}.commit`,
                )
              ).arrayBuffer(),
            );
            expect(sha256(commit)).toBe(r.checksum);
          }
          snapshots.push(listed.length);
          await sleep(5);
        }
      })();
      const runs = await Promise.all(
        refs.map(
          (ref, i) =>
            spawnCli(['push', '--url', server.url, '--ref', ref, versionTree(i, ref)], {
              SYSROOT_TOKEN: token,
            }).done,
        ),
      );
      pushing = false;
      await poller;
      for (const r of runs) expect(r.code, r.stderr).toBe(0);
      const commits = runs.map((r) => r.stdout.trim().split('\n').pop()!);
      expect(snapshots.length).toBeGreaterThan(5);
      const final = decodeSummary(
        Buffer.from(await (await fetch(`${server.url}/repo/summary`)).arrayBuffer()),
      );
      expect(final.refs.map((r) => [r.name, r.checksum])).toEqual(refs.map((ref, i) => [ref, commits[i]]));
      const listed = (await getJson(`${server.url}/api/v1/refs`)).body.refs as Array<{
        ref: string;
        commit: string;
      }>;
      expect(listed.map((r) => [r.ref, r.commit])).toEqual(refs.map((ref, i) => [ref, commits[i]]));
    } finally {
      await server.stop();
    }
    const { report } = await checkRepo(repoPath);
    expect(report.problems).toEqual([]);
  });
});

describe('pulls during pushes', () => {
  it('every `sysroot pull` and `ostree pull` meanwhile is one whole, verified version', async () => {
    const REF = 'race/pulled';
    const { path: repoPath, token } = await newRepo(['push:race/*']);
    const server = await startServe(repoPath);
    try {
      const first = sysroot(['push', '--url', server.url, '--ref', REF, versionTree(1)], {
        env: { SYSROOT_TOKEN: token },
      });
      expect(first.status, first.stderr).toBe(0);
      const commits = new Map<string, number>([[first.stdout.trim().split('\n').pop()!, 1]]);
      let pushing = true;
      const pulls: Array<{ by: string; version: number; commit: string }> = [];

      const sysrootPuller = async (n: number) => {
        const cache = tempDir('sysroot-race-cache-');
        for (let k = 0; pushing; k++) {
          const dest = join(tempDir('sysroot-race-dest-'), `d${k}`);
          const r = await spawnCli(['pull', '--url', server.url, '--json', REF, dest], {
            SYSROOT_CACHE_DIR: cache,
          }).done;
          expect(r.code, r.stderr).toBe(0);
          const commit = (JSON.parse(r.stdout) as { commit: string }).commit;
          pulls.push({ by: `sysroot pull ${n}`, version: verifiedVersion(dest), commit });
        }
      };
      const ostreePuller = async () => {
        const client = join(tempDir('sysroot-race-ostree-'), 'repo');
        await ostree(['init', `--repo=${client}`, '--mode=archive']);
        await ostree(['remote', 'add', `--repo=${client}`, '--no-gpg-verify', 'reg', `${server.url}/repo`]);
        for (let k = 0; pushing; k++) {
          await ostree(['pull', `--repo=${client}`, 'reg', REF]);
          const commit = (await ostree(['rev-parse', `--repo=${client}`, `reg:${REF}`])).trim();
          const dest = join(tempDir('sysroot-race-dest-'), `o${k}`);
          await ostree(['checkout', `--repo=${client}`, '-U', commit, dest]);
          pulls.push({ by: 'ostree pull', version: verifiedVersion(dest), commit });
        }
      };
      const pullers = Promise.all([sysrootPuller(1), sysrootPuller(2), ostreePuller()]);
      for (let v = 2; v <= 6; v++) {
        const r = await spawnCli(['push', '--url', server.url, '--ref', REF, versionTree(v)], {
          SYSROOT_TOKEN: token,
        }).done;
        expect(r.code, r.stderr).toBe(0);
        commits.set(r.stdout.trim().split('\n').pop()!, v);
      }
      pushing = false;
      await pullers;
      // Every pull got a commit that was pushed, and exactly the tree of that version.
      for (const p of pulls) expect(commits.get(p.commit), `${p.by} got ${p.commit}`).toBe(p.version);
      expect(pulls.filter((p) => p.by === 'ostree pull').length).toBeGreaterThanOrEqual(2);
      expect(pulls.filter((p) => p.by.startsWith('sysroot pull')).length).toBeGreaterThanOrEqual(4);
      expect(new Set(pulls.map((p) => p.version)).size).toBeGreaterThanOrEqual(2);
    } finally {
      await server.stop();
    }
    const { report } = await checkRepo(repoPath);
    expect(report.problems).toEqual([]);
  });
});

/** An HTTP proxy that forwards everything but holds requests matching `hold` until released. */
async function holdingProxy(target: string, hold: (method: string, path: string) => boolean) {
  let release!: () => void;
  const released = new Promise<void>((r) => {
    release = r;
  });
  let held!: () => void;
  const heldOne = new Promise<void>((r) => {
    held = r;
  });
  const t = new URL(target);
  const server: Server = createServer(async (req, res) => {
    if (hold(req.method ?? '', req.url ?? '')) {
      held();
      await released;
    }
    const up = request(
      { host: t.hostname, port: t.port, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.rawHeaders);
        answer.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    heldOne,
    release,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

describe('token revocation during a push', () => {
  it('refuses the push at its next request once the revocation is visible (≤ 5 s), and the ref does not move', async () => {
    const REF = 'race/revoked';
    const { path: repoPath, token, id } = await newRepo(['push:race/*']);
    const server = await startServe(repoPath);
    // The push's ref move is held at the proxy while the token is revoked from another process.
    const proxy = await holdingProxy(server.url, (m, p) => m === 'PUT' && p.startsWith('/api/v1/refs/'));
    try {
      const first = sysroot(['push', '--url', server.url, '--ref', REF, versionTree(1)], {
        env: { SYSROOT_TOKEN: token },
      });
      expect(first.status, first.stderr).toBe(0);
      const head = first.stdout.trim().split('\n').pop()!;

      const pushing = spawnCli(['push', '--url', proxy.url, '--ref', REF, versionTree(2)], {
        SYSROOT_TOKEN: token,
      });
      await proxy.heldOne;
      const revoked = sysroot(['token', 'revoke', id, '--repo', repoPath]);
      expect(revoked.status, revoked.stderr).toBe(0);
      // TokenStore's promise (src/auth/tokens.ts): "not revoked" is re-checked after at most 5 s.
      await sleep(5_200);
      proxy.release();
      const r = await pushing.done;
      expect(r.code, r.stderr).toBe(7);
      expect(r.stderr).toMatch(/not valid \(malformed, unknown or revoked\)/);
      expect(r.stderr).not.toContain(token);
      expect((await getJson(`${server.url}/api/v1/refs/${REF}`)).body.commit).toBe(head);
      expect(await (await fetch(`${server.url}/repo/refs/heads/${REF}`)).text()).toBe(`${head}\n`);

      // A push started afterwards fails at its first request.
      const late = sysroot(['push', '--url', server.url, '--ref', REF, versionTree(3)], {
        env: { SYSROOT_TOKEN: token },
      });
      expect(late.status).toBe(7);
      expect(late.stderr).toMatch(/not valid \(malformed, unknown or revoked\)/);
      await server.waitForLog(/GET \/api\/v1\/refs\/race\/revoked 401/);
    } finally {
      await proxy.close();
      await server.stop();
    }
    const { report } = await checkRepo(repoPath);
    expect(report.problems).toEqual([]);
  });
});
