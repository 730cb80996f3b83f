// The S3 half of `npm run bench`: the same push and cold pull through `sysroot serve`, once with the
// repository in a directory and once in a bucket on a real Ceph RADOS Gateway (scripts/s3-server.sh,
// started here and stopped after), in the same run.
//
// Each run gets, for each store, a fresh repository, a fresh `sysroot serve` (127.0.0.1, port 0) and
// fresh client caches; the store that goes first alternates from one run to the next:
//
//   push        sysroot push of amd64-v1 (import into a fresh SYSROOT_CACHE_DIR, upload, ref move)
//   cold pull   sysroot pull of the ref into a new directory (fresh cache), through a node started
//               afresh for it (same node-local index), so its peak RSS is the pull's alone
//
// Measured: wall time and client peak RSS (GNU time), the node's peak RSS (VmHWM) and CPU
// (/proc/PID), requests to the node (its access log), and for the bucket the requests the node made
// to RGW (radosgw's log, one line per request) and the CPU radosgw and the OSD used.
import { execFileSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  BIN,
  copyWithoutSpecials,
  isRoot,
  log,
  median,
  procCpu,
  ROOT,
  sysrootEnv,
  sysrootTrees,
  timedAsync,
  version,
} from './common.mjs';
import { startServe, waitForLog } from './serve.mjs';

const REF = 'stage3-sysroot/x86_64';
const NODE = process.execPath;
const BUCKET = 'bench';
const S3_SCRIPT = join(ROOT, 'scripts/s3-server.sh');
const MB = 1e6;

/** Peak resident set of a live process, in MB (VmHWM, a high-water mark). */
function vmHwmMb(pid) {
  const m = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

const fileSize = (file) => {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
};

/** The lines appended to `file` since `offset`, once it has stopped growing for ~100 ms. */
async function linesSince(file, offset) {
  let size = fileSize(file);
  for (let i = 0, still = 0; i < 40 && still < 2; i++) {
    await sleep(50);
    const now = fileSize(file);
    still = now === size ? still + 1 : 0;
    size = now;
  }
  return readFileSync(file).subarray(offset, size).toString('utf8').split('\n');
}

// `sysroot serve`: "2026-…Z info GET /repo/objects/… 200 1234 3ms"
const SERVE_LINE = /^\S+ info ([A-Z]+) (\S+) (\d{3}) (\d+) \d+ms/;
// radosgw (debug rgw = 1): "… beast: 0x…: 127.0.0.1 - user [date] "GET /bench/run-0-s3/objects/…?x-id=GetObject
// HTTP/1.1" 200 1234 …" (the SDK adds x-id to most requests)
const RGW_LINE = /beast: \S+ \S+ - \S+ \[[^\]]+\] "([A-Z]+) (\S+) HTTP\/[\d.]+" (\d{3}) (\d+|-)/;

