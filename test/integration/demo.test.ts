import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = join(fileURLToPath(new URL('.', import.meta.url)), '..', '..');
const CLI = join(ROOT, 'dist', 'src', 'cli.js');

describe('npm run demo', () => {
  it('runs both legs on the embedded default and prints the summary', () => {
    if (!existsSync(CLI)) execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' });
    // *_FILE variants exported in the operator's shell must not stop the demo: it sets its own secrets
    const env: NodeJS.ProcessEnv = { ...process.env, HTTP_PORT: '0', BRAZE_API_KEY_FILE: '/nonexistent', AMPLITUDE_SECRET_KEY_FILE: '/nonexistent', COHORT_WEBHOOK_TOKEN_FILE: '/nonexistent' };
    delete env.KAFKA_BROKERS;
    const r = spawnSync(process.execPath, [CLI, 'demo', '--events', '3000', '--currents', '600'], { env, encoding: 'utf8', timeout: 120_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('=== demo summary ===');
    expect(r.stdout).toMatch(/consumed 3001, delivered 3000/);
    expect(r.stdout).toContain('dead-lettered: not_json=1');
    expect(r.stdout).toMatch(/stored 600 events .*delivered 600/);
    expect(r.stdout).toMatch(/Amplitude received 600 events \(600 distinct insert_ids\)/);
    expect(r.stdout).toMatch(/braze\s+idle/);
    expect(r.stdout).toMatch(/amplitude\s+idle/);
    // the cohort sync: a pull at start, then webhook pushes, only who entered and who left
    expect(r.stdout).toMatch(/pull at start: cohort \S+ "Repeat buyers \(30d\)" exported .*delivered: 1900 added, 0 removed; skipped without an identifier: no_user_id\+no_device_id=100/);
    expect(r.stdout).toMatch(/webhook pushes \(POST \/cohorts answered 200, 200, 200\): 50 added, 20 removed; the repeated message_id applied once/);
    expect(r.stdout).toMatch(/snapshot: 1930 members in Braze's view, state synced/);
  }, 130_000);
});
