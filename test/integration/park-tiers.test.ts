import { describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { ConsumerLoop, type ConsumedMessage, type MessageSink } from '../../src/kafka/consumer-loop.js';
import { Metrics } from '../../src/observability/metrics.js';
import { createLogger } from '../../src/observability/logger.js';
import { ParkedTierConsumer } from '../../src/braze-to-amplitude/park-tiers.js';
import { RetrySink } from '../../src/braze-to-amplitude/retry-sink.js';
import { testKafka, useMockCluster, waitFor } from '../support/harness.js';

const broker = useMockCluster();
let seq = 0;

/** Stands in for the Amplitude leg: notes when each parked event came back, finishes it at once. */
class RecordingLeg implements MessageSink {
  readonly got: Array<{ topic: string; key: string; value: string; at: number; notBefore: number }> = [];
  accept(msg: ConsumedMessage): void {
    const nb = Number(String(msg.headers['not-before'] ?? '0'));
    this.got.push({ topic: msg.topic, key: msg.key?.toString() ?? '', value: msg.value?.toString() ?? '', at: Date.now(), notBefore: nb });
    msg.handle.done();
  }
  hasCapacity(): boolean {
    return true;
  }
  async drain(): Promise<boolean> {
    return true;
  }
}

function longTier(topic: string, sink: MessageSink, maxHeldPerPartition: number, onRestart?: () => void): ParkedTierConsumer {
  const c = new ParkedTierConsumer({
    ...(onRestart ? { onRestart } : {}),
    kafka: testKafka(broker.cluster.bootstrap),
    groupId: `test.retry-quota.${++seq}`,
    topic,
    sink,
    clock: systemClock,
    logger: createLogger('silent'),
    maxHeldPerPartition,
    fetchMaxWaitMs: 50,
    sessionTimeoutMs: 10_000,
    commitIntervalMs: 200,
  });
  broker.cleanups.push(() => c.stop(0));
  return c;
}

async function producer() {
  const p = testKafka(broker.cluster.bootstrap).producer({ allowAutoTopicCreation: true });
  await p.connect();
  broker.cleanups.push(() => p.disconnect());
  return p;
}

describe('park tiers', () => {
  it('200,000 quota-parked events of one device do not delay 100 other devices\' rate parks beyond due + 1 s, and are not held in memory', async () => {
    const shortTopic = `gateway.retry.t${++seq}`;
    const longTopic = `gateway.retry.quota.t${seq}`;
    const p = await producer();
    const leg = new RecordingLeg();
    const dayLater = String(Date.now() + 86_400_000);
    // One device's 200,000 quota parks, due in a day. The mock broker keeps at most 100,000 records
    // (and 5 MB) per partition, so they are written 50,000 to each of the 4 partitions (on Apache
    // Kafka they would all sit on the device's one partition: the consumer treats each partition
    // the same way). Small values keep them under the 5 MB.
    for (let part = 0; part < 4; part++) {
      for (let i = 0; i < 50_000; i += 5_000) {
        await p.send({
          topic: longTopic,
          acks: -1,
          messages: Array.from({ length: 5_000 }, (_, k) => ({ key: 'device-flood', value: String(i + k), partition: part, headers: { 'not-before': dayLater, reason: 'daily_quota' } })),
        });
      }
    }
    const long = longTier(longTopic, leg, 1_000);
    await long.start();
    const shortLoop = new ConsumerLoop({
      kafka: testKafka(broker.cluster.bootstrap),
      groupId: `test.retry.${seq}`,
      topics: [shortTopic],
      leg: 'inbound',
      sink: new RetrySink(leg, systemClock, 100_000),
      logger: createLogger('silent'),
      metrics: new Metrics({ defaultMetrics: false }),
      fetchMaxWaitMs: 50,
      sessionTimeoutMs: 10_000,
      commitIntervalMs: 200,
    });
    broker.cleanups.push(() => shortLoop.stop(0));
    await shortLoop.start();
    // the long tier has filled what it may hold and paused
    await waitFor(() => long.pausedPartitions.length, (n) => n === 4, 20_000, 'the long tier pausing its full partitions');

    // 100 other devices' rate parks, due in 1 to 3 s
    const t = Date.now();
    await p.send({
      topic: shortTopic,
      acks: -1,
      messages: Array.from({ length: 100 }, (_, i) => ({ key: `device-${i}`, value: `rate-${i}`, headers: { 'not-before': String(t + 1_000 + 20 * i), reason: 'rate_limit' } })),
    });
    await waitFor(() => leg.got.filter((g) => g.topic === shortTopic).length, (n) => n === 100, 15_000, 'the rate parks');
    const late = leg.got.filter((g) => g.topic === shortTopic).map((g) => g.at - g.notBefore);
    expect(Math.min(...late)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...late)).toBeLessThan(1_000);
    // nothing of the flood was handed over early, and at most 1,000 per partition sit in memory
    expect(leg.got.filter((g) => g.topic === longTopic)).toHaveLength(0);
    expect(long.held).toBe(4_000);
  }, 120_000);

  it('hands long parks over when due, in order per key, resuming a paused partition as it empties', async () => {
    const longTopic = `gateway.retry.quota.t${++seq}`;
    const p = await producer();
    const leg = new RecordingLeg();
    const long = longTier(longTopic, leg, 3);
    await long.start();
    await waitFor(() => long.ready, (r) => r, 20_000, 'the long tier joining');
    const t = Date.now() + 500;
    const at = (ms: number) => ({ 'not-before': String(t + ms), reason: 'daily_quota' });
    await p.send({
      topic: longTopic,
      acks: -1,
      messages: [
        { key: 'A', value: 'A1', partition: 0, headers: at(600) },
        // due before A1 but behind it
        { key: 'A', value: 'A2', partition: 0, headers: at(100) },
        { key: 'B', value: 'B1', partition: 0, headers: at(200) },
        ...Array.from({ length: 6 }, (_, i) => ({ key: 'C', value: `C${i}`, partition: 0, headers: at(300 + 10 * i) })),
      ],
    });
    await waitFor(() => leg.got.length, (n) => n === 9, 20_000, 'every long park');
    const order = leg.got.map((g) => g.value);
    expect(order.filter((v) => v.startsWith('A'))).toEqual(['A1', 'A2']);
    expect(order.filter((v) => v.startsWith('C'))).toEqual(['C0', 'C1', 'C2', 'C3', 'C4', 'C5']);
    expect(order.indexOf('B1')).toBeLessThan(order.indexOf('A1'));
    for (const g of leg.got) expect(g.at).toBeGreaterThanOrEqual(g.notBefore);
    expect(long.held).toBe(0);
  }, 60_000);

  it('replaces a consumer kafkajs gives up on: not ready meanwhile, the held parks still come back once each, in order', async () => {
    const longTopic = `gateway.retry.quota.t${++seq}`;
    const p = await producer();
    const leg = new RecordingLeg();
    let restarts = 0;
    const long = longTier(longTopic, leg, 1_000, () => restarts++);
    await long.start();
    await waitFor(() => long.ready, (r) => r, 20_000, 'the long tier joining');
    const t = Date.now() + 4_000;
    await p.send({
      topic: longTopic,
      acks: -1,
      messages: Array.from({ length: 20 }, (_, i) => ({ key: `K${i % 2}`, value: `K${i % 2}-${i}`, partition: i % 4, headers: { 'not-before': String(t + 10 * i), reason: 'daily_quota' } })),
    });
    await waitFor(() => long.held, (n) => n === 20, 20_000, 'the parks held');
    // The next heartbeat meets a fatal group error (GROUP_AUTHORIZATION_FAILED, not retriable):
    // kafkajs crashes the consumer with restart: false.
    await broker.cluster.pushRequestErrors(12, [30]);
    await waitFor(() => long.ready, (r) => !r, 10_000, 'not ready after the crash');
    await waitFor(() => restarts, (n) => n === 1, 20_000, 'a new consumer');
    await waitFor(() => long.ready, (r) => r, 20_000, 'ready again');
    await waitFor(() => leg.got.length, (n) => n >= 20, 30_000, 'every parked event');
    await new Promise((r) => setTimeout(r, 500));
    const values = leg.got.map((g) => g.value);
    expect(values).toHaveLength(20);
    expect(new Set(values).size).toBe(20);
    for (const k of ['K0', 'K1']) {
      const mine = values.filter((v) => v.startsWith(`${k}-`)).map((v) => Number(v.slice(3)));
      expect(mine).toEqual([...mine].sort((a, b) => a - b));
    }
    for (const g of leg.got) expect(g.at).toBeGreaterThanOrEqual(g.notBefore);
  }, 90_000);
});