/** A one-node RGW with an empty bucket, stopped by `stop()` (and by its watcher if we die). */
function startRgw() {
  const out = execFileSync('bash', [S3_SCRIPT, 'start', '-b', BUCKET, '-w', String(process.pid)], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const vars = {};
  for (const m of out.matchAll(/^export ([A-Z0-9_]+)=(.*)$/gm)) vars[m[1]] = m[2];
  const stateDir = vars.S3_STATE_DIR;
  const pid = (name) => Number(readFileSync(join(stateDir, 'pids', `${name}.pid`), 'utf8'));
  const pids = [pid('rgw'), pid('osd.0')];
  return {
    env: {
      AWS_ENDPOINT_URL: vars.S3_ENDPOINT,
      AWS_ACCESS_KEY_ID: vars.S3_ACCESS_KEY_ID,
      AWS_SECRET_ACCESS_KEY: vars.S3_SECRET_ACCESS_KEY,
      AWS_REGION: vars.S3_REGION,
    },
    log: join(stateDir, 'log/client.rgw.log'),
    cpu: () => pids.reduce((s, p) => s + procCpu(p), 0),
    version: version('radosgw', ['--version']).replace(/^ceph version (\S+).*\((\S+)\).*$/, '$1 "$2"'),
    stop: () => execFileSync('bash', [S3_SCRIPT, 'stop', '-d', stateDir], { stdio: 'ignore' }),
  };
}

async function measure(args, env, server, rgw) {
  execFileSync('sync');
  const serveAt = fileSize(server.log);
  const rgwAt = rgw ? fileSize(rgw.log) : 0;
  const cpu0 = procCpu(server.pid);
  const rgwCpu0 = rgw ? rgw.cpu() : 0;
  const r = await timedAsync(NODE, [BIN, ...args], { env });
  const served = (await linesSince(server.log, serveAt)).map((l) => SERVE_LINE.exec(l)).filter(Boolean);
  const out = {
    secs: r.secs,
    rssMb: r.rssMb,
    cpu: r.cpu,
    serverRssMb: vmHwmMb(server.pid),
    serverCpu: procCpu(server.pid) - cpu0,
    requests: served.length,
    bytes: served.reduce((s, m) => s + Number(m[4]), 0),
    stdout: r.stdout,
  };
  if (!rgw) return out;
  const calls = (await linesSince(rgw.log, rgwAt)).map((l) => RGW_LINE.exec(l)).filter(Boolean);
  const by = (method) => calls.filter((m) => m[1] === method).length;
  return {
    ...out,
    s3: calls.length,
    s3Get: by('GET'),
    s3GetMeta: calls.filter(
      (m) => m[1] === 'GET' && /\/objects\/[^?]*\.(commit|dirtree|dirmeta)(\?|$)/.test(m[2]),
    ).length,
    s3Head: by('HEAD'),
    s3Put: by('PUT'),
    s3Post: by('POST'),
    rgwCpu: rgw.cpu() - rgwCpu0,
  };
}

/** Run `i` for one store: a fresh repository and node; push, then a cold pull through a fresh node. */
async function oneStore(i, store, ctx) {
  const tag = `run-${i}-${store}`;
  const p = (name) => join(ctx.dir, `${tag}-${name}`);
  const s3 = store === 's3' ? ctx.rgw : null;
  const repo = s3 ? `s3://${BUCKET}/${tag}` : p('repo');
  const base = sysrootEnv({ ...(s3 ? s3.env : {}), SYSROOT_INDEX_DIR: p('index') });
  execFileSync(NODE, [BIN, 'init', '--repo', repo], { env: base, stdio: 'ignore' });
  const token = execFileSync(
    NODE,
    [BIN, 'token', 'create', '--repo', repo, '--name', 'bench', '--scope', 'push:**'],
    {
      env: base,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    },
  )
    .trim()
    .split('\n')
    .pop();

  let server = await startServe(repo, base, p('serve-push.log'));
  let push;
  try {
    const env = sysrootEnv({ SYSROOT_CACHE_DIR: p('push-cache'), SYSROOT_TOKEN: token });
    const args = ['push', '--json', '--url', server.url, '--ref', REF, '--subject', 'bench', ctx.input];
    push = await measure(args, env, server, s3);
    const json = JSON.parse(push.stdout);
    // The pull below is of the stored pack, which the node generates after the ref move: on S3 that
    // reads every object back, and a node stopped before it is done leaves it to the pull.
    await waitForLog(p('serve-push.log'), new RegExp(`packs of ${json.commit} ready`));
    push.objects = json.uploaded.objects;
    push.bytes = json.uploaded.bytes;
  } finally {
    await server.stop();
  }
  log(`run ${i + 1}/${ctx.runs} ${store} push: ${push.secs.toFixed(2)} s`);

  server = await startServe(repo, base, p('serve-pull.log'));
  let pull;
  try {
    const env = sysrootEnv({ SYSROOT_CACHE_DIR: p('pull-cache') });
    pull = await measure(['pull', '--url', server.url, REF, p('checkout')], env, server, s3);
  } finally {
    await server.stop();
  }
  log(`run ${i + 1}/${ctx.runs} ${store} cold pull: ${pull.secs.toFixed(2)} s`);
  return { push, pull };
}

const fmt = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : '—');

/** Medians, field by field, over all runs (peak RSS: the maximum). */
function med(rows) {
  const o = {};
  for (const k of Object.keys(rows[0])) {
    if (typeof rows[0][k] === 'number') o[k] = median(rows.map((r) => r[k]));
  }
  o.rssMb = Math.max(...rows.map((r) => r.rssMb));
  o.serverRssMb = Math.max(...rows.map((r) => r.serverRssMb));
  return o;
}

function table(m) {
  const lines = [
    '| operation | store | sysroot (s) | vs fs | client peak RSS (MB) | node peak RSS (MB) | node CPU (s) | ' +
      'requests to the node | S3 requests (GET / HEAD / PUT / POST) | RGW + OSD CPU (s) |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const [op, name] of [
    ['push', 'push amd64-v1 (import + upload + ref move)'],
    ['pull', 'cold pull + checkout amd64-v1 (empty cache)'],
  ]) {
    for (const store of ['fs', 's3']) {
      const r = m[store][op];
      const s3 = store === 's3';
      lines.push(
        `| ${name} | ${s3 ? `S3 (RGW): s3://${BUCKET}/…` : 'directory'} | ${fmt(r.secs)} | ` +
          `${s3 ? `${fmt(r.secs / m.fs[op].secs)}×` : '1×'} | ${fmt(r.rssMb, 0)} | ${fmt(r.serverRssMb, 0)} | ` +
          `${fmt(r.serverCpu)} | ${r.requests} | ` +
          `${s3 ? `${r.s3} (${r.s3Get} / ${r.s3Head} / ${r.s3Put} / ${r.s3Post})` : '—'} | ` +
          `${s3 ? fmt(r.rgwCpu) : '—'} |`,
      );
    }
  }
  return lines.join('\n');
}

