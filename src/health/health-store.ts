import { randomUUID } from 'node:crypto';
import type { Consumer, Kafka, KafkaMessage, Producer } from 'kafkajs';
import type { Clock } from '../clock.js';
import type { FailureClass } from '../errors.js';
import { describeError } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import type { ConnectorKind, ConnectorRecord, HealthRegistry } from './connector-health.js';

export const HEALTH_RECORD_VERSION = 1;

/** What one `gateway.state` record holds: the connector's facts, plus when and in which format they were written. */
export interface StoredConnectorRecord extends ConnectorRecord {
  version: typeof HEALTH_RECORD_VERSION;
  savedAt: number;
}

export type ParsedHealthRecord = { ok: true; record: StoredConnectorRecord } | { ok: false; why: string };

// Records objects rather than arrays so that a new member of either union is a compile error here
// instead of a valid record being skipped on load.
const KINDS: Record<ConnectorKind, true> = { braze: true, amplitude: true, cohorts: true };
const FAILURE_CLASSES: Record<FailureClass, true> = { retryable: true, rate_limited: true, auth: true, invalid_input: true, fatal: true };

const OPTIONAL_TIMES = ['lastSuccessMs', 'lastAttemptMs', 'failingSinceMs', 'expiredAtMs'] as const;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isTime(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0;
}

/**
 * Checks one record's value against the format this gateway writes, and returns a clean copy:
 * only known fields go on to `restore()`, so a record from a newer or foreign writer cannot slip
 * extra properties into the live state. `null` is read as "absent" for the optional fields.
 */
export function parseHealthRecord(value: Buffer | string): ParsedHealthRecord {
  let raw: unknown;
  try {
    raw = JSON.parse(typeof value === 'string' ? value : value.toString('utf8'));
  } catch {
    return { ok: false, why: 'not JSON' };
  }
  if (!isObject(raw)) return { ok: false, why: 'not a JSON object' };
  if (raw.version !== HEALTH_RECORD_VERSION) return { ok: false, why: `unknown version ${JSON.stringify(raw.version)}` };
  if (!isTime(raw.savedAt)) return { ok: false, why: 'savedAt is not a time' };
  const { name, kind, delivered } = raw;
  if (typeof name !== 'string' || name.length === 0) return { ok: false, why: 'name is missing' };
  if (typeof kind !== 'string' || !Object.hasOwn(KINDS, kind)) return { ok: false, why: `unknown kind ${JSON.stringify(kind)}` };
  if (typeof delivered !== 'number' || !Number.isFinite(delivered) || delivered < 0) return { ok: false, why: 'delivered is not a count' };
  const record: StoredConnectorRecord = { version: HEALTH_RECORD_VERSION, savedAt: raw.savedAt, name, kind: kind as ConnectorKind, delivered };
  for (const field of OPTIONAL_TIMES) {
    const v = raw[field];
    if (v === undefined || v === null) continue;
    if (!isTime(v)) return { ok: false, why: `${field} is not a time` };
    record[field] = v;
  }
  const cls = raw.lastErrorClass;
  if (cls !== undefined && cls !== null) {
    if (typeof cls !== 'string' || !Object.hasOwn(FAILURE_CLASSES, cls)) return { ok: false, why: `unknown lastErrorClass ${JSON.stringify(cls)}` };
    record.lastErrorClass = cls as FailureClass;
  }
  const err = raw.lastError;
  if (err !== undefined && err !== null) {
    if (typeof err !== 'string') return { ok: false, why: 'lastError is not a string' };
    record.lastError = err;
  }
  return { ok: true, record };
}

export interface HealthStoreDeps {
  kafka: Kafka;
  topic: string;
  registry: HealthRegistry;
  logger: Logger;
  clock: Clock;
  /** how often every connector is written (default 10 s) */
  intervalMs?: number;
  /** the reader's fetch wait: keep it small against the test broker, which always waits it out */
  fetchMaxWaitMs: number;
  /** the reader joins a fresh, never-committed consumer group named `<prefix>-<uuid>` */
  groupIdPrefix?: string;
  /** load() gives up (rejects) when the topic cannot be read to its end this fast (default 60 s) */
  loadTimeoutMs?: number;
}

/** the newest record of one key seen so far while loading */
interface Latest {
  partition: number;
  offset: bigint;
  timestampMs: number;
  /** undefined for a tombstone */
  record: StoredConnectorRecord | undefined;
}

/** at most this many bad records are logged one by one; the rest only in the summary */
const BAD_RECORD_LOG_LIMIT = 10;

