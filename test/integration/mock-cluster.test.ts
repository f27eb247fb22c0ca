import { afterEach, describe, expect, it } from 'vitest';
import { Kafka, logLevel, Partitioners, type Consumer, type KafkaConfig, type KafkaMessage, type Producer } from 'kafkajs';
import { startMockCluster, type MockCluster } from '../../src/demo/mock-cluster.js';

/**
 * librdkafka 2.0.2's mock consumer groups:
 * - the first JoinGroup of an empty group is held for a fixed 3 s (group.initial.rebalance.delay.ms);
 * - every later rebalance (member joins, leaves, or comes back after a broker bounce) is held for
 *   sessionTimeout - 1 s, whatever KafkaJS's rebalanceTimeout says;
 * - members are expired after sessionTimeout without activity, *including* while their first
 *   JoinGroup is held, so sessionTimeout must be comfortably above 3 s or the first join never
 *   returns.
 * Hence sessionTimeout 4.5 s and a short heartbeat; maxWaitTimeInMs small because the mock answers
 * a waiting Fetch only when maxWaitTimeInMs expires, not when data arrives.
 */
const CONSUMER_SETTINGS = { sessionTimeout: 4_500, heartbeatInterval: 300, maxWaitTimeInMs: 100 } as const;

let cluster: MockCluster | undefined;
const cleanups: Array<() => Promise<void>> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
  await cluster?.stop();
  cluster = undefined;
});

function kafkaFor(c: MockCluster, extra: Partial<KafkaConfig> = {}): Kafka {
  return new Kafka({ clientId: 'mock-cluster-test', brokers: c.brokers, logLevel: logLevel.NOTHING, ...extra });
}

async function connectedProducer(kafka: Kafka, retry?: KafkaConfig['retry']): Promise<Producer> {
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner, ...(retry ? { retry } : {}) });
  await producer.connect();
  cleanups.push(() => producer.disconnect());
  return producer;
}

