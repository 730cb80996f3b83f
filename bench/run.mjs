#!/usr/bin/env node
// npm run bench — sysroot against its peers on a real Debian sysroot, in the same run.
//
// Each operation runs --runs times (default 5 in the transfer half, 3 in the others), alternating
// which tool goes first, and we report medians and the ratio to the peer. Timings on these shared
// 2-core machines are noisy, which is why ratios in one invocation are the figure of merit, never
// absolute seconds across runs.
//
// Writes go to a fresh ext4 loop filesystem when run as root: on this kernel, writing a big tree
// right after deleting one is 5-10x slower (ext4's inode allocator scans recently deleted inodes),
// so nothing is deleted between timed runs and the filesystem starts empty.
//
// Three parts, each with its own section of docs/performance.md:
//   core      commit and checkout against ostree (this file)
//   transfer  push and pull over loopback against ostree commit, ostree pull from nginx and
//             zstd | tar (bench/transfer.mjs)
//   s3        push and cold pull through `sysroot serve` with the repository in a directory and in
//             a bucket on a real Ceph RGW (bench/s3.mjs)
//
// Usage: node bench/run.mjs [--only core|transfer|s3] [--runs N] [--tree amd64-v1] [--no-write]
//          [--raw FILE]   (transfer: every run's figures as JSON)
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  BIN,
  copyWithoutSpecials,
  freshWorkdir,
  isRoot,
  liveChildren,
  log,
  median,
  ostreeVersion,
  sysrootTrees,
  timed,
  UNSET_NAMES,
  writeDocSection,
} from './common.mjs';
import { runS3 } from './s3.mjs';
import { runTransfer } from './transfer.mjs';

const USAGE =
  'usage: node bench/run.mjs [--only core|transfer|s3] [--runs N] [--tree NAME] [--no-write] [--raw FILE]\n';
// Strict: an option it does not know (`--help` was one) must not start a 20-minute benchmark.
let flags;
try {
  flags = parseArgs({
    options: {
      only: { type: 'string', default: 'all' },
      runs: { type: 'string' },
      tree: { type: 'string', default: 'amd64-v1' },
      'no-write': { type: 'boolean', default: false },
      raw: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  }).values;
} catch (e) {
  process.stderr.write(`${e.message}\n${USAGE}`);
  process.exit(2);
}
if (flags.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
/**
 * Runs per half, unless --runs says. The transfer half takes 5: its targets are ratios of medians
 * of a few seconds each, on shared machines whose runs differ by ±30% (push v1 read 0.22-0.26x
 * against ostree commit across invocations of 3 runs, 2026-12-07/08), and a median of 5 moves less.
 */
const runsFor = (half) => Number(flags.runs ?? (half === 'transfer' ? 5 : 3));
const TREE_NAME = flags.tree;
const ONLY = flags.only;
const WRITE_DOCS = !flags['no-write'];

if (!['all', 'core', 'transfer', 's3'].includes(ONLY) || !(runsFor('core') >= 1)) {
  process.stderr.write(USAGE);
  process.exit(2);
}

// Work directories to clean up if we are interrupted (the finally blocks do it otherwise).
const live = new Set();
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    log(`${sig}: cleaning up`);
    for (const child of liveChildren) child.kill('SIGKILL');
    // Give them a moment to exit (and close their files), so the filesystem can be unmounted.
    if (liveChildren.size) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 500);
    for (const w of live) w.cleanup();
    process.exit(130);
  });
}

function withWorkdir(tag, fn) {
  const w = freshWorkdir(tag);
  live.add(w);
  const end = () => {
    live.delete(w);
    w.cleanup();
  };
  try {
    const r = fn(w.dir);
    if (r instanceof Promise) return r.finally(end);
    end();
    return r;
  } catch (e) {
    end();
    throw e;
  }
}

