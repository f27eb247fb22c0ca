import type { Clock } from '../clock.js';
import type { FailureClass } from '../errors.js';
import type { ConsumedMessage, MessageSink } from '../kafka/consumer-loop.js';
import type { DeadLetter, DeadLetterWriter } from '../kafka/dead-letter.js';
import type { Logger } from '../observability/logger.js';
import type { Leg, Metrics } from '../observability/metrics.js';
import type { ConnectorHealth } from '../health/connector-health.js';
import { KeyedBatchQueue, type Batchable, type BatchLimits } from './batch-queue.js';
import { DestinationBackoff, type BackoffSettings } from './backoff.js';
import type { Answer, DeadLetterReason, DeliveryOutcome, FailureKind, ItemReject } from './outcome.js';

/** One consumed message on its way to a destination. */
export interface LegItem extends Batchable {
  msg: ConsumedMessage;
  /**
   * when the event entered Kafka (its record timestamp, or the first receipt carried through the
   * retry topic): the drop window and health's oldest-pending age count from here, so a restart
   * does not make old events look new
   */
  seenMs: number;
  /** when it entered the batch queue (clock ms): linger counts from here */
  queuedMs?: number;
}

/** A destination: turns a batch into one request and its answer into one outcome. */
export interface Destination<I extends LegItem> {
  /** metrics label */
  readonly name: string;
  /** where requests go, for the log line a failure earns (never carries a secret) */
  readonly url: string;
  send(items: I[]): Promise<Answer>;
  close(): Promise<void>;
  /**
   * For an item the destination has partly delivered (sent in several requests): the dead letters
   * of just what it has not delivered, so that giving the item up (the drop window) does not
   * dead-letter, and a replay send again, what the destination already took. Undefined: nothing of
   * it was delivered, the whole message goes.
   */
  undelivered?(item: I, reason: DeadLetterReason, error: string): DeadLetter[] | undefined;
}

/** What becomes of a consumed message before it is queued. */
export type Encoded<I> =
  | { item: I }
  | { skip: string }
  | { deadLetter: DeadLetterReason; error: string };

export interface DeliveryLegDeps<I extends LegItem> {
  leg: Leg;
  destination: Destination<I>;
  encode: (msg: ConsumedMessage, seenMs: number) => Encoded<I>;
  limits: BatchLimits;
  concurrency: number;
  lingerMs: number;
  maxInFlightEvents: number;
  backoff: BackoffSettings;
  deadLetters: DeadLetterWriter;
  health: ConnectorHealth;
  logger: Logger;
  metrics: Metrics;
  clock: Clock;
  /**
   * Pacing before the queue (the Amplitude leg's per-id limits): true lets the item be queued now;
   * false means the hook took it (held, parked or dead-lettered) and will hand it back with enqueue().
   */
  admit?: (item: I) => boolean;
  /** items the admit hook holds that the drop window must reach: removes and returns those seen at or before cutoff */
  takeHeldBefore?: (cutoffMs: number) => I[];
  /** parks items whose ids are over a daily quota (the retry topic); without it they are dead-lettered */
  park?: (items: I[], ids: { devices: string[]; users: string[] }) => Promise<void>;
  /** called when the leg must stop consuming (refused credentials or configuration) and when it may go on */
  onStopped?: (stopped: boolean) => void;
  /** called after events are finished, so their offsets can be committed promptly */
  onProgress?: () => void;
  /** an item left for the dead-letter topic as a whole, never delivered (the Braze leg forgets the attributes it carried) */
  onItemDropped?: (item: I) => void;
}

/** The health module's vocabulary for a failure kind. */
const HEALTH_CLASS: Record<FailureKind, FailureClass> = {
  unavailable: 'retryable',
  rate_limited: 'rate_limited',
  auth: 'auth',
  configuration: 'fatal',
};

/**
 * What every leg that delivers Kafka messages to an HTTP destination shares: bookkeeping of each
 * message until it is finished (delivered, skipped or dead-lettered), batching with order kept per
 * key, linger, concurrency, destination-wide back-off with one probe at a time, and the one place
 * that acts on a destination's outcome.
 */
