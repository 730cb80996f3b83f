/**
 * Issue 6, point 8, the CI-sized run: 32 pulling clients (28 object by object as ostree pulls, 4 by
 * pack as `sysroot pull` does) and 1 pusher for 12 s against one `sysroot serve` → every pull
 * verified, zero errors. The 60 s run is test/soak/load.test.ts (`npm run soak`); its figures are in
 * docs/reliability.md.
 */
import { describe, expect, it } from 'vitest';
import { stopAllServers } from './helpers/killable-serve.js';
import { runLoad } from './helpers/load.js';

const SECONDS = Number(process.env.LOAD_SECONDS ?? 12);

describe(`32 pullers and 1 pusher for ${SECONDS} s`, () => {
  it(
    'verifies every pull, with zero errors',
    async () => {
      try {
        const f = await runLoad({ seconds: SECONDS, objectPullers: 28, packPullers: 4 });
        console.log(`load: ${JSON.stringify(f)}`);
        expect(f.errors).toEqual([]);
        expect(f.strangers).toEqual([]);
        expect(f.pushes).toBeGreaterThanOrEqual(2);
        expect(f.pulls.objects).toBeGreaterThanOrEqual(24);
        expect(f.pulls.packs).toBeGreaterThanOrEqual(8);
      } finally {
        await stopAllServers();
      }
    },
    120_000 + SECONDS * 1000,
  );
});
