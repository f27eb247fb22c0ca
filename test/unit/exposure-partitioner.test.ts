/**
 * The gateway's producers name their partitioner (murmur2, as the Java client hashes keys), so
 * KafkaJS has nothing to warn about; and it is that choice, not KAFKAJS_NO_PARTITIONER_WARNING,
 * that keeps the warning away.
 */
import { Kafka, logLevel, Partitioners } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.js';
import { createKafka, GATEWAY_PARTITIONER } from '../../src/kafka/client.js';
import { memoryLogger } from '../support/harness.js';

describe('the KafkaJS partitioner', () => {
  it('is chosen explicitly for every producer the gateway creates: no warning, without the env hack', () => {
    delete process.env.KAFKAJS_NO_PARTITIONER_WARNING;
    const log = memoryLogger('debug');
    const kafka = createKafka(loadConfig({ KAFKA_BROKERS: '127.0.0.1:1' }).kafka, log.logger);
    kafka.producer();
    kafka.producer({ allowAutoTopicCreation: false, retry: { retries: 1 } });
    expect(log.lines().map((l) => String(l.msg))).not.toContainEqual(expect.stringMatching(/partitioner/i));

    // the control: a producer without a partitioner does warn here (the check above can fail)
    const warnings: string[] = [];
    const bare = new Kafka({
      brokers: ['127.0.0.1:1'],
      logLevel: logLevel.WARN,
      logCreator: () => ({ log }) => warnings.push(String(log.message)),
    });
    bare.producer();
    expect(warnings).toContainEqual(expect.stringMatching(/switched default partitioner/));
  });

  it('is the Java-compatible murmur2 one (KafkaJS DefaultPartitioner), unless a producer asks for another', () => {
    expect(GATEWAY_PARTITIONER).toBe(Partitioners.DefaultPartitioner);
    // murmur2 of the key, as the Java client computes it: the same key always lands on the same partition
    const partition = GATEWAY_PARTITIONER();
    const meta = { topic: 't', partitionMetadata: Array.from({ length: 6 }, (_, i) => ({ partitionId: i, leader: 0, partitionErrorCode: 0, replicas: [0], isr: [0] })) };
    const p = (key: string) => partition({ ...meta, message: { key, value: 'v' } });
    expect(p('device-1')).toBe(p('device-1'));
    // known values of Kafka's Java DefaultPartitioner (murmur2, positive, modulo 6)
    expect([p('a'), p('device-1'), p('user-42')]).toEqual([javaPartition('a', 6), javaPartition('device-1', 6), javaPartition('user-42', 6)]);
    for (let i = 0; i < 200; i++) expect(p(`device-${i}`), `device-${i}`).toBe(javaPartition(`device-${i}`, 6));
  });

  it('has a reference murmur2 that agrees with Kafka\'s own test vectors (UtilsTest.testMurmur2)', () => {
    const vectors: Array<[string, number]> = [
      ['21', -973932308],
      ['foobar', -790332482],
      ['a-little-bit-long-string', -985981536],
      ['a-little-bit-longer-string', -1486304829],
      ['lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8', -58897971],
      ['abc', 479470107],
    ];
    for (const [key, hash] of vectors) expect(javaMurmur2(Buffer.from(key)), key).toBe(hash);
  });
});

/** Kafka's Java default partitioner for a keyed record: `toPositive(murmur2(key)) % partitions`. */
function javaPartition(key: string, partitions: number): number {
  return (javaMurmur2(Buffer.from(key)) & 0x7fffffff) % partitions;
}

/** Kafka's Java `Utils.murmur2`, written out as the reference (a signed 32-bit result, as in Java). */
function javaMurmur2(data: Buffer): number {
  const seed = 0x9747b28c;
  const m = 0x5bd1e995;
  const r = 24;
  let h = seed ^ data.length;
  const len4 = Math.floor(data.length / 4);
  for (let i = 0; i < len4; i++) {
    let k = data.readInt32LE(i * 4);
    k = Math.imul(k, m);
    k ^= k >>> r;
    k = Math.imul(k, m);
    h = Math.imul(h, m);
    h ^= k;
  }
  const rest = data.length % 4;
  const at = len4 * 4;
  if (rest === 3) h ^= (data[at + 2] ?? 0) << 16;
  if (rest >= 2) h ^= (data[at + 1] ?? 0) << 8;
  if (rest >= 1) {
    h ^= data[at] ?? 0;
    h = Math.imul(h, m);
  }
  h ^= h >>> 13;
  h = Math.imul(h, m);
  h ^= h >>> 15;
  return h | 0;
}
