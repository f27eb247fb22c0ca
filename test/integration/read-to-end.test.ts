import { describe, expect, it } from 'vitest';
import { Partitioners, type KafkaMessage } from 'kafkajs';
import { readTopicToEnd } from '../../src/kafka/read-to-end.js';
import { produce, testKafka, useMockCluster } from '../support/harness.js';

const broker = useMockCluster();

interface Seen {
  partition: number;
  offset: bigint;
  value: string;
}

function collect(into: Seen[]): (partition: number, m: KafkaMessage) => void {
  return (partition, m) => into.push({ partition, offset: BigInt(m.offset), value: m.value?.toString('utf8') ?? '' });
}

const OPTS = { groupIdPrefix: 'read-to-end-test', fetchMaxWaitMs: 50, timeoutMs: 20_000 } as const;

describe('readTopicToEnd', () => {
  it('reads what the topic held at the start, in offset order, and stops although records keep arriving', async () => {
    const topic = `read-to-end.live.${Date.now()}`;
    await broker.cluster.createTopic(topic, 3);
    await produce(
      broker.cluster.bootstrap,
      topic,
      Array.from({ length: 60 }, (_, i) => ({ key: `k-${i % 20}`, value: `early-${i}` })),
    );
    const kafka = testKafka(broker.cluster.bootstrap);
    const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await producer.connect();
    broker.cleanups.push(() => producer.disconnect());

    // once the read has taken its end offsets (it is passing records on), a writer keeps adding to every key
    let writing = false;
    let stop = false;
    let late = 0;
    let writer: Promise<void> = Promise.resolve();
    const seen: Seen[] = [];
    const onMessage = collect(seen);
    const result = await readTopicToEnd({
      ...OPTS,
      kafka,
      topic,
      onMessage: (partition, m) => {
        onMessage(partition, m);
        if (writing) return;
        writing = true;
        writer = (async () => {
          while (!stop) {
            await producer.send({ topic, acks: -1, messages: Array.from({ length: 20 }, (_, i) => ({ key: `k-${i}`, value: `late-${late++}` })) });
            await new Promise((r) => setTimeout(r, 20));
          }
        })();
      },
    });
    stop = true;
    await writer;

    expect(result).toEqual({ exists: true, partitions: 3, records: 60 });
    expect(late).toBeGreaterThan(0);
    expect(seen.map((s) => s.value).sort()).toEqual(Array.from({ length: 60 }, (_, i) => `early-${i}`).sort());
    for (const p of [0, 1, 2]) {
      const offsets = seen.filter((s) => s.partition === p).map((s) => s.offset);
      expect(offsets).toEqual(offsets.map((_, i) => BigInt(i)));
    }
  });

  it('a missing topic is nothing saved, an empty one nothing to read', async () => {
    const kafka = testKafka(broker.cluster.bootstrap);
    const seen: Seen[] = [];
    expect(await readTopicToEnd({ ...OPTS, kafka, topic: `read-to-end.absent.${Date.now()}`, onMessage: collect(seen) })).toEqual({ exists: false, partitions: 0, records: 0 });
    const empty = `read-to-end.empty.${Date.now()}`;
    await broker.cluster.createTopic(empty, 2);
    expect(await readTopicToEnd({ ...OPTS, kafka, topic: empty, onMessage: collect(seen) })).toEqual({ exists: true, partitions: 0, records: 0 });
    expect(seen).toEqual([]);
  });

  it('reads only the partitions asked for', async () => {
    const topic = `read-to-end.partitions.${Date.now()}`;
    await broker.cluster.createTopic(topic, 3);
    const kafka = testKafka(broker.cluster.bootstrap);
    const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await producer.connect();
    broker.cleanups.push(() => producer.disconnect());
    for (const partition of [0, 1, 2]) {
      await producer.send({ topic, acks: -1, messages: Array.from({ length: 5 + partition }, (_, i) => ({ partition, value: `p${partition}-${i}` })) });
    }

    const seen: Seen[] = [];
    const result = await readTopicToEnd({ ...OPTS, kafka, topic, partitions: [0, 2], onMessage: collect(seen) });
    expect(result).toEqual({ exists: true, partitions: 2, records: 5 + 7 });
    expect(new Set(seen.map((s) => s.partition))).toEqual(new Set([0, 2]));
    expect(seen.filter((s) => s.partition === 2).map((s) => s.value)).toEqual(Array.from({ length: 7 }, (_, i) => `p2-${i}`));
  });

  it('rejects when the end is not reached within the timeout', async () => {
    const topic = `read-to-end.timeout.${Date.now()}`;
    await broker.cluster.createTopic(topic, 1);
    await produce(broker.cluster.bootstrap, topic, [{ key: 'a', value: '1' }]);
    const kafka = testKafka(broker.cluster.bootstrap);
    // the mock broker holds a new group's first join for 3 s: 300 ms is never enough
    await expect(readTopicToEnd({ ...OPTS, kafka, topic, timeoutMs: 300, errorPrefix: 'test store: ', onMessage: () => undefined })).rejects.toThrow(
      `test store: could not read ${topic} to its end within 300 ms`,
    );
  });
});
