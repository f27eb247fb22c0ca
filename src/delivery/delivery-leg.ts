import type { Clock } from '../clock.js';
import type { Failure } from '../errors.js';
import type { ConsumedMessage, MessageSink } from '../kafka/consumer-loop.js';
import type { DeadLetterWriter } from '../kafka/dead-letter.js';
import type { Logger } from '../observability/logger.js';
import type { Leg, Metrics } from '../observability/metrics.js';
import type { ConnectorHealth } from '../health/connector-health.js';
import { KeyedBatchQueue, type Batchable, type BatchLimits } from './batch-queue.js';
import { DestinationBackoff } from './backoff.js';

/** One consumed message on its way to a destination. */
export interface LegItem extends Batchable {
  msg: ConsumedMessage;
  /** when the gateway first saw it (clock ms), possibly before a trip through Kafka: health's oldest-pending age and the drop window */
  seenMs: number;
  /** when it entered the batch queue (clock ms): linger counts from here */
  queuedMs?: number;
}

export interface DeliveryLegDeps {
  leg: Leg;
  /** metrics label of the destination */
  destination: string;
  limits: BatchLimits;
  concurrency: number;
  lingerMs: number;
  maxInFlightEvents: number;
  backoff: { baseMs: number; maxMs: number; authRetryMs: number };
  deadLetters: DeadLetterWriter;
  health: ConnectorHealth;
  logger: Logger;
  metrics: Metrics;
  clock: Clock;
  /** called when the leg must stop consuming (refused credentials) and when it may go on */
  onStopped?: (stopped: boolean) => void;
  /** called after events are finished, so their offsets can be committed promptly */
  onProgress?: () => void;
}

/**
 * What every leg that delivers Kafka messages to an HTTP destination shares: bookkeeping of each
 * message until it is finished (delivered, skipped or dead-lettered), batching with order kept
 * per key, linger, concurrency, destination-wide back-off, the stop on refused credentials, and
 * draining on shutdown. Subclasses say how a message becomes an item and how a batch is sent.
 */
export abstract class DeliveryLeg<I extends LegItem> implements MessageSink {
  protected readonly queue: KeyedBatchQueue<I>;
  protected readonly backoff: DestinationBackoff;
  private inFlightRequests = 0;
  /** accepted but not yet finished, in arrival order, for health's pending count and oldest age */
  private readonly pendingSince = new Map<ConsumedMessage, number>();
  private lingerTimer: NodeJS.Timeout | undefined;
  private backoffTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private draining = false;
  private readonly drainWaiters = new Set<() => void>();
  /** set by the drop window: events first seen before it are moved to the dead-letter topic */
  private expiryCutoff: number | undefined;
  private expiredCount = 0;

  constructor(protected readonly d: DeliveryLegDeps) {
    this.queue = new KeyedBatchQueue<I>(d.limits);
    this.backoff = new DestinationBackoff(d.backoff, d.clock);
    d.health.setPendingProbe(() => {
      let oldest: number | undefined;
      for (const t of this.pendingSince.values()) {
        oldest = t;
        break;
      }
      return { count: this.pendingSince.size, ...(oldest !== undefined ? { oldestMs: oldest } : {}) };
    });
  }

  /** Turns a message into an item to send, or finishes it here (skip, dead-letter) and returns undefined. */
  protected abstract prepare(msg: ConsumedMessage): I | undefined;

  /** Sends one request's items until every one of them is finished, however many tries it takes. */
  protected abstract deliver(items: I[]): Promise<void>;

  protected abstract closeTransport(): Promise<void>;

  hasCapacity(): boolean {
    return !this.stopped && this.pendingSince.size < this.d.maxInFlightEvents;
  }

  get pending(): number {
    return this.pendingSince.size;
  }

  accept(msg: ConsumedMessage): void {
    this.pendingSince.set(msg, this.d.clock.now());
    const item = this.prepare(msg);
    if (!item) return;
    this.enqueue(item);
    this.pump();
  }

  protected enqueue(item: I): void {
    item.queuedMs = this.d.clock.now();
    this.queue.push(item);
  }

  /** The message is done with: its offset may be committed. */
  protected finish(msg: ConsumedMessage): void {
    msg.handle.done();
    this.pendingSince.delete(msg);
    if (this.pendingSince.size === 0) {
      for (const w of this.drainWaiters) w();
      // Stopped on refused credentials with nothing left to retry (all expired or dead-lettered):
      // consume again, so new events probe the credentials instead of the leg staying paused forever.
      if (this.stopped) this.setStopped(false, 'nothing pending; consuming again to probe the credentials');
    }
  }

  protected skip(msg: ConsumedMessage, reason: string): void {
    this.d.metrics.skipped.inc({ leg: this.d.leg, reason });
    this.finish(msg);
  }

  protected deadLetter(msg: ConsumedMessage, reason: string, error: string, extraHeaders?: Record<string, string>): Promise<void> {
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
      .then(() => this.finish(msg));
  }

