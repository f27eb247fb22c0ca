import { randomBytes } from 'node:crypto';
import { Partitioners, type Consumer, type EachBatchPayload, type IHeaders, type Message, type Producer } from 'kafkajs';
import type { GatewayConfig } from '../config/config.js';
import { createKafka } from '../kafka/client.js';
import { DLQ_HEADERS } from '../kafka/dead-letter.js';
import { topicOffsets } from '../kafka/read-to-end.js';
import type { Logger } from '../observability/logger.js';
import { systemClock } from '../clock.js';
import { BrazeClient } from '../amplitude-to-braze/braze-client.js';
import { isBrazeObjectRecord, readBrazeObjectRecord } from '../amplitude-to-braze/braze-dead-letter.js';
import { BrazeObjectReplayer, type ObjectReplayResult } from './braze-objects.js';
import { replayedAttributes } from './replay-attributes.js';
import { AttributeState } from '../amplitude-to-braze/attribute-state.js';
import { AttributeStore } from '../amplitude-to-braze/attribute-store.js';

export interface ReplayFilter {
  /** any of these reasons; absent or empty means every reason */
  reasons?: string[];
  connectors?: string[];
  legs?: string[];
  /** on `first-failure-time`, inclusive */
  from?: Date;
  /** on `first-failure-time`, exclusive, so consecutive ranges never count a dead letter twice */
  to?: Date;
}

export interface ReplayOptions {
  filter: ReplayFilter;
  dryRun: boolean;
  /** stop after this many matching dead letters */
  limit?: number;
}

export interface ReplayReport {
  /** dead letters read, up to the end offsets taken at the start */
  scanned: number;
  /** dead letters that passed the filter (within `limit`) */
  matched: number;
  /** written back to a leg's input topic; in a dry run, the number that would have been */
  replayed: number;
  /** matched dead letters per reason */
  byReason: Record<string, number>;
  /** replayed (or, dry, would-be replayed) dead letters per destination topic */
  byTarget: Record<string, number>;
  /** matched but not sent: null value, or no topic to send them to (a Braze object without Braze settings) */
  skippedNoTarget: number;
  /** single Braze objects (`payload: braze-object`) Braze refused again: written back to the dead-letter topic */
  brazeRejected: number;
  /** attributes objects not sent: the attribute state says Braze has each of their attributes as new or newer */
  skippedNewer: number;
}

/** Where single Braze objects go: not a topic, Braze itself. */
export const BRAZE_TARGET = 'braze:/users/track';

/** The replay stopped part-way; `report` says what had been written by then. */
export class ReplayFailedError extends Error {
  constructor(
    message: string,
    readonly report: ReplayReport,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'ReplayFailedError';
  }
}

export const REPLAY_HEADERS = {
  fromReason: 'replayed-from-reason',
  at: 'replayed-at',
} as const;

/** the one original header carried over: the inbound leg ages events by it */
const KEPT_HEADER = 'received-at';

const SEND_BATCH = 500;

/**
 * Sends dead letters back to the input topic of the leg that failed them. Reads the dead-letter
 * topic from the start up to the end offsets seen when it begins, so dead letters that arrive
 * meanwhile (including any this replay causes) are left for a later run and the command always
 * ends. It deletes nothing: Kafka cannot delete single records.
 */
