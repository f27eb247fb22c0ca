import { randomUUID } from 'node:crypto';
import type { Consumer, Kafka, KafkaMessage, Producer } from 'kafkajs';
import type { Clock } from '../clock.js';
import type { FailureClass } from '../errors.js';
import { describeError } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import { topicOffsets } from '../kafka/read-to-end.js';
import { hostname } from 'node:os';
import { LEGACY_INSTANCE, type ConnectorKind, type ConnectorRecord, type ConnectorState, type HealthRegistry, type InstanceRecord } from './connector-health.js';

export const HEALTH_RECORD_VERSION = 1;

/**
 * What one `gateway.state` record holds: one instance's record of one connector, plus when and in
 * which format it was written. Keyed `<connector>@<instance>`; records keyed by the connector name
 * alone (written before records were per instance) carry no `instance` and read as LEGACY_INSTANCE.
 * New fields are optional and additive, so the format version stays 1.
 */
export interface StoredConnectorRecord extends InstanceRecord {
  version: typeof HEALTH_RECORD_VERSION;
  /** the writer's host and process id, for the operator reading /connectors */
  host?: string;
  pid?: number;
}

export type ParsedHealthRecord = { ok: true; record: StoredConnectorRecord } | { ok: false; why: string };

/** The record key of one connector's record written by one instance. */
export function healthRecordKey(name: string, instance: string): string {
  return instance === LEGACY_INSTANCE ? name : `${name}@${instance}`;
}

// Records objects rather than arrays so that a new member of either union is a compile error here
// instead of a valid record being skipped on load.
const KINDS: Record<ConnectorKind, true> = { braze: true, amplitude: true, cohorts: true };
const FAILURE_CLASSES: Record<FailureClass, true> = { retryable: true, rate_limited: true, auth: true, invalid_input: true, fatal: true };
const STATES: Record<ConnectorState, true> = { healthy: true, idle: true, degraded: true, failing: true, expired: true };

const OPTIONAL_TIMES = ['lastSuccessMs', 'lastAttemptMs', 'failingSinceMs', 'expiredAtMs', 'oldestPendingMs'] as const;
const OPTIONAL_COUNTS = ['deadLettered', 'rejected', 'pending', 'recentDelivered', 'recentRejected'] as const;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isTime(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0;
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0;
}

/**
 * Checks one record's value against the format this gateway writes, and returns a clean copy:
 * only known fields go on to `restore()`, so a record from a newer or foreign writer cannot slip
 * extra properties into the live state. `null` is read as "absent" for the optional fields. A
 * record without `instance` (the format before records were per instance) reads as LEGACY_INSTANCE.
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
  const { name, kind, delivered, instance } = raw;
  if (typeof name !== 'string' || name.length === 0) return { ok: false, why: 'name is missing' };
  if (typeof kind !== 'string' || !Object.hasOwn(KINDS, kind)) return { ok: false, why: `unknown kind ${JSON.stringify(kind)}` };
  if (!isCount(delivered)) return { ok: false, why: 'delivered is not a count' };
  let inst = LEGACY_INSTANCE;
  if (instance !== undefined && instance !== null) {
    if (typeof instance !== 'string' || instance.length === 0 || instance === LEGACY_INSTANCE) return { ok: false, why: 'instance is not a name' };
    inst = instance;
  }
  const record: StoredConnectorRecord = {
    version: HEALTH_RECORD_VERSION,
    savedAt: raw.savedAt,
    instance: inst,
    name,
    kind: kind as ConnectorKind,
    delivered,
    deadLettered: 0,
    rejected: 0,
  };
  for (const field of OPTIONAL_TIMES) {
    const v = raw[field];
    if (v === undefined || v === null) continue;
    if (!isTime(v)) return { ok: false, why: `${field} is not a time` };
    record[field] = v;
  }
  for (const field of OPTIONAL_COUNTS) {
    const v = raw[field];
    if (v === undefined || v === null) continue;
    if (!isCount(v)) return { ok: false, why: `${field} is not a count` };
    record[field] = v;
  }
  const cls = raw.lastErrorClass;
  if (cls !== undefined && cls !== null) {
    if (typeof cls !== 'string' || !Object.hasOwn(FAILURE_CLASSES, cls)) return { ok: false, why: `unknown lastErrorClass ${JSON.stringify(cls)}` };
    record.lastErrorClass = cls as FailureClass;
  }
  const state = raw.state;
  if (state !== undefined && state !== null) {
    if (typeof state !== 'string' || !Object.hasOwn(STATES, state)) return { ok: false, why: `unknown state ${JSON.stringify(state)}` };
    record.state = state as ConnectorState;
  }
  const err = raw.lastError;
  if (err !== undefined && err !== null) {
    if (typeof err !== 'string') return { ok: false, why: 'lastError is not a string' };
    record.lastError = err;
  }
  if (typeof raw.host === 'string') record.host = raw.host.slice(0, 255);
  if (typeof raw.pid === 'number' && Number.isInteger(raw.pid)) record.pid = raw.pid;
  return { ok: true, record };
}

/** The facts restore() takes, without what only the writer could know. */
function factsOf(r: StoredConnectorRecord): ConnectorRecord {
  return {
    name: r.name,
    kind: r.kind,
    delivered: r.delivered,
    deadLettered: r.deadLettered,
    rejected: r.rejected,
    ...(r.lastSuccessMs !== undefined ? { lastSuccessMs: r.lastSuccessMs } : {}),
    ...(r.lastAttemptMs !== undefined ? { lastAttemptMs: r.lastAttemptMs } : {}),
    ...(r.lastErrorClass !== undefined ? { lastErrorClass: r.lastErrorClass } : {}),
    ...(r.lastError !== undefined ? { lastError: r.lastError } : {}),
    ...(r.failingSinceMs !== undefined ? { failingSinceMs: r.failingSinceMs } : {}),
    ...(r.expiredAtMs !== undefined ? { expiredAtMs: r.expiredAtMs } : {}),
  };
}

