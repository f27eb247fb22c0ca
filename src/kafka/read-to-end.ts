/**
 * Reading a topic "to its end": from the beginning up to the end offsets it had when the read
 * began, then stopping. The stores that keep their state in a compacted topic (attribute state,
 * limiter counts, cohort snapshots, connector health) load it this way, and the replay command
 * reads the dead-letter topic this way.
 *
 * Why the end offsets are taken once, at the start: a topic that is being written never "ends",
 * so a reader that waited for the newest offset would wait for every record written after it
 * began (by other instances, or by the very flushes the loaded state causes). With the mock broker
 * and with real Kafka alike, the high watermark at the start is the one end that is sure to come;
 * what is written after it is left to the next load (or to a live consumer, as the health store
 * keeps). An empty partition (or one retention has emptied) is done from the start: the consumer
 * would never fetch anything from it to report reaching its end. A missing topic is nothing saved,
 * not an error; it is asked for with listTopics first because fetchTopicOffsets retries an unknown
 * topic for the whole retry budget, and the admin client never auto-creates one.
 */
import { randomUUID } from 'node:crypto';
import type { Admin, Consumer, Kafka, KafkaMessage } from 'kafkajs';
import { describeError } from '../errors.js';

/** One partition's low and high watermarks. */
export interface PartitionOffsets {
  partition: number;
  low: bigint;
  high: bigint;
}

/**
 * The low and high watermark of every partition of `topic`, or undefined when the topic does not
 * exist. `checkTopic` runs with the same admin client once the topic is known to exist.
 */
export async function topicOffsets(kafka: Kafka, topic: string, checkTopic?: (admin: Admin) => Promise<void>): Promise<PartitionOffsets[] | undefined> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    if (!(await admin.listTopics()).includes(topic)) return undefined;
    if (checkTopic) await checkTopic(admin);
    return (await admin.fetchTopicOffsets(topic)).map((o) => ({ partition: o.partition, low: BigInt(o.low), high: BigInt(o.high) }));
  } finally {
    await admin.disconnect();
  }
}

export interface ReadTopicToEndOptions {
  kafka: Kafka;
  topic: string;
  /** the throw-away consumer group's id is this, a dash and a random UUID */
  groupIdPrefix: string;
  fetchMaxWaitMs: number;
  /** rejects when the topic cannot be read to its end this fast */
  timeoutMs: number;
  /** the consumer's maxBytes (KafkaJS's default when absent) */
  maxBytes?: number;
  /** only these partitions (all when absent); records of the others are not passed on */
  partitions?: Iterable<number>;
  /** put before the messages of the errors it rejects with, e.g. `attribute state: ` */
  errorPrefix?: string;
  /** runs with the admin client once the topic is known to exist, before the offsets are taken */
  checkTopic?: (admin: Admin) => Promise<void>;
  /** every record below the end offsets taken at the start, in offset order within a partition */
  onMessage: (partition: number, message: KafkaMessage) => void;
}

export interface ReadTopicToEndResult {
  /** false: the topic does not exist (nothing was read) */
  exists: boolean;
  /** partitions that had records to read at the start */
  partitions: number;
  /** records passed to onMessage */
  records: number;
}

/**
 * Reads `topic` from the beginning up to the end offsets it had when this began, passing each
 * record to onMessage, and stops. Nothing is committed; the consumer is disconnected before it
 * settles. Rejects on the timeout or when the consumer stops for good.
 */
export async function readTopicToEnd(opts: ReadTopicToEndOptions): Promise<ReadTopicToEndResult> {
  const prefix = opts.errorPrefix ?? '';
  const offsets = await topicOffsets(opts.kafka, opts.topic, opts.checkTopic);
  if (offsets === undefined) return { exists: false, partitions: 0, records: 0 };
  const only = opts.partitions === undefined ? undefined : new Set(opts.partitions);
  /** the end offset taken now, per partition to be read (empty ones are done already) */
  const ends = new Map(offsets.filter((o) => o.high > o.low && (only === undefined || only.has(o.partition))).map((o) => [o.partition, o.high]));
  if (ends.size === 0) return { exists: true, partitions: 0, records: 0 };

  let records = 0;
  const consumer: Consumer = opts.kafka.consumer({
    groupId: `${opts.groupIdPrefix}-${randomUUID()}`,
    maxWaitTimeInMs: opts.fetchMaxWaitMs,
    allowAutoTopicCreation: false,
    ...(opts.maxBytes === undefined ? {} : { maxBytes: opts.maxBytes }),
  });
  const remaining = new Set(ends.keys());
  let timer: NodeJS.Timeout | undefined;
  try {
    await consumer.connect();
    await consumer.subscribe({ topic: opts.topic, fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`${prefix}could not read ${opts.topic} to its end within ${opts.timeoutMs} ms`)), opts.timeoutMs);
      consumer.on(consumer.events.CRASH, (e) => {
        if (!e.payload.restart) reject(new Error(`${prefix}the reader stopped: ${describeError(e.payload.error)}`));
      });
      consumer
        .run({
          // the group is thrown away; committing would only leave offsets behind on the broker
          autoCommit: false,
          eachBatch: async ({ batch }) => {
            const end = ends.get(batch.partition);
            if (end === undefined) return;
            for (const m of batch.messages) {
              if (BigInt(m.offset) >= end) break;
              records++;
              opts.onMessage(batch.partition, m);
            }
            if (BigInt(batch.lastOffset()) + 1n >= end) remaining.delete(batch.partition);
            // resolved, never awaited here: disconnecting from inside eachBatch would wait for itself
            if (remaining.size === 0) resolve();
          },
        })
        .catch(reject);
    });
  } finally {
    clearTimeout(timer);
    await consumer.disconnect().catch(() => undefined);
  }
  return { exists: true, partitions: ends.size, records };
}