export class DeliveryLeg<I extends LegItem> implements MessageSink {
  private readonly queue: KeyedBatchQueue<I>;
  private readonly backoff: DestinationBackoff;
  private inFlightRequests = 0;
  /**
   * accepted but not yet finished, for health's pending count and oldest age: a count, and the
   * messages in arrival order (each carries its seenMs and finished flag, so no Map entry per message;
   * finished ones are dropped from the front as they go, and swept when they pile up behind a slow one)
   */
  private pendingCount = 0;
  private pendingList: ConsumedMessage[] = [];
  private pendingHead = 0;
  private lingerTimer: NodeJS.Timeout | undefined;
  private backoffTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private draining = false;
  private closed = false;
  private readonly drainWaiters = new Set<() => void>();
  /** set by the drop window: events seen before it are moved to the dead-letter topic */
  private expiryCutoff: number | undefined;
  private expiredCount = 0;
  /** a probe request is out while the destination is failing: the others wait for its answer */
  private probing = false;
  private probeDone: Promise<void> = Promise.resolve();
  private endProbe: () => void = () => undefined;

  constructor(private readonly d: DeliveryLegDeps<I>) {
    this.queue = new KeyedBatchQueue<I>(d.limits);
    this.backoff = new DestinationBackoff(d.backoff, d.clock);
    d.health.setPendingProbe(() => {
      let oldest: number | undefined;
      const list = this.pendingList;
      for (let i = this.pendingHead; i < list.length; i++) {
        const m = list[i] as ConsumedMessage;
        if (m.finished === false && (oldest === undefined || (m.seenMs as number) < oldest)) oldest = m.seenMs;
      }
      return { count: this.pendingCount, ...(oldest !== undefined ? { oldestMs: oldest } : {}) };
    });
  }

  hasCapacity(): boolean {
    return !this.stopped && this.pendingCount < this.d.maxInFlightEvents;
  }

  get pending(): number {
    return this.pendingCount;
  }

  get isStopped(): boolean {
    return this.stopped;
  }

  accept(msg: ConsumedMessage): void {
    const seenMs = msg.timestampMs > 0 && Number.isFinite(msg.timestampMs) ? msg.timestampMs : this.d.clock.now();
    msg.seenMs = seenMs;
    if (msg.finished !== false) {
      msg.finished = false;
      this.pendingCount++;
      this.pendingList.push(msg);
    }
    const e = this.d.encode(msg, seenMs);
    if ('skip' in e) return this.skip(msg, e.skip);
    if ('deadLetter' in e) {
      void this.deadLetter(msg, e.deadLetter, e.error);
      return;
    }
    if (this.d.admit && !this.d.admit(e.item)) return;
    this.enqueue(e.item);
    this.pump();
  }

  /** Queues an item (from accept, or handed back by the admit hook). */
  enqueue(item: I): void {
    item.queuedMs = this.d.clock.now();
    this.queue.push(item);
  }

  /** The message is done with: its offset may be committed. */
  finish(msg: ConsumedMessage): void {
    msg.handle.done();
    if (msg.finished !== false) return;
    msg.finished = true;
    this.pendingCount--;
    this.trimPending();
    if (this.pendingCount === 0) {
      for (const w of this.drainWaiters) w();
      // Stopped with nothing left to probe (all expired or dead-lettered): consume again, so new
      // events probe the destination instead of the leg staying paused forever.
      if (this.stopped) this.setStopped(false, 'nothing pending; consuming again to probe the destination');
    }
  }

  /** Drops finished messages from the front of the pending list; sweeps the list when finished ones pile up behind a slow one. */
  private trimPending(): void {
    const list = this.pendingList;
    let h = this.pendingHead;
    while (h < list.length && (list[h] as ConsumedMessage).finished !== false) h++;
    if (h === list.length) {
      list.length = 0;
      h = 0;
    } else if (list.length - h > 2 * this.pendingCount + 4096) {
      this.pendingList = list.slice(h).filter((m) => m.finished === false);
      h = 0;
    } else if (h > 4096 && h * 2 > list.length) {
      this.pendingList = list.slice(h);
      h = 0;
    }
    this.pendingHead = h;
  }

  skip(msg: ConsumedMessage, reason: string): void {
    this.d.metrics.skipped.inc({ leg: this.d.leg, reason });
    this.finish(msg);
  }

  /** Writes dead letters for parts of a message (the records the destination built), then finishes the message. */
  private deadLetterParts(msg: ConsumedMessage, records: DeadLetter[], reason: DeadLetterReason): Promise<void> {
    return Promise.all(records.map((r) => this.d.deadLetters.write(r))).then(() => {
      this.d.health.recordDeadLettered(records.length, reason);
      this.finish(msg);
    });
  }

