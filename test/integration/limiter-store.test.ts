import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import type { LimitSettings } from '../../src/config/config.js';
import { IdPacer, type PacedIds } from '../../src/braze-to-amplitude/id-pacer.js';
import { LimiterStore } from '../../src/braze-to-amplitude/limiter-store.js';
import { callingOnJoin } from '../../src/kafka/join-hook.js';
import { Metrics } from '../../src/observability/metrics.js';
import { createLogger } from '../../src/observability/logger.js';
import { testKafka, useMockCluster, waitFor } from '../support/harness.js';
import { coPartitionedAssigner } from '../../src/braze-to-amplitude/co-partitioned-assigner.js';

const broker = useMockCluster();

const SETTINGS: LimitSettings = {
  enabled: true,
  eventsPerSecond: 1_000,
  dailyQuota: 20,
  quotaWindowMs: 3_000,
  quotaBucketMs: 500,
  maxDelayMs: 2_000,
  pacingJitterMs: 0,
  quotaAction: 'park',
  idleEvictMs: 600_000,
  retryMaxHeld: 100_000,
  quotaParkMaxHeldPerPartition: 1_000,
  saveIntervalMs: 30_000,
};

let topicSeq = 0;

async function instance(clock: ManualClock, topic: string, settings: Partial<LimitSettings> = {}, chunkBytes?: number) {
  const kafka = testKafka(broker.cluster.bootstrap);
  const producer = kafka.producer({ allowAutoTopicCreation: true });
  await producer.connect();
  broker.cleanups.push(() => producer.disconnect());
  const pacer = new IdPacer({ ...SETTINGS, ...settings }, clock, new Metrics({ defaultMetrics: false }));
  const store = new LimiterStore({
    kafka,
    topic,
    pacer,
    logger: createLogger('silent'),
    clock,
    intervalMs: 60_000,
    fetchMaxWaitMs: 50,
    groupIdPrefix: 'test.limits-reader',
    ...(chunkBytes ? { chunkBytes } : {}),
  });
  store.start(producer);
  broker.cleanups.push(() => store.stop());
  return { pacer, store };
}

const dev = (id: string, partition: number): PacedIds => ({ key: id, deviceId: id, partition });

/** One event every 50 ms (well inside the rate) until the first refusal. */
function run(p: IdPacer, clock: ManualClock, from: number, to: number, id = 'device-q', partition = 3): { sent: number; refusal?: unknown } {
  let sent = 0;
  for (let t = from; t < to; t += 50) {
    clock.set(t);
    const v = p.decide(dev(id, partition));
    if (v.kind !== 'send') return { sent, refusal: v };
    sent++;
  }
  return { sent };
}

