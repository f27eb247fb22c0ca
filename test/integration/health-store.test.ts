import { describe, expect, it } from 'vitest';
import { Partitioners, type Producer } from 'kafkajs';
import { ManualClock } from '../../src/clock.js';
import { HealthRegistry, type PendingProbe } from '../../src/health/connector-health.js';
import { HealthStore, parseHealthRecord } from '../../src/health/health-store.js';
import { memoryLogger, produce, testKafka, useMockCluster } from '../support/harness.js';

const T0 = Date.UTC(2024, 0, 1);
const H = 3_600_000;

const broker = useMockCluster();
const cleanups = broker.cleanups;

let n = 0;
const freshTopic = (): string => `gateway.state.t${++n}-${Date.now()}`;

function store(topic: string, registry: HealthRegistry, clock: ManualClock, logger = memoryLogger('debug').logger): HealthStore {
  return new HealthStore({ kafka: testKafka(broker.cluster.bootstrap), topic, registry, logger, clock, intervalMs: 60_000, fetchMaxWaitMs: 50, groupIdPrefix: 'health-store-test' });
}

async function producer(): Promise<Producer> {
  const p = testKafka(broker.cluster.bootstrap).producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await p.connect();
  cleanups.push(() => p.disconnect());
  return p;
}

/** records in the topic, from the partitions' end offsets (the test broker never compacts) */
async function recordCount(topic: string): Promise<number> {
  const admin = testKafka(broker.cluster.bootstrap).admin();
  await admin.connect();
  try {
    const offsets = await admin.fetchTopicOffsets(topic);
    return offsets.reduce((sum, o) => sum + Number(o.high) - Number(o.low), 0);
  } finally {
    await admin.disconnect();
  }
}

async function topicExists(topic: string): Promise<boolean> {
  const admin = testKafka(broker.cluster.bootstrap).admin();
  await admin.connect();
  try {
    return (await admin.listTopics()).includes(topic);
  } finally {
    await admin.disconnect();
  }
}

