import type { Consumer, EachBatchPayload, Kafka, PartitionAssigner } from 'kafkajs';
import type { Clock } from '../clock.js';
import { describeError } from '../errors.js';
import { awaitSinkCapacity, type ConsumedMessage, type MessageSink } from '../kafka/consumer-loop.js';
import { CrashRestart } from '../kafka/crash-restart.js';
import { OffsetTracker } from '../kafka/offset-tracker.js';
import type { Logger } from '../observability/logger.js';
import type { ParkTier } from './id-pacer.js';
import { NOT_BEFORE_HEADER } from './amplitude-leg.js';

/** The retry topic of a tier: rate parks in `gateway.retry`, daily-quota parks in `gateway.retry.quota`. */
export function retryTopicFor(tier: ParkTier, topics: { retry: string; retryQuota: string }): string {
  return tier === 'long' ? topics.retryQuota : topics.retry;
}

/** The tier a retry topic holds, or undefined for any other topic. */
export function tierOfTopic(topic: string, topics: { retry: string; retryQuota: string }): ParkTier | undefined {
  if (topic === topics.retryQuota) return 'long';
  if (topic === topics.retry) return 'short';
  return undefined;
}

export function notBeforeOf(msg: { headers: ConsumedMessage['headers'] }): number {
  const raw = msg.headers[NOT_BEFORE_HEADER];
  const n = Number((Array.isArray(raw) ? raw[0] : raw)?.toString() ?? 0);
  return Number.isFinite(n) ? n : 0;
}

export interface ParkedTierConsumerOptions {
  kafka: Kafka;
  groupId: string;
  topic: string;
  /** the leg: gets each parked event once it is due, in its key's order */
  sink: MessageSink;
  clock: Clock;
  logger: Logger;
  /** not-yet-due events held in memory per partition; at this many the partition is paused */
  maxHeldPerPartition: number;
  fetchMaxWaitMs: number;
  sessionTimeoutMs: number;
  commitIntervalMs: number;
  /** e.g. [coPartitionedAssigner(instanceId)], so partition p comes to the owner of Currents partition p */
  partitionAssigners?: PartitionAssigner[];
  /** called after a crashed consumer was replaced by a new member (counted in a metric) */
  onRestart?: () => void;
}

interface Waiting {
  msg: ConsumedMessage;
  notBefore: number;
}

interface PartitionHold {
  /** not-yet-due events per key, in offset order; a due event waits behind its key's earlier ones */
  byKey: Map<string, Waiting[]>;
  count: number;
  paused: boolean;
  timer?: NodeJS.Timeout;
  timerAt: number;
}

/**
 * The consumer of the long park tier (daily-quota parks, due up to a day later). Unlike the short
 * tier's RetrySink behind a ConsumerLoop, which stops fetching the whole topic when it holds too
 * much, this one holds at most `maxHeldPerPartition` not-yet-due events per partition and then
 * pauses just that partition, without resolving the offset of the event it could not take: when
 * the held events come due and leave, the partition resumes and Kafka hands the rest again from
 * there. So a flood of one device's quota parks costs a bounded amount of memory, stays in Kafka,
 * and blocks nothing outside its own partition of this tier (and never the short tier, a separate
 * topic with its own consumer).
 *
 * Order per key: a partition is read in offset order; an event is handed to the leg only when due
 * and after every earlier event of its key. Offsets are committed only below the first event not
 * finished by the leg, so a restart reads again whatever was held.
 */
export class ParkedTierConsumer {
  private consumer: Consumer;
  private readonly tracker = new OffsetTracker();
  private readonly holds = new Map<number, PartitionHold>();
  private commitTimer: NodeJS.Timeout | undefined;
  private joined = false;
  private stopping = false;
  private committing: Promise<void> = Promise.resolve();

  // As ConsumerLoop: a new member when kafkajs gives up, or the quota parks would never come back
  // while the process looked healthy. The held events stay: the new member is handed the same
  // partitions again (or GROUP_JOIN drops what went elsewhere), re-reads from the last commit, and
  // the offset tracker refuses what is already held or in the leg, so nothing is handed over twice.
  private readonly crashes: CrashRestart;

  constructor(private readonly o: ParkedTierConsumerOptions) {
    this.crashes = new CrashRestart({
      name: 'long park tier consumer',
      fields: { topic: o.topic },
      logger: o.logger,
      stopping: () => this.stopping,
      replace: async () => {
        await this.consumer.disconnect().catch(() => undefined);
        this.consumer = this.createConsumer();
        await this.run();
      },
      ...(o.onRestart ? { onReplaced: o.onRestart } : {}),
    });
    this.consumer = this.createConsumer();
  }

  private createConsumer(): Consumer {
    const o = this.o;
    const consumer = o.kafka.consumer({
      groupId: o.groupId,
      maxWaitTimeInMs: o.fetchMaxWaitMs,
      sessionTimeout: o.sessionTimeoutMs,
      heartbeatInterval: Math.min(3_000, Math.floor(o.sessionTimeoutMs / 5)),
      allowAutoTopicCreation: true,
      // a partition waiting on its held events is paused; this bounds what one fetch brings
      maxBytesPerPartition: 1024 * 1024,
      ...(o.partitionAssigners ? { partitionAssigners: o.partitionAssigners } : {}),
    });
    const ev = consumer.events;
    consumer.on(ev.GROUP_JOIN, ({ payload }) => {
      this.joined = true;
      this.crashes.onJoined();
      const mine = new Set(payload.memberAssignment[o.topic] ?? []);
      for (const p of [...this.holds.keys()]) {
        if (mine.has(p)) continue;
        // another member reads it now, from the last commit
        this.dropHold(p);
        this.tracker.forget(o.topic, p);
      }
      // kafkajs forgets pauses on a rejoin: pause again what is still full
      for (const [p, h] of this.holds) if (h.paused) consumer.pause([{ topic: o.topic, partitions: [p] }]);
    });
    consumer.on(ev.CRASH, ({ payload }) => {
      this.joined = false;
      this.crashes.onCrash(payload);
    });
    consumer.on(ev.DISCONNECT, () => {
      this.joined = false;
    });
    return consumer;
  }

