// The transfer half of `npm run bench`: push and pull over loopback against their peers, in one run.
//
// Every run gets a fresh registry (`sysroot serve` on 127.0.0.1, port 0) and nginx serving the
// same repository directory (the store is an OSTree archive repository), then:
//
//   push v1            sysroot push (hash, one pack)            vs  ostree commit (fresh archive repo)
//   cold pull v1       sysroot pull (empty cache)               vs  ostree pull from nginx + checkout,
//                                                                   and zstd -dc v1.tar.zst | tar -x
//   push v2 on v1      sysroot push (hash, one pack)            vs  ostree commit of v2 on top of v1
//   pull v2, v1 cached sysroot pull (the cold pull's cache)     vs  ostree pull (the v1 client repo)
//   no-op pull         sysroot pull of the ref into the DEST     vs ostree pull (nothing new)
//                      that already holds it (writes nothing)
//   16 at once         16 concurrent cold sysroot pulls (16      vs 16 concurrent ostree pulls from
//                      caches and DESTs)                            nginx into 16 fresh repositories
//   (and the floors: sysroot pull of a pinned, cached commit into a new DEST (no server), `sysroot checkout`
//   from the pull cache vs `ostree checkout`, and `sysroot --version`)
//
// Tools alternate which goes first from one run to the next; we report medians, the ratio to the
// peer, and the targets of the fast-transfer issue. Requests and bytes come from the servers' access
// logs (body bytes); server CPU from /proc/PID/stat around each operation.
import { execFileSync } from 'node:child_process';
import {
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  watch,
  writeFileSync,
} from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  BIN,
  copyWithoutSpecials,
  isRoot,
  log,
  median,
  ostreeVersion,
  procCpu,
  sysrootEnv,
  sysrootTrees,
  timedAsync,
  UNSET_NAMES,
  version,
} from './common.mjs';
import { startNginx } from './nginx.mjs';
import { startServe, waitForLog } from './serve.mjs';

const REF = 'stage3-sysroot/x86_64';
const NODE = process.execPath;
const MB = 1e6;

/** The fast-transfer issue's targets; `ratio` against the peer in the same row. */
const TARGETS = {
  pushV1: [{ label: '≤ 0.25×', test: (r) => r.ratio <= 0.25 }],
  pushV2: [{ label: '≤ 0.15×', test: (r) => r.ratio <= 0.15 }],
  coldOstree: [{ label: '≤ 0.35×', test: (r) => r.ratio <= 0.35 }],
  coldZstd: [{ label: '≤ 2.5×', test: (r) => r.ratio <= 2.5 }],
  pullV2: [
    { label: '≤ 0.7×', test: (r) => r.ratio <= 0.7 },
    { label: '≤ 10 req', test: (r) => r.requests <= 10 },
    { label: '≤ 7 MB', test: (r) => r.bytes <= 7 * MB },
  ],
  noop: [{ label: '≤ 0.3 s', test: (r) => r.secs <= 0.3 }],
  many: [{ label: '≤ 0.5×', test: (r) => r.ratio <= 0.5 }],
  bigRss: [{ label: '≤ 200 MB', test: (r) => r.rssMb <= 200 }],
};

/** Reads the lines a server appended to its access log since the last call. */
class LogTail {
  constructor(file, parse) {
    this.file = file;
    this.parse = parse;
    this.offset = 0;
  }

  size() {
    try {
      return statSync(this.file).size;
    } catch {
      return 0;
    }
  }

  /** Forget everything logged so far. */
  skip() {
    this.offset = this.size();
  }

  /** Requests logged since the last call, once the log has stopped growing for a moment. */
  async next() {
    let size = this.size();
    for (let i = 0, still = 0; i < 40 && still < 2; i++) {
      await sleep(50);
      const now = this.size();
      still = now === size ? still + 1 : 0;
      size = now;
    }
    const buf = readFileSync(this.file);
    const text = buf.subarray(this.offset, size).toString('utf8');
    this.offset = size;
    return text
      .split('\n')
      .map((l) => this.parse(l))
      .filter(Boolean);
  }
}

// `sysroot serve`: "2026-…Z info GET /repo/objects/… 200 1234 3ms"
const SERVE_LINE = /^(\S+) info ([A-Z]+) (\S+) (\d{3}) (\d+) (\d+)ms/;
function parseServeLine(line) {
  const m = SERVE_LINE.exec(line);
  if (!m) return null;
  return {
    t: Date.parse(m[1]),
    method: m[2],
    path: m[3],
    status: Number(m[4]),
    bytes: Number(m[5]),
    ms: +m[6],
  };
}

