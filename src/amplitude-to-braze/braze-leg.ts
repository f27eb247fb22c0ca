import type { BrazeSettings } from '../config/config.js';
import type { ConsumedMessage } from '../kafka/consumer-loop.js';
import { DeliveryLeg, type DeliveryLegDeps, type Destination, type Encoded, type LegItem } from '../delivery/delivery-leg.js';
import type { Answer, DeadLetterReason, ItemReject } from '../delivery/outcome.js';
import type { DeadLetter } from '../kafka/dead-letter.js';
import type { BrazeClient } from './braze-client.js';
import type { MapResult } from './map-to-braze.js';
import type { AttributeState, AttributeWrite } from './attribute-state.js';
import { brazeObjectDeadLetter, buildObjectsBody, locateObjects, rejectsByItem, type BrazeArrayName, type LocatedObject } from './braze-dead-letter.js';

export const BRAZE_DESTINATION = 'braze';

/** One consumed message with its Braze objects serialised once. */
export interface BrazeItem extends LegItem {
  eventJson?: string;
  attributesJson?: string;
  purchaseJsons: string[];
  /** what the attributes object records in the attribute state, settled once Braze answers */
  attributeWrite?: AttributeWrite;
  /** the event's time (epoch ms): a refused attributes object's dead letter carries it, for replay */
  timeMs?: number;
  /** set once the item is sent in several requests (see BrazeDestination.sendInParts) */
  progress?: PartsProgress;
}

/** What one `/users/track` request may hold (BRAZE_MAX_PER_ARRAY, BRAZE_MAX_OBJECTS_PER_REQUEST, BRAZE_MAX_REQUEST_BYTES). */
export interface BrazeRequestLimits {
  maxPerArray: number;
  /** 0: no cap across the arrays (legacy contracts) */
  maxTotal: number;
  maxBytes: number;
}

/**
 * An item sent in several requests, kept on the item across tries: what a back-off interrupts
 * resumes where it stopped, and nothing Braze already took is sent again.
 */
export interface PartsProgress {
  /** per object, in the order locateObjects gives (attributes, event, purchases): answered for good */
  settled: boolean[];
  /** the dead letters of the objects Braze refused */
  records: DeadLetter[];
  reason?: DeadLetterReason;
  errors: string[];
  /** most objects per request; halved when Braze answers that a part is too large */
  cap: number;
}

export type BrazeLegDeps = Omit<DeliveryLegDeps<BrazeItem>, 'leg' | 'destination' | 'encode' | 'limits' | 'concurrency' | 'lingerMs' | 'maxInFlightEvents' | 'backoff'> & {
  settings: BrazeSettings;
  client: BrazeClient;
  mapper: (value: Buffer | null, kafkaTimestampMs?: number) => MapResult;
  /** what was last written to each user's attributes; absent when OUTBOUND_ATTRIBUTE_STATE_USERS is 0 */
  attributeState?: AttributeState;
};

/**
 * The outbound leg after Kafka: each message is mapped to Braze objects once, batched under
 * Braze's caps with order kept per user, and sent through the workspace's shared client.
 */
export function createBrazeLeg(deps: BrazeLegDeps): DeliveryLeg<BrazeItem> {
  const s = deps.settings;
  const { metrics, logger } = deps;
  const encode = (msg: ConsumedMessage, seenMs: number): Encoded<BrazeItem> => {
    const r = deps.mapper(msg.value, msg.timestampMs);
    if (r.kind === 'skipped') return { skip: r.reason };
    if (r.kind === 'invalid') return { deadLetter: r.reason, error: r.message };
    if (r.attributeWritesSaved > 0) metrics.attributeWritesSaved.inc(r.attributeWritesSaved);
    for (const a of r.adjustments) metrics.adjustments.inc({ leg: 'outbound', kind: a.kind, rule: a.rule });
    if (r.adjustments.length > 0 && logger.isLevelEnabled('debug')) {
      logger.debug({ adjustments: r.adjustments, source: `${msg.topic}/${msg.partition}@${msg.offset}` }, 'event adjusted to meet Braze limits');
    }
    const item = brazeItem(r, msg, seenMs);
    return item === undefined ? { skip: 'nothing_to_send' } : { item };
  };
  return new DeliveryLeg<BrazeItem>({
    ...deps,
    leg: 'outbound',
    destination: new BrazeDestination(deps.client, deps.health.name, deps.clock, deps.attributeState, {
      maxPerArray: s.maxPerArray,
      maxTotal: s.maxTotal,
      maxBytes: s.maxRequestBytes - 64,
    }),
    encode,
    // never delivered: what its attributes object carried counts as never sent
    onItemDropped: (item) => deps.attributeState?.release(item.attributeWrite),
    limits: { maxPerPart: s.maxPerArray, maxTotal: s.maxTotal, maxBytes: s.maxRequestBytes - 64 },
    concurrency: s.concurrency,
    lingerMs: s.lingerMs,
    maxInFlightEvents: s.maxInFlightEvents,
    backoff: { baseMs: s.retryBaseMs, maxMs: s.retryMaxMs, stopRetryMs: s.authRetryMs },
  });
}