/**
 * Connector health, persisted in the compacted topic `gateway.state` (key = connector name), so a
 * restart does not reset the drop window's clock. Kafka Connect keeps connector status the same
 * way; compaction keeps the latest record per key, and the reader still keeps the latest itself
 * because compaction is lazy (and the test broker never compacts).
 */
export class HealthStore {
  private readonly intervalMs: number;
  private producer: Producer | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private inFlight: Promise<void> | undefined;
  private queued: Promise<void> | undefined;
  /** set while saves fail, so a broker outage logs once, not every interval */
  private failing = false;

  constructor(private readonly d: HealthStoreDeps) {
    this.intervalMs = d.intervalMs ?? 10_000;
  }

  /**
   * Reads the topic from the beginning to the end it had when load() began, keeps the latest valid
   * record per key (a null value is a tombstone), and restores each into the registry; returns how
   * many were restored. A missing or empty topic reads as nothing saved and costs no consumer group
   * join. Connectors found here but not (yet) configured are restored too, so turning a leg off
   * for a while does not reset its clock.
   */
  async load(): Promise<number> {
    const started = Date.now();
    const ends = await this.endOffsets();
    if (ends === undefined) {
      this.d.logger.info({ topic: this.d.topic }, 'connector health: state topic does not exist yet; starting from nothing');
      return 0;
    }
    const latest = new Map<string, Latest>();
    let read = 0;
    let bad = 0;
    const badRecord = (m: KafkaMessage, partition: number, why: string): void => {
      bad++;
      if (bad <= BAD_RECORD_LOG_LIMIT) {
        this.d.logger.warn({ topic: this.d.topic, partition, offset: m.offset, key: m.key?.toString('utf8') ?? null, why }, 'connector health: skipping an unreadable state record');
      }
    };
    const onMessage = (m: KafkaMessage, partition: number): void => {
      read++;
      const key = m.key?.toString('utf8');
      if (key === undefined || key.length === 0) return badRecord(m, partition, 'no key');
      let record: StoredConnectorRecord | undefined;
      if (m.value !== null) {
        const parsed = parseHealthRecord(m.value);
        if (!parsed.ok) return badRecord(m, partition, parsed.why);
        if (parsed.record.name !== key) return badRecord(m, partition, `key ${JSON.stringify(key)} names another connector than the record (${JSON.stringify(parsed.record.name)})`);
        record = parsed.record;
      }
      const offset = BigInt(m.offset);
      const timestampMs = Number(m.timestamp);
      const prev = latest.get(key);
      // One partitioner puts a key in one partition, where offset order is write order; a key found
      // in two partitions (a writer with another partitioner) falls back to the record timestamps.
      const newer = prev === undefined || (prev.partition === partition ? offset > prev.offset : timestampMs >= prev.timestampMs);
      if (newer) latest.set(key, { partition, offset, timestampMs, record });
    };

    const toRead = new Map([...ends].filter(([, e]) => e.high > e.low).map(([p, e]) => [p, e.high]));
    if (toRead.size > 0) await this.readUntil(toRead, onMessage);

    let restored = 0;
    for (const { record } of latest.values()) {
      if (record === undefined) continue;
      const { version: _version, savedAt: _savedAt, ...facts } = record;
      this.d.registry.connector(facts.name, facts.kind).restore(facts);
      restored++;
    }
    if (bad > BAD_RECORD_LOG_LIMIT) this.d.logger.warn({ topic: this.d.topic, bad }, `connector health: ${bad} unreadable state records skipped in all`);
    this.d.logger.info(
      { topic: this.d.topic, records: read, restored, skipped: bad, connectors: [...latest.keys()], ms: Date.now() - started },
      'connector health restored from the state topic',
    );
    return restored;
  }

  /** low and high watermark per partition, or undefined when the topic does not exist */
  private async endOffsets(): Promise<Map<number, { low: bigint; high: bigint }> | undefined> {
    const admin = this.d.kafka.admin();
    await admin.connect();
    try {
      // Asking for the offsets of a missing topic retries for the whole retry budget; the topic
      // list answers at once, and the admin client never auto-creates (which would make a
      // non-compacted state topic on a broker that auto-creates).
      const topics = await admin.listTopics();
      if (!topics.includes(this.d.topic)) return undefined;
      const offsets = await admin.fetchTopicOffsets(this.d.topic);
      return new Map(offsets.map((o) => [o.partition, { low: BigInt(o.low), high: BigInt(o.high) }]));
    } finally {
      await admin.disconnect();
    }
  }