describe('limiter store (gateway.limits)', () => {
  it('a restart in the middle of a (shortened) quota window: the restored counts stop the id at the same point', async () => {
    const topic = `gateway.limits.t${++topicSeq}`;
    const t0 = 1_700_000_000_000;
    // without a restart
    const refClock = new ManualClock(t0);
    const refPacer = new IdPacer(SETTINGS, refClock, new Metrics({ defaultMetrics: false }));
    const uninterrupted = run(refPacer, refClock, t0, t0 + 3_000);
    expect(uninterrupted.sent).toBe(20);

    // the same traffic; the first process stops after 12 events (its last save on stop)
    const clockA = new ManualClock(t0);
    const a = await instance(clockA, topic);
    expect(await a.store.load([3])).toBe(0);
    const before = run(a.pacer, clockA, t0, t0 + 600);
    expect(before.sent).toBe(12);
    await a.store.stop();

    // the next process is assigned the partition and restores it before deciding
    const clockB = new ManualClock(t0 + 600);
    const b = await instance(clockB, topic);
    expect(await b.store.onAssigned([3])).toBe(1);
    const after = run(b.pacer, clockB, t0 + 600, t0 + 3_000);
    expect(before.sent + after.sent).toBe(uninterrupted.sent);
    expect(after.refusal).toEqual(uninterrupted.refusal);
  }, 30_000);

  it('restores a partition first seen in an event (before any assignment was announced), holding its events meanwhile', async () => {
    const topic = `gateway.limits.t${++topicSeq}`;
    const t0 = 1_700_000_000_000;
    const clockA = new ManualClock(t0);
    const a = await instance(clockA, topic);
    await a.store.onAssigned([7]);
    expect(run(a.pacer, clockA, t0, t0 + 600, 'device-r', 7).sent).toBe(12);
    await a.store.stop();
    const clockB = new ManualClock(t0 + 600);
    const b = await instance(clockB, topic);
    expect(b.pacer.decide(dev('device-r', 7))).toMatchObject({ kind: 'hold' });
    b.pacer.release('device-r');
    await waitFor(() => b.pacer.isRestoring(7), (r) => !r, 10_000, 'the restore');
    expect(run(b.pacer, clockB, t0 + 600, t0 + 3_000, 'device-r', 7).sent).toBe(8);
  }, 30_000);

  it('a partition restored from a retry-tier event before it was assigned is restored again on assignment, from the previous owner\'s last save', async () => {
    const topic = `gateway.limits.t${++topicSeq}`;
    const t0 = 1_700_000_000_000;
    const clockA = new ManualClock(t0);
    const a = await instance(clockA, topic);
    await a.store.onAssigned([7]);
    expect(run(a.pacer, clockA, t0, t0 + 500, 'device-m', 7).sent).toBe(10);
    await a.store.saveAll();
    // B reads partition 7 of a park tier before it owns the Currents partition: it loads A's save of then
    const clockB = new ManualClock(t0 + 500);
    const b = await instance(clockB, topic);
    expect(b.pacer.decideRetried(dev('device-m', 7), 'short')).toMatchObject({ kind: 'hold' });
    b.pacer.release('device-m');
    await waitFor(() => b.pacer.isRestoring(7), (r) => !r, 10_000, 'the early restore');
    expect(b.pacer.decideRetried(dev('device-m', 7), 'short')).toEqual({ kind: 'send' });
    expect(b.pacer.decideRetried(dev('device-m', 7), 'short')).toEqual({ kind: 'send' });
    // A counts on, then loses the partition (saved as it goes) and B is assigned it
    expect(run(a.pacer, clockA, t0 + 500, t0 + 700, 'device-m', 7).sent).toBe(4);
    await a.store.onAssigned([]);
    expect(await b.store.onAssigned([7])).toBe(1);
    // 10 + 4 counted by A, 2 by B: 4 left of 20
    expect(run(b.pacer, clockB, t0 + 700, t0 + 2_000, 'device-m', 7).sent).toBe(4);
  }, 30_000);

  it('saves the partitions it owns when a rebalance starts, so the next owner reads the counts as of then', async () => {
    const topic = `gateway.limits.t${++topicSeq}`;
    const currents = `braze.currents.limits-t${topicSeq}`;
    await broker.cluster.createTopic(currents, 2);
    const t0 = 1_700_000_000_000;
    const clock = new ManualClock(t0);
    const a = await instance(clock, topic);
    await a.store.onAssigned([0, 1]);
    const count = (n: number): void => {
      for (let i = 0; i < n; i++) expect(a.pacer.decide(dev('device-s', 1)).kind).toBe('send');
    };
    /** what a member assigned partition 1 now would restore for the device */
    const restored = async (): Promise<number> => {
      const pacer = new IdPacer(SETTINGS, new ManualClock(t0 + 1_000), new Metrics({ defaultMetrics: false }));
      const store = new LimiterStore({ kafka: testKafka(broker.cluster.bootstrap), topic, pacer, logger: createLogger('silent'), clock: new ManualClock(t0), intervalMs: 60_000, fetchMaxWaitMs: 50, groupIdPrefix: 'test.limits-probe' });
      await store.load([1]);
      return Math.round(pacer.dailyUsage({ deviceId: 'device-s', partition: 1 }) * SETTINGS.dailyQuota);
    };
    const member = async (instanceId: string, store?: LimiterStore): Promise<{ joins: () => number }> => {
      const assigner = coPartitionedAssigner(instanceId);
      const consumer = testKafka(broker.cluster.bootstrap).consumer({
        groupId: `g-${currents}`,
        maxWaitTimeInMs: 50,
        sessionTimeout: 10_000,
        heartbeatInterval: 300,
        partitionAssigners: [store ? callingOnJoin(assigner, () => void store.onRebalancing()) : assigner],
      });
      let joins = 0;
      consumer.on(consumer.events.GROUP_JOIN, () => joins++);
      broker.cleanups.push(() => consumer.disconnect());
      await consumer.connect();
      await consumer.subscribe({ topic: currents, fromBeginning: true });
      await consumer.run({ eachMessage: async () => undefined });
      return { joins: () => joins };
    };
    count(5);
    const first = await member('inst-a', a.store);
    await waitFor(first.joins, (n) => n >= 1, 20_000, 'the first member in the group');
    // joining is the start of a rebalance too
    await waitFor(restored, (n) => n === 5, 20_000, 'the counts saved as the member joined');
    count(3);
    // another instance joins: the first member rejoins, and saves what it counted since
    await member('inst-b');
    await waitFor(first.joins, (n) => n >= 2, 30_000, 'the rebalance');
    expect(await waitFor(restored, (n) => n === 8, 20_000, 'the counts saved as the rebalance started')).toBe(8);
  }, 90_000);

  it('splits a large partition into chunks, keeps one complete generation, and hands partitions over on a rebalance', async () => {
    const topic = `gateway.limits.t${++topicSeq}`;
    const t0 = 1_700_000_000_000;
    const clock = new ManualClock(t0);
    const a = await instance(clock, topic, { dailyQuota: 500_000, quotaWindowMs: 86_400_000, quotaBucketMs: 3_600_000 }, 16 * 1024);
    await a.store.onAssigned([0, 1]);
    const ids = Array.from({ length: 20_000 }, (_, i) => `device-${String(i).padStart(8, '0')}`);
    for (let k = 0; k < 3; k++) for (const id of ids) a.pacer.decide(dev(id, 1));
    a.pacer.decide(dev('only-in-0', 0));
    await a.store.saveAll();
    await a.store.saveAll(); // a second generation, in the other slot
    // a rebalance takes partition 1 away: saved, then dropped
    await a.store.onAssigned([0]);
    expect(a.pacer.heldPartitions()).toEqual([0]);

    const b = await instance(new ManualClock(t0 + 1_000), topic, { dailyQuota: 500_000, quotaWindowMs: 86_400_000, quotaBucketMs: 3_600_000 });
    expect(await b.store.onAssigned([1])).toBe(1);
    for (const id of [ids[0]!, ids[9_999]!, ids[19_999]!]) expect(b.pacer.dailyUsage({ deviceId: id, partition: 1 })).toBeCloseTo(3 / 500_000, 12);
    expect(b.pacer.dailyUsage({ deviceId: 'only-in-0', partition: 1 })).toBe(0);
  }, 60_000);
});
