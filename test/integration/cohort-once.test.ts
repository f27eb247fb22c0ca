/**
 * The `once` cadence with the cadence timers on (the other cohort tests drive runs by hand): the
 * sync runs at start, exactly once, and no later tick runs it again, while a `daily` sync in the
 * same gateway (its interval shortened) keeps ticking; after a restart a `once` sync whose cohort
 * moved neither exports nor notifies.
 */
import type { Producer } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { BrazeClient } from '../../src/amplitude-to-braze/braze-client.js';
import { systemClock } from '../../src/clock.js';
import { buildCohortSync, type CohortSync } from '../../src/cohorts/cohort-sync.js';
import { startAmplitudeCohortStandIn } from '../../src/demo/standins/amplitude-cohorts.js';
import { startBrazeStandIn } from '../../src/demo/standins/braze.js';
import { HealthRegistry } from '../../src/health/connector-health.js';
import type { Notification } from '../../src/health/notify.js';
import { createKafka } from '../../src/kafka/client.js';
import { Metrics } from '../../src/observability/metrics.js';
import { memoryLogger, testConfig, useMockCluster, waitFor } from '../support/harness.js';
import { AMP_KEY, AMP_SECRET, BRAZE_KEY, brazeChanges, members } from '../support/cohort-harness.js';

const ONCE = 'oncecoh';
const DAILY = 'dailycoh';

describe('the once cadence', () => {
  const ctx = useMockCluster();

  it('runs at start exactly once and never on a later tick, while a daily sync keeps ticking', async () => {
    const amp = await startAmplitudeCohortStandIn({ apiKey: AMP_KEY, secretKey: AMP_SECRET });
    ctx.cleanups.push(() => amp.close());
    const braze = await startBrazeStandIn({ apiKey: BRAZE_KEY });
    ctx.cleanups.push(() => braze.close());
    const topic = `gateway.cohorts.once-${Date.now().toString(36)}`;
    await ctx.cluster.createTopic(topic, 3);
    const config = testConfig({
      KAFKA_BROKERS: ctx.cluster.bootstrap,
      KAFKA_GROUP_ID: `cohort-once-${Date.now().toString(36)}`,
      BRAZE_REST_ENDPOINT: braze.url,
      BRAZE_API_KEY: BRAZE_KEY,
      AMPLITUDE_API_KEY: AMP_KEY,
      AMPLITUDE_SECRET_KEY: AMP_SECRET,
      AMPLITUDE_API_URL: amp.url,
      TOPIC_COHORTS: topic,
      COHORT_SYNCS: `${ONCE}:once,${DAILY}:daily`,
      COHORT_DAILY_INTERVAL_MS: '1000',
      COHORT_RETRY_FAILED_RUN_MS: '100',
      COHORT_POLL_BASE_MS: '10',
      COHORT_POLL_MAX_MS: '40',
    });
    const { logger } = memoryLogger('silent');
    const kafka = createKafka(config.kafka, logger);
    const producer: Producer = kafka.producer({ allowAutoTopicCreation: true });
    await producer.connect();
    ctx.cleanups.push(() => producer.disconnect());
    const health = new HealthRegistry(systemClock);
    const metrics = new Metrics({ defaultMetrics: false });
    const notes: Notification[] = [];
    const notifier = { notify: (n: Notification) => notes.push(n), idle: async () => undefined, close: async () => undefined };
    const build = async (): Promise<{ sync: CohortSync; client: BrazeClient }> => {
      const client = new BrazeClient(config.braze!, systemClock);
      // schedule on (the default): runs at start and on the cadence, as in the gateway
      const sync = buildCohortSync({ config, kafka, producer, braze: client, health, metrics, logger, clock: systemClock, notifier });
      await sync.start();
      return { sync, client };
    };
    const runs = (id: string, result?: string) => metrics.value('gateway_cohort_runs_total', { connector: `cohort:${id}`, ...(result ? { result } : {}) });
    const syncOf = (s: CohortSync, id: string) => s.status().syncs.find((x) => x.cohort_id === id)!;

    amp.setCohort({ id: ONCE, name: 'Launch audience', members: members(0, 30), lastComputed: 1_731_402_000 });
    amp.setCohort({ id: DAILY, name: 'Daily audience', members: members(100, 110), lastComputed: 1_731_402_000 });
    let g = await build();
    ctx.cleanups.push(async () => {
      await g.sync.close();
      await g.client.close();
    });
    await waitFor(() => runs(ONCE), (n) => n >= 1, 10_000, 'the once sync\'s run at start');
    expect(await runs(ONCE, 'success')).toBe(1);
    expect(brazeChanges(braze, ONCE)).toHaveLength(30);
    expect(syncOf(g.sync, ONCE)).toMatchObject({ state: 'synced', members: 30, next_run: null });

    // the cohort moves in Amplitude; the daily sync ticks (every second here) at least twice more,
    // the once sync never runs again
    amp.setCohort({ id: ONCE, name: 'Launch audience', members: members(0, 45), lastComputed: 1_731_500_000 });
    const dailyAfterStart = await waitFor(() => runs(DAILY), (n) => n >= 1, 10_000, 'the daily sync\'s run at start');
    await waitFor(() => runs(DAILY), (n) => n >= dailyAfterStart + 2, 10_000, 'two more daily ticks');
    expect(syncOf(g.sync, DAILY).next_run).not.toBeNull();
    expect(await runs(ONCE)).toBe(1);
    expect(syncOf(g.sync, ONCE)).toMatchObject({ members: 30, next_run: null });
    expect(brazeChanges(braze, ONCE)).toHaveLength(30);
    const onceNotes = notes.filter((n) => n.subject === `cohort:${ONCE}`);
    expect(onceNotes.map((n) => n.event)).toEqual(['run_succeeded']);

    // a restart runs it at start, which finds it done: no export, nothing sent, no notification
    const exports = amp.stats.exportRequests;
    await g.sync.close();
    await g.client.close();
    g = await build();
    await waitFor(() => runs(ONCE), (n) => n >= 2, 10_000, 'the once sync\'s run at the restart');
    expect(await runs(ONCE, 'skipped')).toBe(1);
    expect(syncOf(g.sync, ONCE)).toMatchObject({ members: 30, next_run: null, last_run: { result: 'skipped', skipped_because: 'once_done' } });
    // the daily sync's run at the restart is the only export since (its cohort did not move: none)
    await waitFor(() => runs(DAILY), (n) => n >= dailyAfterStart + 4, 10_000, 'the daily sync ticking after the restart');
    expect(amp.stats.exportRequests).toBe(exports);
    expect(brazeChanges(braze, ONCE)).toHaveLength(30);
    expect(notes.filter((n) => n.subject === `cohort:${ONCE}`)).toHaveLength(1);
  });
});
