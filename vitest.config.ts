import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Integration tests each start their own broker and stand-ins; on a 2-core machine
    // running them side by side only makes each one slower and flakier.
    fileParallelism: false,
    pool: 'forks',
  },
});