// nginx.mjs's log format: "MSEC METHOD URI STATUS BODY_BYTES REQUEST_TIME"
function parseNginxLine(line) {
  const m = /^(\d+\.\d+) (\S+) (\S+) (\d{3}) (\d+) (\S+)$/.exec(line);
  if (!m) return null;
  return { t: Number(m[1]) * 1000, method: m[2], path: m[3], status: Number(m[4]), bytes: Number(m[5]) };
}

/** A fresh repository served by `sysroot serve` on a free port, with a push token. */
async function startRegistry(dir) {
  const repo = join(dir, 'repo');
  const env = sysrootEnv({});
  execFileSync(NODE, [BIN, 'init', '--repo', repo], { env, stdio: 'ignore' });
  const token = execFileSync(
    NODE,
    [BIN, 'token', 'create', '--repo', repo, '--name', 'bench', '--scope', 'push:**'],
    { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] },
  )
    .trim()
    .split('\n')
    .pop();
  const logFile = join(dir, 'serve.log');
  const server = await startServe(repo, env, logFile, 200);
  return {
    repo,
    token,
    url: server.url,
    pid: server.pid,
    log: new LogTail(logFile, parseServeLine),
    stop: server.stop,
  };
}

/**
 * Watch DEST's parent for the checkout's temp directory (`.NAME.sysroot-tmp-…`, see
 * src/checkout/checkout.ts) and its rename to DEST: when the checkout started and ended (ms).
 */
function watchCheckout(dest) {
  const name = basename(dest);
  const marks = { start: Number.NaN, end: Number.NaN };
  const w = watch(dirname(dest), (_event, file) => {
    const t = Date.now();
    if (file?.startsWith(`.${name}.sysroot-tmp-`) && Number.isNaN(marks.start)) marks.start = t;
    else if (file === name && Number.isNaN(marks.end)) marks.end = t;
  });
  return () => {
    w.close();
    return marks;
  };
}

/**
 * Run a timed command; with a server, also its requests, body bytes and CPU during the command;
 * with `checkoutDest`, when the checkout into it started and ended.
 */
async function measure(cmd, args, { env, server, checkoutDest } = {}) {
  // Write back what the previous command left dirty, so that nobody's fsync (ostree syncs the
  // filesystem at the end of a pull or commit; sysroot never does) pays for another tool's writes.
  execFileSync('sync');
  server?.log.skip();
  const cpu0 = server ? procCpu(server.pid) : 0;
  const unwatch = checkoutDest ? watchCheckout(checkoutDest) : null;
  let r;
  try {
    r = await timedAsync(cmd, args, env ? { env } : {});
  } finally {
    const marks = unwatch?.();
    if (r && marks) r.checkout = marks;
  }
  if (!server) return { ...r, requests: 0, bytes: 0, serverCpu: 0, lines: [] };
  const lines = await server.log.next();
  return {
    ...r,
    requests: lines.length,
    bytes: lines.reduce((s, l) => s + l.bytes, 0),
    serverCpu: procCpu(server.pid) - cpu0,
    lines,
  };
}

/** Concurrent pulls in the last row. */
const MANY = 16;

/** Commands run all at once, timed as one operation: wall time until the last one ended. */
async function measureMany(cmds, server) {
  execFileSync('sync');
  server.log.skip();
  const cpu0 = procCpu(server.pid);
  const t0 = Date.now();
  const rs = await Promise.all(cmds.map(([cmd, args, opts]) => timedAsync(cmd, args, opts)));
  const secs = (Date.now() - t0) / 1000;
  const lines = await server.log.next();
  return {
    secs,
    rssMb: Math.max(...rs.map((r) => r.rssMb)),
    cpu: rs.reduce((s, r) => s + r.cpu, 0),
    requests: lines.length,
    bytes: lines.reduce((s, l) => s + l.bytes, 0),
    serverCpu: procCpu(server.pid) - cpu0,
  };
}

/** Two commands timed as one operation (ostree pull, then ostree checkout). */
function combine(a, b) {
  return {
    secs: a.secs + b.secs,
    rssMb: Math.max(a.rssMb, b.rssMb),
    cpu: a.cpu + b.cpu,
    requests: a.requests + b.requests,
    bytes: a.bytes + b.bytes,
    serverCpu: a.serverCpu + b.serverCpu,
    pullSecs: a.secs,
    checkoutSecs: b.secs,
  };
}

const finite = (x) => (Number.isFinite(x) ? x : Number.NaN);
const firstTime = (lines, pred) => finite(Math.min(...lines.filter(pred).map((l) => l.t)));
const isObjectGet = (l) => l.method === 'GET' && l.path.startsWith('/repo/objects/');

