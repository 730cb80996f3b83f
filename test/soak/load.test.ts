/**
 * Issue 6, point 8 in full: 32 pulling clients (28 object by object as ostree pulls, 4 by pack as
 * `sysroot pull` does) and 1 pusher for 60 s against one `sysroot serve` → every pull verified, zero
 * errors; the figures (p50/p99 object latency, pulls completed) go to docs/reliability.md.
 */
import { describe, expect, it } from 'vitest';
import { stopAllServers } from '../helpers/killable-serve.js';
import { runLoad } from '../helpers/load.js';

const SECONDS = Number(process.env.LOAD_SECONDS ?? 60);

describe(`soak: 32 pullers and 1 pusher for ${SECONDS} s`, () => {
  it('verifies every pull, with zero errors', async () => {
    try {
      const f = await runLoad({ seconds: SECONDS, objectPullers: 28, packPullers: 4 });
      console.log(`load: ${JSON.stringify(f, null, 2)}`);
      expect(f.errors).toEqual([]);
      expect(f.strangers).toEqual([]);
      expect(f.pushes).toBeGreaterThanOrEqual(10);
      expect(f.pulls.objects).toBeGreaterThanOrEqual(28);
      expect(f.pulls.packs).toBeGreaterThanOrEqual(4);
    } finally {
      await stopAllServers();
    }
  });
});
