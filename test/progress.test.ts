import { afterEach, describe, expect, it, vi } from 'vitest';
import { createProgress, silentProgress } from '../src/transfer/progress.js';

describe('progress on stderr', () => {
  const wasTTY = process.stderr.isTTY;
  afterEach(() => {
    process.stderr.isTTY = wasTTY;
    vi.restoreAllMocks();
  });

  it('is silent when stderr is not a terminal (CI logs, pipes)', () => {
    process.stderr.isTTY = false as true;
    expect(createProgress()).toBe(silentProgress);
  });

  it('draws a bar on a terminal (cli-progress is loaded on first use)', () => {
    process.stderr.isTTY = true;
    const written: string[] = [];
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      written.push(String(chunk));
      return true;
    });
    const p = createProgress();
    expect(p).not.toBe(silentProgress);
    p.phase('fetch', 10);
    p.advance(4, 2048);
    p.stop();
    const text = written.join('');
    expect(text).toContain('fetch');
    expect(text).toContain('4/10 objects');
    expect(text).toContain('2.0 KiB');
  });
});
