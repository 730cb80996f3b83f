/**
 * src/malloc-tuning.ts and its addon (native/memory): on glibc the settings are taken; settings the
 * user gave glibc are left alone. What the settings buy (fewer page faults) is measured by the
 * benchmarks, not here: a fault count depends on the machine and on when V8 frees buffers.
 */
import { existsSync } from 'node:fs';
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
});