function notes(m) {
  const per = (op) => (1000 * (m.s3[op].secs - m.fs[op].secs)) / m.s3[op].s3;
  const perObject = (r, n) => fmt(n / r.objects, 1);
  const { push: sp, pull: sl } = m.s3;
  return [
    `- **push** (${fmt(sp.secs)} s on S3, ${fmt(m.fs.push.secs)} s on a directory): the node stored ` +
      `${fmt(sp.objects, 0)} new objects (${fmt(sp.bytes / MB, 1)} MB compressed) with ${sp.s3} S3 requests, ` +
      `per object ${perObject(sp, sp.s3Head)} HEADs and ${perObject(sp, sp.s3Put)} PUT (a new ref's push ` +
      'asks no "which objects do you lack" first, which cost a HEAD per object; its pack goes while ' +
      'the tree is hashed, and each object is written once), and ' +
      `${sp.s3Get} GETs (${sp.s3GetMeta} of them commit, dirtree and ` +
      "dirmeta objects: the ref move reads the new commit's tree back to check its closure). That is " +
      `${fmt(per('push'), 2)} ms of extra wall time per S3 request; RGW and its OSD used ` +
      `${fmt(sp.rgwCpu)} s of CPU, the node ${fmt(sp.serverCpu)} s (${fmt(m.fs.push.serverCpu)} s on a directory).`,
    `- **cold pull** (${fmt(sl.secs)} s on S3, ${fmt(m.fs.pull.secs)} s on a directory): ${sl.requests} requests to ` +
      `the node became ${sl.s3} S3 requests (${sl.s3Get} GETs, ${sl.s3Head} HEADs: the node keeps no copy ` +
      'of what it serves), ' +
      `${fmt(per('pull'), 2)} ms of extra wall time per S3 request; RGW and its OSD used ${fmt(sl.rgwCpu)} s of ` +
      `CPU, the node ${fmt(sl.serverCpu)} s (${fmt(m.fs.pull.serverCpu)} s on a directory).`,
    `- RGW keeps its data in RAM (memstore) on the same ${cpus().length} cores as the node and the client, over ` +
      'loopback: these figures are the cost of the S3 protocol and of RGW itself, not of disks or a network. ' +
      "A remote bucket adds its round-trip time to each S3 request, less what the node overlaps (a push's " +
      'objects are written 16 at a time; a pull is one stored pack).',
  ].join('\n');
}

/**
 * Run the S3 benchmark in `dir` (a fresh filesystem). Returns the markdown table, the environment
 * lines, the notes, the medians and every run's figures.
 */
export async function runS3({ dir, runs }) {
  log('building/reusing the amd64-v1 sysroot fixture');
  const [tree] = sysrootTrees(['amd64-v1']);
  const input = join(dir, 'input');
  // Device nodes need root to commit and are refused by ostree; every benchmark uses copies without.
  const specials = copyWithoutSpecials(tree, input);
  log('starting a one-node Ceph RGW (scripts/s3-server.sh)');
  const rgw = startRgw();
  const loadBefore = loadavg()[0];
  const results = [];
  try {
    const ctx = { dir, runs, input, rgw };
    for (let i = 0; i < runs; i++) {
      const order = i % 2 === 0 ? ['fs', 's3'] : ['s3', 'fs'];
      const run = {};
      for (const store of order) run[store] = await oneStore(i, store, ctx);
      results.push(run);
    }
  } finally {
    rgw.stop();
  }
  const m = {};
  for (const store of ['fs', 's3']) {
    m[store] = {
      push: med(results.map((r) => r[store].push)),
      pull: med(results.map((r) => r[store].pull)),
    };
  }
  const size = execFileSync('du', ['-sm', input], { encoding: 'utf8' }).split('\t')[0];
  const env = [
    `- tree: amd64-v1 (${size} MB) from scripts/make-sysroot.sh, ${specials.length} device nodes removed from the copy`,
    `- runs: ${runs}, each with a fresh repository, node and client caches per store; fs and S3 alternate ` +
      'order; medians (peak RSS: the maximum); `sync` before each timed command; the node is restarted ' +
      `between push and pull (same node-local index); writes on ${isRoot() ? 'a fresh ext4 loop filesystem' : 'a temp directory'}`,
    "- requests: to the node from its access log; S3 requests from radosgw's log (one line per request); " +
      'CPU from /proc/PID/stat; the push to S3 writes the same objects as the one to the directory',
    `- S3: Ceph RGW ${rgw.version}, one OSD on memstore (RAM), 127.0.0.1; ` +
      `machine: ${cpus().length} cores, Node ${process.version}; 1-minute load average ${fmt(loadBefore)} before ` +
      `the runs, ${fmt(loadavg()[0])} after`,
    `- date: ${new Date().toISOString()}; command: \`npm run bench\` (this part alone: \`node bench/run.mjs --only s3\`)`,
  ].join('\n');
  return { table: table(m), env, notes: notes(m), m, results };
}