  deadLetter(msg: ConsumedMessage, reason: DeadLetterReason, error: string, extraHeaders?: Record<string, string>): Promise<void> {
    return this.d.deadLetters
      .write({
        leg: this.d.leg,
        connector: this.d.health.name,
        reason,
        error,
        value: msg.value,
        key: msg.key,
        source: { topic: msg.topic, partition: msg.partition, offset: msg.offset },
        firstFailureMs: this.d.clock.now(),
        ...(extraHeaders ? { extraHeaders } : {}),
      })
      .then(() => {
        // Every dead letter of the leg passes here once: health weighs the destination's refusals.
        this.d.health.recordDeadLettered(1, reason);
        this.finish(msg);
      });
  }

  /** Starts as many requests as the limits allow; waits out linger and back-off with timers. */
  pump(): void {
    const d = this.d;
    while (!this.closed && this.inFlightRequests < d.concurrency && this.queue.hasReady) {
      const wait = this.backoff.waitMs();
      if (wait > 0) {
        this.backoffTimer ??= setTimeout(() => {
          this.backoffTimer = undefined;
          this.pump();
        }, wait);
        return;
      }
      const first = this.queue.peekReady();
      if (!first) return;
      const fullBatchWaiting = this.queue.size >= d.limits.maxPerPart;
      const age = d.clock.now() - (first.queuedMs ?? first.seenMs);
      if (!fullBatchWaiting && !this.draining && age < d.lingerMs) {
        this.lingerTimer ??= setTimeout(() => {
          this.lingerTimer = undefined;
          this.pump();
        }, d.lingerMs - age);
        return;
      }
      const items = this.queue.take();
      if (items.length === 0) return;
      this.inFlightRequests++;
      void this.run(items)
        .catch((err: unknown) => d.logger.error({ err: (err as Error).message }, `unexpected error delivering to ${d.destination.name}`))
        .finally(() => {
          this.inFlightRequests--;
          this.queue.releaseItems(items);
          this.pump();
        });
    }
  }

  /** Sends one batch until every one of its items is finished, however many tries it takes. */
  private async run(items: I[]): Promise<void> {
    const { metrics, destination, health } = this.d;
    for (;;) {
      const g = await this.gate(items);
      items = g.items;
      if (items.length === 0) return;
      const ticket = this.backoff.begin();
      metrics.batchSize.observe({ destination: destination.name }, items.length);
      health.recordAttempt();
      let answer: Answer;
      try {
        answer = await destination.send(items);
      } finally {
        if (g.probe) this.finishProbe();
      }
      metrics.requests.inc({ destination: destination.name, status: String(answer.status) });
      metrics.requestDuration.observe({ destination: destination.name }, answer.durationMs / 1000);
      const next = await this.act(items, answer, ticket);
      if (next === undefined) return;
      items = next;
    }
  }