/**
 * Where a push's time went, from the server's log (each line is written when its answer has gone,
 * with the request's duration): start-up (until the GET of the ref), hash (until the missing-objects
 * query), the query, the pack (client deflate + upload + server verify and store: one request), the
 * ref move. A new ref's push asks no missing-objects query: its pack goes while it hashes.
 */
function pushPhases(r) {
  const line = (pred) => r.lines.find(pred);
  const get = line((l) => l.method === 'GET' && l.path.startsWith('/api/v1/refs/'));
  const missing = line((l) => l.path === '/api/v1/objects/missing');
  const packs = r.lines.filter((l) => l.path === '/api/v1/packs');
  const refPut = line((l) => l.method === 'PUT' && l.path.startsWith('/api/v1/refs/'));
  const begin = (l) => (l ? l.t - l.ms : Number.NaN);
  return {
    startSecs: (begin(get) - r.startedMs) / 1000,
    hashSecs: (begin(missing) - (get?.t ?? Number.NaN)) / 1000,
    missingSecs: (missing?.ms ?? Number.NaN) / 1000,
    uploadSecs: packs.reduce((s, l) => s + l.ms, 0) / 1000,
    refSecs: (refPut?.ms ?? Number.NaN) / 1000,
    packs: packs.length,
    objectPuts: r.lines.filter((l) => l.method === 'PUT' && l.path.startsWith('/api/v1/objects/')).length,
  };
}

/** Where a pull's (or checkout's) time went: before the checkout started, and the checkout. */
function pullPhases(r) {
  const first = firstTime(r.lines, () => true);
  return {
    startSecs: (first - r.startedMs) / 1000,
    fetchSecs: (r.checkout.start - r.startedMs) / 1000,
    checkoutSecs: (r.checkout.end - r.checkout.start) / 1000,
    objectGets: r.lines.filter(isObjectGet).length,
  };
}

const pick = (r, extra = {}) => ({
  secs: r.secs,
  rssMb: r.rssMb,
  cpu: r.cpu,
  requests: r.requests,
  bytes: r.bytes,
  serverCpu: r.serverCpu,
  ...extra,
});

/** The 1 GiB tree's variants of v1: 8 × 127 MB, ~47,000 files. */
const BIG_VARIANTS = 8;
const BIG_REF = 'stage3-sysroot/big';

/**
 * A tree of `variants` copies of `src`, each file suffixed with its variant's number so that no two
 * files share an object: a 1 GiB push really sends 1 GiB (identical copies would dedupe to one).
 */
function makeBigTree(src, dest, variants) {
  const walk = (s, d, v) => {
    const st = lstatSync(s);
    if (st.isDirectory()) {
      mkdirSync(d, { mode: st.mode & 0o7777 });
      for (const e of readdirSync(s)) walk(join(s, e), join(d, e), v);
    } else if (st.isSymbolicLink()) symlinkSync(readlinkSync(s), d);
    else if (st.isFile()) {
      writeFileSync(d, Buffer.concat([readFileSync(s), Buffer.from(`\n#variant ${v}\n`)]), {
        mode: st.mode & 0o7777,
      });
    }
  };
  mkdirSync(dest);
  for (let v = 0; v < variants; v++) walk(src, join(dest, `v${v}`), v);
}

/**
 * Peak memory of a push and of a cold pull (with checkout) of the 1 GiB tree, in a registry of
 * their own. Once per invocation, not per run: the figure is a maximum, not a median.
 */