export async function replayDeadLetters(config: GatewayConfig, opts: ReplayOptions, logger: Logger): Promise<ReplayReport> {
  const topic = config.topics.deadLetter;
  const report: ReplayReport = { scanned: 0, matched: 0, replayed: 0, byReason: {}, byTarget: {}, skippedNoTarget: 0, brazeRejected: 0, skippedNewer: 0 };
  const limit = opts.limit ?? Number.POSITIVE_INFINITY;
  if (limit <= 0) return report;

  const kafka = createKafka(config.kafka, logger, '-replay');
  // undefined: the topic does not exist (asked without the long retries of an unknown topic)
  const snapshot = await topicOffsets(kafka, topic);
  if (snapshot === undefined) {
    logger.warn({ topic }, 'dead-letter topic does not exist: nothing to replay');
    return report;
  }

  /** next offset to look at, per partition still being read */
  const next = new Map<number, bigint>();
  const high = new Map<number, bigint>();
  for (const p of snapshot) {
    high.set(p.partition, p.high);
    // An empty partition (or one retention has emptied) gives the consumer nothing to fetch, so it
    // would never report reaching its end: it counts as done from the start.
    if (p.low < p.high) next.set(p.partition, p.low);
  }
  const total = snapshot.reduce((n, p) => n + (p.high - p.low), 0n);
  logger.info(
    { topic, partitions: snapshot.length, records: total.toString(), filter: opts.filter, dryRun: opts.dryRun, limit: opts.limit },
    'replay: reading the dead-letter topic up to its current end',
  );
  if (next.size === 0) return report;

  // What Braze accepted last per user and attribute, so a refused attributes object replayed now
  // does not write its old values over newer ones (replay-attributes.ts).
  const attributeState = config.braze && config.outbound.attributeStateMaxUsers > 0 ? await loadAttributeState(kafka, config, logger) : undefined;

  const producer: Producer | undefined = opts.dryRun
    ? undefined
    : kafka.producer({ allowAutoTopicCreation: false, createPartitioner: Partitioners.DefaultPartitioner, idempotent: false });
  if (producer) await producer.connect();

  const consumer: Consumer = kafka.consumer({
    // a group of its own: nothing is committed, and the gateway's own groups are not disturbed
    groupId: `${config.kafka.groupId}.replay.${Date.now()}.${randomBytes(4).toString('hex')}`,
    maxWaitTimeInMs: config.kafka.fetchMaxWaitMs,
    sessionTimeout: config.kafka.sessionTimeoutMs,
    heartbeatInterval: Math.min(3_000, Math.floor(config.kafka.sessionTimeoutMs / 5)),
    allowAutoTopicCreation: false,
  });

  const replayedAt = new Date().toISOString();
  /** `back`: a Braze object refused again, written back to the dead-letter topic (not a replay) */
  const pending: Array<{ topic: string; message: Message; back?: boolean }> = [];
  let failure: Error | undefined;
  let finish: () => void = () => undefined;
  const finished = new Promise<void>((resolve) => {
    finish = resolve;
  });

  // Single Braze objects go straight to /users/track, batched under Braze's caps, in reading order.
  let brazeClient: BrazeClient | undefined;
  type DlRecord = { key: Buffer | null; value: Buffer | null; headers: Record<string, string> };
  const braze = config.braze;
  const objects: BrazeObjectReplayer<DlRecord> | undefined =
    braze && !opts.dryRun
      ? new BrazeObjectReplayer<DlRecord>({
          send: (body) => {
            brazeClient ??= new BrazeClient(braze, systemClock);
            return brazeClient.track(body);
          },
          limits: { maxPerArray: braze.maxPerArray, maxTotal: braze.maxTotal, maxBytes: braze.maxRequestBytes - 64 },
          retryBaseMs: braze.retryBaseMs,
          retryMaxMs: braze.retryMaxMs,
        })
      : undefined;
  const settleObjects = (r: ObjectReplayResult<DlRecord>): void => {
    report.replayed += r.sent;
    if (r.sent > 0) report.byTarget[BRAZE_TARGET] = (report.byTarget[BRAZE_TARGET] ?? 0) + r.sent;
    for (const rej of r.rejected) {
      // Refused again: back to the dead-letter topic with Braze's new answer, so nothing is lost.
      report.brazeRejected++;
      const headers: IHeaders = { ...rej.record.headers, [DLQ_HEADERS.reason]: rej.reason, [DLQ_HEADERS.error]: rej.error.slice(0, 2_000), [REPLAY_HEADERS.at]: replayedAt };
      pending.push({ topic, message: { key: rej.record.key, value: rej.record.value, headers }, back: true });
    }
  };

  const flush = async (): Promise<void> => {
    if (objects && objects.size > 0) settleObjects(await objects.flush());
    while (pending.length > 0) {
      const chunk = pending.slice(0, SEND_BATCH);
      const byTopic = new Map<string, Message[]>();
      for (const { topic: t, message } of chunk) {
        const list = byTopic.get(t);
        if (list) list.push(message);
        else byTopic.set(t, [message]);
      }
      // Each chunk is acknowledged before the next is sent, so per-key order is that of the
      // dead-letter topic even when a send is retried.
      await producer?.sendBatch({ acks: -1, topicMessages: [...byTopic].map(([t, messages]) => ({ topic: t, messages })) });
      pending.splice(0, chunk.length);
      for (const { topic: t, back } of chunk) {
        if (back) continue;
        report.replayed++;
        report.byTarget[t] = (report.byTarget[t] ?? 0) + 1;
      }
    }
  };

  const advance = (partition: number, lastOffset: string): void => {
    const at = next.get(partition);
    const end = high.get(partition);
    if (at === undefined || end === undefined) return;
    const after = BigInt(lastOffset) + 1n;
    if (after > at) next.set(partition, after);
    if ((next.get(partition) ?? 0n) >= end) {
      next.delete(partition);
      // Stop fetching what arrived after the snapshot.
      consumer.pause([{ topic, partitions: [partition] }]);
      if (next.size === 0) finish();
    }
  };

  const eachBatch = async ({ batch, heartbeat, isRunning, resolveOffset }: EachBatchPayload): Promise<void> => {
    if (failure) return;
    try {
      const end = high.get(batch.partition) ?? 0n;
      let reachedEnd = false;
      for (const message of batch.messages) {
        if (!isRunning() || failure || report.matched >= limit) return;
        const offset = BigInt(message.offset);
        const at = next.get(batch.partition);
        if (at === undefined) {
          // Empty at the start, or already read: left unresolved, this batch would be fetched again and again.
          consumer.pause([{ topic, partitions: [batch.partition] }]);
          return;
        }
        // A restarted consumer starts over (nothing is committed): what was seen is not sent twice.
        if (offset < at) {
          resolveOffset(message.offset);
          continue;
        }
        if (offset >= end) {
          reachedEnd = true;
          break;
        }
        // Resolved offsets are the consumer's fetch position (nothing is committed from them).
        resolveOffset(message.offset);
        next.set(batch.partition, offset + 1n);
        report.scanned++;
        const headers = readHeaders(message.headers);
        if (!matches(headers, opts.filter)) continue;
        report.matched++;
        const reason = headers[DLQ_HEADERS.reason] ?? '(none)';
        report.byReason[reason] = (report.byReason[reason] ?? 0) + 1;
        if (isBrazeObjectRecord(headers)) {
          const rec = readBrazeObjectRecord(headers, message.value);
          if (!rec.ok || !braze) {
            report.skippedNoTarget++;
            if (!rec.ok) logger.warn({ offset: message.offset, partition: batch.partition, why: rec.why }, 'replay: unreadable Braze-object dead letter skipped');
          } else {
            const r = rec.array === 'attributes' ? replayedAttributes(attributeState, headers, rec.object, rec.json) : { send: rec.json };
            if ('skip' in r) {
              report.skippedNewer++;
            } else if (opts.dryRun) {
              report.replayed++;
              report.byTarget[BRAZE_TARGET] = (report.byTarget[BRAZE_TARGET] ?? 0) + 1;
            } else if (objects) {
              objects.add({ array: rec.array, json: r.send, record: { key: message.key, value: message.value, headers } });
              if (objects.full) {
                settleObjects(await objects.flush());
                await heartbeat();
              }
            }
          }
          if (report.matched >= limit) {
            finish();
            return;
          }
          continue;
        }
        const target = message.value === null ? undefined : targetTopic(headers, config);
        if (target === undefined) {
          report.skippedNoTarget++;
        } else if (opts.dryRun) {
          report.replayed++;
          report.byTarget[target] = (report.byTarget[target] ?? 0) + 1;
        } else {
          const out: IHeaders = { [REPLAY_HEADERS.fromReason]: reason, [REPLAY_HEADERS.at]: replayedAt };
          const receivedAt = headers[KEPT_HEADER];
          if (receivedAt !== undefined) out[KEPT_HEADER] = receivedAt;
          pending.push({ topic: target, message: { key: message.key, value: message.value, headers: out } });
          if (pending.length >= SEND_BATCH) {
            await flush();
            await heartbeat();
          }
        }
        if (report.matched >= limit) {
          finish();
          return;
        }
      }
      // The whole batch was read: its last offset also covers offsets compaction left out.
      const last = BigInt(batch.lastOffset());
      if (!reachedEnd && last < end) resolveOffset(batch.lastOffset());
      advance(batch.partition, (reachedEnd || last >= end ? end - 1n : last).toString());
    } catch (err) {
      // Thrown out of eachBatch, KafkaJS would restart the consumer; the run stops here instead.
      failure = err instanceof Error ? err : new Error(String(err));
      finish();
    }
  };

  // Batches of nothing but control records or aborted messages never reach eachBatch, yet move
  // the position: without this a partition ending in one would never count as read.
  consumer.on(consumer.events.END_BATCH_PROCESS, ({ payload }) => {
    if (payload.topic === topic && payload.batchSize === 0) advance(payload.partition, payload.lastOffset);
  });
  consumer.on(consumer.events.CRASH, ({ payload }) => {
    if (!payload.restart) {
      failure ??= payload.error;
      finish();
    }
  });

  try {
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({ autoCommit: false, eachBatchAutoResolve: false, eachBatch });
    await finished;
    await consumer.stop();
    if (!failure) await flush();
  } catch (err) {
    failure ??= err instanceof Error ? err : new Error(String(err));
  } finally {
    await consumer.disconnect().catch(() => undefined);
    await producer?.disconnect().catch(() => undefined);
    await brazeClient?.close().catch(() => undefined);
  }
  if (failure) {
    logger.error({ err: failure.message, report }, 'replay stopped');
    throw new ReplayFailedError(`replay stopped after ${report.replayed} records: ${failure.message}`, report, { cause: failure });
  }
  logger.info({ report, dryRun: opts.dryRun }, 'replay finished');
  return report;
}