  /**
   * The one place an outcome is acted on. Returns the items to send again (after the back-off the
   * outcome set), or undefined when every item of the batch is finished or handed on.
   */
  private async act(items: I[], answer: Answer, ticket: number): Promise<I[] | undefined> {
    const o: DeliveryOutcome = answer.outcome;
    switch (o.kind) {
      case 'delivered':
        for (const it of items) this.finish(it.msg);
        this.succeeded(items.length, o.holdForMs);
        return undefined;
      case 'rejected': {
        const bad = new Map<number, ItemReject>();
        for (const r of o.rejects) if (r.index >= 0 && r.index < items.length && !bad.has(r.index)) bad.set(r.index, r);
        if (bad.size === 0) {
          // Refusals that name nothing in this batch: as unexplained as a bare 400.
          return this.act(items, { ...answer, outcome: { kind: 'split', reason: 'rejected_by_destination', error: 'refused items the batch does not hold' } }, ticket);
        }
        const rest = items.filter((_, i) => !bad.has(i));
        const writes = [...bad].map(([i, r]) => {
          const it = items[i] as I;
          if (r.records && r.records.length > 0) return this.deadLetterParts(it.msg, r.records, r.reason);
          this.d.onItemDropped?.(it);
          return this.deadLetter(it.msg, r.reason, r.error);
        });
        if (o.othersDelivered) {
          for (const it of rest) this.finish(it.msg);
          this.succeeded(rest.length, o.holdForMs);
          await Promise.all(writes);
          return undefined;
        }
        await Promise.all(writes);
        return rest.length > 0 ? rest : undefined;
      }
      case 'split': {
        if (items.length === 1) {
          this.d.onItemDropped?.(items[0] as I);
          await this.deadLetter((items[0] as I).msg, o.reason, o.error);
          return undefined;
        }
        // Halve until the culprit stands alone; each half keeps its items' order.
        const mid = Math.ceil(items.length / 2);
        await this.run(items.slice(0, mid));
        await this.run(items.slice(mid));
        return undefined;
      }
      case 'hold': {
        const holdSet = new Set(o.hold.filter((i) => i >= 0 && i < items.length));
        const parkSet = new Set(o.park.filter((i) => i >= 0 && i < items.length && !holdSet.has(i)));
        if (holdSet.size === 0 && parkSet.size === 0) {
          // Throttled without naming anyone: slow the whole destination.
          return this.failed(items, answer, ticket, { kind: 'backoff', failure: 'rate_limited', error: o.error, retryAfterMs: o.holdMs });
        }
        const held = items.filter((_, i) => holdSet.has(i));
        const parked = items.filter((_, i) => parkSet.has(i));
        const rest = items.filter((_, i) => !holdSet.has(i) && !parkSet.has(i));
        if (parked.length > 0) {
          // Newer events of the parked keys already waiting in the queue go behind them, or they
          // would overtake the parked ones as soon as this request lets their keys go.
          const keys = new Set(parked.map((i) => i.key));
          parked.push(...this.queue.removeWhere((i) => keys.has(i.key)));
        }
        this.d.health.recordFailure('rate_limited', o.error);
        this.d.metrics.retries.inc({ destination: this.d.destination.name, class: 'rate_limited' });
        const park = this.d.park;
        await Promise.all([
          parked.length === 0
            ? Promise.resolve()
            : park
              ? park(parked, o.parkIds)
              : Promise.all(parked.map((it) => this.deadLetter(it.msg, 'daily_quota', o.error))).then(() => undefined),
          rest.length > 0 ? this.run(rest) : Promise.resolve(),
          held.length > 0 ? this.waitOutsideSlot(o.holdMs).then(() => this.run(held)) : Promise.resolve(),
        ]);
        return undefined;
      }
      case 'backoff':
      case 'stop':
        return this.failed(items, answer, ticket, o);
    }
  }

  /** A failed attempt: back off the whole destination, tell health, and stop consuming when no retry soon can help. */
  private failed(items: I[], answer: Answer, ticket: number, o: Extract<DeliveryOutcome, { kind: 'backoff' | 'stop' }>): I[] {
    const { metrics, health, logger, destination } = this.d;
    const first = ticket === this.backoff.begin();
    const stop = o.kind === 'stop';
    const delay = this.backoff.onFailure(ticket, { stopped: stop, ...(o.kind === 'backoff' && o.retryAfterMs !== undefined ? { retryAfterMs: o.retryAfterMs } : {}) });
    health.recordFailure(HEALTH_CLASS[o.failure], o.error);
    metrics.retries.inc({ destination: destination.name, class: o.failure });
    metrics.backoffSeconds.set({ destination: destination.name }, delay / 1000);
    const detail = { url: destination.url, status: answer.status, body: answer.body.slice(0, 500), retryInMs: delay };
    if (stop) {
      if (!this.stopped) {
        logger.error(detail, `${o.error}; ${this.d.leg} leg stopped: nothing is committed or dropped, one probe every ${Math.round(delay / 1000)} s until ${destination.name} accepts again`);
      }
      this.setStopped(true);
    } else if (first && (this.backoff.failures === 1 || this.backoff.failures % 10 === 0)) {
      logger.warn({ ...detail, failures: this.backoff.failures }, `${o.error}; backing off ${destination.name}, one probe at a time`);
    }
    return items;
  }

  /** Counts delivered events and records the success on the connector. */
  private succeeded(count: number, holdForMs?: number): void {
    this.expiryCutoff = undefined;
    if (this.backoff.failing) this.d.logger.info({ destination: this.d.destination.name }, `${this.d.destination.name} is answering again; back-off reset`);
    this.backoff.onSuccess();
    if (holdForMs !== undefined && holdForMs > 0) this.backoff.holdUntil(this.d.clock.now() + holdForMs);
    this.d.metrics.backoffSeconds.set({ destination: this.d.destination.name }, 0);
    if (count > 0) this.d.metrics.delivered.inc({ leg: this.d.leg }, count);
    this.d.health.recordSuccess(count);
    this.setStopped(false);
    this.d.onProgress?.();
  }