  /** Consumes from the beginning until every partition in `ends` has been read up to its end offset. */
  private async readUntil(ends: Map<number, bigint>, onMessage: (m: KafkaMessage, partition: number) => void): Promise<void> {
    const timeoutMs = this.d.loadTimeoutMs ?? 60_000;
    const consumer: Consumer = this.d.kafka.consumer({
      groupId: `${this.d.groupIdPrefix ?? 'gateway-state-reader'}-${randomUUID()}`,
      maxWaitTimeInMs: this.d.fetchMaxWaitMs,
      allowAutoTopicCreation: false,
    });
    const remaining = new Set(ends.keys());
    let timer: NodeJS.Timeout | undefined;
    try {
      await consumer.connect();
      await consumer.subscribe({ topic: this.d.topic, fromBeginning: true });
      await new Promise<void>((resolve, reject) => {
        timer = setTimeout(() => {
          reject(new Error(`connector health: could not read ${this.d.topic} to its end within ${timeoutMs} ms (partitions still unread: ${[...remaining].join(', ')})`));
        }, timeoutMs);
        consumer.on(consumer.events.CRASH, (e) => {
          if (!e.payload.restart) reject(new Error(`connector health: the state reader stopped: ${describeError(e.payload.error)}`));
        });
        consumer
          .run({
            // the group is thrown away; committing would only leave offsets behind on the broker
            autoCommit: false,
            eachBatch: async ({ batch }) => {
              for (const m of batch.messages) onMessage(m, batch.partition);
              const end = ends.get(batch.partition);
              if (end !== undefined && BigInt(batch.lastOffset()) + 1n >= end) remaining.delete(batch.partition);
              // resolved, never awaited here: disconnecting from inside eachBatch would wait for itself
              if (remaining.size === 0) resolve();
            },
          })
          .catch(reject);
      });
    } finally {
      clearTimeout(timer);
      await consumer.disconnect().catch((err: unknown) => {
        this.d.logger.warn({ err: describeError(err) }, 'connector health: the state reader did not disconnect cleanly');
      });
    }
  }

  /** Starts writing every connector's record every `intervalMs` and whenever save() is called. */
  start(producer: Producer): void {
    if (this.producer) throw new Error('HealthStore.start: already started');
    this.producer = producer;
    this.stopped = false;
    this.timer = setInterval(() => {
      this.save().catch(() => undefined); // save() has already logged it
    }, this.intervalMs);
    // the gateway's server and consumers keep the process alive; this timer alone must not
    this.timer.unref();
  }

  /**
   * Writes every connector's current record. Calls that arrive while a write is in flight share
   * one follow-up write (which reads the state after they were made), so a burst of saves costs at
   * most two writes and none of them is lost. Rejects when the write fails (after logging it).
   * Before start() and after stop() it does nothing.
   */
  save(): Promise<void> {
    if (!this.producer || this.stopped) return Promise.resolve();
    if (this.queued) return this.queued;
    if (this.inFlight) {
      const next = this.inFlight
        .catch(() => undefined)
        .then(() => {
          this.queued = undefined;
          return this.runWrite();
        });
      this.queued = next;
      return next;
    }
    return this.runWrite();
  }

  private runWrite(): Promise<void> {
    const p = this.write().finally(() => {
      if (this.inFlight === p) this.inFlight = undefined;
    });
    this.inFlight = p;
    return p;
  }

  private async write(): Promise<void> {
    const producer = this.producer;
    if (!producer) return;
    const savedAt = this.d.clock.now();
    const messages = this.d.registry.all().map((c) => {
      const stored: StoredConnectorRecord = { version: HEALTH_RECORD_VERSION, savedAt, ...c.record() };
      return { key: stored.name, value: JSON.stringify(stored) };
    });
    if (messages.length === 0) return;
    try {
      // acks -1: a record only the leader had could vanish in a failover and take the clock with it
      await producer.send({ topic: this.d.topic, acks: -1, messages });
      if (this.failing) this.d.logger.info({ topic: this.d.topic }, 'connector health: saving to the state topic works again');
      this.failing = false;
    } catch (err) {
      if (!this.failing) {
        this.d.logger.error(
          { topic: this.d.topic, err: describeError(err) },
          'connector health: cannot save to the state topic; a restart now would lose the drop window clock since the last save',
        );
      }
      this.failing = true;
      throw err;
    }
  }

  /**
   * Stops the timer and writes once more, so the latest facts survive the shutdown. A failed final
   * write is logged, not thrown: the shutdown that called this must still close everything else.
   */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (!this.producer || this.stopped) return;
    try {
      await this.save();
    } catch (err) {
      this.d.logger.error({ topic: this.d.topic, err: describeError(err) }, 'connector health: the final save failed; the next start resumes from the last saved state');
    } finally {
      this.stopped = true;
      this.producer = undefined;
    }
  }
}