/** One mapped message as the queue and the destination take it: its objects serialised once; undefined when it holds none. */
export function brazeItem(r: Extract<MapResult, { kind: 'mapped' }>, msg: ConsumedMessage, seenMs: number): BrazeItem | undefined {
  const eventJson = r.event ? JSON.stringify(r.event) : undefined;
  const attributesJson = r.attributes ? JSON.stringify(r.attributes) : undefined;
  const purchaseJsons = r.purchases.map((p) => JSON.stringify(p));
  if (!eventJson && !attributesJson && purchaseJsons.length === 0) return undefined;
  const bytes = (eventJson?.length ?? 0) + (attributesJson?.length ?? 0) + purchaseJsons.reduce((n, p) => n + p.length + 1, 0) + 2;
  return {
    key: r.key,
    msg,
    ...(eventJson ? { eventJson } : {}),
    ...(attributesJson ? { attributesJson } : {}),
    purchaseJsons,
    ...(r.attributeWrite ? { attributeWrite: r.attributeWrite } : {}),
    timeMs: r.timeMs,
    parts: [eventJson ? 1 : 0, attributesJson ? 1 : 0, purchaseJsons.length],
    bytes,
    seenMs,
  };
}

/**
 * Builds one `/users/track` body from a batch, maps the objects Braze names back to the items they
 * came from, and settles each finished item's attribute write.
 *
 * One event can hold more objects than a request may carry (quantity 7,600 is 76 purchases; a
 * `products` list of 80 entries, 80), and the batch queue then hands it over alone. The delivery
 * core finishes one message per item and would dead-letter a lone item Braze refuses as too
 * large, so this destination sends such an item in several requests itself (`sendInParts`) and
 * answers for it once, when every part is answered.
 */
export class BrazeDestination implements Destination<BrazeItem> {
  readonly name = BRAZE_DESTINATION;

  constructor(
    private readonly client: BrazeClient,
    private readonly connector: string,
    private readonly clock: { now(): number },
    private readonly state?: AttributeState,
    /** Braze's current documented defaults (reference §7) unless the settings say otherwise */
    private readonly limits: BrazeRequestLimits = { maxPerArray: 75, maxTotal: 75, maxBytes: 3_900_000 },
  ) {}

  get url(): string {
    return this.client.url;
  }

  async send(items: BrazeItem[]): Promise<Answer> {
    const lone = items.length === 1 ? (items[0] as BrazeItem) : undefined;
    if (lone !== undefined && (lone.progress !== undefined || this.exceedsLimits(lone))) return this.sendInParts(lone, 0);
    const { body } = buildBody(items);
    const answer = await this.client.track(body);
    const o = answer.outcome;
    if (lone !== undefined && o.kind === 'split' && o.reason === 'too_large_single' && objectCount(lone) > 1) {
      // Within the configured caps, yet too large for Braze (a contract with a lower cap, or large
      // objects): in smaller parts rather than the whole message to the dead-letter topic.
      lone.progress = newProgress(lone, Math.floor(objectCount(lone) / 2));
      return this.sendInParts(lone, answer.durationMs);
    }
    if (o.kind === 'delivered') {
      for (const it of items) this.state?.confirm(it.attributeWrite);
      return answer;
    }
    if (o.kind !== 'rejected') return answer;
    return { ...answer, outcome: { ...o, rejects: this.itemRejects(items, o.rejects, o.othersDelivered) } };
  }

