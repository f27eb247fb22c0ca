import type { BrazeSettings } from '../config/config.js';
import type { ConsumedMessage } from '../kafka/consumer-loop.js';
import { scrubSecrets } from '../observability/logger.js';
import { HttpSender } from '../delivery/http-sender.js';
import { RequestWindow } from '../delivery/request-window.js';
import { DeliveryLeg, sleep, type DeliveryLegDeps, type LegItem } from '../delivery/delivery-leg.js';
import { classifyBrazeResponse, type ObjectError, type TrackArray } from './braze-response.js';
import type { MapResult } from './map-to-braze.js';

export const BRAZE_DESTINATION = 'braze';
const USER_AGENT = 'amplitude-braze-gateway/0.1';

/** One consumed message with its Braze objects serialised once. */
interface Item extends LegItem {
  eventJson?: string;
  attributesJson?: string;
  purchaseJsons: string[];
}

export type BrazeLegDeps = Omit<DeliveryLegDeps, 'leg' | 'destination' | 'limits' | 'concurrency' | 'lingerMs' | 'maxInFlightEvents' | 'backoff'> & {
  settings: BrazeSettings;
  mapper: (value: Buffer | null, kafkaTimestampMs?: number) => MapResult;
};

/**
 * The outbound leg after Kafka: maps each message, batches per Braze's caps with order kept per
 * user, and sends through a destination-wide limiter. Braze's answers follow the reference:
 * per-object errors dead-letter just those objects, 413 and unattributed 400s split the request,
 * 429/5xx back off, a refused key holds everything until it works.
 */
export class BrazeLeg extends DeliveryLeg<Item> {
  private readonly sender: HttpSender;
  private readonly window: RequestWindow;
  private readonly settings: BrazeSettings;
  private readonly mapper: BrazeLegDeps['mapper'];

  constructor(deps: BrazeLegDeps) {
    const s = deps.settings;
    super({
      ...deps,
      leg: 'outbound',
      destination: BRAZE_DESTINATION,
      limits: { maxPerArray: s.maxPerArray, maxTotal: s.maxTotal, maxBytes: s.maxRequestBytes - 64 },
      concurrency: s.concurrency,
      lingerMs: s.lingerMs,
      maxInFlightEvents: s.maxInFlightEvents,
      backoff: { baseMs: s.retryBaseMs, maxMs: s.retryMaxMs, authRetryMs: s.authRetryMs },
    });
    this.settings = s;
    this.mapper = deps.mapper;
    this.sender = new HttpSender(s.restEndpoint, { connections: s.concurrency, timeoutMs: s.requestTimeoutMs, userAgent: USER_AGENT });
    this.window = new RequestWindow(s.rateLimitRequests, s.rateLimitWindowMs, deps.clock);
  }

  protected prepare(msg: ConsumedMessage): Item | undefined {
    const { metrics, logger } = this.d;
    const r = this.mapper(msg.value, msg.timestampMs);
    if (r.kind === 'skipped') {
      this.skip(msg, r.reason);
      return undefined;
    }
    if (r.kind === 'invalid') {
      void this.deadLetter(msg, r.reason, r.message);
      return undefined;
    }
    for (const a of r.adjustments) metrics.adjustments.inc({ leg: 'outbound', kind: a.kind, rule: a.rule });
    if (r.adjustments.length > 0 && logger.isLevelEnabled('debug')) {
      logger.debug({ adjustments: r.adjustments, source: `${msg.topic}/${msg.partition}@${msg.offset}` }, 'event adjusted to meet Braze limits');
    }
    const eventJson = r.event ? JSON.stringify(r.event) : undefined;
    const attributesJson = r.attributes ? JSON.stringify(r.attributes) : undefined;
    const purchaseJsons = r.purchases.map((p) => JSON.stringify(p));
    if (!eventJson && !attributesJson && purchaseJsons.length === 0) {
      this.skip(msg, 'nothing_to_send');
      return undefined;
    }
    const bytes = (eventJson?.length ?? 0) + (attributesJson?.length ?? 0) + purchaseJsons.reduce((n, s) => n + s.length + 1, 0) + 2;
    return {
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
    };
  }

  protected async deliver(items: Item[]): Promise<void> {
    const { metrics, logger } = this.d;
    for (;;) {
      items = await this.beforeAttempt(items);
      if (items.length === 0) return;
      const { body, owners } = buildBody(items);
      metrics.batchSize.observe({ destination: BRAZE_DESTINATION }, items.length);
      this.d.health.recordAttempt();
      // The workspace's request budget is shared by every request: wait for the next window when spent.
      for (let wait = this.window.take(); wait > 0; wait = this.window.take()) await sleep(wait);
      const res = await this.sender.post('/users/track', body, { authorization: `Bearer ${this.settings.apiKey}` });
      metrics.requests.inc({ destination: BRAZE_DESTINATION, status: String(res.status) });
      metrics.requestDuration.observe({ destination: BRAZE_DESTINATION }, res.durationMs / 1000);
      const text = scrubSecrets(res.networkError ? `network error: ${res.networkError}` : res.text, [this.settings.apiKey]);
      const outcome = classifyBrazeResponse(res.status, res.headers, text, Date.now());

      if (outcome.kind === 'ok') {
        if (outcome.holdUntilMs !== undefined) this.backoff.holdUntil(outcome.holdUntilMs - Date.now() + this.d.clock.now());
        if (outcome.unattributedErrors.length > 0) logger.warn({ errors: outcome.unattributedErrors.slice(0, 5) }, 'Braze reported errors it did not attribute to an object');
        await this.settle(items, owners, outcome.objectErrors);
        return;
      }
      if (outcome.kind === 'split' || outcome.kind === 'invalid') {
        if (outcome.kind === 'invalid' && outcome.objectErrors.length > 0) {
          // Braze named the bad objects: dead-letter just those items, resend the others as they were.
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
      this.failed(outcome.failure, res.status);
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
    this.delivered(delivered);
    await Promise.all(writes);
  }

  protected async closeTransport(): Promise<void> {
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