  async start(): Promise<void> {
    await this.run();
    this.commitTimer = setInterval(() => void this.commit(), this.o.commitIntervalMs);
  }

  private async run(): Promise<void> {
    const consumer = this.consumer;
    await consumer.connect();
    await consumer.subscribe({ topic: this.o.topic, fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: 1,
      eachBatch: (payload) => this.eachBatch(payload),
    });
  }

  get ready(): boolean {
    return this.joined && !this.crashes.crashed && !this.stopping;
  }

  /** not-yet-due events held in memory, over all partitions */
  get held(): number {
    let n = 0;
    for (const h of this.holds.values()) n += h.count;
    return n;
  }

  /** partitions paused because they hold their maximum */
  get pausedPartitions(): number[] {
    return [...this.holds].filter(([, h]) => h.paused).map(([p]) => p);
  }

  get pending(): number {
    return this.tracker.pending;
  }

  private hold(p: number): PartitionHold {
    let h = this.holds.get(p);
    if (!h) {
      h = { byKey: new Map(), count: 0, paused: false, timerAt: Infinity };
      this.holds.set(p, h);
    }
    return h;
  }

  private async eachBatch({ batch, resolveOffset, heartbeat, isRunning, isStale }: EachBatchPayload): Promise<void> {
    const { topic, partition } = batch;
    const h = this.hold(partition);
    let n = 0;
    for (const m of batch.messages) {
      if (!isRunning() || isStale() || this.stopping) break;
      if (h.count >= this.o.maxHeldPerPartition) {
        // Not resolved: after resume() Kafka hands this one again. Only this partition waits.
        h.paused = true;
        this.consumer.pause([{ topic, partitions: [partition] }]);
        break;
      }
      const handle = this.tracker.track(topic, partition, m.offset);
      resolveOffset(m.offset);
      if (handle === undefined) continue;
      const msg: ConsumedMessage = { topic, partition, offset: m.offset, key: m.key, value: m.value, headers: m.headers ?? {}, timestampMs: Number(m.timestamp), handle };
      const notBefore = notBeforeOf(msg);
      const key = msg.key?.toString() ?? '';
      const queue = h.byKey.get(key);
      if (queue) queue.push({ msg, notBefore });
      else if (notBefore <= this.o.clock.now()) this.o.sink.accept(msg);
      else h.byKey.set(key, [{ msg, notBefore }]);
      if (queue || notBefore > this.o.clock.now()) {
        h.count++;
        this.schedule(partition, h, notBefore);
      }
      if (++n % 256 === 0) await this.awaitCapacity(heartbeat, isRunning);
    }
    await this.awaitCapacity(heartbeat, isRunning);
  }

  private awaitCapacity(heartbeat: () => Promise<void>, isRunning: () => boolean): Promise<void> {
    return awaitSinkCapacity(this.o.sink, heartbeat, () => isRunning() && !this.stopping);
  }

  private schedule(p: number, h: PartitionHold, at: number): void {
    if (at >= h.timerAt) return;
    if (h.timer) clearTimeout(h.timer);
    h.timerAt = at;
    h.timer = setTimeout(() => this.release(p), Math.max(1, at - this.o.clock.now()));
  }

  /** Hands every due key head (and what is due behind it) to the leg; re-arms for the next due time. */
  private release(p: number): void {
    const h = this.holds.get(p);
    if (!h) return;
    h.timer = undefined;
    h.timerAt = Infinity;
    const now = this.o.clock.now();
    let next = Infinity;
    for (const [key, q] of h.byKey) {
      let i = 0;
      while (i < q.length && (q[i] as Waiting).notBefore <= now) {
        this.o.sink.accept((q[i] as Waiting).msg);
        i++;
      }
      if (i > 0) {
        h.count -= i;
        q.splice(0, i);
      }
      if (q.length === 0) h.byKey.delete(key);
      else next = Math.min(next, (q[0] as Waiting).notBefore);
    }
    if (next < Infinity) this.schedule(p, h, next);
    if (h.paused && h.count < this.o.maxHeldPerPartition) {
      h.paused = false;
      this.consumer.resume([{ topic: this.o.topic, partitions: [p] }]);
    }
  }

  private dropHold(p: number): void {
    const h = this.holds.get(p);
    if (h?.timer) clearTimeout(h.timer);
    this.holds.delete(p);
  }

  commit(): Promise<void> {
    this.committing = this.committing.then(async () => {
      const points = this.tracker.commitPoints();
      if (points.length === 0) return;
      try {
        await this.consumer.commitOffsets(points);
        this.tracker.markCommitted(points);
      } catch (err) {
        this.o.logger.debug({ topic: this.o.topic, err: describeError(err) }, 'long park tier: offset commit failed; will retry');
      }
    });
    return this.committing;
  }

  /**
   * Stops fetching; events not yet due stay in the topic (uncommitted) for the next start; the ones
   * handed over drain with the leg. Commits what is finished and leaves the group.
   */
  async stop(drainTimeoutMs: number): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.crashes.cancel();
    this.consumer.pause([{ topic: this.o.topic }]);
    for (const p of [...this.holds.keys()]) this.dropHold(p);
    await this.o.sink.drain(drainTimeoutMs);
    if (this.commitTimer) clearInterval(this.commitTimer);
    await this.commit();
    await this.consumer.disconnect();
  }
}