async function waitFor(what: string, condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Received {
  partition: number;
  message: KafkaMessage;
}

function headerText(message: KafkaMessage, name: string): string | undefined {
  const value = message.headers?.[name];
  if (value === undefined) return undefined;
  if (Array.isArray(value)) return value.map((v) => v.toString()).join(',');
  return value.toString();
}

describe('mock Kafka cluster (librdkafka mock brokers)', () => {
  it('produces and consumes through a consumer group, and a restarted member resumes from committed offsets', async () => {
    cluster = await startMockCluster({ brokers: 1, topics: [{ name: 'events.in', partitions: 3 }] });
    expect(cluster.bootstrap).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(cluster.brokers).toEqual([cluster.bootstrap]);

    const kafka = kafkaFor(cluster);
    const producer = await connectedProducer(kafka);

    const messages = Array.from({ length: 300 }, (_, i) => ({
      key: `user-${i % 17}`,
      value: JSON.stringify({ seq: i }),
      headers: { 'x-seq': String(i), 'x-source': 'amplitude', 'x-binary': Buffer.from([0, 1, 2, i % 256]) },
    }));
    for (let i = 0; i < messages.length; i += 100) {
      await producer.send({ topic: 'events.in', acks: -1, messages: messages.slice(i, i + 100) });
    }

    // --- first member: consume everything, then commit explicitly
    const received: Received[] = [];
    const first: Consumer = kafka.consumer({ groupId: 'group-a', ...CONSUMER_SETTINGS });
    cleanups.push(() => first.disconnect());
    await first.connect();
    await first.subscribe({ topic: 'events.in', fromBeginning: true });
    const joinStarted = Date.now();
    let joinedAfterMs = -1;
    first.on(first.events.GROUP_JOIN, () => {
      if (joinedAfterMs < 0) joinedAfterMs = Date.now() - joinStarted;
    });
    await first.run({
      autoCommit: false,
      eachMessage: async ({ partition, message }) => {
        received.push({ partition, message });
      },
    });
    await waitFor('300 messages', () => received.length >= 300, 15_000);
    const consumedAfterMs = Date.now() - joinStarted;

    expect(received).toHaveLength(300);
    const seqs = received.map((r) => Number(headerText(r.message, 'x-seq'))).sort((a, b) => a - b);
    expect(seqs).toEqual(Array.from({ length: 300 }, (_, i) => i));
    expect(new Set(received.map((r) => r.partition))).toEqual(new Set([0, 1, 2]));
    for (const { message } of received) {
      const seq = Number(headerText(message, 'x-seq'));
      expect(headerText(message, 'x-source')).toBe('amplitude');
      expect(message.headers?.['x-binary']).toEqual(Buffer.from([0, 1, 2, seq % 256]));
      expect(JSON.parse(message.value?.toString() ?? 'null')).toEqual({ seq });
      expect(message.key?.toString()).toBe(`user-${seq % 17}`);
    }

    // commit the next offset to read on each partition
    const next = new Map<number, bigint>();
    for (const { partition, message } of received) {
      const n = BigInt(message.offset) + 1n;
      if ((next.get(partition) ?? 0n) < n) next.set(partition, n);
    }
    await first.commitOffsets(
      [...next].map(([partition, offset]) => ({ topic: 'events.in', partition, offset: offset.toString() })),
    );

    const admin = kafka.admin();
    await admin.connect();
    cleanups.push(() => admin.disconnect());
    const committed = await admin.fetchOffsets({ groupId: 'group-a', topics: ['events.in'] });
    const committedByPartition = new Map(committed[0]?.partitions.map((p) => [p.partition, p.offset]) ?? []);
    for (const [partition, offset] of next) expect(committedByPartition.get(partition)).toBe(offset.toString());

    await first.disconnect();

    // --- more data while nobody consumes
    await producer.send({
      topic: 'events.in',
      messages: Array.from({ length: 30 }, (_, i) => ({ value: JSON.stringify({ seq: 300 + i }), headers: { 'x-seq': String(300 + i) } })),
    });

    // --- a new member of the same group resumes from the committed offsets
    const resumed: Received[] = [];
    const second: Consumer = kafka.consumer({ groupId: 'group-a', ...CONSUMER_SETTINGS });
    cleanups.push(() => second.disconnect());
    await second.connect();
    await second.subscribe({ topic: 'events.in', fromBeginning: true });
    const rejoinStarted = Date.now();
    await second.run({
      eachMessage: async ({ partition, message }) => {
        resumed.push({ partition, message });
      },
    });
    await waitFor('the 30 new messages', () => resumed.length >= 30, 15_000);
    const rejoinedAfterMs = Date.now() - rejoinStarted;
    await sleep(500); // anything re-delivered would have arrived by now
    const resumedSeqs = resumed.map((r) => Number(headerText(r.message, 'x-seq'))).sort((a, b) => a - b);
    expect(resumedSeqs).toEqual(Array.from({ length: 30 }, (_, i) => 300 + i));

    console.info(
      `mock cluster: first group join ${joinedAfterMs} ms, 300 messages consumed ${consumedAfterMs} ms after subscribing, ` +
        `restarted member got its first 30 messages after ${rejoinedAfterMs} ms`,
    );
  });

  it('fails produce while the broker is down and recovers producer and consumer after it comes back', async () => {
    cluster = await startMockCluster({ topics: [{ name: 'bounce', partitions: 2 }] });
    const kafka = kafkaFor(cluster, {
      connectionTimeout: 300,
      requestTimeout: 2_000,
      retry: { retries: 2, initialRetryTime: 100, maxRetryTime: 300 },
    });
    const producer = await connectedProducer(kafka);

    const seen: string[] = [];
    const consumer = kafka.consumer({
      groupId: 'bounce-group',
      ...CONSUMER_SETTINGS,
      retry: { retries: 50, initialRetryTime: 100, maxRetryTime: 500 },
    });
    cleanups.push(() => consumer.disconnect());
    let crashes = 0;
    consumer.on(consumer.events.CRASH, () => {
      crashes++;
    });
    await consumer.connect();
    await consumer.subscribe({ topic: 'bounce', fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message }) => {
        seen.push(message.value?.toString() ?? '');
      },
    });

    await producer.send({ topic: 'bounce', messages: [{ value: 'before' }] });
    await waitFor('"before"', () => seen.includes('before'), 10_000);

    await cluster.brokerDown(1);
    const downAt = Date.now();
    await expect(producer.send({ topic: 'bounce', messages: [{ value: 'while-down' }] })).rejects.toThrow(/ECONNREFUSED|Connection|broker/i);
    const failedAfterMs = Date.now() - downAt;
    expect(failedAfterMs).toBeLessThan(5_000);

    await cluster.brokerUp(1);
    const upAt = Date.now();
    let sent = false;
    for (let attempt = 0; attempt < 10 && !sent; attempt++) {
      try {
        await producer.send({ topic: 'bounce', messages: [{ value: 'after-up' }] });
        sent = true;
      } catch {
        await sleep(200);
      }
    }
    expect(sent).toBe(true);
    const producedAfterUpMs = Date.now() - upAt;

    // The consumer crashed on the lost connection, restarted itself, and has to rejoin a group that
    // still lists its old member: that takes about sessionTimeout - 1 s, plus sessionTimeout to
    // expire the old member.
    await waitFor('"after-up" at the consumer', () => seen.includes('after-up'), 20_000);
    const consumedAfterUpMs = Date.now() - upAt;
    expect(crashes).toBeGreaterThan(0);
    expect(seen).not.toContain('while-down');

    console.info(
      `mock cluster bounce: produce failed ${failedAfterMs} ms after broker_down; produce succeeded ${producedAfterUpMs} ms ` +
        `after broker_up; consumer (${crashes} crash/restart) got the new message ${consumedAfterUpMs} ms after broker_up`,
    );
  });

  it('injects request errors, reports command errors, and runs several brokers', async () => {
    cluster = await startMockCluster({ brokers: 3 });
    expect(cluster.brokers).toHaveLength(3);
    for (const b of cluster.brokers) expect(b).toMatch(/^127\.0\.0\.1:\d+$/);
    await cluster.createTopic('replicated', 4, 3);

    const kafka = kafkaFor(cluster);
    const producer = await connectedProducer(kafka, { retries: 3, initialRetryTime: 50, maxRetryTime: 200 });
    await producer.send({ topic: 'replicated', acks: -1, messages: [{ value: 'x' }] });

    // Produce = API key 0. Retriable errors (6 = NOT_LEADER_OR_FOLLOWER) are retried by KafkaJS...
    await cluster.pushRequestErrors(0, [6, 6]);
    await producer.send({ topic: 'replicated', messages: [{ value: 'retried' }] });
    // ...a non-retriable one (10 = MESSAGE_TOO_LARGE) reaches the caller.
    await cluster.pushRequestErrors(0, [10]);
    await expect(producer.send({ topic: 'replicated', messages: [{ value: 'too-large' }] })).rejects.toThrow(/larger than the max message size/);
    await producer.send({ topic: 'replicated', messages: [{ value: 'fine-again' }] });

    await expect(cluster.brokerDown(42)).rejects.toThrow(/broker_down 42.*BROKER_NOT_AVAILABLE/);
    await expect(cluster.createTopic('bad name', 1)).rejects.toThrow(/invalid topic name/);
    // commands are serialized: many at once all get their own answer
    await Promise.all([cluster.brokerDown(2), cluster.brokerUp(2), cluster.brokerDown(3), cluster.brokerUp(3), cluster.createTopic('other', 1)]);

    const c = cluster;
    await c.stop();
    await c.stop(); // idempotent
    await expect(c.brokerUp(1)).rejects.toThrow(/mock-kafka/);
  });
});
