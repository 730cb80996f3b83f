#!/usr/bin/env node
// build-native.mjs - build the optional native addons, run by `npm ci` / `npm install` as this
// package's install script:
//
//   native/memory  glibc malloc settings (src/malloc-tuning.ts); needs only a C compiler
//   native/files   a pull's files written on libuv's pool (src/checkout/file-batch.ts), and an
//                  import's directory scan (src/import/scan-dir.ts); idem
//   native/igzip   ISA-L's deflate and inflate, and a .filez checked against its name in one call
//                  (inflate + OpenSSL's SHA-256, from the node binary) (src/compress/deflate.js);
//                  needs ISA-L's headers too
//   native/hashfiles  a push's files read, hashed (OpenSSL's SHA-256, from the node binary) and
//                  deflated (ISA-L) on libuv's pool instead of worker threads
//                  (src/import/native-pool.ts); needs ISA-L's headers too
//   native/zstd    a pull's pack decoded a frame ahead on libuv's pool (src/pack/frames.ts); needs
//                  libzstd's headers (Debian/Ubuntu: apt-get install libzstd-dev)
//
// Usage: node scripts/build-native.mjs
//
// None is required: without one the registry does the same work, slower, and the install never
// fails on this step. The igzip addon makes deflate ~4.6x cheaper than Node's zlib
// (src/compress/deflate.js has the figures), which is most of a push's and a commit's CPU; without
// ISA-L's headers (Debian/Ubuntu: apt-get install libisal-dev) it is skipped with a note and the
// registry uses Node's zlib: slower, same objects. SYSROOT_DEFLATE=zlib skips it too.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const native = join(dirname(fileURLToPath(import.meta.url)), '..', 'native');
const say = (line) => process.stderr.write(`sysroot-registry: ${line}\n`);

// npm hands its own node-gyp to install scripts; outside npm, use the one npm ships with.
const nodeGyp =
  process.env.npm_config_node_gyp ??
  (process.env.npm_execpath
    ? join(dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js')
    : undefined);
if (!nodeGyp || !existsSync(nodeGyp)) {
  say('node-gyp not found (run this through npm): native addons not built, deflate uses Node zlib');
  process.exit(0);
}

const build = (name) =>
  spawnSync(process.execPath, [nodeGyp, 'rebuild'], { cwd: join(native, name), encoding: 'utf8' });

const m = build('memory');
if (m.status === 0) say('built native/memory (malloc settings)');
else say(`native/memory failed to build (exit ${m.status}): glibc's malloc defaults stay (more page faults)`);

const f = build('files');
if (f.status === 0)
  say(
    'built native/files (pulls write their files beside the decompression; imports scan directories in one call)',
  );
else
  say(
    `native/files failed to build (exit ${f.status}): pulls write their files, and imports read directories, on the main thread (slower)`,
  );

const z = build('zstd');
if (z.status === 0) say('built native/zstd (pulls decode their packs beside the checkout)');
else {
  const out = `${z.stdout ?? ''}${z.stderr ?? ''}`;
  say(
    /zstd\.h|-lzstd/.test(out)
      ? "libzstd's headers not found: native/zstd not built, so a pull decodes its pack on the main thread (slower); apt-get install libzstd-dev, then npm rebuild"
      : `native/zstd failed to build (exit ${z.status}): a pull decodes its pack on the main thread (slower)`,
  );
}

if (process.env.SYSROOT_DEFLATE === 'zlib') {
  say('SYSROOT_DEFLATE=zlib: not building native/igzip');
  process.exit(0);
}
const r = build('igzip');
if (r.status === 0) {
  say('built native/igzip (ISA-L deflate)');
  const h = build('hashfiles');
  if (h.status === 0) say("built native/hashfiles (a push hashes and deflates on libuv's pool)");
  else say(`native/hashfiles failed to build (exit ${h.status}): a push hashes on worker threads (slower)`);
  process.exit(0);
}
const output = `${r.stdout ?? ''}${r.stderr ?? ''}`;
const noIsal = /isa-l\/igzip_lib\.h|-lisal/.test(output);
say(
  noIsal
    ? 'ISA-L not found: native/igzip not built, so deflate uses Node zlib (~4.6x the CPU).'
    : `native/igzip failed to build (exit ${r.status}), so deflate uses Node zlib (~4.6x the CPU):`,
);
if (!noIsal) process.stderr.write(`${output.split('\n').slice(-15).join('\n')}\n`);
say('for fast pushes and commits: apt-get install libisal-dev (Debian/Ubuntu), then npm rebuild');