function readHeaders(raw: IHeaders | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw ?? {})) {
    const first = Array.isArray(v) ? v[0] : v;
    if (first !== undefined) out[k] = first.toString();
  }
  return out;
}

function matches(h: Record<string, string>, f: ReplayFilter): boolean {
  const within = (list: string[] | undefined, value: string | undefined): boolean =>
    list === undefined || list.length === 0 || (value !== undefined && list.includes(value));
  if (!within(f.reasons, h[DLQ_HEADERS.reason])) return false;
  if (!within(f.connectors, h[DLQ_HEADERS.connector])) return false;
  if (!within(f.legs, h[DLQ_HEADERS.leg])) return false;
  if (f.from || f.to) {
    const t = Date.parse(h[DLQ_HEADERS.firstFailure] ?? '');
    if (Number.isNaN(t)) return false;
    if (f.from && t < f.from.getTime()) return false;
    if (f.to && t >= f.to.getTime()) return false;
  }
  return true;
}

/** The input topic of the leg that failed the event, or undefined when there is none to send it to. */
export function targetTopic(h: Record<string, string>, config: GatewayConfig): string | undefined {
  const { topics } = config;
  const leg = h[DLQ_HEADERS.leg];
  const legInput = leg === 'outbound' ? topics.amplitudeEvents : leg === 'inbound' ? topics.brazeCurrents : undefined;
  const source = h[DLQ_HEADERS.sourceTopic];
  let target: string | undefined;
  // The retry topic holds parked copies with a not-before time; a replay starts the event afresh.
  if (source !== undefined && source !== '' && source !== topics.retry) target = source;
  else if (source === topics.retry) target = legInput;
  else if (leg === 'outbound') target = topics.amplitudeEvents;
  else if (leg === 'inbound' && (h[DLQ_HEADERS.connector] === 'currents' || h[DLQ_HEADERS.connector] === 'amplitude')) target = topics.brazeCurrents;
  // Writing a dead letter back to the dead-letter topic would only make a copy of it.
  return target === topics.deadLetter ? undefined : target;
}

async function loadAttributeState(kafka: ReturnType<typeof createKafka>, config: GatewayConfig, logger: Logger): Promise<AttributeState | undefined> {
  const state = new AttributeState({ maxUsers: config.outbound.attributeStateMaxUsers });
  const store = new AttributeStore({ kafka, topic: config.topics.attributeState, state, logger, fetchMaxWaitMs: config.kafka.fetchMaxWaitMs, groupIdPrefix: `${config.kafka.groupId}.replay-attribute-state` });
  try {
    await store.load();
    return state;
  } catch (err) {
    logger.warn({ err: (err as Error).message }, 'replay: the attribute state could not be read; refused attributes objects are replayed as they were refused');
    return undefined;
  }
}