export interface HealthStoreDeps {
  kafka: Kafka;
  topic: string;
  /** its instanceId names this process's records; its options give the clean-up age (dropWindowMs) */
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
  /**
   * keep reading the topic after load(), so the other instances' records reach /connectors as they
   * are written (default true); without it they are read once, at load()
   */
  follow?: boolean;
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
 * Connector health, persisted in the compacted topic `gateway.state`, one record per connector
 * and instance (key `<connector>@<instance>`), so a restart does not reset the drop window's clock
 * and several instances do not overwrite each other. Kafka Connect keeps connector status the same
 * way; compaction keeps the latest record per key, and the reader still keeps the latest itself
 * because compaction is lazy (and the test broker never compacts).
 *
 * At load() this instance restores its own records into its connectors and hands every other
 * instance's (and any record keyed by connector only, as instance `(unknown)`) to the registry's
 * merged view; then it keeps reading, so the view follows the other instances. Records not written
 * for longer than the drop window are deleted (a tombstone) by whichever instance saves next.
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
  /** the consumer that keeps reading the topic after load() */
  private follower: Consumer | undefined;
  private closing = false;
  private readonly host = hostname();

  constructor(private readonly d: HealthStoreDeps) {
    this.intervalMs = d.intervalMs ?? 10_000;
  }

  private get instance(): string {
    return this.d.registry.instanceId;
  }