async function bigRun(ctx) {
  const p = (name) => join(ctx.dir, `big-${name}`);
  const registry = await startRegistry(p('registry'));
  try {
    const env = sysrootEnv({ SYSROOT_CACHE_DIR: p('push-cache'), SYSROOT_TOKEN: registry.token });
    const push = await measure(
      NODE,
      [BIN, 'push', '--json', '--url', registry.url, '--ref', BIG_REF, '--subject', 'bench', ctx.inputBig],
      { env, server: registry },
    );
    const json = JSON.parse(push.stdout);
    log(`1 GiB push: ${push.secs.toFixed(2)} s, peak RSS ${push.rssMb.toFixed(0)} MB`);
    await waitForLog(registry.log.file, new RegExp(`packs of ${json.commit} ready`));
    const dest = p('co');
    const pull = await measure(NODE, [BIN, 'pull', '--url', registry.url, BIG_REF, dest], {
      env: sysrootEnv({ SYSROOT_CACHE_DIR: p('pull-cache') }),
      server: registry,
    });
    log(`1 GiB pull: ${pull.secs.toFixed(2)} s, peak RSS ${pull.rssMb.toFixed(0)} MB`);
    const serverHwm = Number(
      /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${registry.pid}/status`, 'utf8'))?.[1],
    );
    return {
      push: pick(push, { bytes: json.uploaded.bytes, records: json.uploaded.objects }),
      pull: pick(pull),
      serverHwmMb: serverHwm / 1024,
    };
  } finally {
    await registry.stop();
    for (const name of readdirSync(ctx.dir))
      if (name.startsWith('big-')) rmSync(join(ctx.dir, name), { recursive: true });
  }
}

/** Run `i`: a fresh registry and nginx, every operation once; which tool goes first depends on `i`. */
async function oneRun(i, ctx) {
  const { dir, inputV1, inputV2, tarball } = ctx;
  const runDir = join(dir, `run-${i}`);
  mkdirSync(runDir);
  const p = (name) => join(runDir, name);
  const out = {};
  const registry = await startRegistry(p('registry'));
  let nginx;
  try {
    nginx = await startNginx(p('nginx'), registry.repo);
    const ngx = { pid: nginx.pid, log: new LogTail(nginx.accessLog, parseNginxLine) };
    const pushCache = p('push-cache');
    const pullCache = p('pull-cache');
    const ostreeRepo = p('ostree-commit-repo');
    const client = p('ostree-client-repo');
    const pushEnv = sysrootEnv({ SYSROOT_CACHE_DIR: pushCache, SYSROOT_TOKEN: registry.token });
    const pullEnv = sysrootEnv({ SYSROOT_CACHE_DIR: pullCache });
    execFileSync('ostree', ['init', `--repo=${ostreeRepo}`, '--mode=archive']);
    execFileSync('ostree', ['init', `--repo=${client}`, '--mode=archive']);
    execFileSync('ostree', [`--repo=${client}`, 'remote', 'add', '--no-gpg-verify', 'r', nginx.url]);
    const two = (tools) => (i % 2 === 0 ? tools : [...tools].reverse());
    const three = (tools) => [...tools.slice(i % 3), ...tools.slice(0, i % 3)];
    const done = (what, r) => log(`run ${i + 1}/${ctx.runs} ${what}: ${r.secs.toFixed(2)} s`);

    const push = async (input) => {
      const r = await measure(
        NODE,
        [BIN, 'push', '--json', '--url', registry.url, '--ref', REF, '--subject', 'bench', input],
        { env: pushEnv, server: registry },
      );
      const json = JSON.parse(r.stdout);
      // The commit's packs are generated after the ref move: not during the next measurement.
      await waitForLog(registry.log.file, new RegExp(`packs of ${json.commit} ready`));
      return pick(r, {
        ...pushPhases(r),
        bytes: json.uploaded.bytes,
        records: json.uploaded.objects,
        commit: json.commit,
      });
    };
    const commit = (input) =>
      measure('ostree', ['commit', `--repo=${ostreeRepo}`, `--branch=${REF}`, '--subject=bench', input]);
    const sysrootPull = async (spec, dest) => {
      const r = await measure(NODE, [BIN, 'pull', '--url', registry.url, spec, dest], {
        env: pullEnv,
        server: registry,
        checkoutDest: dest,
      });
      return pick(r, pullPhases(r));
    };
    const ostreePull = async (dest) => {
      const a = await measure('ostree', [`--repo=${client}`, 'pull', 'r', REF], { server: ngx });
      const b = await measure('ostree', ['checkout', `--repo=${client}`, `r:${REF}`, dest]);
      return combine(a, b);
    };

    // 1. push v1 vs ostree commit v1.
    for (const tool of two(['sysroot', 'ostree'])) {
      if (tool === 'sysroot') out.pushV1 = await push(inputV1);
      else out.commitV1 = pick(await commit(inputV1));
      done(`${tool} v1 push/commit`, tool === 'sysroot' ? out.pushV1 : out.commitV1);
    }
    // 2. cold pull + checkout of v1 (the ref's head) vs ostree pull + checkout vs zstd | tar.
    for (const tool of three(['sysroot', 'ostree', 'zstd'])) {
      if (tool === 'sysroot') out.coldSysroot = await sysrootPull(REF, p('co-sysroot-v1'));
      else if (tool === 'ostree') out.coldOstree = await ostreePull(p('co-ostree-v1'));
      else {
        mkdirSync(p('co-zstd-v1'));
        const r = await measure('bash', ['-c', 'zstd -qdc "$0" | tar -x -C "$1"', tarball, p('co-zstd-v1')]);
        out.coldZstd = pick(r, { requests: 1, bytes: statSync(tarball).size });
      }
      done(`${tool} cold pull`, out[`cold${tool[0].toUpperCase()}${tool.slice(1)}`]);
    }
    // 3. push v2 on top of v1 (the v1 push's cache) vs ostree commit of v2 on top of v1.
    for (const tool of two(['sysroot', 'ostree'])) {
      if (tool === 'sysroot') out.pushV2 = await push(inputV2);
      else out.commitV2 = pick(await commit(inputV2));
      done(`${tool} v2 push/commit`, tool === 'sysroot' ? out.pushV2 : out.commitV2);
    }
    // 4. pull v2 with v1 cached, + checkout.
    for (const tool of two(['sysroot', 'ostree'])) {
      if (tool === 'sysroot') out.v2Sysroot = await sysrootPull(REF, p('co-sysroot-v2'));
      else out.v2Ostree = await ostreePull(p('co-ostree-v2'));
      done(`${tool} v2 pull`, tool === 'sysroot' ? out.v2Sysroot : out.v2Ostree);
    }
    // 5. no-op pull: the ref again into the DEST of the v2 pull, which holds it (nothing to write;
    // ostree: a pull with nothing new); and, in
    // the same rotation, the pull of a pinned commit the cache has, which needs no server at all.
    for (const tool of three(['sysroot', 'ostree', 'pinned'])) {
      if (tool === 'sysroot') out.noopSysroot = await sysrootPull(REF, p('co-sysroot-v2'));
      else if (tool === 'ostree') {
        const args = [`--repo=${client}`, 'pull', 'r', REF];
        out.noopOstree = pick(await measure('ostree', args, { server: ngx }));
      } else out.pinned = await sysrootPull(out.pushV2.commit, p('co-sysroot-pinned'));
      const r = { sysroot: out.noopSysroot, ostree: out.noopOstree, pinned: out.pinned }[tool];
      done(tool === 'pinned' ? 'sysroot pinned cached pull' : `${tool} no-op pull`, r);
    }
    // The floors: the checkout alone from an archive repository (the registry's own) and from
    // ostree's client repository, and node + the CLI's start-up.
    for (const tool of two(['sysroot', 'ostree'])) {
      if (tool === 'sysroot') {
        const dest = p('co-sysroot-checkout');
        const args = ['checkout', '--repo', registry.repo, out.pushV2.commit, dest];
        const r = await measure(NODE, [BIN, ...args], { env: pullEnv, checkoutDest: dest });
        out.checkoutSysroot = pick(r, pullPhases(r));
      } else {
        const args = ['checkout', `--repo=${client}`, `r:${REF}`, p('co-ostree-checkout')];
        out.checkoutOstree = pick(await measure('ostree', args));
      }
      done(`${tool} checkout alone`, tool === 'sysroot' ? out.checkoutSysroot : out.checkoutOstree);
    }
    out.start = pick(await measure(NODE, [BIN, '--version']));
    done('sysroot --version', out.start);
    // 6. 16 cold pulls at once from one server: sysroot (16 caches, 16 DESTs, with checkouts) vs
    // ostree pull from nginx into 16 fresh repositories.
    for (const tool of two(['sysroot', 'ostree'])) {
      const cmds = Array.from({ length: MANY }, (_, k) => {
        if (tool === 'sysroot') {
          const env = sysrootEnv({ SYSROOT_CACHE_DIR: p(`many-cache-${k}`) });
          return [NODE, [BIN, 'pull', '--url', registry.url, REF, p(`many-co-${k}`)], { env }];
        }
        const repo = p(`many-ostree-${k}`);
        execFileSync('ostree', ['init', `--repo=${repo}`, '--mode=archive']);
        execFileSync('ostree', [`--repo=${repo}`, 'remote', 'add', '--no-gpg-verify', 'r', nginx.url]);
        return ['ostree', [`--repo=${repo}`, 'pull', 'r', REF], {}];
      });
      const r = await measureMany(cmds, tool === 'sysroot' ? registry : ngx);
      if (tool === 'sysroot') out.manySysroot = r;
      else out.manyOstree = r;
      done(`${tool} ${MANY} concurrent cold pulls`, r);
    }
    // 16 x (tree + cache) and 16 ostree repositories: ~3.7 GB a run, more than the work filesystem
    // holds for 3 runs. Removed once measured, and synced before the next run's first timing.
    for (const name of readdirSync(runDir))
      if (name.startsWith('many-')) rmSync(p(name), { recursive: true });
    execFileSync('sync');
  } finally {
    await nginx?.stop();
    await registry.stop();
  }
  return out;
}

const fmt = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : '—');
const mb = (b) => (Number.isFinite(b) ? (b / MB).toFixed(1) : '—');
const pct = (part, whole) => `${Math.round((100 * part) / whole)}%`;

/** Medians, field by field, of one operation over all runs (peak RSS: the maximum). */
function med(results, key) {
  const rows = results.map((r) => r[key]);
  const o = {};
  for (const k of Object.keys(rows[0])) {
    if (typeof rows[0][k] === 'number') o[k] = median(rows.map((r) => r[k]));
  }
  o.rssMb = Math.max(...rows.map((r) => r.rssMb));
  return o;
}

/** The table rows: [operation, ours, peer name, peer (or null), targets]. */
function tableRows(m) {
  return [
    ['push v1 (import + upload + ref move)', m.pushV1, 'ostree commit v1', m.commitV1, TARGETS.pushV1],
    ['push v2 on top of v1', m.pushV2, 'ostree commit v2 on top of v1', m.commitV2, TARGETS.pushV2],
    [
      'cold pull + checkout v1',
      m.coldSysroot,
      'ostree pull (nginx) + checkout',
      m.coldOstree,
      TARGETS.coldOstree,
    ],
    [
      'cold pull + checkout v1',
      m.coldSysroot,
      'zstd -dc v1.tar.zst \\| tar -x',
      m.coldZstd,
      TARGETS.coldZstd,
    ],
    [
      'pull v2 with v1 cached + checkout',
      m.v2Sysroot,
      'ostree pull v1→v2 + checkout',
      m.v2Ostree,
      TARGETS.pullV2,
    ],
    [
      'no-op pull of the ref (DEST already holds it)',
      m.noopSysroot,
      'ostree pull (no-op)',
      m.noopOstree,
      TARGETS.noop,
    ],
    ['pull of a pinned, cached commit + checkout (no server)', m.pinned, '—', null, []],
    [
      `${MANY} concurrent cold pulls + checkouts (${MANY} caches and DESTs)`,
      m.manySysroot,
      `${MANY} concurrent ostree pull (nginx, ${MANY} repos)`,
      m.manyOstree,
      TARGETS.many,
    ],
    [
      'checkout alone, from an archive repository',
      m.checkoutSysroot,
      'ostree checkout',
      m.checkoutOstree,
      [],
    ],
    ['`sysroot --version` (process start)', m.start, '—', null, []],
    ...(m.big
      ? [
          ['push of a 1 GiB tree (peak RSS)', m.big.push, '—', null, TARGETS.bigRss],
          ['cold pull + checkout of a 1 GiB tree (peak RSS)', m.big.pull, '—', null, TARGETS.bigRss],
        ]
      : []),
  ];
}

function table(m) {
  const head =
    '| operation | sysroot (s) | peak RSS (MB) | requests | MB on the wire | peer | peer (s) | ' +
    'peer requests | peer MB | ratio | target (fast-transfer issue) |';
  const lines = [head, '|---|---|---|---|---|---|---|---|---|---|---|'];
  for (const [name, ours, peerName, peer, targets] of tableRows(m)) {
    const ratio = peer ? ours.secs / peer.secs : Number.NaN;
    const verdict = targets.length
      ? targets.map((t) => `${t.label} ${t.test({ ...ours, ratio }) ? 'met' : '**missed**'}`).join('; ')
      : '—';
    const over = (x) => (x.requests ? x.requests : '—');
    const oursMb = name.startsWith('push') ? `${mb(ours.bytes)} up` : ours.requests ? mb(ours.bytes) : '—';
    let peerReq = '—';
    let peerMb = '—';
    if (peerName.includes('ostree pull')) [peerReq, peerMb] = [over(peer), mb(peer.bytes)];
    if (peerName.startsWith('zstd')) peerMb = `${mb(peer.bytes)} (file)`;
    lines.push(
      `| ${name} | ${fmt(ours.secs)} | ${fmt(ours.rssMb, 0)} | ${over(ours)} | ${oursMb} | ${peerName} | ` +
        `${peer ? fmt(peer.secs) : '—'} | ${peerReq} | ${peerMb} | ` +
        `${peer ? `${fmt(ratio)}×` : '—'} | ${verdict} |`,
    );
  }
  return lines.join('\n');
}

/** What each figure is made of, from this run's own measurements (phases from the access logs). */
function notes(m) {
  const { pushV1: p1, pushV2: p2, coldSysroot: cs, coldOstree: co, coldZstd: cz } = m;
  const { v2Sysroot: vs, v2Ostree: vo, noopSysroot: ns, pinned, checkoutSysroot: ck, start } = m;
  const cores = cpus().length;
  const busy = (r, server) => pct(r.cpu + server, cores * r.secs);
  const refVsV1 = p2.refSecs / p1.refSecs;
  return [
    `- **push v1** (${fmt(p1.secs)} s, ${p1.requests} requests): ${fmt(p1.startSecs)} s start-up, ` +
      (Number.isFinite(p1.missingSecs)
        ? `${fmt(p1.hashSecs)} s hashing the tree (no deflate, both cores), ${fmt(p1.missingSecs)} s ` +
          `asking which of its objects the server lacks (one request), ${fmt(p1.uploadSecs)} s for one ` +
          `pack of ${p1.records} records (${mb(p1.bytes)} MB: the client deflating only what is missing ` +
          'while the server verifies and stores it), '
        : `then, a new ref, ${fmt(p1.uploadSecs)} s for one pack of ${p1.records} records ` +
          `(${mb(p1.bytes)} MB) sent while the tree is hashed (two threads of libuv's pool read, hash, ` +
          'deflate and hand on each batch of files, the server verifies and stores it as it comes; nothing asked first), ') +
      `and ${fmt(p1.refSecs)} s in the ref move (timed by the server). ` +
      `The server used ${fmt(p1.serverCpu)} s of CPU and the client ${fmt(p1.cpu)} s: ` +
      `${busy(p1, p1.serverCpu)} of ${cores} cores over the whole push. \`ostree commit\` uses ` +
      `${fmt(m.commitV1.cpu)} s of CPU in ${fmt(m.commitV1.secs)} s: one core.`,
    `- **push v2** (${fmt(p2.secs)} s, ${p2.requests} requests): hash ${fmt(p2.hashSecs)} s, missing ` +
      `${fmt(p2.missingSecs)} s, one pack of ${p2.records} records (${mb(p2.bytes)} MB) in ` +
      `${fmt(p2.uploadSecs)} s, ref move ${fmt(p2.refSecs)} s (${pct(p2.refSecs, p2.secs)} of the push; ` +
      `${fmt(refVsV1)}× v1's ref move). \`ostree commit\` compresses the whole tree again ` +
      `(${fmt(m.commitV2.cpu)} s of CPU).`,
    `- **cold pull** (${fmt(cs.secs)} s, ${cs.requests} requests): ${fmt(cs.fetchSecs)} s until the ` +
      `checkout starts (start-up, the ref, the start of one pack of ${mb(cs.bytes)} MB), then ` +
      `${fmt(cs.checkoutSecs)} s of checkout while the pack arrives, each record verified before it is ` +
      `written (ostree: pull ${fmt(co.pullSecs)} s, checkout ${fmt(co.checkoutSecs)} s). ` +
      `\`sysroot serve\` used ${fmt(cs.serverCpu)} s of CPU and nginx ` +
      `${fmt(co.serverCpu)} s; the clients ${fmt(cs.cpu)} s (sysroot) and ${fmt(co.cpu)} s (ostree pull + ` +
      `checkout): client + server keep ${busy(cs, cs.serverCpu)} of ${cores} cores busy for sysroot, ` +
      `${busy(co, co.serverCpu)} for ostree. \`zstd | tar\` reads one ${mb(cz.bytes)} MB stream with ` +
      `${fmt(cz.cpu)} s of CPU.`,
    `- **v2 with v1 cached** (${fmt(vs.secs)} s, ${vs.requests} requests): ${fmt(vs.fetchSecs)} s until ` +
      `the checkout starts (start-up, the ref, the start of one update pack of ${mb(vs.bytes)} MB from ` +
      `the cached v1), then ${fmt(vs.checkoutSecs)} s writing the whole tree: the update pack's records ` +
      `as they arrive, the rest from the cached v1 pack; against ${fmt(vo.pullSecs)} s for ` +
      `\`ostree pull\` (${vo.requests} requests) and ${fmt(vo.checkoutSecs)} s for its checkout.`,
    `- **no-op** (${fmt(ns.secs)} s, ${ns.requests} request): DEST is the cache's own checkout of the ` +
      `ref's head (same inode, root mtime 0), so the ref is all that is asked and nothing is written ` +
      `(node start-up alone: ${fmt(start.secs)} s; the request is answered at ${fmt(ns.startSecs)} s). ` +
      `A pinned, cached commit into a new DEST (no server): ${fmt(pinned.fetchSecs)} s + ` +
      `${fmt(pinned.checkoutSecs)} s of checkout from the cached pack; \`sysroot checkout\` from an ` +
      `archive repository: ${fmt(ck.fetchSecs)} s + ${fmt(ck.checkoutSecs)} s.`,
    `- **${MANY} at once** (${fmt(m.manySysroot.secs)} s, ${m.manySysroot.requests} requests, ` +
      `${mb(m.manySysroot.bytes)} MB): ${MANY} cold pulls with checkouts against one \`sysroot serve\`, ` +
      `which used ${fmt(m.manySysroot.serverCpu)} s of CPU (one stored pack, sent ${MANY} times); ` +
      `the clients ${fmt(m.manySysroot.cpu)} s. ${MANY} \`ostree pull\` from nginx (no checkouts): ` +
      `${fmt(m.manyOstree.secs)} s, ${m.manyOstree.requests} requests, clients ` +
      `${fmt(m.manyOstree.cpu)} s of CPU.`,
  ].join('\n');
}

/**
 * Run the transfer benchmark in `dir` (a fresh filesystem). Returns the markdown table, the
 * environment lines, the notes, the medians and every run's figures.
 */
export async function runTransfer({ dir, runs }) {
  log('building/reusing the amd64-v1 and amd64-v2 sysroot fixtures');
  const [treeV1, treeV2] = sysrootTrees(['amd64-v1', 'amd64-v2']);
  // ostree refuses device nodes, so every tool works from copies without them.
  const inputV1 = join(dir, 'input-v1');
  const inputV2 = join(dir, 'input-v2');
  const specials = copyWithoutSpecials(treeV1, inputV1);
  copyWithoutSpecials(treeV2, inputV2);
  const tarball = join(dir, 'v1.tar.zst');
  execFileSync('bash', ['-c', 'tar -C "$0" -c . | zstd -q -3 -T0 -o "$1"', inputV1, tarball]);
  const ctx = { dir, runs, inputV1, inputV2, tarball };
  const size = (path) => execFileSync('du', ['-sm', path], { encoding: 'utf8' }).split('\t')[0];
  // Other work on the machine shows in the timings; the load average says whether there was any.
  const loadBefore = loadavg()[0];
  const results = [];
  for (let i = 0; i < runs; i++) results.push(await oneRun(i, ctx));
  const tarballBytes = statSync(tarball).size;
  rmSync(tarball);
  ctx.inputBig = join(dir, 'input-1g');
  makeBigTree(inputV1, ctx.inputBig, BIG_VARIANTS);
  const bigSize = size(ctx.inputBig);
  const big = await bigRun(ctx);
  rmSync(ctx.inputBig, { recursive: true });

  const m = {};
  for (const k of Object.keys(results[0])) m[k] = med(results, k);
  m.big = big;
  const nginxVersion = version('nginx', ['-v']).replace('nginx version: ', '');
  const zstdVersion = /v\d+\.\d+\.\d+/.exec(version('zstd', ['--version']))?.[0] ?? 'unknown';
  const env = [
    `- trees: amd64-v1 (${size(inputV1)} MB) and amd64-v2 (${size(inputV2)} MB) from ` +
      `scripts/make-sysroot.sh, ${specials.length} device nodes removed from the copies every tool reads; ` +
      `v1.tar.zst: \`tar -c | zstd -3 -T0\` of the v1 copy, ${mb(tarballBytes)} MB; ` +
      `the 1 GiB tree (${bigSize} MB, ${BIG_VARIANTS} copies of v1, each file suffixed with its copy's ` +
      `number so nothing dedupes) is pushed and pulled once, after the runs, into a registry of its own; ` +
      `\`sysroot serve\` peaked at ${fmt(big.serverHwmMb, 0)} MB over that push and pull`,
    `- runs: ${runs}, each with a fresh registry, nginx, caches and repositories; tools alternate order; ` +
      `medians (peak RSS: the maximum); \`sync\` before each timed command; writes on ` +
      `${isRoot() ? 'a fresh ext4 loop filesystem' : 'a temp directory'}`,
    "- wire: servers on 127.0.0.1; requests and MB (10⁶ bytes of HTTP bodies) from the servers' access " +
      "logs; push: the bytes uploaded; ostree pulls from nginx serving the registry's own repository " +
      'directory; `ostree commit` and `ostree pull` sync the filesystem (their default), sysroot never ' +
      'calls fsync',
    `- machine: ${cpus().length} cores, Node ${process.version}, ostree ${ostreeVersion()}, ` +
      `${nginxVersion}, zstd ${zstdVersion}; 1-minute load average ${fmt(loadBefore)} before the runs, ` +
      `${fmt(loadavg()[0])} after`,
    `- environment: every timed command, ours and the peers', runs without the caller's ${UNSET_NAMES} ` +
      '(bench/common.mjs benchEnv says why)',
    `- date: ${new Date().toISOString()}; command: \`npm run bench\` (this half alone: ` +
      '`node bench/run.mjs --only transfer`)',
  ].join('\n');
  return { table: table(m), env, notes: notes(m), m, results };
}
