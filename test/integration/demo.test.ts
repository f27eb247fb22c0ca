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
    const env: NodeJS.ProcessEnv = { ...process.env, HTTP_PORT: '0' };
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
  }, 130_000);
});