function core() {
  log(`building/reusing the ${TREE_NAME} sysroot fixture`);
  const [tree] = sysrootTrees([TREE_NAME]);
  const results = { ostreeCommit: [], sysrootCommit: [], ostreeCheckout: [], sysrootCheckout: [] };
  let specials = [];
  withWorkdir('core', (dir) => {
    // ostree refuses device nodes (and 2022.7's --skip-list skips only the first one listed), so
    // both tools commit a copy of the tree without them.
    const input = join(dir, 'input');
    specials = copyWithoutSpecials(tree, input);
    for (let i = 0; i < runsFor('core'); i++) {
      const order = i % 2 === 0 ? ['ostree', 'sysroot'] : ['sysroot', 'ostree'];
      for (const tool of order) {
        const repo = join(dir, `${tool}-repo-${i}`);
        const dest = join(dir, `${tool}-checkout-${i}`);
        if (tool === 'ostree') {
          execFileSync('ostree', ['init', `--repo=${repo}`, '--mode=archive']);
          results.ostreeCommit.push(
            timed('ostree', ['commit', `--repo=${repo}`, '--branch=b', '--subject=bench', input]),
          );
          results.ostreeCheckout.push(timed('ostree', ['checkout', `--repo=${repo}`, 'b', dest]));
        } else {
          execFileSync(process.execPath, [BIN, 'init', '--repo', repo]);
          results.sysrootCommit.push(
            timed(process.execPath, [BIN, 'commit', '--repo', repo, '--ref', 'b', '--subject=bench', input]),
          );
          results.sysrootCheckout.push(timed(process.execPath, [BIN, 'checkout', '--repo', repo, 'b', dest]));
        }
        log(`run ${i + 1}/${runsFor('core')} ${tool}: done`);
      }
    }
  });

  const m = (k) => median(results[k].map((r) => r.secs));
  const rss = (k) => Math.max(...results[k].map((r) => r.rssMb));
  const rows = [
    [
      'commit (import + commit)',
      m('sysrootCommit'),
      rss('sysrootCommit'),
      m('ostreeCommit'),
      'ostree commit',
      0.5,
    ],
    [
      'checkout',
      m('sysrootCheckout'),
      rss('sysrootCheckout'),
      m('ostreeCheckout'),
      'ostree checkout',
      undefined,
    ],
  ];
  const table = [
    '| operation | sysroot (s) | peak RSS (MB) | peer | peer (s) | ratio | target |',
    '|---|---|---|---|---|---|---|',
    ...rows.map(
      ([name, ours, r, peer, peerName, target]) =>
        `| ${name} | ${ours.toFixed(2)} | ${r.toFixed(0)} | ${peerName} | ${peer.toFixed(2)} | ` +
        `${(ours / peer).toFixed(2)}× | ` +
        `${target ? `≤ ${target}× ${ours / peer <= target ? 'met' : 'MISSED'}` : '—'} |`,
    ),
  ].join('\n');
  const env = [
    `- tree: ${TREE_NAME} (${tree}), ${specials.length} device nodes removed from the copy both tools commit`,
    `- runs: ${runsFor('core')}, alternating order, medians; writes on ` +
      `${isRoot() ? 'a fresh ext4 loop filesystem' : 'a temp directory'}`,
    `- machine: ${cpus().length} cores, Node ${process.version}, ostree ${ostreeVersion()}`,
    `- environment: both tools run without the caller's ${UNSET_NAMES} (bench/common.mjs benchEnv says why)`,
    `- date: ${new Date().toISOString()}; command: \`npm run bench\``,
  ].join('\n');
  process.stdout.write(`${table}\n\n${env}\n`);
  if (WRITE_DOCS) writeDocSection('core', `${table}\n\n${env}`);
}

async function transfer() {
  const r = await withWorkdir('transfer', (dir) => runTransfer({ dir, runs: runsFor('transfer') }));
  process.stdout.write(`\n${r.table}\n\n${r.env}\n\n${r.notes}\n`);
  if (WRITE_DOCS) {
    writeDocSection(
      'transfer',
      `## Push and pull over loopback\n\n${r.table}\n\n${r.env}\n\n` +
        `What dominates each figure (medians of each part, measured in the same runs):\n\n${r.notes}`,
      '<!-- bench:core:end -->',
    );
  }
  const raw = flags.raw;
  if (raw) writeFileSync(raw, `${JSON.stringify({ medians: r.m, runs: r.results }, null, 2)}\n`);
}

async function s3() {
  const r = await withWorkdir('s3', (dir) => runS3({ dir, runs: runsFor('s3') }));
  process.stdout.write(`\n${r.table}\n\n${r.env}\n\n${r.notes}\n`);
  if (WRITE_DOCS)
    writeDocSection('s3', `${r.table}\n\n${r.env}\n\n${r.notes}`, '<!-- bench:transfer:end -->');
}

if (ONLY === 'all' || ONLY === 'core') core();
if (ONLY === 'all' || ONLY === 'transfer') await transfer();
if (ONLY === 'all' || ONLY === 's3') await s3();
