/**
 * The attribute state, persisted in a compacted Kafka topic (default `gateway.attribute-state`),
 * one record per Braze user: key = the user key (`ext:<id>`, `alias:<label>:<name>`, ...), value =
 * the user's confirmed state (AttributeState.encodeUser; a tombstone forgets the user). Only what
 * Braze accepted is written, so a restart or a rebalance never assumes a write that did not happen.
 *
 * load() reads the topic from the beginning to the end it had when it began and applies every
 * record in order, so the latest per key wins: compaction is lazy, and the test broker never
 * compacts. flush() writes the users whose confirmed state changed since the last flush; start()
 * does that every `intervalMs`.
 *
 * Around a rebalance (KafkaJS rebalances eagerly: every member gives up its partitions first):
 * on revocation, `await store.flush()`, so the next owner reads what this one confirmed; on
 * assignment, `state.clear()` then `await store.load()`.
 */
import type { Kafka, Producer } from 'kafkajs';
import { describeError } from '../errors.js';
import { readTopicToEnd } from '../kafka/read-to-end.js';
import type { Logger } from '../observability/logger.js';
import type { AttributeState } from './attribute-state.js';

export interface AttributeStoreDeps {
  kafka: Kafka;
  topic: string;
  state: AttributeState;
  logger: Logger;
  /** how often changed users are written (default 5 s) */
  intervalMs?: number;
  fetchMaxWaitMs: number;
  groupIdPrefix?: string;
  /** load() rejects when the topic cannot be read to its end this fast (default 60 s) */
  loadTimeoutMs?: number;
}

const SEND_BATCH = 500;

export class AttributeStore {
  private producer: Producer | undefined;
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<number> | undefined;

  constructor(private readonly d: AttributeStoreDeps) {}

  /** Applies every record of the topic, in order; returns how many users were restored. A missing topic is nothing saved. */
  async load(): Promise<number> {
    const started = Date.now();
    let records = 0;
    let bad = 0;
    const keys = new Set<string>();
    const read = await readTopicToEnd({
      kafka: this.d.kafka,
      topic: this.d.topic,
      groupIdPrefix: this.d.groupIdPrefix ?? 'gateway-attribute-state-reader',
      fetchMaxWaitMs: this.d.fetchMaxWaitMs,
      timeoutMs: this.d.loadTimeoutMs ?? 60_000,
      errorPrefix: 'attribute state: ',
      onMessage: (_partition, m) => {
        const key = m.key?.toString('utf8');
        if (!key) {
          bad++;
          return;
        }
        records++;
        if (this.d.state.restoreUser(key, m.value)) keys.add(key);
        else bad++;
      },
    });
    if (!read.exists) {
      this.d.logger.info({ topic: this.d.topic }, 'attribute state: topic does not exist yet; starting from nothing');
      return 0;
    }
    if (read.partitions === 0) return 0;
    this.d.logger.info({ topic: this.d.topic, records, users: this.d.state.size, skipped: bad, ms: Date.now() - started }, 'attribute state restored');
    return keys.size;
  }

  /** Writes changed users every `intervalMs` (and on flush()). */
  start(producer: Producer): void {
    this.producer = producer;
    this.timer = setInterval(() => {
      this.flush().catch((err: unknown) => this.d.logger.warn({ err: describeError(err) }, 'attribute state: write failed; retried at the next flush'));
    }, this.d.intervalMs ?? 5_000);
    this.timer.unref();
  }

  /** Writes the users whose confirmed state changed; returns how many records were written. */
  flush(): Promise<number> {
    const p = (this.flushing ?? Promise.resolve(0)).then(() => this.write());
    this.flushing = p.catch(() => 0);
    return p;
  }

  private async write(): Promise<number> {
    const producer = this.producer;
    if (!producer) return 0;
    const dirty = this.d.state.takeDirty();
    for (let i = 0; i < dirty.length; i += SEND_BATCH) {
      const chunk = dirty.slice(i, i + SEND_BATCH);
      try {
        await producer.send({ topic: this.d.topic, acks: -1, messages: chunk.map((r) => ({ key: r.key, value: r.value })) });
      } catch (err) {
        // not written: mark them changed again so the next flush writes them
        for (const r of dirty.slice(i)) this.d.state.markDirty(r.key);
        throw err;
      }
    }
    return dirty.length;
  }

  /** Stops the timer and writes what is left. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.flush().catch((err: unknown) => this.d.logger.warn({ err: describeError(err) }, 'attribute state: last write failed'));
    this.producer = undefined;
  }
}
