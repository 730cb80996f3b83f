#!/usr/bin/env node
// Micro-benchmark of the pack library (src/pack/) on a real Debian sysroot: write a pack of every
// regular file and symlink as content records, then read it back with readPack, verifying everything.
//
//   npm run build && node bench/pack-micro.mjs [--tree DIR] [--level N] [--runs N] [--no-threads]
//
// write = lstat walk + read each file + sha256 (contentChecksum) + PackWriter → a file in the temp
//         directory; "of which packing" is the time spent inside PackWriter (copy, stream hash, zstd).
// read  = readPack over the file (1 MiB reads): decompress, hash every record, check the end record.
// MB/s are of file bytes (the sysroot's size), not of the compressed pack. Peak RSS is the process's
// maxrss after the phase (monotonic, so the read figure includes the write's). Each phase runs
// --runs times; the best run and the median are printed (these 2-core machines are shared and noisy).
import {
  createReadStream,
  createWriteStream,
  lstatSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
} from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { finished } from 'node:stream/promises';
import { contentChecksum } from '../dist/src/objects/index.js';
import { PackWriter, readPack, writableSink } from '../dist/src/pack/index.js';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const TREE = opt('tree', '/var/cache/sysroot-registry/sysroots/amd64-v1');
const LEVEL = Number(opt('level', '3'));
const RUNS = Number(opt('runs', '3'));
const THREADS = !args.includes('--no-threads');
const MB = 1e6;

/** Regular files and symlinks under root, in walk order, with their FileMeta (xattrs left empty). */
function walk(root) {
  const out = [];
  const visit = (dir) => {
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      const st = lstatSync(path);
      if (st.isDirectory()) visit(path);
      else if (st.isFile() || st.isSymbolicLink()) {
        const link = st.isSymbolicLink();
        out.push({
          path,
          meta: {
            uid: st.uid,
            gid: st.gid,
            mode: link ? 0o120777 : st.mode,
            symlinkTarget: link ? readlinkSync(path) : '',
            xattrs: [],
          },
        });
      }
    }
  };
  visit(root);
  return out;
}

async function write(file) {
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const out = createWriteStream(file);
  const w = new PackWriter(writableSink(out), { level: LEVEL, threads: THREADS });
  const seen = new Set();
  let fileBytes = 0;
  let packing = 0;
  let files = 0;
  for (const e of walk(TREE)) {
    const data = e.meta.symlinkTarget ? undefined : readFileSync(e.path);
    const checksum = contentChecksum(e.meta, data);
    files++;
    // Identical files are one object: a pack holds each once (the writer refuses duplicates).
    if (seen.has(checksum)) continue;
    seen.add(checksum);
    fileBytes += data?.length ?? 0;
    const t = performance.now();
    await w.addContent(checksum, e.meta, data);
    packing += performance.now() - t;
  }
  const t = performance.now();
  const summary = await w.finish();
  out.end();
  await finished(out);
  packing += performance.now() - t;
  const cpu = process.cpuUsage(c0);
  return {
    secs: (performance.now() - t0) / 1000,
    packingSecs: packing / 1000,
    cpuSecs: (cpu.user + cpu.system) / 1e6,
    files,
    fileBytes,
    summary,
  };
}

async function read(file) {
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  let records = 0;
  let verified = 0;
  let dataBytes = 0;
  let end;
  for await (const e of readPack(createReadStream(file, { highWaterMark: 1024 * 1024 }))) {
    if (e.type === 'record') records++;
    else if (e.type === 'data') dataBytes += e.chunk.length;
    else if (e.type === 'verified') verified++;
    else end = e.index;
  }
  const cpu = process.cpuUsage(c0);
  if (records !== verified || !end) throw new Error('not every record was verified');
  return {
    secs: (performance.now() - t0) / 1000,
    cpuSecs: (cpu.user + cpu.system) / 1e6,
    records,
    dataBytes,
    end,
  };
}

const rssMb = () => process.resourceUsage().maxRSS / 1024;
const best = (xs) => Math.min(...xs);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const f2 = (x) => x.toFixed(3);

const dir = await mkdtemp(join(tmpdir(), 'pack-micro-'));
try {
  const file = join(dir, 'sysroot.pack');
  const writes = [];
  const reads = [];
  let writeRss = 0;
  for (let i = 0; i < RUNS; i++) {
    writes.push(await write(file));
    writeRss = rssMb();
    reads.push(await read(file));
    if (reads.at(-1).end.checksum !== writes.at(-1).summary.index.checksum) throw new Error('index mismatch');
  }
  const readRss = rssMb();
  const w = writes[0];
  const r = reads[0];
  const ws = writes.map((x) => x.secs);
  const rs = reads.map((x) => x.secs);
  console.log(
    `tree      ${TREE}: ${w.files} files and symlinks, ${w.summary.records} distinct objects, ${(w.fileBytes / MB).toFixed(1)} MB`,
  );
  console.log(
    `pack      ${(w.summary.bytes / MB).toFixed(1)} MB at level ${LEVEL} (${((100 * w.summary.bytes) / w.summary.rawBytes).toFixed(1)}% of ${(w.summary.rawBytes / MB).toFixed(1)} MB raw), ${w.summary.index.frames.length} frames`,
  );
  console.log(
    `write     best ${f2(best(ws))} s (${(w.fileBytes / MB / best(ws)).toFixed(0)} MB/s), median ${f2(median(ws))} s; of which packing best ${f2(best(writes.map((x) => x.packingSecs)))} s; CPU ${f2(median(writes.map((x) => x.cpuSecs)))} s`,
  );
  console.log(
    `read      best ${f2(best(rs))} s (${(w.fileBytes / MB / best(rs)).toFixed(0)} MB/s), median ${f2(median(rs))} s; CPU ${f2(median(reads.map((x) => x.cpuSecs)))} s; ${r.records} records verified`,
  );
  console.log(`peak RSS  ${writeRss.toFixed(0)} MB after writing, ${readRss.toFixed(0)} MB after reading`);
  console.log(`runs      ${RUNS}; write ${ws.map(f2).join(' ')}; read ${rs.map(f2).join(' ')}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
