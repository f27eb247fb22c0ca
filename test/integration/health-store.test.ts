import { describe, expect, it } from 'vitest';
import { Partitioners, type Producer } from 'kafkajs';
import { ManualClock } from '../../src/clock.js';
import { HealthRegistry, LEGACY_INSTANCE, type HealthOptions, type PendingProbe } from '../../src/health/connector-health.js';
import { HealthStore, healthRecordKey, parseHealthRecord } from '../../src/health/health-store.js';
import { memoryLogger, produce, readTopic, testKafka, useMockCluster, waitFor } from '../support/harness.js';

const T0 = Date.UTC(2024, 0, 1);
const H = 3_600_000;

const broker = useMockCluster();
const cleanups = broker.cleanups;

let n = 0;
const freshTopic = (): string => `gateway.state.t${++n}-${Date.now()}`;

function store(topic: string, registry: HealthRegistry, clock: ManualClock, logger = memoryLogger('debug').logger): HealthStore {
  const s = new HealthStore({ kafka: testKafka(broker.cluster.bootstrap), topic, registry, logger, clock, intervalMs: 60_000, fetchMaxWaitMs: 50, groupIdPrefix: 'health-store-test' });
  cleanups.push(() => s.close());
  return s;
}

const OPTIONS = { instanceStaleMs: 120_000, rejectionWindowMs: 300_000, rejectionPercent: 50, rejectionMinEvents: 20, dropWindowMs: 48 * H };
/** a registry of one named instance */
function registry(clock: ManualClock, instanceId = 'gw-a', over: Partial<HealthOptions> = {}): HealthRegistry {
  return new HealthRegistry(clock, { ...OPTIONS, instanceId, ...over });
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

  it('skips garbage records (logging them) without losing the valid record before them; honours tombstones; reads records keyed by connector only as an unknown instance', async () => {
    const topic = freshTopic();
    await broker.cluster.createTopic(topic, 2);
    const good = (name: string, kind: string, extra: Record<string, unknown> = {}) =>
      JSON.stringify({ version: 1, savedAt: T0, instance: 'gw-a', name, kind, delivered: 7, lastSuccessMs: T0 - H, ...extra });
    await produce(broker.cluster.bootstrap, topic, [
      { key: 'braze@gw-a', value: good('braze', 'braze', { failingSinceMs: T0 - 1_000, lastErrorClass: 'retryable', lastError: 'timeout' }) },
      { key: 'braze@gw-a', value: 'not json {' },
      { key: 'braze@gw-a', value: JSON.stringify([1, 2, 3]) },
      { key: 'braze@gw-a', value: good('braze', 'braze', { version: 2 }) },
      { key: 'braze@gw-a', value: good('braze', 'braze', { lastErrorClass: 'gremlins' }) },
      { key: 'braze@gw-a', value: good('braze', 'braze', { delivered: -1 }) },
      { key: 'braze@gw-a', value: good('braze', 'braze', { lastSuccessMs: 'yesterday' }) },
      { key: 'braze@gw-a', value: good('amplitude', 'amplitude') }, // key and record disagree
      { key: 'braze@gw-b', value: good('braze', 'braze') }, // key and instance disagree
      { key: null, value: good('braze', 'braze') },
      { key: 'amplitude@gw-a', value: good('amplitude', 'amplitude') },
      { key: 'amplitude@gw-a', value: null }, // tombstone: the connector was removed
      { key: 'cohorts@gw-a', value: good('cohorts', 'teapot') },
      // the format before records were per instance: keyed by connector, no instance
      { key: 'amplitude', value: JSON.stringify({ version: 1, savedAt: T0 - 2_000, name: 'amplitude', kind: 'amplitude', delivered: 3, lastSuccessMs: T0 - 3 * H }) },
    ]);

    const clock = new ManualClock(T0);
    const reg = registry(clock);
    const log = memoryLogger('debug');
    expect(await store(topic, reg, clock, log.logger).load()).toBe(1);
    expect(reg.all().map((c) => c.name)).toEqual(['braze']);
    expect(reg.connector('braze', 'braze').record()).toMatchObject({
      lastSuccessMs: T0 - H,
      failingSinceMs: T0 - 1_000,
      lastErrorClass: 'retryable',
      lastError: 'timeout',
      delivered: 7,
    });
    const skipped = log.lines().filter((l) => l.msg === 'connector health: skipping an unreadable state record');
    expect(skipped).toHaveLength(10);
    expect(skipped.map((l) => l.why)).toEqual(
      expect.arrayContaining(['not JSON', 'not a JSON object', 'unknown version 2', 'unknown lastErrorClass "gremlins"', 'no key', 'unknown kind "teapot"']),
    );
    // the legacy record is another (unknown) instance: not restored into this one's counters, shown in the merged view
    expect(reg.peers()).toEqual([expect.objectContaining({ name: 'amplitude', instance: LEGACY_INSTANCE, delivered: 3 })]);
    const amp = reg.merged().find((m) => m.name === 'amplitude')!;
    expect(amp).toMatchObject({ lastSuccessMs: T0 - 3 * H, delivered: 3 });
    expect(amp.instances.map((i) => i.instance)).toEqual([LEGACY_INSTANCE]);
  });

  it('two instances on one topic: records per connector and instance, each shows the merged view, a gone instance goes stale, and a restart restores its own record', async () => {
    const topic = freshTopic();
    await broker.cluster.createTopic(topic, 3);
    const clock = new ManualClock(T0);
    const regA = registry(clock, 'gw-a');
    const regB = registry(clock, 'gw-b');
    const ampA = regA.connector('amplitude', 'amplitude');
    const ampB = regB.connector('amplitude', 'amplitude');
    ampA.setPendingProbe(() => ({ count: 3, oldestMs: T0 - 10_000 }));
    ampB.setPendingProbe(() => ({ count: 4, oldestMs: T0 - 50_000 }));
    const sA = store(topic, regA, clock);
    const sB = store(topic, regB, clock);
    expect(await sA.load()).toBe(0);
    expect(await sB.load()).toBe(0);
    sA.start(await producer());
    sB.start(await producer());

    ampA.recordSuccess(100);
    ampA.recordDeadLettered(2, 'invalid_fields');
    clock.advance(1_000);
    ampB.recordSuccess(50);
    clock.advance(1_000);
    ampB.recordFailure('auth', 'Invalid API key');
    await Promise.all([sA.save(), sB.save()]);

    const keys = (await readTopic(broker.cluster.bootstrap, topic, 2, 10_000)).map((m) => m.key).sort();
    expect(keys).toEqual(['amplitude@gw-a', 'amplitude@gw-b']);

    // each instance sees the other, live, and shows the same merged connector
    for (const reg of [regA, regB]) {
      const m = await waitFor(() => reg.merged()[0]!, (v) => v.instances.length === 2, 20_000, `${reg.instanceId} sees the other instance`);
      expect(m).toMatchObject({
        name: 'amplitude',
        state: 'failing',
        lastErrorClass: 'auth',
        failingSinceMs: T0 + 2_000,
        lastSuccessMs: T0 + 1_000,
        pending: 7,
        oldestPendingAgeMs: 52_000,
        delivered: 150,
        deadLettered: 2,
        rejected: 2,
      });
      expect(m.instances.map((i) => [i.instance, i.self])).toEqual([
        [reg.instanceId, true],
        [reg.instanceId === 'gw-a' ? 'gw-b' : 'gw-a', false],
      ]);
    }
    // each instance's own snapshot stays its own
    expect(ampA.snapshot().state).toBe('healthy');

    // a later save of B reaches A without a restart
    clock.advance(1_000);
    ampB.recordSuccess(5);
    await sB.save();
    await waitFor(() => regA.merged()[0]!, (m) => m.state === 'healthy' && m.delivered === 155, 20_000, 'A sees B recover');

    // B goes away with a failure on record: once stale it no longer counts for state or pending
    ampB.recordFailure('auth', 'Invalid API key');
    await sB.stop();
    await waitFor(() => regA.merged()[0]!, (m) => m.state === 'failing', 20_000, 'A sees B failing');
    clock.advance(120_001);
    const m = regA.merged()[0]!;
    expect(m).toMatchObject({ state: 'healthy', pending: 3, lastSuccessMs: T0 + 3_000, delivered: 155 });
    expect(m.instances.find((i) => i.instance === 'gw-b')).toMatchObject({ stale: true, state: 'failing' });

    // A restarts: its own record comes back into its counters, B's into the merged view
    await sA.stop();
    const regA2 = registry(clock, 'gw-a');
    const sA2 = store(topic, regA2, clock);
    expect(await sA2.load()).toBe(1);
    expect(regA2.connector('amplitude', 'amplitude').record()).toMatchObject({ delivered: 100, deadLettered: 2, rejected: 2, lastSuccessMs: T0 });
    expect(regA2.peers()).toEqual([expect.objectContaining({ instance: 'gw-b', delivered: 55, lastErrorClass: 'auth', state: 'failing' })]);
    expect(regA2.merged()[0]).toMatchObject({ delivered: 155, lastSuccessMs: T0 + 3_000 });
  });

  it('deletes (tombstones) the records of instances gone for longer than the drop window', async () => {
    const topic = freshTopic();
    await broker.cluster.createTopic(topic, 1);
    const clock = new ManualClock(T0);
    const old = { version: 1, savedAt: T0 - 11 * H, instance: 'gw-old', name: 'braze', kind: 'braze', delivered: 9, lastSuccessMs: T0 - 12 * H };
    const recent = { ...old, savedAt: T0 - 9 * H, instance: 'gw-recent' };
    await produce(broker.cluster.bootstrap, topic, [
      { key: 'braze@gw-old', value: JSON.stringify(old) },
      { key: 'braze@gw-recent', value: JSON.stringify(recent) },
    ]);
    const reg = registry(clock, 'gw-a', { dropWindowMs: 10 * H });
    reg.connector('braze', 'braze');
    const log = memoryLogger('debug');
    const s = store(topic, reg, clock, log.logger);
    await s.load();
    expect(reg.peers().map((p) => p.instance).sort()).toEqual(['gw-old', 'gw-recent']);
    s.start(await producer());
    await s.save();
    expect(reg.peers().map((p) => p.instance)).toEqual(['gw-recent']);
    expect(log.lines().some((l) => l.msg === 'connector health: deleted the records of instances gone for longer than the drop window')).toBe(true);
    await s.stop();

    const again = registry(clock, 'gw-z', { dropWindowMs: 10 * H });
    await store(topic, again, clock).load();
    expect(again.peers().map((p) => p.instance).sort()).toEqual(['gw-a', 'gw-recent']);
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
    const r = parseHealthRecord(JSON.stringify({ version: 1, savedAt: 5, instance: 'gw-a', name: 'braze', kind: 'braze', delivered: 1, lastAttemptMs: 4, surprise: true, lastError: null, state: 'idle', pending: 2, rejected: 1 }));
    expect(r).toEqual({ ok: true, record: { version: 1, savedAt: 5, instance: 'gw-a', name: 'braze', kind: 'braze', delivered: 1, deadLettered: 0, rejected: 1, lastAttemptMs: 4, state: 'idle', pending: 2 } });
    // the format before records were per instance
    expect(parseHealthRecord('{"version":1,"savedAt":1,"name":"b","kind":"braze","delivered":0}')).toMatchObject({ ok: true, record: { instance: LEGACY_INSTANCE, deadLettered: 0, rejected: 0 } });
    expect(healthRecordKey('braze', 'gw-a')).toBe('braze@gw-a');
    expect(healthRecordKey('braze', LEGACY_INSTANCE)).toBe('braze');
  });

  it.each([
    ['{"version":1}', 'savedAt is not a time'],
    ['{"version":1,"savedAt":1,"name":"","kind":"braze","delivered":0}', 'name is missing'],
    ['{"version":1,"savedAt":1,"name":"b","kind":"braze"}', 'delivered is not a count'],
    ['{"version":1,"savedAt":1,"name":"b","kind":"braze","delivered":0,"expiredAtMs":-5}', 'expiredAtMs is not a time'],
    ['{"version":1,"savedAt":1,"name":"b","kind":"braze","delivered":0,"lastError":42}', 'lastError is not a string'],
    ['null', 'not a JSON object'],
    ['{"version":1,"savedAt":1,"name":"b","kind":"braze","delivered":0,"state":"sleepy"}', 'unknown state "sleepy"'],
    ['{"version":1,"savedAt":1,"name":"b","kind":"braze","delivered":0,"instance":""}', 'instance is not a name'],
    ['{"version":1,"savedAt":1,"name":"b","kind":"braze","delivered":0,"pending":-1}', 'pending is not a count'],
  ])('rejects %s', (text, why) => {
    expect(parseHealthRecord(text)).toEqual({ ok: false, why });
  });
});
