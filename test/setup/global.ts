import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hasOstree } from '../helpers/ostree.js';

const installScript = fileURLToPath(new URL('../../scripts/install-test-deps.sh', import.meta.url));
const buildNative = fileURLToPath(new URL('../../scripts/build-native.mjs', import.meta.url));
const igzipAddon = fileURLToPath(new URL('../../native/igzip/build/Release/igzip.node', import.meta.url));
const memoryAddon = fileURLToPath(new URL('../../native/memory/build/Release/memory.node', import.meta.url));
const filesAddon = fileURLToPath(new URL('../../native/files/build/Release/files.node', import.meta.url));
const zstdAddon = fileURLToPath(new URL('../../native/zstd/build/Release/zstd.node', import.meta.url));
const hashfilesAddon = fileURLToPath(
  new URL('../../native/hashfiles/build/Release/hashfiles.node', import.meta.url),
);

/**
 * vitest globalSetup: make sure the real `ostree` CLI is there before any test file loads.
 *
 * The interop tests are the proof that our checksums and repositories match OSTree's, so a machine
 * without ostree must fail the run, never skip those tests. When ostree is already installed this
 * costs one `ostree --version` (~10 ms) and never touches apt.
 */
export default async function setup(): Promise<() => void> {
  const teardown = runTempDir();
  if (hasOstree()) {
    buildAddons();
    return teardown;
  }

  let installNote = 'Not running as root, so nothing was installed.';
  if (process.getuid?.() === 0) {
    // Installs every missing test tool (ostree, debootstrap, nginx-light, zstd, attr, xz-utils).
    try {
      execFileSync('bash', [installScript], { stdio: 'inherit' });
      installNote = `${installScript} ran but ostree is still not on PATH.`;
    } catch (error) {
      installNote = `${installScript} failed: ${(error as Error).message}`;
    }
  }

  if (!hasOstree()) {
    throw new Error(
      'The interop tests need the real ostree CLI (Debian package "ostree"), and it is not installed.\n' +
        `${installNote}\n` +
        `Install it as root: apt-get install ostree  (or run: sudo bash ${installScript})\n` +
        'These tests are never skipped: they are what proves our output matches OSTree byte for byte.',
    );
  }
  buildAddons();
  return teardown;
}

/**
 * The native addons are built by `npm ci`: native/memory and native/files always, native/igzip,
 * native/hashfiles and native/zstd when ISA-L's and libzstd's headers are there. A checkout installed before them
 * (install-test-deps.sh adds libisal-dev and libzstd-dev) gets them built here, so the tests run
 * what users get; test/deflate.test.ts, test/malloc-tuning.test.ts, test/file-batch.test.ts,
 * test/native-pool.test.ts and test/pack.test.ts fail, with the reason, if one still is not there.
 */
function buildAddons(): void {
  const igzipDone =
    (existsSync(igzipAddon) && existsSync(hashfilesAddon)) || process.env.SYSROOT_DEFLATE === 'zlib';
  if (igzipDone && existsSync(memoryAddon) && existsSync(filesAddon) && existsSync(zstdAddon)) return;
  if (process.getuid?.() === 0) {
    try {
      execFileSync('bash', [installScript], { stdio: 'inherit' });
    } catch {
      // deflate.test.ts says what is missing.
    }
  }
  execFileSync(process.execPath, [buildNative], { stdio: 'inherit' });
}

/**
 * One temp directory for the whole run, as TMPDIR of every test worker and every process they start
 * (os.tmpdir(), mktemp, scripts/s3-server.sh), removed at the end. Tests make hundreds of temp trees
 * (a run made ~600, some holding a sysroot) and rarely remove them; this way nothing outlives the run.
 * SYSROOT_KEEP_TEST_TMP=1 keeps it for a post-mortem.
 */
function runTempDir(): () => void {
  const dir = mkdtempSync(join(tmpdir(), 'sysroot-run-'));
  process.env.TMPDIR = dir;
  return () => {
    if (process.env.SYSROOT_KEEP_TEST_TMP === '1') console.error(`test temp files kept in ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  };
}
