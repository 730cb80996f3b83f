import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Long variants: `npm run soak` (vitest.soak.config.ts).
    exclude: ['test/soak/**', '**/node_modules/**'],
    globalSetup: ['test/setup/global.ts'],
    testTimeout: 120_000,
    hookTimeout: 600_000,
    // Two cores: the import pool already uses both, so files run two at a time.
    maxWorkers: 2,
  },
});