  /**
   * Object positions → items. When Braze processed the rest of the request, an item of which it
   * refused some objects has just those objects dead-lettered, each as its own record (replay then
   * re-sends exactly them); otherwise, or when the errors name no object, the whole message.
   */
  private itemRejects(items: BrazeItem[], rejects: ItemReject[], othersDelivered: boolean): ItemReject[] {
    const byItem = rejectsByItem(items, rejects);
    const out: ItemReject[] = [];
    const now = this.clock.now();
    for (const [index, objects] of byItem) {
      const it = items[index] as BrazeItem;
      const first = objects[0] as (typeof objects)[number];
      const error = objects.map((x) => x.error).join('; ');
      const whole = !othersDelivered || first.reason === 'rejected_unattributed';
      if (whole) {
        out.push({ index, reason: first.reason, error });
        continue;
      }
      this.state?.settle(it.attributeWrite, !objects.some((x) => x.array === 'attributes'));
      const { msg } = it;
      out.push({
        index,
        reason: first.reason,
        error,
        records: objects.map((x) =>
          brazeObjectDeadLetter({
            array: x.array,
            json: x.json,
            index: x.index,
            reason: x.reason,
            error: x.error,
            connector: this.connector,
            source: { topic: msg.topic, partition: msg.partition, offset: msg.offset },
            key: msg.key,
            firstFailureMs: now,
            user: it.key,
            ...(it.timeMs !== undefined ? { eventTimeMs: it.timeMs } : {}),
          }),
        ),
      });
    }
    if (othersDelivered) for (let i = 0; i < items.length; i++) if (!byItem.has(i)) this.state?.confirm((items[i] as BrazeItem).attributeWrite);
    return out;
  }

  private exceedsLimits(it: BrazeItem): boolean {
    const { maxPerArray, maxTotal, maxBytes } = this.limits;
    const purchases = it.purchaseJsons.length;
    return (maxTotal > 0 && objectCount(it) > maxTotal) || purchases > maxPerArray || it.bytes > maxBytes;
  }

  /**
   * Sends one item's objects in as many requests as the limits need, in order (attributes, event,
   * purchases: the first part holds the attributes object, so an alias-only profile is created
   * before the rest arrives), and answers once for all of them:
   *  - every part delivered: `delivered`;
   *  - objects Braze refused (named in a 2xx or a 400, or alone and still too large): each is
   *    dead-lettered as its own Braze-object record, the others are delivered, as for a partial
   *    reject of an ordinary request (`rejected` with records);
   *  - a part answered with a back-off, a hold or a stop: that answer, and the item keeps its
   *    progress, so the core's next try resumes with the parts not yet answered.
   * The core sees one request for the whole item (its request metrics count it once).
   */
  private async sendInParts(it: BrazeItem, spentMs: number): Promise<Answer> {
    const objects = locateObjects([it]);
    const p = (it.progress ??= newProgress(it, this.limits.maxTotal > 0 ? this.limits.maxTotal : objects.length));
    let durationMs = spentMs;
    let last: Answer | undefined;
    let holdForMs: number | undefined;
    for (;;) {
      const part = this.nextPart(objects, p);
      if (part.length === 0) break;
      const chosen = part.map((i) => objects[i] as LocatedObject);
      const { body, owners } = buildObjectsBody(chosen);
      const answer = await this.client.track(body);
      durationMs += answer.durationMs;
      last = answer;
      const o = answer.outcome;
      if (o.kind === 'delivered') {
        for (const i of part) this.settleObject(it, objects, p, i);
        holdForMs = o.holdForMs;
        continue;
      }
      if (o.kind === 'rejected') {
        // body position → position in `part` → object
        const named = new Map<number, { reason: DeadLetterReason; error: string }>();
        for (const r of o.rejects) {
          const at = owners[r.index];
          if (at !== undefined && !named.has(at)) named.set(at, { reason: r.reason, error: r.error });
        }
        if (named.size > 0) {
          for (const [at, r] of named) this.refuseObject(it, objects, p, part[at] as number, r.reason, r.error);
          // The others: processed (a 2xx with errors), or not processed and sent again with the next part.
          if (o.othersDelivered) for (const i of part) if (!p.settled[i]) this.settleObject(it, objects, p, i);
          holdForMs = o.holdForMs;
          continue;
        }
        // Refusals naming nothing in this part: as unexplained as a bare 400, below.
      }
      if (o.kind === 'rejected' || o.kind === 'split') {
        const reason = o.kind === 'split' ? o.reason : 'rejected_by_destination';
        const error = o.kind === 'split' ? o.error : `Braze answered ${answer.status} naming no object of the request`;
        if (part.length === 1) this.refuseObject(it, objects, p, part[0] as number, reason, error);
        else p.cap = Math.max(1, Math.floor(part.length / 2));
        continue;
      }
      // back-off, hold, stop: the core waits and tries this item again, which resumes here
      return { ...answer, durationMs };
    }
    const status = last?.status ?? 201;
    const body = last?.body ?? '';
    const hold = holdForMs !== undefined ? { holdForMs } : {};
    if (p.records.length === 0) return { outcome: { kind: 'delivered', ...hold }, status, durationMs, body };
    const error = p.errors.slice(0, 5).join('; ') + (p.errors.length > 5 ? `; and ${p.errors.length - 5} more` : '');
    const reject: ItemReject = { index: 0, reason: p.reason ?? 'rejected_by_destination', error, records: p.records };
    return { outcome: { kind: 'rejected', rejects: [reject], othersDelivered: true, ...hold }, status, durationMs, body };
  }

