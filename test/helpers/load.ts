/**
 * Issue 6, point 8: many pulling clients and one pusher against one `sysroot serve`, for a while.
 *
 * The server is a separate process; the pusher is the real CLI, pushing a new version in a loop;
 * the pullers are concurrent clients in 4 separate processes (load-puller.mjs), each pulling the
 * ref's current head over and over, cold (nothing kept between pulls), verifying every byte:
 *
 *   object pullers  as stock ostree pulls: the commit, then its dirtrees, dirmetas and files, one
 *                   GET /repo/objects/… each, every object re-hashed (files inflated) before use.
 *                   The latency of each object GET (request to last byte) is recorded.
 *   pack pullers    as `sysroot pull` fetches: GET /api/v1/packs/<commit>, every record verified
 *                   by the library's readPack as it streams, the first record the commit asked for.
 *
 * An error is any answer but 200, a connection failure, or a byte that fails verification; a pull
 * must also get a commit the pusher pushed.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TokenStore } from '../../src/auth/tokens.js';
import type { Checksum } from '../../src/objects/index.js';
import { Repository } from '../../src/repo/repository.js';
import { makeTree, mutateTree, percentile, seededRandom, spawnCli } from './crash.js';
import { startServe } from './killable-serve.js';
import { tempDir } from './repo.js';

const PULLER = fileURLToPath(new URL('./load-puller.mjs', import.meta.url));
/** Puller processes: the clients' own hashing spread over them, as over separate machines. */
const PROCESSES = 4;

export interface LoadFigures {
  seconds: number;
  pullers: { objects: number; packs: number };
  pulls: { objects: number; packs: number };
  pushes: number;
  objectsFetched: number;
  bytesFetched: number;
  /** Milliseconds, GET of one object, request to last byte. */
  objectLatency: { p50: number; p99: number; max: number; count: number };
  /** Milliseconds, one whole pack pull. */
  packLatency: { p50: number; p99: number; max: number };
  /** Milliseconds the server itself spent on an object GET, from its access log (the rest is queueing). */
  serverObjectMs: { p50: number; p99: number };
  errors: string[];
  /** Pulls that got a commit the pusher never pushed (must be 0). */
  strangers: string[];
}

interface PullerReport {
  latencies: number[];
  packLatencies: number[];
  commits: string[];
  errors: string[];
  pulls: { objects: number; packs: number };
  objectsFetched: number;
  bytesFetched: number;
}

const REF = 'load/sysroot';

function pullerProcess(o: {
  url: string;
  until: number;
  objects: number;
  packs: number;
}): Promise<PullerReport> {
  const child = spawn(process.execPath, [PULLER, JSON.stringify({ ...o, ref: REF })], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => {
    out += c;
  });
  child.stderr.setEncoding('utf8').on('data', (c: string) => {
    err += c;
  });
  return new Promise((resolve, reject) =>
    child.on('close', (code) => {
      if (code === 0) resolve(JSON.parse(out) as PullerReport);
      else reject(new Error(`load-puller exited ${code}: ${err}`));
    }),
  );
}

export async function runLoad(o: {
  seconds: number;
  objectPullers: number;
  packPullers: number;
}): Promise<LoadFigures> {
  const repoPath = join(tempDir('sysroot-load-'), 'repo');
  const repo = await Repository.init(repoPath);
  const tokens = TokenStore.forRepo(repo);
  const { token } = await tokens.create({ name: 'load', scopes: ['push:load/*'] });
  tokens.close();
  repo.close();
  const server = await startServe(repoPath);
  const random = seededRandom(8);
  const tree = join(tempDir('sysroot-load-src-'), 'tree');
  // 120 files of 8 KiB and one of 256 KiB: ~140 objects a pull, ~1.2 MiB.
  const paths = makeTree(tree, { dirs: 8, files: 15, bytes: 8 * 1024 });
  const blob = { path: join(tree, 'blob'), bytes: 256 * 1024 };
  mutateTree(paths, 0, 0, random, blob);
  const env = { SYSROOT_TOKEN: token };
  const pushed = new Set<Checksum>();
  const errors: string[] = [];
  const push = async (): Promise<void> => {
    const r = await spawnCli(['push', '--url', server.url, '--ref', REF, tree], env).done;
    if (r.code !== 0) errors.push(`push: exit ${r.code}: ${r.stderr.trim().split('\n').pop()}`);
    else pushed.add(r.stdout.trim().split('\n').pop()!);
  };
  await push();

  const started = performance.now();
  const until = Date.now() + o.seconds * 1000;
  const pusher = async (): Promise<number> => {
    let n = 0;
    while (Date.now() < until) {
      mutateTree(paths, 6, 8 * 1024, random, blob);
      await push();
      n++;
    }
    return n;
  };
  const share = (total: number, i: number) => Math.floor(total / PROCESSES) + (i < total % PROCESSES ? 1 : 0);
  const [pushes, ...reports] = await Promise.all([
    pusher(),
    ...Array.from({ length: PROCESSES }, (_, i) =>
      pullerProcess({
        url: server.url,
        until,
        objects: share(o.objectPullers, i),
        packs: share(o.packPullers, i),
      }),
    ),
  ]);
  const seconds = (performance.now() - started) / 1000;
  await server.stop();
  const serverMs = [...server.log().matchAll(/ GET \/repo\/objects\/\S+ 200 \d+ (\d+)ms/g)]
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
  const all = reports as PullerReport[];
  const sorted = all.flatMap((r) => r.latencies).sort((a, b) => a - b);
  const packSorted = all.flatMap((r) => r.packLatencies).sort((a, b) => a - b);
  const round = (n: number) => Math.round(n * 10) / 10;
  return {
    seconds: round(seconds),
    pullers: { objects: o.objectPullers, packs: o.packPullers },
    pulls: {
      objects: all.reduce((n, r) => n + r.pulls.objects, 0),
      packs: all.reduce((n, r) => n + r.pulls.packs, 0),
    },
    pushes: pushes as number,
    objectsFetched: all.reduce((n, r) => n + r.objectsFetched, 0),
    bytesFetched: all.reduce((n, r) => n + r.bytesFetched, 0),
    objectLatency: {
      p50: round(percentile(sorted, 50)),
      p99: round(percentile(sorted, 99)),
      max: round(sorted.at(-1) ?? Number.NaN),
      count: sorted.length,
    },
    packLatency: {
      p50: round(percentile(packSorted, 50)),
      p99: round(percentile(packSorted, 99)),
      max: round(packSorted.at(-1) ?? Number.NaN),
    },
    serverObjectMs: { p50: percentile(serverMs, 50), p99: percentile(serverMs, 99) },
    errors: [...errors, ...all.flatMap((r) => r.errors)],
    // Checked once the pusher is done: a pull may see a new head before the push's process exits.
    strangers: [...new Set(all.flatMap((r) => r.commits))].filter((c) => !pushed.has(c)),
  };
}
