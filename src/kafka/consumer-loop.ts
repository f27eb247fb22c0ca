import { PartitionAssigners, type Consumer, type EachBatchPayload, type IHeaders, type Kafka, type PartitionAssigner } from 'kafkajs';
import { callingOnJoin } from './join-hook.js';
import { CrashRestart } from './crash-restart.js';
import type { Logger } from '../observability/logger.js';
import type { Leg, Metrics } from '../observability/metrics.js';
import { OffsetTracker, type PartitionState } from './offset-tracker.js';

export interface ConsumedMessage {
  topic: string;
  partition: number;
  offset: string;
  key: Buffer | null;
  value: Buffer | null;
  headers: IHeaders;
  timestampMs: number;
  /** call done() once the message is delivered, dead-lettered or deliberately skipped */
  handle: { done(): void };
  /**
   * The accepting sink's own bookkeeping, kept on the message so that it needs no Map entry per
   * message: when the event entered Kafka as the sink ages it, and whether the sink finished it
   * (false from accept until finish; undefined when no sink took it).
   */
  seenMs?: number;
  finished?: boolean;
}

/**
 * The consumer loop's messages: the message is its own handle (one object per message, no
 * separate handle, closure or promise), and knows its slot in the offset bookkeeping.
 */
export class KafkaMessage implements ConsumedMessage {
  seenMs = 0;
  finished: boolean | undefined = undefined;

  constructor(
    readonly topic: string,
    readonly partition: number,
    readonly offset: string,
    readonly key: Buffer | null,
    readonly value: Buffer | null,
    readonly headers: IHeaders,
    readonly timestampMs: number,
    private readonly tracker: OffsetTracker,
    private readonly part: PartitionState,
    private readonly index: number,
    private readonly epoch: number,
  ) {}

  /** the message itself: `msg.handle.done()` is `msg.done()` */
  get handle(): this {
    return this;
  }

  /** Marks the offset finished, so it may be committed; idempotent. */
  done(): void {
    this.tracker.finishAt(this.part, this.index, this.epoch);
  }
}

/** The leg behind a consumer: takes messages synchronously and finishes them in its own time. */
export interface MessageSink {
  accept(msg: ConsumedMessage): void;
  /** false while the sink holds as much as it should (backpressure: the consumer stops fetching) */
  hasCapacity(): boolean;
  /** resolves when everything accepted has been finished, or the timeout passed */
  drain(timeoutMs: number): Promise<boolean>;
}

export interface ConsumerLoopOptions {
  kafka: Kafka;
  groupId: string;
  topics: string[];
  leg: Leg;
  sink: MessageSink;
  logger: Logger;
  metrics: Metrics;
  fetchMaxWaitMs: number;
  sessionTimeoutMs: number;
  commitIntervalMs: number;
  fromBeginning?: boolean;
  /** the member's partitions, at the first join (`first`) and whenever a rebalance moves some in or out */
  onReassigned?: (assigned: string[], first: boolean) => void;
  /**
   * Called as this member (re)joins its group, the first step of every rebalance: the moment to
   * save state of partitions that may go to another member (join-hook.ts).
   */
  onRebalancing?: () => void;
  /** kafkajs partition assigners (default: kafkajs's round robin) */
  partitionAssigners?: PartitionAssigner[];
}

/** The member's assigners (kafkajs's round robin unless given), each calling onRebalancing as the member joins. */
function assignersOf(o: Pick<ConsumerLoopOptions, 'partitionAssigners' | 'onRebalancing'>): { partitionAssigners?: PartitionAssigner[] } {
  const onJoin = o.onRebalancing;
  if (!onJoin) return o.partitionAssigners ? { partitionAssigners: o.partitionAssigners } : {};
  return { partitionAssigners: (o.partitionAssigners ?? [PartitionAssigners.roundRobin]).map((a) => callingOnJoin(a, onJoin)) };
}