  /**
   * Reads the topic from the beginning to the end it had when load() began, keeps the latest valid
   * record per key (a null value is a tombstone), restores this instance's own records into the
   * registry and shows the other instances' in its merged view; returns how many own records were
   * restored. A missing or empty topic reads as nothing saved. Connectors found here but not (yet)
   * configured are restored too, so turning a leg off for a while does not reset its clock. Unless
   * `follow` is false the reader then stays, applying what the other instances write.
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
    let caughtUp = false;
    const badRecord = (m: KafkaMessage, partition: number, why: string): void => {
      bad++;
      if (bad <= BAD_RECORD_LOG_LIMIT) {
        this.d.logger.warn({ topic: this.d.topic, partition, offset: m.offset, key: m.key?.toString('utf8') ?? null, why }, 'connector health: skipping an unreadable state record');
      }
    };
    const onMessage = (m: KafkaMessage, partition: number): void => {
      const parsed = this.parseMessage(m);
      if (!parsed.ok) {
        if (parsed.why !== undefined) badRecord(m, partition, parsed.why);
        return;
      }
      if (caughtUp) return this.applyLive(parsed.key, parsed.record);
      read++;
      const offset = BigInt(m.offset);
      const timestampMs = Number(m.timestamp);
      const prev = latest.get(parsed.key);
      // One partitioner puts a key in one partition, where offset order is write order; a key found
      // in two partitions (a writer with another partitioner) falls back to the record timestamps.
      const newer = prev === undefined || (prev.partition === partition ? offset > prev.offset : timestampMs >= prev.timestampMs);
      if (newer) latest.set(parsed.key, { partition, offset, timestampMs, record: parsed.record });
    };

    const toRead = new Map([...ends].filter(([, e]) => e.high > e.low).map(([p, e]) => [p, e.high]));
    const follow = this.d.follow ?? true;
    if (toRead.size > 0 || follow) await this.read(toRead, onMessage, follow);

    let restored = 0;
    let peers = 0;
    for (const { record } of latest.values()) {
      if (record === undefined) continue;
      if (record.instance === this.instance) {
        this.d.registry.connector(record.name, record.kind).restore(factsOf(record));
        restored++;
      } else {
        this.d.registry.observe(peerRecord(record));
        peers++;
      }
    }
    caughtUp = true;
    if (bad > BAD_RECORD_LOG_LIMIT) this.d.logger.warn({ topic: this.d.topic, bad }, `connector health: ${bad} unreadable state records skipped in all`);
    this.d.logger.info(
      { topic: this.d.topic, instance: this.instance, records: read, restored, otherInstances: peers, skipped: bad, keys: [...latest.keys()], ms: Date.now() - started },
      'connector health restored from the state topic',
    );
    return restored;
  }

  /** A record's key and value, checked against each other; `why` undefined for a tombstone of no interest. */
  private parseMessage(m: KafkaMessage): { ok: true; key: string; record: StoredConnectorRecord | undefined } | { ok: false; why?: string } {
    const key = m.key?.toString('utf8');
    if (key === undefined || key.length === 0) return { ok: false, why: 'no key' };
    if (m.value === null) return { ok: true, key, record: undefined };
    const parsed = parseHealthRecord(m.value);
    if (!parsed.ok) return { ok: false, why: parsed.why };
    const r = parsed.record;
    if (key !== healthRecordKey(r.name, r.instance)) {
      return { ok: false, why: `key ${JSON.stringify(key)} names another connector or instance than the record (${JSON.stringify(healthRecordKey(r.name, r.instance))})` };
    }
    return { ok: true, key, record: r };
  }

  /** After load(): another instance's record, or a tombstone, as it is written. */
  private applyLive(key: string, record: StoredConnectorRecord | undefined): void {
    if (record !== undefined) {
      this.d.registry.observe(peerRecord(record));
      return;
    }
    for (const peer of this.d.registry.peers()) if (healthRecordKey(peer.name, peer.instance) === key) this.d.registry.forget(peer.name, peer.instance);
  }

  /** low and high watermark per partition, or undefined when the topic does not exist */
  private async endOffsets(): Promise<Map<number, { low: bigint; high: bigint }> | undefined> {
    const offsets = await topicOffsets(this.d.kafka, this.d.topic);
    return offsets && new Map(offsets.map((o) => [o.partition, { low: o.low, high: o.high }]));
  }

