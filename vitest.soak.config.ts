import { defineConfig } from 'vitest/config';

/** `npm run soak`: the long variants of the reliability tests (docs/reliability.md), minutes each. */
export default defineConfig({
  test: {
    include: ['test/soak/**/*.test.ts'],
    globalSetup: ['test/setup/global.ts'],
    testTimeout: 1_800_000,
    hookTimeout: 600_000,
    // One at a time: each soak test measures or loads the machine on its own.
    maxWorkers: 1,
  },
});