/**
 * Between chunks of a fetched batch: lets network I/O (the destination's answers) run, so consuming
 * and delivering overlap instead of taking turns, then waits while the sink is full, heartbeating
 * so the group does not evict this member (a destination down for hours must pause consumption,
 * not trigger rebalances). A heartbeat that fails (a rebalance in progress) is thrown to kafkajs,
 * which rejoins at once; swallowing it would keep a paused member out of the group until its
 * session times out.
 */
export async function awaitSinkCapacity(sink: Pick<MessageSink, 'hasCapacity'>, heartbeat: () => Promise<void>, running: () => boolean): Promise<void> {
  await new Promise<void>((r) => setImmediate(r));
  await heartbeat();
  while (!sink.hasCapacity() && running()) {
    await new Promise((r) => setTimeout(r, 5));
    await heartbeat();
  }
}
/** shared by messages without headers (never written to) */
const NO_HEADERS: IHeaders = Object.freeze({}) as IHeaders;

/**
 * A consumer group member that never commits past unfinished work: kafkajs moves the fetch
 * position as messages are handed to the sink (resolveOffset), while commits come only from the
 * OffsetTracker, which knows what the sink has finished.
 */
export class ConsumerLoop {
  private consumer: Consumer;
  private readonly tracker = new OffsetTracker();
  private commitTimer: NodeJS.Timeout | undefined;
  private joined = false;
  private readonly crashes: CrashRestart;
  private stopping = false;
  private paused = false;
  private committing: Promise<void> = Promise.resolve();

  constructor(private readonly o: ConsumerLoopOptions) {
    this.crashes = new CrashRestart({
      name: 'consumer',
      fields: { leg: o.leg },
      logger: o.logger,
      stopping: () => this.stopping,
      replace: async () => {
        await this.consumer.disconnect().catch(() => undefined);
        this.consumer = this.createConsumer();
        await this.run();
        if (this.paused) this.pause();
      },
      onReplaced: () => o.metrics.consumerRestarts.inc({ leg: o.leg }),
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
      maxBytesPerPartition: 4 * 1024 * 1024,
      ...assignersOf(o),
    });
    const ev = consumer.events;
    consumer.on(ev.GROUP_JOIN, ({ payload }) => {
      this.joined = true;
      this.crashes.onJoined();
      const assigned = new Set<string>();
      for (const [topic, parts] of Object.entries(payload.memberAssignment)) for (const p of parts) assigned.add(`${topic}:${p}`);
      this.o.logger.info({ leg: o.leg, assignment: payload.memberAssignment }, 'joined consumer group');
      this.reconcileAssignment(assigned);
    });
    consumer.on(ev.CRASH, ({ payload }) => {
      this.joined = false;
      // a new member when kafkajs gives up; /readyz says not ready until it has joined
      this.crashes.onCrash(payload);
    });
    consumer.on(ev.DISCONNECT, () => {
      this.joined = false;
    });
    return consumer;
  }

  private ownedPartitions = new Set<string>();

  private reconcileAssignment(assigned: Set<string>): void {
    const first = this.ownedPartitions.size === 0;
    const changed = assigned.size !== this.ownedPartitions.size || [...assigned].some((k) => !this.ownedPartitions.has(k));
    for (const key of this.ownedPartitions) {
      if (!assigned.has(key)) {
        const i = key.lastIndexOf(':');
        this.tracker.forget(key.slice(0, i), Number(key.slice(i + 1)));
      }
    }
    this.ownedPartitions = assigned;
    if (changed || first) this.o.onReassigned?.([...assigned], first);
  }

  async start(): Promise<void> {
    await this.run();
    this.commitTimer = setInterval(() => void this.commit(), this.o.commitIntervalMs);
  }

