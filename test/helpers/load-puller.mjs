// One process of pulling clients for the load test (helpers/load.ts): several concurrent pullers, each
// pulling the ref's current head cold, over and over, verifying every byte with the library's own
// checks (the built dist/, as the CLI uses). Separate processes, so one client's hashing does not
// delay another's clock, as it would on one event loop. Prints one JSON line when the time is up.
//
//   node load-puller.mjs '{"url": "...", "ref": "...", "until": <epoch ms>, "objects": 6, "packs": 2}'
import { setTimeout as sleep } from 'node:timers/promises';
import {
  decodeCommit,
  decodeDirMeta,
  decodeDirTree,
  objectPath,
  sha256,
} from '../../dist/src/objects/index.js';
import { KIND, readPack } from '../../dist/src/pack/index.js';
import { verifyFilez } from '../../dist/src/store/object-store.js';

const o = JSON.parse(process.argv[2]);
const latencies = [];
const packLatencies = [];
const commits = new Set();
const errors = [];
const pulls = { objects: 0, packs: 0 };
let objectsFetched = 0;
let bytesFetched = 0;

async function head() {
  const r = await fetch(`${o.url}/api/v1/refs/${o.ref}`);
  if (r.status !== 200) throw new Error(`GET /api/v1/refs/${o.ref}: HTTP ${r.status}`);
  return (await r.json()).commit;
}

/** GET one object as ostree does, timed from the request to its last byte, then verified. */
async function getObject(checksum, type) {
  const t0 = performance.now();
  const r = await fetch(`${o.url}/repo/${objectPath(checksum, type)}`);
  if (r.status !== 200) throw new Error(`GET ${objectPath(checksum, type)}: HTTP ${r.status}`);
  const bytes = Buffer.from(await r.arrayBuffer());
  latencies.push(performance.now() - t0);
  objectsFetched++;
  bytesFetched += bytes.length;
  if (type === 'file') verifyFilez(checksum, bytes);
  else if (sha256(bytes) !== checksum) throw new Error(`${checksum}.${type} does not hash to its name`);
  return bytes;
}

async function objectPull() {
  const commit = await head();
  const c = decodeCommit(await getObject(commit, 'commit'));
  const seen = new Set();
  const walk = async (tree, meta) => {
    if (!seen.has(meta)) {
      seen.add(meta);
      decodeDirMeta(await getObject(meta, 'dirmeta'));
    }
    const t = decodeDirTree(await getObject(tree, 'dirtree'));
    for (const f of t.files) {
      if (seen.has(f.checksum)) continue;
      seen.add(f.checksum);
      await getObject(f.checksum, 'file');
    }
    for (const d of t.dirs) await walk(d.tree, d.meta);
  };
  await walk(c.rootTree, c.rootMeta);
  commits.add(commit);
  pulls.objects++;
}

async function packPull() {
  const commit = await head();
  const t0 = performance.now();
  const r = await fetch(`${o.url}/api/v1/packs/${commit}`);
  if (r.status !== 200 || !r.body) throw new Error(`GET /api/v1/packs/${commit}: HTTP ${r.status}`);
  let first = true;
  for await (const ev of readPack(r.body)) {
    if (ev.type === 'record') {
      if (first && (ev.kind !== KIND.commit || ev.checksum !== commit))
        throw new Error(`the pack of ${commit} starts with ${ev.checksum}`);
      first = false;
      objectsFetched++;
    } else if (ev.type === 'data') {
      bytesFetched += ev.chunk.length;
    }
  }
  packLatencies.push(performance.now() - t0);
  commits.add(commit);
  pulls.packs++;
}

async function puller(pull, what) {
  while (Date.now() < o.until) {
    try {
      await pull();
    } catch (e) {
      errors.push(`${what}: ${e?.message ?? e}`);
      await sleep(50);
    }
  }
}

await Promise.all([
  ...Array.from({ length: o.objects }, () => puller(objectPull, 'object pull')),
  ...Array.from({ length: o.packs }, () => puller(packPull, 'pack pull')),
]);
process.stdout.write(
  `${JSON.stringify({
    latencies: latencies.map((x) => Math.round(x * 100) / 100),
    packLatencies: packLatencies.map((x) => Math.round(x)),
    commits: [...commits],
    errors,
    pulls,
    objectsFetched,
    bytesFetched,
  })}\n`,
);
