// Helpers shared by the core (run.mjs) and transfer (transfer.mjs) benchmarks.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const BIN = join(ROOT, 'bin/sysroot.js');

export const log = (m) => process.stderr.write(`[bench] ${m}\n`);

export const isRoot = () => process.getuid?.() === 0;

/** Children still running (servers, timed commands): killed by pid if the benchmark is interrupted. */
export const liveChildren = new Set();

export function track(child) {
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
  return child;
}

/**
 * Settings of the caller's environment that change how a timed tool runs, not what it does; every
 * timed command runs without them, ours and the peers alike, so that figures do not depend on the
 * shell the benchmark was started from. NODE_EXTRA_CA_CERTS is the one seen: the machines we
 * measure on set it to the system's whole CA bundle, and Node 20 parses that before it runs a line
 * of JavaScript, in every process: `node -e 0` took 90-120 ms with it and 30-40 ms without
 * (2026-12-07). Our commands never need it for an http:// registry. NODE_OPTIONS, GLIBC_TUNABLES
 * and MALLOC_*_ would change V8's and malloc's settings (src/malloc-tuning.ts leaves the user's).
 */
const UNSET = /^(SYSROOT_|NODE_OPTIONS$|NODE_EXTRA_CA_CERTS$|GLIBC_TUNABLES$|MALLOC_)/;

/** UNSET in words, for the benchmark's environment lines. */
export const UNSET_NAMES = 'NODE_OPTIONS, NODE_EXTRA_CA_CERTS, GLIBC_TUNABLES, MALLOC_*_ and SYSROOT_*';

/** The caller's environment without UNSET's variables, plus `extra`. */
export function benchEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!UNSET.test(k)) env[k] = v;
  return { ...env, ...extra };
}

const TIME_FORMAT = ['-f', '%e %M %U %S'];

/** GNU time's last stderr line -> wall seconds, peak RSS in MB, CPU seconds (user + system). */
function parseTime(cmd, cmdArgs, status, stdout, stderr, startedMs, endedMs) {
  if (status !== 0) throw new Error(`${cmd} ${cmdArgs.join(' ')} failed (${status}):\n${stderr}`);
  const lines = stderr.trimEnd().split('\n');
  const [secs, kb, user, sys] = (lines.pop() ?? '').split(' ').map(Number);
  return { secs, rssMb: kb / 1024, cpu: user + sys, stdout, stderr: lines.join('\n'), startedMs, endedMs };
}

/**
 * Run a command under GNU time. Returns wall seconds, peak RSS in MB, CPU seconds (user + system),
 * stdout, stderr, and the wall-clock start and end (ms since the epoch, to line up with server logs).
 */
export function timed(cmd, cmdArgs, opts = {}) {
  const startedMs = Date.now();
  const r = spawnSync('/usr/bin/time', [...TIME_FORMAT, cmd, ...cmdArgs], {
    encoding: 'utf8',
    maxBuffer: 1 << 26,
    env: benchEnv(),
    ...opts,
  });
  return parseTime(cmd, cmdArgs, r.status, r.stdout, r.stderr, startedMs, Date.now());
}

/** `timed`, without blocking the event loop (so watchers and timers can observe the command). */
export function timedAsync(cmd, cmdArgs, opts = {}) {
  return new Promise((resolve, reject) => {
    const startedMs = Date.now();
    const child = track(
      spawn('/usr/bin/time', [...TIME_FORMAT, cmd, ...cmdArgs], {
        env: benchEnv(),
        ...opts,
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
    );
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d) => {
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d) => {
      stderr += d;
    });
    child.once('error', reject);
    child.once('close', (status) => {
      try {
        resolve(parseTime(cmd, cmdArgs, status, stdout, stderr, startedMs, Date.now()));
      } catch (e) {
        reject(e);
      }
    });
  });
}

export const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

