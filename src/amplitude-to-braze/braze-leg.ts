import type { BrazeSettings } from '../config/config.js';
import type { ConsumedMessage } from '../kafka/consumer-loop.js';
import { DeliveryLeg, type DeliveryLegDeps, type Destination, type Encoded, type LegItem } from '../delivery/delivery-leg.js';
import type { Answer, ItemReject } from '../delivery/outcome.js';
import type { BrazeClient } from './braze-client.js';
import type { MapResult } from './map-to-braze.js';
import type { AttributeState, AttributeWrite } from './attribute-state.js';
import { brazeObjectDeadLetter, rejectsByItem } from './braze-dead-letter.js';

export const BRAZE_DESTINATION = 'braze';

/** One consumed message with its Braze objects serialised once. */
export interface BrazeItem extends LegItem {
  eventJson?: string;
  attributesJson?: string;
  purchaseJsons: string[];
  /** what the attributes object records in the attribute state, settled once Braze answers */
  attributeWrite?: AttributeWrite;
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
    const eventJson = r.event ? JSON.stringify(r.event) : undefined;
    const attributesJson = r.attributes ? JSON.stringify(r.attributes) : undefined;
    const purchaseJsons = r.purchases.map((p) => JSON.stringify(p));
    if (!eventJson && !attributesJson && purchaseJsons.length === 0) return { skip: 'nothing_to_send' };
    const bytes = (eventJson?.length ?? 0) + (attributesJson?.length ?? 0) + purchaseJsons.reduce((n, p) => n + p.length + 1, 0) + 2;
    return {
      item: {
        key: r.key,
        msg,
        ...(eventJson ? { eventJson } : {}),
        ...(attributesJson ? { attributesJson } : {}),
        purchaseJsons,
        ...(r.attributeWrite ? { attributeWrite: r.attributeWrite } : {}),
        parts: [eventJson ? 1 : 0, attributesJson ? 1 : 0, purchaseJsons.length],
        bytes,
        seenMs,
      },
    };
  };
  return new DeliveryLeg<BrazeItem>({
    ...deps,
    leg: 'outbound',
    destination: new BrazeDestination(deps.client, deps.health.name, deps.clock, deps.attributeState),
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

/**
 * Builds one `/users/track` body from a batch, maps the objects Braze names back to the items they
 * came from, and settles each finished item's attribute write.
 */
export class BrazeDestination implements Destination<BrazeItem> {
  readonly name = BRAZE_DESTINATION;

  constructor(
    private readonly client: BrazeClient,
    private readonly connector: string,
    private readonly clock: { now(): number },
    private readonly state?: AttributeState,
  ) {}

  get url(): string {
    return this.client.url;
  }

  async send(items: BrazeItem[]): Promise<Answer> {
    const { body } = buildBody(items);
    const answer = await this.client.track(body);
    const o = answer.outcome;
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
          }),
        ),
      });
    }
    if (othersDelivered) for (let i = 0; i < items.length; i++) if (!byItem.has(i)) this.state?.confirm((items[i] as BrazeItem).attributeWrite);
    return out;
  }

  /** The client is the workspace's, shared with other writers: the gateway closes it. */
  close(): Promise<void> {
    return Promise.resolve();
  }
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