  /**
   * Waits out the destination's back-off before a try, in slices, so that a batch held for hours
   * behind a refused key still notices the drop window; while the destination is failing, only
   * one batch goes at a time (the probe). Returns the items still to send.
   */
  private async gate(items: I[]): Promise<{ items: I[]; probe: boolean }> {
    let rest = items;
    for (;;) {
      rest = await this.expireAmong(rest);
      if (rest.length === 0 || this.closed) return { items: this.closed ? [] : rest, probe: false };
      const wait = this.backoff.waitMs();
      if (wait > 0) {
        await sleep(Math.min(wait, 1_000));
        continue;
      }
      if (!this.backoff.failing) return { items: rest, probe: false };
      if (this.probing) {
        await Promise.race([this.probeDone, sleep(1_000)]);
        continue;
      }
      this.probing = true;
      this.probeDone = new Promise((r) => (this.endProbe = r));
      return { items: rest, probe: true };
    }
  }

  private finishProbe(): void {
    this.probing = false;
    this.endProbe();
  }

  /** Gives up this batch's request slot while it waits (a long hold must not starve other keys); its keys stay busy, so their order is kept. */
  private async waitOutsideSlot(ms: number): Promise<void> {
    this.inFlightRequests--;
    this.pump();
    await sleep(ms);
    this.inFlightRequests++;
  }

  private async expireAmong(items: I[]): Promise<I[]> {
    const cutoff = this.expiryCutoff;
    if (cutoff === undefined) return items;
    const old = items.filter((i) => i.seenMs <= cutoff);
    if (old.length === 0) return items;
    await this.expire(old, cutoff);
    return items.filter((i) => i.seenMs > cutoff);
  }

  /** Moves items past the drop window to the dead-letter topic (reason drop_window_expired). */
  expire(items: I[], cutoff: number): Promise<void> {
    this.expiredCount += items.length;
    for (const it of items) this.d.onItemDropped?.(it);
    const age = (i: I) => Math.round((this.d.clock.now() - i.seenMs) / 1000);
    return Promise.all(
      items.map((i) => {
        const error = `undelivered for ${age(i)} s; the connector has had no successful delivery since before ${new Date(cutoff).toISOString()}`;
        const parts = this.d.destination.undelivered?.(i, 'drop_window_expired', error);
        return parts ? this.deadLetterParts(i.msg, parts, 'drop_window_expired') : this.deadLetter(i.msg, 'drop_window_expired', error);
      }),
    ).then(() => undefined);
  }

  /**
   * The drop window fired: every event seen before `cutoff` leaves for the dead-letter topic
   * (reason drop_window_expired), queued and held ones now, in-flight ones at their next try.
   * Resolves with how many went, once the waiting batches have had a chance to look.
   */
  async expireBefore(cutoff: number): Promise<number> {
    const start = this.expiredCount;
    this.expiryCutoff = cutoff;
    await this.expire(this.queue.removeWhere((i) => i.seenMs <= cutoff), cutoff);
    if (this.d.takeHeldBefore) await this.expire(this.d.takeHeldBefore(cutoff), cutoff);
    await sleep(1_500);
    return this.expiredCount - start;
  }

  private setStopped(stopped: boolean, why?: string): void {
    if (this.stopped === stopped) return;
    this.stopped = stopped;
    if (!stopped) this.d.logger.info(why ? `${this.d.leg} leg: ${why}` : `${this.d.destination.name} accepted a request again; ${this.d.leg} leg resumed`);
    this.d.onStopped?.(stopped);
  }

  drain(timeoutMs: number): Promise<boolean> {
    this.draining = true;
    this.pump();
    if (this.pendingCount === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.drainWaiters.delete(done);
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.drainWaiters.delete(done);
        resolve(this.pendingCount === 0);
      }, timeoutMs);
      this.drainWaiters.add(done);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.lingerTimer) clearTimeout(this.lingerTimer);
    if (this.backoffTimer) clearTimeout(this.backoffTimer);
    await this.d.destination.close();
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
