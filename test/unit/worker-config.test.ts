import { describe, expect, it } from 'vitest';
import { Counter, Gauge } from 'prom-client';
import { loadConfig } from '../../src/config/config.js';
import { Metrics } from '../../src/observability/metrics.js';
import { budgetShare, primaryConfig, workerConfig, workerInstanceId } from '../../src/workers/worker-config.js';

const ENV = {
  KAFKA_BROKERS: 'kafka:9092',
  BRAZE_REST_ENDPOINT: 'https://rest.iad-01.braze.com',
  BRAZE_API_KEY: 'k',
  AMPLITUDE_API_KEY: 'a',
  CURRENTS_TOKEN: 't',
  GATEWAY_INSTANCE_ID: 'gw-1',
};

describe('GATEWAY_WORKERS configuration', () => {
  it.each([
    // total, processes, share
    [3000, 1, 3000],
    [3000, 2, 1500],
    [3000, 3, 1000],
    [3000, 7, 428],
    [5, 8, 1],
    [1, 2, 1],
  ])('a budget of %i requests over %i processes gives each %i', (total, n, share) => {
    expect(budgetShare(total, n)).toBe(share);
  });

  it('defaults to one process, and refuses 0 or a word', () => {
    expect(loadConfig(ENV).workers).toBe(1);
    expect(loadConfig({ ...ENV, GATEWAY_WORKERS: '4' }).workers).toBe(4);
    expect(() => loadConfig({ ...ENV, GATEWAY_WORKERS: '0' })).toThrow(/GATEWAY_WORKERS/);
    expect(() => loadConfig({ ...ENV, GATEWAY_WORKERS: 'two' })).toThrow(/GATEWAY_WORKERS/);
  });

  it('one process: the configuration is used as it is', () => {
    const c = loadConfig(ENV);
    expect(primaryConfig(c)).toBe(c);
  });

  it('the primary keeps every flow and takes its share of the Braze budget', () => {
    const c = loadConfig({ ...ENV, GATEWAY_WORKERS: '3', BRAZE_RATE_LIMIT_REQUESTS: '3000' });
    const p = primaryConfig(c);
    expect(p.braze?.rateLimitRequests).toBe(1000);
    expect(p.currents).toBeDefined();
    expect(p.health.instanceId).toBe('gw-1');
    expect(p.workers).toBe(3);
    expect(c.braze?.rateLimitRequests).toBe(3000); // not mutated
  });

  it('a child consumes only: no Currents route, no cohort sync, no children of its own, its own instance id and client id, its budget share', () => {
    const c = loadConfig({ ...ENV, GATEWAY_WORKERS: '2', COHORT_SYNCS: 'k3x9qpa:hourly', AMPLITUDE_SECRET_KEY: 's' });
    const w = workerConfig(c, 1);
    expect(w.currents).toBeUndefined();
    expect(w.cohorts).toBeUndefined();
    expect(w.workers).toBe(1);
    expect(w.health.instanceId).toBe(workerInstanceId('gw-1', 1));
    expect(w.health.instanceId).toBe('gw-1.w1');
    expect(w.kafka.clientId).toBe('amplitude-braze-gateway-w1');
    expect(w.kafka.groupId).toBe(c.kafka.groupId); // the same consumer groups
    expect(w.braze?.rateLimitRequests).toBe(1500);
    expect(w.amplitude).toEqual(c.amplitude);
    // what the primary sends over IPC must survive a structured clone
    expect(structuredClone(w)).toEqual(w);
  });
});

describe('/metrics with worker processes', () => {
  it('adds each child\'s series with a worker label, keeps a series that names its worker, and sums nothing', async () => {
    const primary = new Metrics({ defaultMetrics: false });
    primary.consumed.inc({ leg: 'outbound' }, 5);
    const restarts = new Counter({ name: 'gateway_worker_restarts_total', help: 'h', labelNames: ['worker'], registers: [primary.registry] });
    restarts.inc({ worker: '1' }, 2);
    const child = new Metrics({ defaultMetrics: false });
    child.consumed.inc({ leg: 'outbound' }, 7);
    // prom-client's 'omit' aggregator would drop a series in cluster aggregation: kept here
    new Gauge({ name: 'gateway_test_omitted', help: 'h', aggregator: 'omit', registers: [child.registry] }).set(3);
    expect(await primary.exposition()).not.toMatch(/worker="0"/); // one process: unchanged
    primary.includeWorkers(async () => [{ worker: '1', metrics: await child.registry.getMetricsAsJSON() }]);
    const text = await primary.exposition();
    expect(text).toMatch(/^gateway_events_consumed_total\{leg="outbound",worker="0"\} 5$/m);
    expect(text).toMatch(/^gateway_events_consumed_total\{leg="outbound",worker="1"\} 7$/m);
    expect(text).toMatch(/^gateway_worker_restarts_total\{worker="1"\} 2$/m);
    expect(text).toMatch(/^gateway_test_omitted\{worker="1"\} 3$/m);
    expect(text.match(/# TYPE gateway_events_consumed_total counter/g)).toHaveLength(1);
  });
});

describe('worker entry scripts', () => {
  it('are found from inside a bundle too (a consumer process, itself bundled from sources, starting its producer thread)', async () => {
    const { existsSync } = await import('node:fs');
    const { fileURLToPath, pathToFileURL } = await import('node:url');
    const { join } = await import('node:path');
    const { workerScript } = await import('../../src/workers/worker-script.js');
    const root = join(fileURLToPath(new URL('.', import.meta.url)), '..', '..');
    const insideBundle = pathToFileURL(join(root, 'node_modules', '.cache', 'gateway-workers', 'consumer-worker-main-1.mjs')).href;
    for (const name of ['producer-worker-thread', 'consumer-worker-main']) {
      expect(existsSync(fileURLToPath(workerScript(insideBundle, name)))).toBe(true);
    }
    expect(() => workerScript(insideBundle, 'no-such-entry')).toThrow(/no-such-entry/);
  });
});
