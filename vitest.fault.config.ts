import { defineConfig } from 'vitest/config';

/** Long fault runs: `npm run test:fault` (not part of `npm test`). */
export default defineConfig({
  test: {
    include: ['test/fault/**/*.fault.ts'],
    testTimeout: 600_000,
    hookTimeout: 120_000,
    pool: 'forks',
    maxWorkers: 1,
  },
});
