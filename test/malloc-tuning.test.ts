/**
 * src/malloc-tuning.ts and its addon (native/memory): on glibc the settings are taken; settings the
 * user gave glibc are left alone, and the heap gets transparent huge pages where the kernel gives
 * them. What the settings buy (fewer page faults) is measured by the benchmarks, not here: a fault
 * count depends on the machine and on when V8 frees buffers.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { tuneMalloc } from '../src/malloc-tuning.js';

const addon = fileURLToPath(new URL('../native/memory/build/Release/memory.node', import.meta.url));
const glibc = Boolean(
  (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime,
);

describe('tuneMalloc', () => {
  it('is built by the install script (scripts/build-native.mjs)', () => {
    expect(existsSync(addon), `${addon} missing: run npm rebuild (it needs only a C compiler)`).toBe(true);
  });

  it('applies the settings on glibc, for commands, a push and the server', () => {
    expect(glibc, 'these machines run Debian: glibc').toBe(true);
    expect(tuneMalloc('command', {})).toBe(true);
    expect(tuneMalloc('push', {})).toBe(true);
    expect(tuneMalloc('server', {})).toBe(true);
  });

  it.each([
    ['MALLOC_MMAP_THRESHOLD_', { MALLOC_MMAP_THRESHOLD_: '131072' }],
    ['MALLOC_TRIM_THRESHOLD_', { MALLOC_TRIM_THRESHOLD_: '131072' }],
    ['GLIBC_TUNABLES with a malloc tunable', { GLIBC_TUNABLES: 'glibc.malloc.trim_threshold=131072' }],
  ])('leaves the user’s own settings alone: %s', (_, env) => {
    expect(tuneMalloc('command', env)).toBe(false);
  });

  it('tunes when GLIBC_TUNABLES sets nothing about malloc', () => {
    expect(tuneMalloc('command', { GLIBC_TUNABLES: 'glibc.rtld.optional_static_tls=4096' })).toBe(true);
  });

  it('advises a part of the heap for huge pages, once, and allocations land there', () => {
    // A process of its own: the heap this checks must be fresh, and advised only by this.
    const script = `
      const m = require(${JSON.stringify(addon)});
      const MiB = 1024 * 1024;
      if (!m.tune(32 * MiB, 256 * MiB)) throw new Error('tune refused');
      const advised = m.hugeHeap(64 * MiB, 32 * MiB);
      const again = m.hugeHeap(64 * MiB, 32 * MiB);
      const keep = [];
      for (let i = 0; i < 24; i++) keep.push(Buffer.alloc(MiB, 1));
      const huge = /AnonHugePages:\\s+(\\d+) kB/.exec(require('fs').readFileSync('/proc/self/smaps_rollup', 'utf8'));
      console.log(JSON.stringify({ advised, again, hugeKb: Number(huge?.[1] ?? -1) }));
    `;
    const out = JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' })) as {
      advised: number;
      again: number;
      hugeKb: number;
    };
    const thp = '/sys/kernel/mm/transparent_hugepage/enabled';
    const mode = existsSync(thp) ? /\[(\w+)\]/.exec(readFileSync(thp, 'utf8'))?.[1] : undefined;
    expect(mode, `${thp}: a kernel without transparent huge pages`).toBeDefined();
    // 64 MiB asked, and the heap grew by that and the little it had free; the part of it between
    // two 2 MiB boundaries is advised.
    expect(out.advised).toBeGreaterThanOrEqual(60 * 1024 * 1024);
    expect(out.advised).toBeLessThanOrEqual(96 * 1024 * 1024);
    expect(out.again, 'a second call does nothing').toBe(0);
    // 24 MiB of 1 MiB buffers, all from the advised part: at least some of it in huge pages, unless
    // the machine turned them off ("never").
    if (mode === 'never') expect(out.hugeKb).toBe(0);
    else expect(out.hugeKb, `transparent_hugepage is [${mode}]`).toBeGreaterThanOrEqual(2048);
  });

  it('with populate (the server), faults the advised part in at once', () => {
    const script = `
      const m = require(${JSON.stringify(addon)});
      const MiB = 1024 * 1024;
      const rss = () => Number(/^Rss:\\s+(\\d+) kB/m.exec(require('fs').readFileSync('/proc/self/smaps_rollup', 'utf8'))[1]) * 1024;
      if (!m.tune(32 * MiB, 256 * MiB)) throw new Error('tune refused');
      const before = rss();
      const advised = m.hugeHeap(64 * MiB, 32 * MiB, true);
      console.log(JSON.stringify({ advised, grew: rss() - before }));
    `;
    const out = JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' })) as {
      advised: number;
      grew: number;
    };
    expect(out.advised).toBeGreaterThanOrEqual(60 * 1024 * 1024);
    // MADV_POPULATE_WRITE is Linux 5.14+ (Debian 12's kernel is 6.1): the advised part is resident
    // before anything is allocated in it.
    expect(out.grew).toBeGreaterThanOrEqual(out.advised);
  });
});