  private async run(): Promise<void> {
    const consumer = this.consumer;
    await consumer.connect();
    for (const topic of this.o.topics) await consumer.subscribe({ topic, fromBeginning: this.o.fromBeginning ?? true });
    await consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: 1,
      eachBatch: (payload) => this.eachBatch(payload),
    });
  }

  private async eachBatch({ batch, resolveOffset, heartbeat, isRunning, isStale }: EachBatchPayload): Promise<void> {
    const { topic, partition } = batch;
    const { sink, metrics, leg } = this.o;
    const tracker = this.tracker;
    // One lookup of the partition's bookkeeping per fetched batch; per message, an index into it.
    const part = tracker.partition(topic, partition);
    const messages = batch.messages;
    // A sink that cannot take anything yet (full, or its state still loading after a rebalance)
    // gets nothing of this batch until it can.
    if (!sink.hasCapacity()) await this.awaitCapacity(heartbeat, isRunning);
    let n = 0;
    let last: string | undefined;
    for (let k = 0; k < messages.length; k++) {
      if (this.stopping || !isRunning() || isStale()) break;
      const m = messages[k] as (typeof messages)[number];
      last = m.offset;
      const index = tracker.trackAt(part, Number(m.offset));
      // Already read by this member (a re-fetch after a rejoin): finished or still in hand, not again.
      if (index < 0) continue;
      sink.accept(new KafkaMessage(topic, partition, m.offset, m.key, m.value, m.headers ?? NO_HEADERS, Number(m.timestamp), tracker, part, index, part.epochShift));
      if (++n % 256 === 0) {
        // The fetch position moves per chunk (every message before it was handed over);
        // commits come from the tracker alone.
        resolveOffset(last);
        metrics.consumed.inc({ leg }, 256);
        await this.awaitCapacity(heartbeat, isRunning);
      }
    }
    if (last !== undefined) resolveOffset(last);
    metrics.consumed.inc({ leg }, n % 256);
    await this.awaitCapacity(heartbeat, isRunning);
  }

  private awaitCapacity(heartbeat: () => Promise<void>, isRunning: () => boolean): Promise<void> {
    return awaitSinkCapacity(this.o.sink, heartbeat, () => isRunning() && !this.stopping);
  }

  private commitQueued = false;

  /**
   * Asks for a commit soon. Braze does not deduplicate, so what a crash re-sends is what was
   * delivered but not committed: committing after every delivery, coalesced while one commit
   * is in flight, keeps that window to roughly one commit round trip.
   */
  requestCommit(): void {
    if (this.commitQueued || this.stopping) return;
    this.commitQueued = true;
    void this.committing.then(() => {
      this.commitQueued = false;
      return this.commit();
    });
  }

  /** Commits what is finished; safe to call at any time, calls are serialised. */
  commit(): Promise<void> {
    this.committing = this.committing.then(async () => {
      const points = this.tracker.commitPoints();
      if (points.length === 0) return;
      try {
        await this.consumer.commitOffsets(points);
        this.tracker.markCommitted(points);
        this.o.metrics.commits.inc({ leg: this.o.leg });
      } catch (err) {
        // A rebalance in progress refuses commits; the next tick tries again with fresher points.
        this.o.logger.debug({ leg: this.o.leg, err: (err as Error).message }, 'offset commit failed; will retry');
      }
    });
    return this.committing;
  }

  get pending(): number {
    return this.tracker.pending;
  }

  /** the partitions this member holds, as `topic:partition` */
  get assigned(): string[] {
    return [...this.ownedPartitions];
  }

  /** Kafka connected and this member in its group. */
  get ready(): boolean {
    return this.joined && !this.crashes.crashed && !this.stopping;
  }

  pause(): void {
    this.paused = true;
    this.consumer.pause(this.o.topics.map((topic) => ({ topic })));
  }

  resume(): void {
    this.paused = false;
    this.consumer.resume(this.o.topics.map((topic) => ({ topic })));
  }

  /** Stop fetching, let the sink finish what it holds, commit it, leave the group. */
  async stop(drainTimeoutMs: number): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.crashes.cancel();
    this.pause();
    const drained = await this.o.sink.drain(drainTimeoutMs);
    if (!drained) this.o.logger.warn({ leg: this.o.leg, pending: this.tracker.pending }, 'drain timed out; unfinished events will be read again after restart');
    if (this.commitTimer) clearInterval(this.commitTimer);
    await this.commit();
    await this.consumer.disconnect();
  }
}
