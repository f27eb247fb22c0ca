import { afterEach, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { BrazeClient } from '../../src/amplitude-to-braze/braze-client.js';
import { BrazeDestination, brazeItem, type BrazeItem, type BrazeRequestLimits } from '../../src/amplitude-to-braze/braze-leg.js';
import { AttributeState } from '../../src/amplitude-to-braze/attribute-state.js';
import { type MapResult, createOutboundMapper } from '../../src/amplitude-to-braze/map-to-braze.js';
import { defaultOutboundMapping } from '../../src/amplitude-to-braze/mapping-config.js';
import type { Answer } from '../../src/delivery/outcome.js';
import type { ConsumedMessage } from '../../src/kafka/consumer-loop.js';
import { toMessage } from '../../src/kafka/dead-letter.js';
import { startBrazeStandIn, type BrazeStandIn, type BrazeStandInOptions } from '../../src/demo/standins/braze.js';

// One event with more objects than one /users/track request may hold (Braze: 75 in total by its
// current docs, reference/braze-users-track.md §7; quantity at most 100 per purchase, §5): the
// Braze destination sends it in several requests and answers for it once.

const KEY = 'parts-key';
const LIMITS: BrazeRequestLimits = { maxPerArray: 75, maxTotal: 75, maxBytes: 3_900_000 };
const ALIAS = { alias_name: 'dev-1', alias_label: 'amplitude_device_id' };

const open: Array<{ close(): Promise<void> }> = [];
afterEach(async () => {
  while (open.length > 0) await open.pop()?.close();
});

async function setup(standIn: Partial<BrazeStandInOptions> = {}, limits: BrazeRequestLimits = LIMITS, failCall?: number) {
  const braze = await startBrazeStandIn({ apiKey: KEY, ...standIn });
  open.push(braze);
  const client = new FlakyClient(braze, failCall);
  open.push(client);
  const state = new AttributeState();
  const destination = new BrazeDestination(client, 'braze', systemClock, state, limits);
  const mapper = createOutboundMapper(defaultOutboundMapping, { attributeState: state });
  let offset = 0;
  const item = (event: Record<string, unknown>): BrazeItem => {
    const r: MapResult = mapper(Buffer.from(JSON.stringify(event)));
    if (r.kind !== 'mapped') throw new Error(`not mapped: ${JSON.stringify(r)}`);
    const msg: ConsumedMessage = {
      topic: 'amplitude.events',
      partition: 0,
      offset: String(offset++),
      key: Buffer.from(r.key),
      value: null,
      headers: {},
      timestampMs: 0,
      handle: { done: () => undefined },
    };
    const it = brazeItem(r, msg, 0);
    if (it === undefined) throw new Error('nothing to send');
    return it;
  };
  return { braze, client, state, destination, item };
}

/** A real client to the stand-in whose n-th request (1-based) fails with a 503 instead. */
class FlakyClient extends BrazeClient {
  calls = 0;
  constructor(
    braze: BrazeStandIn,
    private readonly failCall?: number,
  ) {
    super({ restEndpoint: braze.url, apiKey: KEY, concurrency: 1, requestTimeoutMs: 5_000, rateLimitRequests: 3_000, rateLimitWindowMs: 3_000 }, systemClock);
  }

  override async track(body: string): Promise<Answer> {
    if (++this.calls === this.failCall) return { outcome: { kind: 'backoff', failure: 'unavailable', error: 'Braze answered 503' }, status: 503, durationMs: 1, body: '' };
    return super.track(body);
  }
}

const buy = (o: Record<string, unknown> = {}) => ({ event_type: 'Order Completed', device_id: 'dev-1', event_time: '2025-03-14T09:00:00Z', user_properties: { plan: 'pro' }, ...o });
const units = (ps: Array<Record<string, unknown>>) => ps.reduce((n, p) => n + Number(p.quantity ?? 1), 0);

describe('an event larger than one request', () => {
  it('quantity 7,600: 78 objects sent in two requests within the cap, every unit recorded', async () => {
    const { braze, client, state, destination, item } = await setup();
    const it = item(buy({ price: 3, quantity: 7_600, productId: 'seat' }));
    expect(it.purchaseJsons).toHaveLength(76);
    const answer = await destination.send([it]);
    expect(answer.outcome).toEqual({ kind: 'delivered' });
    expect(client.calls).toBe(2);
    expect(braze.stats.maxObjectsInRequest).toBe(75);
    expect(braze.stats.silentlyDropped).toBe(0);
    const profile = braze.profile({ user_alias: ALIAS });
    expect(profile?.attributes).toEqual({ plan: 'pro' });
    expect(profile?.events).toHaveLength(1);
    expect(units(profile?.purchases ?? [])).toBe(7_600);
    // the attributes object was accepted: the state knows it, and that the profile exists
    expect(state.needsCreation(`alias:amplitude_device_id:dev-1`)).toBe(false);
  });

  it('80 products: 80 purchases in two requests', async () => {
    const { braze, client, destination, item } = await setup();
    const products = Array.from({ length: 80 }, (_, i) => ({ productId: `sku-${i}`, price: 1 }));
    const answer = await destination.send([item(buy({ products }))]);
    expect(answer.outcome.kind).toBe('delivered');
    expect(client.calls).toBe(2);
    expect(braze.received.purchases.map((p) => p.product_id)).toEqual(products.map((p) => p.productId));
  });

  it('with only the per-array cap (legacy contracts), purchases go 75 per request', async () => {
    const { braze, client, destination, item } = await setup({ maxTotal: 0 }, { ...LIMITS, maxTotal: 0 });
    const products = Array.from({ length: 80 }, (_, i) => ({ productId: `sku-${i}`, price: 1 }));
    expect((await destination.send([item(buy({ products }))])).outcome.kind).toBe('delivered');
    expect(client.calls).toBe(2);
    expect(braze.stats.maxPurchasesInRequest).toBe(75);
    expect(braze.received.purchases).toHaveLength(80);
  });

  it('a purchase refused in the second request: only that object is dead-lettered, as its own record', async () => {
    const { braze, destination, item } = await setup();
    braze.rejectWhen((o, array) => (array === 'purchases' && o.product_id === 'sku-77' ? "'product_id' is not valid" : undefined));
    const products = Array.from({ length: 80 }, (_, i) => ({ productId: `sku-${i}`, price: 1 }));
    const answer = await destination.send([item(buy({ products }))]);
    const o = answer.outcome;
    if (o.kind !== 'rejected') throw new Error(`expected rejected, got ${o.kind}`);
    expect(o.othersDelivered).toBe(true);
    expect(o.rejects).toHaveLength(1);
    const records = o.rejects[0]?.records ?? [];
    expect(records).toHaveLength(1);
    const m = toMessage(records[0]!);
    expect(JSON.parse(m.value!.toString())).toMatchObject({ product_id: 'sku-77' });
    expect(String(m.headers['braze-array'])).toBe('purchases');
    // attributes 0, event 1, purchases from 2
    expect(String(m.headers['braze-index'])).toBe(String(2 + 77));
    expect(braze.received.purchases).toHaveLength(79);
  });

  it('a 503 on the second request: the next try resumes there, nothing Braze took is sent twice', async () => {
    const { braze, client, destination, item } = await setup({}, LIMITS, 2);
    const it = item(buy({ price: 1, quantity: 7_600 }));
    const first = await destination.send([it]);
    expect(first.outcome.kind).toBe('backoff');
    expect(braze.received.purchases).toHaveLength(73);
    const second = await destination.send([it]);
    expect(second.outcome.kind).toBe('delivered');
    expect(client.calls).toBe(3);
    expect(braze.received.attributes).toHaveLength(1);
    expect(braze.received.events).toHaveLength(1);
    expect(units(braze.received.purchases)).toBe(7_600);
  });

  it('given up part-sent (the drop window): only the objects Braze does not have are dead-lettered, each as itself', async () => {
    const { braze, destination, item } = await setup({}, LIMITS, 2);
    const it = item(buy({ price: 1, quantity: 7_600 }));
    expect(destination.undelivered(it, 'drop_window_expired', 'old')).toBeUndefined(); // nothing sent yet: the whole message goes
    expect((await destination.send([it])).outcome.kind).toBe('backoff');
    expect(braze.received.purchases).toHaveLength(73);
    const records = destination.undelivered(it, 'drop_window_expired', 'undelivered for 172800 s') ?? [];
    // 78 objects: the attributes object, the event and 73 purchases went in the first request
    expect(records).toHaveLength(3);
    for (const r of records) {
      const m = toMessage(r);
      expect(m.headers).toMatchObject({ reason: 'drop_window_expired', payload: 'braze-object', 'braze-array': 'purchases' });
    }
    // the attributes Braze took stay known: the leg's release of the dropped item has nothing to undo
    expect(it.attributeWrite).toBeUndefined();
  });

  it('Braze with a lower cap than configured (50, MAU CY 24-25): "Max Input Length" is answered by sending smaller parts', async () => {
    const { braze, destination, item } = await setup({ maxTotal: 50 });
    const it = item(buy({ price: 1, quantity: 6_000 }));
    expect(1 + 1 + it.purchaseJsons.length).toBe(62); // within the configured 75
    const answer = await destination.send([it]);
    expect(answer.outcome.kind).toBe('delivered');
    expect(braze.stats.byStatus[400]).toBeGreaterThanOrEqual(1);
    expect(units(braze.received.purchases)).toBe(6_000);
    expect(braze.received.events).toHaveLength(1);
  });

  it('an item within the limits goes in one request as before', async () => {
    const { client, destination, item } = await setup();
    expect((await destination.send([item(buy({ price: 1, quantity: 7_300 }))])).outcome.kind).toBe('delivered');
    expect(client.calls).toBe(1);
  });
});