describe('HealthStore on a Kafka-protocol broker', () => {
  it('saves connectors, and a fresh registry after a "restart" gets the latest record of each back', async () => {
    const topic = freshTopic();
    await broker.cluster.createTopic(topic, 3);
    const clock = new ManualClock(T0);
    const before = new HealthRegistry(clock);
    const braze = before.connector('braze', 'braze');
    const amp = before.connector('amplitude', 'amplitude');
    const s1 = store(topic, before, clock);
    s1.start(await producer());

    braze.recordSuccess(100);
    amp.recordSuccess(5);
    await s1.save();

    // amplitude's key goes bad: several updates, each saved
    clock.advance(H);
    amp.recordFailure('retryable', 'timeout');
    await s1.save();
    clock.advance(H);
    amp.recordFailure('auth', 'Invalid API key');
    await s1.save();
    clock.advance(H);
    braze.recordSuccess(50);
    amp.recordFailure('auth', 'Invalid API key');
    await s1.stop(); // the final save carries the last facts
    expect(await recordCount(topic)).toBe(8);
    await s1.save(); // after stop: nothing more is written
    expect(await recordCount(topic)).toBe(8);

    // the restart: a new registry on a later clock, its connectors registered before the load
    const clock2 = new ManualClock(T0 + 5 * H);
    const after = new HealthRegistry(clock2);
    const amp2 = after.connector('amplitude', 'amplitude');
    let pending: PendingProbe = { count: 0 };
    amp2.setPendingProbe(() => pending);
    const log = memoryLogger('debug');
    const s2 = store(topic, after, clock2, log.logger);
    const started = Date.now();
    expect(await s2.load()).toBe(2);
    expect(Date.now() - started).toBeLessThan(15_000);

    expect(after.all().map((c) => c.name).sort()).toEqual(['amplitude', 'braze']);
    const b = after.connector('braze', 'braze').record();
    expect(b).toMatchObject({ name: 'braze', kind: 'braze', lastSuccessMs: T0 + 3 * H, delivered: 150 });
    expect(b.failingSinceMs).toBeUndefined();
    expect(b.lastErrorClass).toBeUndefined();
    expect(b).not.toHaveProperty('version');
    expect(b).not.toHaveProperty('savedAt');

    const a = amp2.record();
    expect(a).toMatchObject({
      name: 'amplitude',
      lastSuccessMs: T0,
      lastAttemptMs: T0 + 3 * H,
      failingSinceMs: T0 + H,
      lastErrorClass: 'auth',
      lastError: 'Invalid API key',
      delivered: 5,
    });
    pending = { count: 3, oldestMs: T0 + 4 * H };
    expect(amp2.snapshot()).toMatchObject({ state: 'failing', secondsSinceLastSuccess: 5 * 3_600 });
    expect(log.lines().some((l) => l.msg === 'connector health restored from the state topic' && l.restored === 2)).toBe(true);
  });

  it('coalesces concurrent saves: a burst costs at most two writes', async () => {
    const topic = freshTopic();
    await broker.cluster.createTopic(topic, 1);
    const clock = new ManualClock(T0);
    const registry = new HealthRegistry(clock);
    registry.connector('braze', 'braze');
    registry.connector('amplitude', 'amplitude');
    const s = store(topic, registry, clock);
    s.start(await producer());
    await Promise.all([s.save(), s.save(), s.save(), s.save(), s.save()]);
    expect(await recordCount(topic)).toBe(4);
    await s.stop();
  });

  it('load() on a topic that does not exist returns 0 quickly and does not create it', async () => {
    const topic = freshTopic();
    const clock = new ManualClock(T0);
    const registry = new HealthRegistry(clock);
    const started = Date.now();
    expect(await store(topic, registry, clock).load()).toBe(0);
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(registry.all()).toHaveLength(0);
    expect(await topicExists(topic)).toBe(false);
  });

  it('load() on an existing, empty topic returns 0 quickly', async () => {
    const topic = freshTopic();
    await broker.cluster.createTopic(topic, 4);
    const clock = new ManualClock(T0);
    const started = Date.now();
    expect(await store(topic, new HealthRegistry(clock), clock).load()).toBe(0);
    expect(Date.now() - started).toBeLessThan(3_000);
  });

  it('skips garbage records (logging them) without losing the valid record before them; honours tombstones', async () => {
    const topic = freshTopic();
    await broker.cluster.createTopic(topic, 2);
    const good = (name: string, kind: string, extra: Record<string, unknown> = {}) =>
      JSON.stringify({ version: 1, savedAt: T0, name, kind, delivered: 7, lastSuccessMs: T0 - H, ...extra });
    await produce(broker.cluster.bootstrap, topic, [
      { key: 'braze', value: good('braze', 'braze', { failingSinceMs: T0 - 1_000, lastErrorClass: 'retryable', lastError: 'timeout' }) },
      { key: 'braze', value: 'not json {' },
      { key: 'braze', value: JSON.stringify([1, 2, 3]) },
      { key: 'braze', value: good('braze', 'braze', { version: 2 }) },
      { key: 'braze', value: good('braze', 'braze', { lastErrorClass: 'gremlins' }) },
      { key: 'braze', value: good('braze', 'braze', { delivered: -1 }) },
      { key: 'braze', value: good('braze', 'braze', { lastSuccessMs: 'yesterday' }) },
      { key: 'braze', value: good('amplitude', 'amplitude') }, // key and record disagree
      { key: null, value: good('braze', 'braze') },
      { key: 'amplitude', value: good('amplitude', 'amplitude') },
      { key: 'amplitude', value: null }, // tombstone: the connector was removed
      { key: 'cohorts', value: good('cohorts', 'teapot') },
    ]);

    const clock = new ManualClock(T0);
    const registry = new HealthRegistry(clock);
    const log = memoryLogger('debug');
    expect(await store(topic, registry, clock, log.logger).load()).toBe(1);
    expect(registry.all().map((c) => c.name)).toEqual(['braze']);
    expect(registry.connector('braze', 'braze').record()).toMatchObject({
      lastSuccessMs: T0 - H,
      failingSinceMs: T0 - 1_000,
      lastErrorClass: 'retryable',
      lastError: 'timeout',
      delivered: 7,
    });
    const skipped = log.lines().filter((l) => l.msg === 'connector health: skipping an unreadable state record');
    expect(skipped).toHaveLength(9);
    expect(skipped.map((l) => l.why)).toEqual(
      expect.arrayContaining(['not JSON', 'not a JSON object', 'unknown version 2', 'unknown lastErrorClass "gremlins"', 'no key', 'unknown kind "teapot"']),
    );
  });

  it('save() before start() does nothing', async () => {
    const topic = freshTopic();
    const clock = new ManualClock(T0);
    const registry = new HealthRegistry(clock);
    registry.connector('braze', 'braze');
    await store(topic, registry, clock).save();
    expect(await topicExists(topic)).toBe(false);
  });
});

describe('parseHealthRecord', () => {
  it('accepts what the store writes and drops unknown fields', () => {
    const r = parseHealthRecord(JSON.stringify({ version: 1, savedAt: 5, name: 'braze', kind: 'braze', delivered: 1, lastAttemptMs: 4, surprise: true, lastError: null }));
    expect(r).toEqual({ ok: true, record: { version: 1, savedAt: 5, name: 'braze', kind: 'braze', delivered: 1, lastAttemptMs: 4 } });
  });

  it.each([
    ['{"version":1}', 'savedAt is not a time'],
    ['{"version":1,"savedAt":1,"name":"","kind":"braze","delivered":0}', 'name is missing'],
    ['{"version":1,"savedAt":1,"name":"b","kind":"braze"}', 'delivered is not a count'],
    ['{"version":1,"savedAt":1,"name":"b","kind":"braze","delivered":0,"expiredAtMs":-5}', 'expiredAtMs is not a time'],
    ['{"version":1,"savedAt":1,"name":"b","kind":"braze","delivered":0,"lastError":42}', 'lastError is not a string'],
    ['null', 'not a JSON object'],
  ])('rejects %s', (text, why) => {
    expect(parseHealthRecord(text)).toEqual({ ok: false, why });
  });
});