  /**
   * Consumes from the beginning; resolves once every partition in `ends` has been read up to its
   * end offset. With `keep`, the consumer then stays (this.follower) and goes on calling onMessage.
   */
  private async read(ends: Map<number, bigint>, onMessage: (m: KafkaMessage, partition: number) => void, keep: boolean): Promise<void> {
    const timeoutMs = this.d.loadTimeoutMs ?? 60_000;
    const consumer: Consumer = this.d.kafka.consumer({
      groupId: `${this.d.groupIdPrefix ?? 'gateway-state-reader'}-${randomUUID()}`,
      maxWaitTimeInMs: this.d.fetchMaxWaitMs,
      allowAutoTopicCreation: false,
    });
    const remaining = new Set(ends.keys());
    let timer: NodeJS.Timeout | undefined;
    let caughtUp = false;
    try {
      await consumer.connect();
      await consumer.subscribe({ topic: this.d.topic, fromBeginning: true });
      await new Promise<void>((resolve, reject) => {
        timer = setTimeout(() => {
          reject(new Error(`connector health: could not read ${this.d.topic} to its end within ${timeoutMs} ms (partitions still unread: ${[...remaining].join(', ')})`));
        }, timeoutMs);
        consumer.on(consumer.events.CRASH, (e) => {
          if (e.payload.restart) return;
          if (!caughtUp) reject(new Error(`connector health: the state reader stopped: ${describeError(e.payload.error)}`));
          else if (!this.closing) {
            this.d.logger.warn({ err: describeError(e.payload.error) }, 'connector health: the state reader stopped; other instances\' records are read again after the next save');
            if (this.follower === consumer) this.follower = undefined;
            void consumer.disconnect().catch(() => undefined);
          }
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
        if (remaining.size === 0) resolve();
      });
      caughtUp = true;
      if (keep && !this.closing) {
        this.follower = consumer;
        return;
      }
    } finally {
      clearTimeout(timer);
      if (this.follower !== consumer) {
        await consumer.disconnect().catch((err: unknown) => {
          this.d.logger.warn({ err: describeError(err) }, 'connector health: the state reader did not disconnect cleanly');
        });
      }
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
    const messages: Array<{ key: string; value: string | null }> = this.d.registry.all().map((c) => {
      const stored: StoredConnectorRecord = { version: HEALTH_RECORD_VERSION, ...c.instanceRecord(this.instance, savedAt), host: this.host, pid: process.pid };
      return { key: healthRecordKey(stored.name, stored.instance), value: JSON.stringify(stored) };
    });
    // Instances gone for longer than the drop window: nothing of theirs can matter any more.
    const gone = this.d.registry.peersSavedBefore(savedAt - this.d.registry.options.dropWindowMs);
    for (const g of gone) messages.push({ key: healthRecordKey(g.name, g.instance), value: null });
    if (messages.length === 0) return;
    try {
      // acks -1: a record only the leader had could vanish in a failover and take the clock with it
      await producer.send({ topic: this.d.topic, acks: -1, messages });
      for (const g of gone) this.d.registry.forget(g.name, g.instance);
      if (gone.length > 0) this.d.logger.info({ topic: this.d.topic, records: gone.map((g) => healthRecordKey(g.name, g.instance)) }, 'connector health: deleted the records of instances gone for longer than the drop window');
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
    // The topic exists now: on a fresh cluster load() found none, so start following here.
    if (!this.follower && !this.closing && (this.d.follow ?? true)) void this.startFollowing();
  }

  private following: Promise<void> | undefined;
  private startFollowing(): Promise<void> {
    this.following ??= this.read(new Map(), (m) => {
      const parsed = this.parseMessage(m);
      if (parsed.ok) this.applyLive(parsed.key, parsed.record);
    }, true)
      .catch((err: unknown) => this.d.logger.warn({ err: describeError(err) }, 'connector health: cannot read the state topic; other instances are not shown'))
      .finally(() => {
        this.following = undefined;
      });
    return this.following;
  }

  /**
   * Stops the timer and writes once more, so the latest facts survive the shutdown, then stops
   * reading. A failed final write is logged, not thrown: the shutdown that called this must still
   * close everything else.
   */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.producer && !this.stopped) {
      try {
        await this.save();
      } catch (err) {
        this.d.logger.error({ topic: this.d.topic, err: describeError(err) }, 'connector health: the final save failed; the next start resumes from the last saved state');
      } finally {
        this.stopped = true;
        this.producer = undefined;
      }
    }
    await this.close();
  }

  /** Stops reading and writing without a final save (a crash, or a stop that already saved). */
  async close(): Promise<void> {
    this.closing = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.stopped = true;
    this.producer = undefined;
    await this.following?.catch(() => undefined);
    const f = this.follower;
    this.follower = undefined;
    await f?.disconnect().catch((err: unknown) => {
      this.d.logger.warn({ err: describeError(err) }, 'connector health: the state reader did not disconnect cleanly');
    });
  }
}

/** A stored record as the registry's merged view takes it. */
function peerRecord(r: StoredConnectorRecord): InstanceRecord {
  const { version: _version, host: _host, pid: _pid, ...rest } = r;
  return rest;
}
