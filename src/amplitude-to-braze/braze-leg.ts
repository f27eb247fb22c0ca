import type { BrazeSettings } from '../config/config.js';
import type { ConsumedMessage } from '../kafka/consumer-loop.js';
import { DeliveryLeg, type DeliveryLegDeps, type Destination, type Encoded, type LegItem } from '../delivery/delivery-leg.js';
import type { Answer, ItemReject } from '../delivery/outcome.js';
import type { BrazeClient } from './braze-client.js';
import type { MapResult } from './map-to-braze.js';

export const BRAZE_DESTINATION = 'braze';

/** One consumed message with its Braze objects serialised once. */
export interface BrazeItem extends LegItem {
  eventJson?: string;
  attributesJson?: string;
  purchaseJsons: string[];
}

export type BrazeLegDeps = Omit<DeliveryLegDeps<BrazeItem>, 'leg' | 'destination' | 'encode' | 'limits' | 'concurrency' | 'lingerMs' | 'maxInFlightEvents' | 'backoff'> & {
  settings: BrazeSettings;
  client: BrazeClient;
  mapper: (value: Buffer | null, kafkaTimestampMs?: number) => MapResult;
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
        parts: [eventJson ? 1 : 0, attributesJson ? 1 : 0, purchaseJsons.length],
        bytes,
        seenMs,
      },
    };
  };
  return new DeliveryLeg<BrazeItem>({
    ...deps,
    leg: 'outbound',
    destination: new BrazeDestination(deps.client),
    encode,
    limits: { maxPerPart: s.maxPerArray, maxTotal: s.maxTotal, maxBytes: s.maxRequestBytes - 64 },
    concurrency: s.concurrency,
    lingerMs: s.lingerMs,
    maxInFlightEvents: s.maxInFlightEvents,
    backoff: { baseMs: s.retryBaseMs, maxMs: s.retryMaxMs, stopRetryMs: s.authRetryMs },
  });
}

/** Builds one `/users/track` body from a batch and maps the objects Braze names back to the items they came from. */
export class BrazeDestination implements Destination<BrazeItem> {
  readonly name = BRAZE_DESTINATION;

  constructor(private readonly client: BrazeClient) {}

  get url(): string {
    return this.client.url;
  }

  async send(items: BrazeItem[]): Promise<Answer> {
    const { body, owners } = buildBody(items);
    const answer = await this.client.track(body);
    const o = answer.outcome;
    if (o.kind !== 'rejected') return answer;
    // Object positions → items; an item with several refused objects is dead-lettered once, with every error.
    const byItem = new Map<number, ItemReject>();
    for (const r of o.rejects) {
      const owner = owners[r.index];
      if (owner === undefined) continue;
      const prev = byItem.get(owner);
      byItem.set(owner, prev ? { ...prev, error: `${prev.error}; ${r.error}` } : { ...r, index: owner });
    }
    return { ...answer, outcome: { ...o, rejects: [...byItem.values()] } };
  }

  /** The client is the workspace's, shared with other writers: the gateway closes it. */
  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** The request body (attributes, events, purchases, in that order), and for each object position the index of its item. */
export function buildBody(items: BrazeItem[]): { body: string; owners: number[] } {
  const attributes: string[] = [];
  const events: string[] = [];
  const purchases: string[] = [];
  const attrOwners: number[] = [];
  const eventOwners: number[] = [];
  const purchaseOwners: number[] = [];
  items.forEach((it, i) => {
    if (it.attributesJson) {
      attributes.push(it.attributesJson);
      attrOwners.push(i);
    }
    if (it.eventJson) {
      events.push(it.eventJson);
      eventOwners.push(i);
    }
    for (const p of it.purchaseJsons) {
      purchases.push(p);
      purchaseOwners.push(i);
    }
  });
  const parts: string[] = [];
  if (attributes.length) parts.push(`"attributes":[${attributes.join(',')}]`);
  if (events.length) parts.push(`"events":[${events.join(',')}]`);
  if (purchases.length) parts.push(`"purchases":[${purchases.join(',')}]`);
  return { body: `{${parts.join(',')}}`, owners: [...attrOwners, ...eventOwners, ...purchaseOwners] };
}
