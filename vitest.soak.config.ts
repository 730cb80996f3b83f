import { defineConfig } from 'vitest/config';

// `npm run soak`: the long variants of the reliability tests (docs/reliability.md), too slow for CI.
export default defineConfig({
  test: {
    include: ['test/soak/**/*.test.ts'],
    globalSetup: ['test/setup/global.ts'],
    testTimeout: 3_600_000,
    hookTimeout: 600_000,
    maxWorkers: 1,
  },
});