  /** The next objects not yet answered, in order, as many as one request may hold. */
  private nextPart(objects: readonly LocatedObject[], p: PartsProgress): number[] {
    const { maxPerArray, maxBytes } = this.limits;
    const out: number[] = [];
    const perArray: Record<BrazeArrayName, number> = { attributes: 0, events: 0, purchases: 0 };
    let bytes = 2;
    for (let i = 0; i < objects.length; i++) {
      if (p.settled[i]) continue;
      const o = objects[i] as LocatedObject;
      const b = o.json.length + 1 + (perArray[o.array] === 0 ? o.array.length + 5 : 0);
      // Contiguous: stop at the first object that does not fit, so the order is kept.
      if (out.length > 0 && (out.length >= p.cap || perArray[o.array] >= maxPerArray || bytes + b > maxBytes)) break;
      out.push(i);
      perArray[o.array]++;
      bytes += b;
    }
    return out;
  }

  /**
   * A part-sent item given up (the drop window): the dead letters of the objects Braze refused and
   * of those not sent yet, each as its own record, so a replay sends only what Braze does not have.
   */
  undelivered(it: BrazeItem, reason: DeadLetterReason, error: string): DeadLetter[] | undefined {
    const p = it.progress;
    if (p === undefined) return undefined;
    const objects = locateObjects([it]);
    for (let i = 0; i < objects.length; i++) if (!p.settled[i]) this.refuseObject(it, objects, p, i, reason, error);
    return p.records;
  }

  /** Braze took object `i`. */
  private settleObject(it: BrazeItem, objects: readonly LocatedObject[], p: PartsProgress, i: number): void {
    p.settled[i] = true;
    if ((objects[i] as LocatedObject).array === 'attributes') {
      this.state?.confirm(it.attributeWrite);
      // settled: the leg's release of a dropped item must not undo it
      delete it.attributeWrite;
    }
  }

  /** Braze refused object `i` for good: its own dead letter. */
  private refuseObject(it: BrazeItem, objects: readonly LocatedObject[], p: PartsProgress, i: number, reason: DeadLetterReason, error: string): void {
    const o = objects[i] as LocatedObject;
    p.settled[i] = true;
    if (o.array === 'attributes') {
      this.state?.release(it.attributeWrite);
      delete it.attributeWrite;
    }
    p.reason ??= reason;
    p.errors.push(`${o.array}: ${error}`);
    const { msg } = it;
    p.records.push(
      brazeObjectDeadLetter({
        array: o.array,
        json: o.json,
        index: o.index,
        reason,
        error,
        connector: this.connector,
        source: { topic: msg.topic, partition: msg.partition, offset: msg.offset },
        key: msg.key,
        firstFailureMs: this.clock.now(),
        user: it.key,
        ...(it.timeMs !== undefined ? { eventTimeMs: it.timeMs } : {}),
      }),
    );
  }

  /** The client is the workspace's, shared with other writers: the gateway closes it. */
  close(): Promise<void> {
    return Promise.resolve();
  }
}

function objectCount(it: BrazeItem): number {
  return (it.attributesJson ? 1 : 0) + (it.eventJson ? 1 : 0) + it.purchaseJsons.length;
}

function newProgress(it: BrazeItem, cap: number): PartsProgress {
  return { settled: new Array<boolean>(objectCount(it)).fill(false), records: [], errors: [], cap: Math.max(1, cap) };
}

/**
 * The request body, its arrays in the order attributes, events, purchases: the order in which
 * BrazeClient counts object positions and `rejectsByItem` maps them back to items.
 */
export function buildBody(items: BrazeItem[]): { body: string } {
  const attributes: string[] = [];
  const events: string[] = [];
  const purchases: string[] = [];
  for (const it of items) {
    if (it.attributesJson) attributes.push(it.attributesJson);
    if (it.eventJson) events.push(it.eventJson);
    for (const p of it.purchaseJsons) purchases.push(p);
  }
  const parts: string[] = [];
  if (attributes.length) parts.push(`"attributes":[${attributes.join(',')}]`);
  if (events.length) parts.push(`"events":[${events.join(',')}]`);
  if (purchases.length) parts.push(`"purchases":[${purchases.join(',')}]`);
  return { body: `{${parts.join(',')}}` };
}