/** Paths (from the tree root, with a leading /) of device nodes, fifos and sockets: ostree refuses them. */
export function specialFiles(tree) {
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

/** `cp -a` a tree without its special files (ostree refuses them); returns the removed paths. */
export function copyWithoutSpecials(tree, dest) {
  const specials = specialFiles(tree);
  execFileSync('cp', ['-a', tree, dest]);
  for (const p of specials) rmSync(join(dest, p));
  return specials;
}

/** Build (or reuse the cached) Debian sysroot trees; returns their paths in the order asked. */
export function sysrootTrees(names) {
  return execFileSync('bash', [join(ROOT, 'scripts/make-sysroot.sh'), ...names], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  })
    .trim()
    .split('\n');
}

/**
 * A directory for the benchmark's writes: a fresh ext4 loop filesystem when root (on this kernel,
 * writing a big tree right after deleting one is 5-10x slower), else a temp directory.
 */
export function freshWorkdir(tag, size = '16G') {
  if (!isRoot()) {
    log('not root: using a temp directory instead of a fresh ext4 filesystem (timings are less repeatable)');
    const dir = mkdtempSync(join(tmpdir(), `sysroot-bench-${tag}-`));
    return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
  }
  const img = join('/var/tmp', `sysroot-bench-${tag}-${process.pid}.img`);
  const mnt = join('/var/tmp', `sysroot-bench-${tag}-${process.pid}`);
  mkdirSync(mnt, { recursive: true });
  execFileSync('truncate', ['-s', size, img]);
  execFileSync('mkfs.ext4', ['-F', '-q', '-E', 'nodiscard,lazy_itable_init=1,lazy_journal_init=1', img]);
  execFileSync('mount', ['-o', 'loop', img, mnt]);
  let done = false;
  return {
    dir: mnt,
    cleanup: () => {
      if (done) return;
      done = true;
      const r = spawnSync('umount', [mnt], { encoding: 'utf8' });
      if (r.status !== 0) {
        log(`umount ${mnt} failed (${r.stderr.trim()}); detaching it lazily`);
        spawnSync('umount', ['-l', mnt]);
      }
      rmSync(img, { force: true });
      rmSync(mnt, { recursive: true, force: true });
    },
  };
}

/** A tool's version output (stdout, else stderr, as `nginx -v` writes it): the first line or all. */
export function version(cmd, a, whole = false) {
  const r = spawnSync(cmd, a, { encoding: 'utf8' });
  if (r.error || r.status !== 0) return 'unknown';
  const out = r.stdout || r.stderr;
  return whole ? out : out.split('\n')[0].trim();
}

export function ostreeVersion() {
  const m = /Version: '([^']+)'/.exec(version('ostree', ['--version'], true));
  return m ? m[1] : 'unknown';
}

/**
 * Replace the text between `<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->` in
 * docs/performance.md; without those markers, insert the block after `afterMarker` (or at the end).
 */
export function writeDocSection(name, body, afterMarker) {
  const file = join(ROOT, 'docs/performance.md');
  let doc = readFileSync(file, 'utf8');
  const start = `<!-- bench:${name}:start -->`;
  const end = `<!-- bench:${name}:end -->`;
  const block = `${start}\n${body}\n${end}`;
  if (doc.includes(start) && doc.includes(end)) {
    doc = doc.replace(new RegExp(`${start}[\\s\\S]*?${end}`), () => block);
  } else if (afterMarker && doc.includes(afterMarker)) {
    const at = doc.indexOf(afterMarker) + afterMarker.length;
    doc = `${doc.slice(0, at)}\n\n${block}${doc.slice(at)}`;
  } else {
    doc = `${doc.trimEnd()}\n\n${block}\n`;
  }
  writeFileSync(file, doc);
  log(`wrote ${file} (${name} section)`);
}

const CLK_TCK = Number(version('getconf', ['CLK_TCK'])) || 100;

/** CPU seconds (user + system) a live process has used so far. */
export function procCpu(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / CLK_TCK;
}

/** Environment for sysroot commands: benchEnv (none of the caller's SYSROOT_* settings among others), plus `extra`. */
export function sysrootEnv(extra) {
  return benchEnv(extra);
}
