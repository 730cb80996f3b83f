#!/usr/bin/env node
// npm run bench — sysroot against its peers on a real Debian sysroot, in the same run.
//
// Each operation runs --runs times (default 3), alternating which tool goes first, and we report
// medians and the ratio to the peer. Timings on these shared 2-core machines are noisy, which is
// why ratios in one invocation are the figure of merit, never absolute seconds across runs.
//
// Writes go to a fresh ext4 loop filesystem when run as root: on this kernel, writing a big tree
// right after deleting one is 5-10x slower (ext4's inode allocator scans recently deleted inodes),
// so nothing is deleted between timed runs and the filesystem starts empty.
//
// Usage: node bench/run.mjs [--runs N] [--tree amd64-v1] [--no-write]
import { execFileSync, spawnSync } from 'node:child_process';
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = join(ROOT, 'bin/sysroot.js');
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const RUNS = Number(opt('--runs', '3'));
const TREE_NAME = opt('--tree', 'amd64-v1');
const WRITE_DOCS = !args.includes('--no-write');

const log = (m) => process.stderr.write(`[bench] ${m}\n`);

/** Run a command under GNU time; returns wall seconds and peak RSS in MB. */
function timed(cmd, cmdArgs) {
  const r = spawnSync('/usr/bin/time', ['-f', '%e %M', cmd, ...cmdArgs], {
    encoding: 'utf8',
    maxBuffer: 1 << 26,
  });
  if (r.status !== 0) throw new Error(`${cmd} ${cmdArgs.join(' ')} failed (${r.status}):\n${r.stderr}`);
  const last = r.stderr.trim().split('\n').pop() ?? '';
  const [secs, kb] = last.split(' ').map(Number);
  return { secs, rssMb: kb / 1024, stdout: r.stdout };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

/** Paths (from the tree root, with a leading /) of device nodes, fifos and sockets: ostree refuses them. */
function specialFiles(tree) {
  const out = [];
  const walk = (rel) => {
    for (const name of readdirSync(join(tree, rel))) {
      const p = rel ? `${rel}/${name}` : name;
      const st = lstatSync(join(tree, p));
      if (st.isDirectory()) walk(p);
      else if (!st.isFile() && !st.isSymbolicLink()) out.push(`/${p}`);
    }
  };
  walk('');
  return out;
}

function freshWorkdir() {
  if (process.getuid?.() !== 0) {
    log('not root: using a temp directory instead of a fresh ext4 filesystem (timings are less repeatable)');
    return { dir: mkdtempSync(join(tmpdir(), 'sysroot-bench-')), cleanup: () => {} };
  }
  const img = join('/var/tmp', `sysroot-bench-${process.pid}.img`);
  const mnt = join('/var/tmp', `sysroot-bench-${process.pid}`);
  mkdirSync(mnt, { recursive: true });
  execFileSync('truncate', ['-s', '16G', img]);
  execFileSync('mkfs.ext4', ['-F', '-q', '-E', 'nodiscard,lazy_itable_init=1,lazy_journal_init=1', img]);
  execFileSync('mount', ['-o', 'loop', img, mnt]);
  return {
    dir: mnt,
    cleanup: () => {
      spawnSync('umount', [mnt]);
      rmSync(img, { force: true });
      rmSync(mnt, { recursive: true, force: true });
    },
  };
}

function version(cmd, a, whole = false) {
  try {
    const out = execFileSync(cmd, a, { encoding: 'utf8' });
    return whole ? out : out.split('\n')[0].trim();
  } catch {
    return 'unknown';
  }
}

function ostreeVersion() {
  const m = /Version: '([^']+)'/.exec(version('ostree', ['--version'], true));
  return m ? m[1] : 'unknown';
}

function main() {
  log(`building/reusing the ${TREE_NAME} sysroot fixture`);
  const tree = execFileSync('bash', [join(ROOT, 'scripts/make-sysroot.sh'), TREE_NAME], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  })
    .trim()
    .split('\n')
    .pop();
  const specials = specialFiles(tree);
  const { dir, cleanup } = freshWorkdir();
  const results = { ostreeCommit: [], sysrootCommit: [], ostreeCheckout: [], sysrootCheckout: [] };
  try {
    // ostree refuses device nodes (and 2022.7's --skip-list skips only the first one listed), so
    // both tools commit a copy of the tree without them.
    const input = join(dir, 'input');
    execFileSync('cp', ['-a', tree, input]);
    for (const p of specials) rmSync(join(input, p));
    for (let i = 0; i < RUNS; i++) {
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
        log(`run ${i + 1}/${RUNS} ${tool}: done`);
      }
    }
  } finally {
    cleanup();
  }

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
        `${(ours / peer).toFixed(2)}× | ${target ? `≤ ${target}× ${ours / peer <= target ? 'met' : 'MISSED'}` : '—'} |`,
    ),
  ].join('\n');
  const env = [
    `- tree: ${TREE_NAME} (${tree}), ${specials.length} device nodes removed from the copy both tools commit`,
    `- runs: ${RUNS}, alternating order, medians; writes on ${process.getuid?.() === 0 ? 'a fresh ext4 loop filesystem' : 'a temp directory'}`,
    `- machine: ${cpus().length} cores, Node ${process.version}, ostree ${ostreeVersion()}`,
    `- date: ${new Date().toISOString()}; command: \`npm run bench\``,
  ].join('\n');
  process.stdout.write(`${table}\n\n${env}\n`);

  if (WRITE_DOCS) {
    const file = join(ROOT, 'docs/performance.md');
    let doc = readFileSync(file, 'utf8');
    const start = '<!-- bench:core:start -->';
    const end = '<!-- bench:core:end -->';
    const block = `${start}\n${table}\n\n${env}\n${end}`;
    doc = doc.includes(start)
      ? doc.replace(new RegExp(`${start}[\\s\\S]*?${end}`), block)
      : `${doc}\n${block}\n`;
    writeFileSync(file, doc);
    log(`wrote ${file}`);
  }
}

main();
