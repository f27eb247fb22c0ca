/**
 * A full first sync of a 1,000,000-member cohort to the Braze stand-in: the gateway's pull end to
 * end (cohort list, export request, polls, the 302 to the pre-signed URL, a gzip CSV streamed
 * through the parser, the diff against an empty snapshot, 13,334 `/users/track` requests of 75
 * attribute objects through the shared BrazeClient, the snapshot written to Kafka), in members
 * per second. The bound is Braze's: 3,000 requests per 3 s per workspace at 75 objects a request,
 * 75,000 members/s; the ratio is to that bound (1 would be the request budget spent to the last
 * request). The stand-ins run in child processes when run from dist/.
 *
 *   BENCH_COHORT_SYNC_MEMBERS  cohort size (default 1,000,000)
 */
import { systemClock } from '../src/clock.js';
import { loadConfig } from '../src/config/config.js';
import { BrazeClient } from '../src/amplitude-to-braze/braze-client.js';
import { buildCohortSync } from '../src/cohorts/cohort-sync.js';
import { startMockCluster } from '../src/demo/mock-cluster.js';
import { startAmplitudeCohortStandIn, type AmplitudeCohortStandIn } from '../src/demo/standins/amplitude-cohorts.js';
import { startBrazeStandIn, type BrazeStandIn } from '../src/demo/standins/braze.js';
import { HealthRegistry } from '../src/health/connector-health.js';
import { createKafka } from '../src/kafka/client.js';
import { Metrics } from '../src/observability/metrics.js';
import { envInt, fmt, note, roundRatio, silentLogger, type BenchResult } from './common.js';
import { startStandIn } from './support.js';

const COHORT = 'bench1m';

export async function runCohortSyncBench(): Promise<BenchResult[]> {
  const n = envInt('BENCH_COHORT_SYNC_MEMBERS', 1_000_000);
  const perRequest = 75;
  const budget = { requests: 3_000, windowMs: 3_000 };
  const bound = (budget.requests / (budget.windowMs / 1000)) * perRequest;

  const cluster = await startMockCluster({ brokers: 1, topics: [{ name: 'gateway.cohorts', partitions: 8 }] });
  const braze = await startStandIn<BrazeStandIn, { cpuMs: number; requests: number; accepted: number; max: number }>('Braze stand-in', {
    module: new URL('../src/demo/standins/braze.js', import.meta.url),
    start: 'startBrazeStandIn',
    options: { apiKey: 'bench-key', rateLimit: { requests: budget.requests, windowMs: budget.windowMs } },
    stats: 'requests: s.stats.requests, accepted: s.stats.acceptedObjects, max: s.stats.maxAttributesInRequest',
    startHere: () => startBrazeStandIn({ apiKey: 'bench-key', rateLimit: budget }),
    statsHere: (s) => ({ requests: s.stats.requests, accepted: s.stats.acceptedObjects, max: s.stats.maxAttributesInRequest }),
  });
  const lastComputed = Math.floor(Date.now() / 1000);
  const amp = await startStandIn<AmplitudeCohortStandIn, { cpuMs: number; exports: number }>('Amplitude cohort stand-in', {
    module: new URL('../src/demo/standins/amplitude-cohorts.js', import.meta.url),
    start: 'startAmplitudeCohortStandIn',
    options: { apiKey: 'k', secretKey: 's', generated: [{ id: COHORT, name: 'Bench', count: n, lastComputed }] },
    stats: 'exports: s.stats.exportRequests',
    startHere: () => startAmplitudeCohortStandIn({ apiKey: 'k', secretKey: 's', generated: [{ id: COHORT, name: 'Bench', count: n, lastComputed }] }),
    statsHere: (s) => ({ exports: s.stats.exportRequests }),
  });

  const config = loadConfig({
    KAFKA_BROKERS: cluster.bootstrap,
    KAFKA_FETCH_MAX_WAIT_MS: '100',
    KAFKA_GROUP_ID: `bench-cohort-${Date.now()}`,
    BRAZE_REST_ENDPOINT: braze.url,
    BRAZE_API_KEY: 'bench-key',
    AMPLITUDE_API_KEY: 'k',
    AMPLITUDE_SECRET_KEY: 's',
    AMPLITUDE_API_URL: amp.url,
    COHORT_SYNCS: `${COHORT}:once`,
    COHORT_POLL_BASE_MS: '50',
    COHORT_BRAZE_CONCURRENCY: '16',
    LOG_LEVEL: 'silent',
  });
  const logger = silentLogger();
  const kafka = createKafka(config.kafka, logger);
  const producer = kafka.producer({ allowAutoTopicCreation: true });
  await producer.connect();
  const client = new BrazeClient(config.braze!, systemClock);
  const sync = buildCohortSync({ config, kafka, producer, braze: client, health: new HealthRegistry(systemClock), metrics: new Metrics({ defaultMetrics: false }), logger, clock: systemClock, schedule: false });
  try {
    await sync.start();
    note(`  first sync of a ${fmt(n)}-member cohort (stand-ins ${braze.separate ? 'in child processes' : 'in this process'})`);
    const t = performance.now();
    const report = await sync.runNow(COHORT);
    const seconds = (performance.now() - t) / 1000;
    if (report.result !== 'success' || report.adds !== n) throw new Error(`the run did not deliver: ${JSON.stringify(report)}`);
    const bs = await braze.stats();
    const as = await amp.stats();
    const rate = n / seconds;
    note(`  ${fmt(n)} members in ${seconds.toFixed(1)} s: ${fmt(rate)} members/s; ${fmt(bs.requests)} Braze requests of at most ${bs.max} objects, ${fmt(bs.accepted)} accepted; ${as.exports} export; bound ${fmt(bound)} members/s`);
    return [
      { bench: 'cohort_sync_braze_bound', value: bound, unit: 'members/s', baseline: 'cohort_sync_braze_bound', ratio: 1 },
      { bench: 'cohort_first_sync', value: Math.round(rate), unit: 'members/s', baseline: 'cohort_sync_braze_bound', ratio: roundRatio(rate / bound) },
    ];
  } finally {
    await sync.close();
    await client.close();
    await producer.disconnect();
    await braze.close();
    await amp.close();
    await cluster.stop();
  }
}