  /** Starts as many requests as the limits allow; waits out linger and back-off with timers. */
  protected pump(): void {
    const d = this.d;
    while (this.inFlightRequests < d.concurrency && this.queue.hasReady) {
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
      const fullBatchWaiting = this.queue.size >= d.limits.maxPerArray;
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
      void this.deliver(items)
        .catch((err: unknown) => d.logger.error({ err: (err as Error).message }, `unexpected error delivering to ${d.destination}`))
        .finally(() => {
          this.inFlightRequests--;
          this.queue.release(new Set(items.map((i) => i.key)));
          this.pump();
        });
    }
  }

  /**
   * Gives up this batch's request slot while it waits (a hold of many seconds must not starve
   * other keys); its keys stay busy, so their order is kept.
   */
  protected async waitOutsideSlot(ms: number): Promise<void> {
    this.inFlightRequests--;
    this.pump();
    await sleep(ms);
    this.inFlightRequests++;
  }

  /**
   * Waits out the destination's back-off before a try, in slices, so that a batch held for hours
   * behind a refused key still notices the drop window; returns the items still to send.
   */
  protected async beforeAttempt(items: I[]): Promise<I[]> {
    let rest = items;
    for (;;) {
      rest = await this.expireAmong(rest);
      const wait = this.backoff.waitMs();
      if (wait <= 0 || rest.length === 0) return rest;
      await sleep(Math.min(wait, 1_000));
    }
  }

  private async expireAmong(items: I[]): Promise<I[]> {
    const cutoff = this.expiryCutoff;
    if (cutoff === undefined) return items;
    const old = items.filter((i) => i.seenMs <= cutoff);
    if (old.length === 0) return items;
    await this.expire(old, cutoff);
    return items.filter((i) => i.seenMs > cutoff);
  }

  protected expire(items: Array<Pick<I, 'msg' | 'seenMs'>>, cutoff: number): Promise<void> {
    this.expiredCount += items.length;
    const age = (i: Pick<I, 'seenMs'>) => Math.round((this.d.clock.now() - i.seenMs) / 1000);
    return Promise.all(
      items.map((i) =>
        this.deadLetter(i.msg, 'drop_window_expired', `undelivered for ${age(i)} s; the connector has had no successful delivery since before ${new Date(cutoff).toISOString()}`),
      ),
    ).then(() => undefined);
  }

  /** Items held outside the batch queue (subclasses' own holds) that the drop window must also reach. */
  protected async expireHeld(_cutoff: number): Promise<void> {}

  /**
   * The drop window fired: every event first seen before `cutoff` leaves for the dead-letter topic
   * (reason drop_window_expired), queued ones now, in-flight ones at their next try. Resolves with
   * how many went, once the waiting batches have had a chance to look.
   */
  async expireBefore(cutoff: number): Promise<number> {
    const start = this.expiredCount;
    this.expiryCutoff = cutoff;
    await this.expire(this.queue.removeWhere((i) => i.seenMs <= cutoff), cutoff);
    await this.expireHeld(cutoff);
    await sleep(1_500);
    return this.expiredCount - start;
  }

  /** Counts delivered events and records the success on the connector. */
  protected delivered(count: number): void {
    this.expiryCutoff = undefined;
    this.backoff.onSuccess();
    this.d.metrics.delivered.inc({ leg: this.d.leg }, count);
    this.d.health.recordSuccess(count);
    this.setStopped(false);
    this.d.onProgress?.();
  }

  /** A failed attempt: record it, back off the whole destination, and stop consuming on refused credentials. */
  protected failed(f: Failure, status: number): void {
    const { metrics, health, logger, destination } = this.d;
    health.recordFailure(f.class, f.message);
    metrics.retries.inc({ destination, class: f.class });
    const delay = this.backoff.onFailure(f.class, f.retryAfterMs);
    metrics.backoffSeconds.set({ destination }, delay / 1000);
    if (f.class === 'auth' || f.class === 'fatal') {
      if (!this.stopped) logger.error({ status, retryInMs: delay }, `${f.message}; ${this.d.leg} leg stopped, nothing is committed or dropped, retrying slowly`);
      this.setStopped(true);
    } else if (this.backoff.failures === 1 || this.backoff.failures % 20 === 0) {
      logger.warn({ status, class: f.class, retryInMs: delay, failures: this.backoff.failures }, f.message);
    }
  }

  private setStopped(stopped: boolean, why?: string): void {
    if (this.stopped === stopped) return;
    this.stopped = stopped;
    if (!stopped) this.d.logger.info(why ? `${this.d.leg} leg: ${why}` : `${this.d.destination} accepted the credentials again; ${this.d.leg} leg resumed`);
    this.d.onStopped?.(stopped);
  }

  drain(timeoutMs: number): Promise<boolean> {
    this.draining = true;
    this.pump();
    if (this.pendingSince.size === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.drainWaiters.delete(done);
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.drainWaiters.delete(done);
        resolve(this.pendingSince.size === 0);
      }, timeoutMs);
      this.drainWaiters.add(done);
    });
  }

  async close(): Promise<void> {
    if (this.lingerTimer) clearTimeout(this.lingerTimer);
    if (this.backoffTimer) clearTimeout(this.backoffTimer);
    await this.closeTransport();
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
