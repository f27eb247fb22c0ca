import Bottleneck from 'bottleneck';
import type { Clock } from '../clock.js';
import type { BrazeSettings } from '../config/config.js';
import type { ConsumedMessage, MessageSink } from '../kafka/consumer-loop.js';
import type { DeadLetterWriter } from '../kafka/dead-letter.js';
import { scrubSecrets, type Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { ConnectorHealth } from '../health/connector-health.js';
import { DestinationBackoff } from '../delivery/backoff.js';
import { HttpSender } from '../delivery/http-sender.js';
import { classifyBrazeResponse, type ObjectError, type TrackArray } from './braze-response.js';
import { KeyedBatchQueue } from './batch-queue.js';
import type { MapResult } from './map-to-braze.js';

export const BRAZE_DESTINATION = 'braze';
const USER_AGENT = 'amplitude-braze-gateway/0.1';

/** One consumed message on its way to Braze, with its objects serialised once. */
interface Item {
  key: string;
  msg: ConsumedMessage;
  eventJson?: string;
  attributesJson?: string;
  purchaseJsons: string[];
  events: number;
  attributes: number;
  purchases: number;
  bytes: number;
  seenMs: number;
}

export interface BrazeLegDeps {
  settings: BrazeSettings;
  mapper: (value: Buffer | null, kafkaTimestampMs?: number) => MapResult;
  deadLetters: DeadLetterWriter;
  health: ConnectorHealth;
  logger: Logger;
  metrics: Metrics;
  clock: Clock;
  /** called when the leg must stop consuming (auth failure) and when it may go on */
  onStopped?: (stopped: boolean) => void;
  /** called after a request's events are finished, so their offsets can be committed promptly */
  onProgress?: () => void;
}

/**
 * The outbound leg after Kafka: maps each message, batches per Braze's caps with order kept per
 * user, sends through a destination-wide limiter, and finishes every message exactly once as
 * delivered, skipped or dead-lettered. Failures follow their class: retried with back-off,
 * split, dead-lettered, or (for a refused key) held until the key works.
 */
export class BrazeLeg implements MessageSink {
  private readonly queue: KeyedBatchQueue<Item>;
  private readonly sender: HttpSender;
  private readonly limiter: Bottleneck;
  private readonly backoff: DestinationBackoff;
  private inFlightRequests = 0;
  /** accepted but not yet finished, by first-seen time, for health's pending count and oldest age */
  private readonly pendingSince = new Map<ConsumedMessage, number>();
  private lingerTimer: NodeJS.Timeout | undefined;
  private backoffTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private draining = false;
  private readonly drainWaiters = new Set<() => void>();

  constructor(private readonly d: BrazeLegDeps) {
    const s = d.settings;
    this.queue = new KeyedBatchQueue<Item>({ maxPerArray: s.maxPerArray, maxTotal: s.maxTotal, maxBytes: s.maxRequestBytes - 64 });
    this.sender = new HttpSender(s.restEndpoint, { connections: s.concurrency, timeoutMs: s.requestTimeoutMs, userAgent: USER_AGENT });
    this.limiter = new Bottleneck({
      reservoir: s.rateLimitRequests,
      reservoirRefreshAmount: s.rateLimitRequests,
      reservoirRefreshInterval: s.rateLimitWindowMs,
    });
    this.backoff = new DestinationBackoff({ baseMs: s.retryBaseMs, maxMs: s.retryMaxMs, authRetryMs: s.authRetryMs }, d.clock);
    d.health.setPendingProbe(() => {
      let oldest: number | undefined;
      for (const t of this.pendingSince.values()) {
        oldest = t;
        break;
      }
      return { count: this.pendingSince.size, ...(oldest !== undefined ? { oldestMs: oldest } : {}) };
    });
  }

  hasCapacity(): boolean {
    return !this.stopped && this.pendingSince.size < this.d.settings.maxInFlightEvents;
  }

  get pending(): number {
    return this.pendingSince.size;
  }

  accept(msg: ConsumedMessage): void {
    const { metrics, mapper } = this.d;
    const r = mapper(msg.value, msg.timestampMs);
    if (r.kind === 'skipped') {
      metrics.skipped.inc({ leg: 'outbound', reason: r.reason });
      msg.handle.done();
      return;
    }
    this.pendingSince.set(msg, this.d.clock.now());
    if (r.kind === 'invalid') {
      this.deadLetter(msg, r.reason, r.message);
      return;
    }
    for (const a of r.adjustments) metrics.adjustments.inc({ leg: 'outbound', kind: a.kind, rule: a.rule });
    if (r.adjustments.length > 0 && this.d.logger.isLevelEnabled('debug')) {
      this.d.logger.debug({ adjustments: r.adjustments, source: where(msg) }, 'event adjusted to meet Braze limits');
    }
    const eventJson = r.event ? JSON.stringify(r.event) : undefined;
    const attributesJson = r.attributes ? JSON.stringify(r.attributes) : undefined;
    const purchaseJsons = r.purchases.map((p) => JSON.stringify(p));
    if (!eventJson && !attributesJson && purchaseJsons.length === 0) {
      metrics.skipped.inc({ leg: 'outbound', reason: 'nothing_to_send' });
      this.finish(msg);
      return;
    }
    const bytes = (eventJson?.length ?? 0) + (attributesJson?.length ?? 0) + purchaseJsons.reduce((n, s) => n + s.length + 1, 0) + 2;
    this.queue.push({
      key: r.key,
      msg,
      ...(eventJson ? { eventJson } : {}),
      ...(attributesJson ? { attributesJson } : {}),
      purchaseJsons,
      events: eventJson ? 1 : 0,
      attributes: attributesJson ? 1 : 0,
      purchases: purchaseJsons.length,
      bytes,
      seenMs: this.d.clock.now(),
    });
    this.pump();
  }

  private finish(msg: ConsumedMessage): void {
    msg.handle.done();
    this.pendingSince.delete(msg);
    if (this.pendingSince.size === 0) for (const w of this.drainWaiters) w();
  }

  private deadLetter(msg: ConsumedMessage, reason: string, error: string, extraHeaders?: Record<string, string>): Promise<void> {
    return this.d.deadLetters
      .write({
        leg: 'outbound',
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
  private pump(): void {
    const s = this.d.settings;
    while (this.inFlightRequests < s.concurrency && this.queue.hasReady) {
      const wait = this.backoff.waitMs();
      if (wait > 0) {
        this.backoffTimer ??= setTimeout(() => {
          this.backoffTimer = undefined;
          this.pump();
        }, wait);
        return;
      }
      const first = this.queue.peekReady() as Item;
      const fullBatchWaiting = this.queue.size >= s.maxPerArray;
      const age = this.d.clock.now() - first.seenMs;
      if (!fullBatchWaiting && !this.draining && age < s.lingerMs) {
        this.lingerTimer ??= setTimeout(() => {
          this.lingerTimer = undefined;
          this.pump();
        }, s.lingerMs - age);
        return;
      }
      const items = this.queue.take();
      if (items.length === 0) return;
      this.inFlightRequests++;
      void this.deliver(items)
        .catch((err: unknown) => this.d.logger.error({ err: (err as Error).message }, 'unexpected error delivering to Braze'))
        .finally(() => {
          this.inFlightRequests--;
          this.queue.release(new Set(items.map((i) => i.key)));
          this.pump();
        });
    }
  }

  /** Sends one request's items until every one of them is finished, however many tries it takes. */
  private async deliver(items: Item[]): Promise<void> {
    const { metrics, health, logger } = this.d;
    for (;;) {
      const wait = this.backoff.waitMs();
      if (wait > 0) await sleep(wait);
      const { body, owners } = buildBody(items);
      metrics.batchSize.observe({ destination: BRAZE_DESTINATION }, items.length);
      health.recordAttempt();
      const res = await this.limiter.schedule(() =>
        this.sender.post('/users/track', body, { authorization: `Bearer ${this.d.settings.apiKey}` }),
      );
      metrics.requests.inc({ destination: BRAZE_DESTINATION, status: String(res.status) });
      metrics.requestDuration.observe({ destination: BRAZE_DESTINATION }, res.durationMs / 1000);
      const text = scrubSecrets(res.networkError ? `network error: ${res.networkError}` : res.text, [this.d.settings.apiKey]);
      const outcome = classifyBrazeResponse(res.status, res.headers, text, Date.now());

      if (outcome.kind === 'ok') {
        this.backoff.onSuccess();
        if (outcome.holdUntilMs !== undefined) this.backoff.holdUntil(outcome.holdUntilMs - Date.now() + this.d.clock.now());
        if (outcome.unattributedErrors.length > 0) logger.warn({ errors: outcome.unattributedErrors.slice(0, 5) }, 'Braze reported errors it did not attribute to an object');
        await this.settle(items, owners, outcome.objectErrors);
        this.setStopped(false);
        return;
      }
      if (outcome.kind === 'split' || outcome.kind === 'invalid') {
        if (outcome.kind === 'invalid' && outcome.objectErrors.length > 0) {
          // Braze named the bad objects: drop just those items, resend the others as they were.
          const bad = itemsNamed(outcome.objectErrors, owners);
          const good = items.filter((_, i) => !bad.has(i));
          await Promise.all([...bad].map((i) => this.deadLetter((items[i] as Item).msg, 'rejected_by_destination', outcome.failure.message)));
          if (good.length > 0) await this.deliver(good);
          return;
        }
        if (items.length > 1) {
          // Halve until the culprit stands alone; each half keeps its items' order.
          const mid = Math.ceil(items.length / 2);
          await this.deliver(items.slice(0, mid));
          await this.deliver(items.slice(mid));
          return;
        }
        const reason = outcome.kind === 'split' ? 'too_large' : 'rejected_by_destination';
        await this.deadLetter((items[0] as Item).msg, reason, outcome.failure.message);
        return;
      }
      health.recordFailure(outcome.failure.class, outcome.failure.message);
      metrics.retries.inc({ destination: BRAZE_DESTINATION, class: outcome.failure.class });
      const delay = this.backoff.onFailure(outcome.failure.class, outcome.failure.retryAfterMs);
      metrics.backoffSeconds.set({ destination: BRAZE_DESTINATION }, delay / 1000);
      if (outcome.kind === 'stop') {
        if (!this.stopped) logger.error({ status: res.status, retryInMs: delay }, `${outcome.failure.message}; outbound leg stopped, nothing is committed or dropped, retrying slowly`);
        this.setStopped(true);
      } else if (this.backoff.failures === 1 || this.backoff.failures % 20 === 0) {
        logger.warn({ status: res.status, class: outcome.failure.class, retryInMs: delay, failures: this.backoff.failures }, outcome.failure.message);
      }
    }
  }

  /** A 2xx answer: objects Braze named are dead-lettered, everything else counts as delivered. */
  private async settle(items: Item[], owners: Owners, errors: ObjectError[]): Promise<void> {
    const rejected = new Map<number, ObjectError[]>();
    for (const e of errors) {
      const owner = owners[e.array][e.index];
      if (owner === undefined) continue;
      const list = rejected.get(owner) ?? [];
      list.push(e);
      rejected.set(owner, list);
    }
    const writes: Array<Promise<void>> = [];
    let delivered = 0;
    for (let i = 0; i < items.length; i++) {
      const it = items[i] as Item;
      const errs = rejected.get(i);
      if (!errs) {
        delivered++;
        this.finish(it.msg);
        continue;
      }
      writes.push(
        this.deadLetter(it.msg, 'rejected_by_destination', errs.map((e) => `${e.array}[${e.index}]: ${e.type}`).join('; '), {
          'rejected-arrays': errs.map((e) => e.array).join(','),
        }),
      );
    }
    this.d.metrics.delivered.inc({ leg: 'outbound' }, delivered);
    this.d.health.recordSuccess(delivered);
    this.d.metrics.lastSuccess.set({ connector: this.d.health.name }, this.d.clock.now() / 1000);
    await Promise.all(writes);
    this.d.onProgress?.();
  }

  private setStopped(stopped: boolean): void {
    if (this.stopped === stopped) return;
    this.stopped = stopped;
    if (!stopped) this.d.logger.info('Braze accepted the key again; outbound leg resumed');
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
    await this.limiter.stop({ dropWaitingJobs: false }).catch(() => undefined);
    await this.sender.close();
  }
}

type Owners = Record<TrackArray, number[]>;

/** The request body, and for each array position the index of the item it came from. */
function buildBody(items: Item[]): { body: string; owners: Owners } {
  const owners: Owners = { events: [], attributes: [], purchases: [] };
  const attributes: string[] = [];
  const events: string[] = [];
  const purchases: string[] = [];
  items.forEach((it, i) => {
    if (it.attributesJson) {
      attributes.push(it.attributesJson);
      owners.attributes.push(i);
    }
    if (it.eventJson) {
      events.push(it.eventJson);
      owners.events.push(i);
    }
    for (const p of it.purchaseJsons) {
      purchases.push(p);
      owners.purchases.push(i);
    }
  });
  const parts: string[] = [];
  if (attributes.length) parts.push(`"attributes":[${attributes.join(',')}]`);
  if (events.length) parts.push(`"events":[${events.join(',')}]`);
  if (purchases.length) parts.push(`"purchases":[${purchases.join(',')}]`);
  return { body: `{${parts.join(',')}}`, owners };
}

function itemsNamed(errors: ObjectError[], owners: Owners): Set<number> {
  const s = new Set<number>();
  for (const e of errors) {
    const o = owners[e.array][e.index];
    if (o !== undefined) s.add(o);
  }
  return s;
}

function where(msg: ConsumedMessage): string {
  return `${msg.topic}/${msg.partition}@${msg.offset}`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
