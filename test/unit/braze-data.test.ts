import { describe, expect, it } from 'vitest';
import { type Adjustment, type MapResult, createOutboundMapper } from '../../src/amplitude-to-braze/map-to-braze.js';
import { defaultOutboundMapping, type OutboundMappingConfig } from '../../src/amplitude-to-braze/mapping-config.js';
import { AttributeState } from '../../src/amplitude-to-braze/attribute-state.js';
import { loadConfig } from '../../src/config/config.js';

// "Right data at Braze" (issue 8): what arrives in Braze is what Amplitude recorded, with alias-only
// profiles created, attributes sent only when they move forward, keys Braze accepts, and purchases
// that keep the revenue. Cases from reference/braze-users-track.md §2, §5, §7, §9 and
// reference/amplitude-event-model.md §1.

const msg = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));
type Mapped = Extract<MapResult, { kind: 'mapped' }>;
function mapped(r: MapResult): Mapped {
  if (r.kind !== 'mapped') throw new Error(`expected mapped, got ${JSON.stringify(r)}`);
  return r;
}
const cfg = (o: Partial<OutboundMappingConfig> = {}): OutboundMappingConfig => ({ ...defaultOutboundMapping, ...o });
const ALIAS = { user_alias: { alias_name: 'dev-1', alias_label: 'amplitude_device_id' } };
const T0 = Date.UTC(2025, 2, 14, 9);
const at = (minutes: number): string => new Date(T0 + minutes * 60_000).toISOString();

describe('anonymous users kept: alias-only profiles are created', () => {
  it.each([
    {
      name: 'alias user with user properties: the attributes object creates the profile',
      o: {},
      input: { event_type: 'e', device_id: 'dev-1', user_properties: { plan: 'free' } },
      attributes: { ...ALIAS, _update_existing_only: false, plan: 'free' },
      eventFlag: false,
    },
    {
      name: 'alias user without user properties: an attributes object with only the flag',
      o: {},
      input: { event_type: 'e', device_id: 'dev-1' },
      attributes: { ...ALIAS, _update_existing_only: false },
      eventFlag: false,
    },
    {
      name: 'BRAZE_UPDATE_EXISTING_ONLY=true: nothing is created, every object is update-only',
      o: { updateExistingOnly: true },
      input: { event_type: 'e', device_id: 'dev-1' },
      attributes: undefined,
      eventFlag: true,
    },
    {
      name: 'BRAZE_UPDATE_EXISTING_ONLY=false: every object says false, the alias still gets its creating object',
      o: { updateExistingOnly: false },
      input: { event_type: 'e', device_id: 'dev-1' },
      attributes: { ...ALIAS, _update_existing_only: false },
      eventFlag: false,
    },
    {
      name: 'external_id user: Braze creates by default, so no creating object and no flag',
      o: {},
      input: { event_type: 'e', user_id: 'u-1', device_id: 'dev-1' },
      attributes: undefined,
      eventFlag: undefined,
    },
  ])('$name', ({ o, input, attributes, eventFlag }) => {
    const r = mapped(createOutboundMapper(cfg(o))(msg(input)));
    expect(r.attributes).toEqual(attributes);
    expect(r.event?._update_existing_only).toBe(eventFlag);
  });

  it('once Braze accepted the creating object, later events of that alias carry no creating object', () => {
    const state = new AttributeState();
    const m = createOutboundMapper(cfg(), { attributeState: state });
    const first = mapped(m(msg({ event_type: 'e', device_id: 'dev-1' })));
    expect(first.attributes).toEqual({ ...ALIAS, _update_existing_only: false });
    // not confirmed yet (in flight, or refused): the next event still carries it
    const second = mapped(m(msg({ event_type: 'e', device_id: 'dev-1' })));
    expect(second.attributes).toEqual({ ...ALIAS, _update_existing_only: false });
    state.confirm(first.attributeWrite);
    const third = mapped(m(msg({ event_type: 'e', device_id: 'dev-1', user_properties: { plan: 'pro' } })));
    expect(third.attributes).toEqual({ ...ALIAS, plan: 'pro' });
    expect(mapped(m(msg({ event_type: 'e', device_id: 'dev-1' }))).attributes).toBeUndefined();
  });

  it("until the profile is known to exist, the alias user's event and purchases can create it themselves", () => {
    const state = new AttributeState();
    const m = createOutboundMapper(cfg(), { attributeState: state });
    const buy = { event_type: 'Order Completed', device_id: 'dev-1', price: 2, quantity: 150, productId: 'p', user_properties: { plan: 'free' } };
    const first = mapped(m(msg(buy)));
    expect(first.attributes?._update_existing_only).toBe(false);
    expect(first.event?._update_existing_only).toBe(false);
    expect(first.purchases).toHaveLength(2);
    for (const p of first.purchases) expect(p._update_existing_only).toBe(false);
    // the size estimate counts the flags
    const actual = Buffer.byteLength(JSON.stringify([first.event, first.attributes, ...first.purchases]));
    expect(first.sizeEstimate).toBeGreaterThan(actual * 0.8);
    expect(first.sizeEstimate).toBeLessThan(actual * 1.3);
    state.confirm(first.attributeWrite);
    const later = mapped(m(msg({ ...buy, user_properties: { plan: 'pro' } })));
    expect(later.event?._update_existing_only).toBeUndefined();
    for (const p of later.purchases) expect(p._update_existing_only).toBeUndefined();
    // an external_id user never gets the flag (Braze creates by default); nor does anyone when update-only is forced
    const ext = mapped(m(msg({ ...buy, user_id: 'u-1' })));
    expect([ext.event?._update_existing_only, ...ext.purchases.map((p) => p._update_existing_only)]).toEqual([undefined, undefined, undefined]);
    const forced = mapped(createOutboundMapper(cfg({ updateExistingOnly: true }))(msg(buy)));
    expect([forced.event?._update_existing_only, ...forced.purchases.map((p) => p._update_existing_only)]).toEqual([true, true, true]);
  });

  it('without an attribute state every alias event carries the creating object', () => {
    const m = createOutboundMapper(cfg(), { attributeState: null });
    for (let i = 0; i < 3; i++) expect(mapped(m(msg({ event_type: 'e', device_id: 'dev-1' }))).attributes).toEqual({ ...ALIAS, _update_existing_only: false });
  });

  it('an $identify with nothing to send creates nothing', () => {
    expect(createOutboundMapper(cfg())(msg({ event_type: '$identify', device_id: 'dev-1', user_properties: {} }))).toMatchObject({ kind: 'skipped' });
  });
});

describe('attributes that only move forward, sent only when they change', () => {
  const ev = (minutes: number, up: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
    msg({ event_type: 'e', user_id: 'u-1', event_time: at(minutes), user_properties: up, ...extra });

  it.each([
    {
      name: 'an unchanged snapshot is not written again',
      steps: [
        { t: 0, up: { plan: 'free', country: 'DE' }, sent: { plan: 'free', country: 'DE' }, saved: 0 },
        { t: 1, up: { plan: 'free', country: 'DE' }, sent: undefined, saved: 2 },
      ],
    },
    {
      name: 'only the attribute that changed is written',
      steps: [
        { t: 0, up: { plan: 'free', country: 'DE' }, sent: { plan: 'free', country: 'DE' }, saved: 0 },
        { t: 1, up: { plan: 'pro', country: 'DE' }, sent: { plan: 'pro' }, saved: 1 },
      ],
    },
    {
      name: 'an event older than the one an attribute was last sent from does not overwrite it',
      steps: [
        { t: 10, up: { plan: 'pro' }, sent: { plan: 'pro' }, saved: 0 },
        { t: -60 * 24 * 365, up: { plan: 'free' }, sent: undefined, saved: 1 },
        { t: 11, up: { plan: 'pro' }, sent: undefined, saved: 1 },
      ],
    },
    {
      name: 'a newer unchanged value moves the clock, so an older change in between is stale',
      steps: [
        { t: 10, up: { plan: 'pro' }, sent: { plan: 'pro' }, saved: 0 },
        { t: 20, up: { plan: 'pro' }, sent: undefined, saved: 1 },
        { t: 15, up: { plan: 'free' }, sent: undefined, saved: 1 },
        { t: 21, up: { plan: 'free' }, sent: { plan: 'free' }, saved: 0 },
      ],
    },
    {
      name: 'an event of the same time is not older: its change is sent',
      steps: [
        { t: 5, up: { plan: 'pro' }, sent: { plan: 'pro' }, saved: 0 },
        { t: 5, up: { plan: 'team' }, sent: { plan: 'team' }, saved: 0 },
      ],
    },
    {
      name: '$setOnce is applied once per user',
      steps: [
        { t: 0, up: { $setOnce: { initial_referrer: 'google' } }, sent: { initial_referrer: 'google' }, saved: 0 },
        { t: 1, up: { $setOnce: { initial_referrer: 'bing' } }, sent: undefined, saved: 1 },
      ],
    },
    {
      name: '$setOnce after a plain value was sent is not applied',
      steps: [
        { t: 0, up: { $set: { initial_referrer: 'direct' } }, sent: { initial_referrer: 'direct' }, saved: 0 },
        { t: 1, up: { $setOnce: { initial_referrer: 'bing' } }, sent: undefined, saved: 1 },
      ],
    },
    {
      name: 'increments are always sent, and the next plain value after one is sent again',
      steps: [
        { t: 0, up: { $set: { seats: 3 } }, sent: { seats: 3 }, saved: 0 },
        { t: 1, up: { $add: { seats: 1 } }, sent: { seats: { inc: 1 } }, saved: 0 },
        { t: 2, up: { $add: { seats: 1 } }, sent: { seats: { inc: 1 } }, saved: 0 },
        { t: 3, up: { $set: { seats: 3 } }, sent: { seats: 3 }, saved: 0 },
      ],
    },
    {
      name: '$unset (null) counts as a value: sent once',
      steps: [
        { t: 0, up: { plan: 'pro' }, sent: { plan: 'pro' }, saved: 0 },
        { t: 1, up: { $unset: { plan: '-' } }, sent: { plan: null }, saved: 0 },
        { t: 2, up: { $unset: { plan: '-' } }, sent: undefined, saved: 1 },
      ],
    },
    {
      name: 'values of different types are different',
      steps: [
        { t: 0, up: { n: 1 }, sent: { n: 1 }, saved: 0 },
        { t: 1, up: { n: '1' }, sent: { n: '1' }, saved: 0 },
        { t: 2, up: { n: [1] }, sent: { n: [1] }, saved: 0 },
        { t: 3, up: { n: [1] }, sent: undefined, saved: 1 },
      ],
    },
  ])('$name', ({ steps }) => {
    const state = new AttributeState();
    const m = createOutboundMapper(cfg(), { attributeState: state });
    for (const s of steps) {
      const r = mapped(m(ev(s.t, s.up)));
      expect(r.attributes).toEqual(s.sent === undefined ? undefined : { external_id: 'u-1', ...s.sent });
      expect(r.attributeWritesSaved).toBe(s.saved);
      state.confirm(r.attributeWrite);
    }
  });

  it('a refused attributes object is released: the value is sent again with the next event', () => {
    const state = new AttributeState();
    const m = createOutboundMapper(cfg(), { attributeState: state });
    const first = mapped(m(ev(0, { plan: 'pro' })));
    expect(mapped(m(ev(1, { plan: 'pro' }))).attributes).toBeUndefined();
    state.release(first.attributeWrite);
    expect(mapped(m(ev(2, { plan: 'pro' }))).attributes).toEqual({ external_id: 'u-1', plan: 'pro' });
  });

  it('users are independent', () => {
    const m = createOutboundMapper(cfg());
    expect(mapped(m(ev(0, { plan: 'pro' }))).attributes).toEqual({ external_id: 'u-1', plan: 'pro' });
    const other = mapped(m(msg({ event_type: 'e', user_id: 'u-2', event_time: at(0), user_properties: { plan: 'pro' } })));
    expect(other.attributes).toEqual({ external_id: 'u-2', plan: 'pro' });
  });

  it.each([
    { allow: ['*'], up: { plan: 'pro', email: 'a@x.io', internal_score: 3 }, sent: { plan: 'pro', email: 'a@x.io', internal_score: 3 } },
    { allow: ['plan', 'email'], up: { plan: 'pro', email: 'a@x.io', internal_score: 3 }, sent: { plan: 'pro', email: 'a@x.io' } },
    { allow: ['plan*'], up: { plan: 'pro', plan_seats: 2, $add: { planned: 1, other: 1 } }, sent: { plan: 'pro', plan_seats: 2, planned: { inc: 1 } } },
    { allow: ['nothing_matches'], up: { plan: 'pro', $setOnce: { plan_first: 'x' }, $prepend: { tags: 'a' } }, sent: undefined },
  ])('OUTBOUND_USER_PROPERTIES=$allow', ({ allow, up, sent }) => {
    const r = mapped(createOutboundMapper(cfg({ userProperties: allow }))(msg({ event_type: 'e', user_id: 'u-1', user_properties: up })));
    expect(r.attributes).toEqual(sent === undefined ? undefined : { external_id: 'u-1', ...sent });
    // properties outside the list are configuration, not adjustments
    expect(r.adjustments).toEqual([]);
  });

  it('attributeStateMaxUsers 0: every event writes its whole snapshot (the old behaviour)', () => {
    const m = createOutboundMapper(cfg({ attributeStateMaxUsers: 0 }));
    for (let i = 0; i < 3; i++) expect(mapped(m(ev(i, { plan: 'pro' }))).attributes).toEqual({ external_id: 'u-1', plan: 'pro' });
  });
});

describe('keys and values as Braze accepts them (§7), checked per object', () => {
  const adj = (key: string, rule: string, kind: Adjustment['kind'] = 'dropped'): Adjustment => ({ kind, target: 'attribute', key, rule });
  it.each([
    { name: 'nested keys with $ and .', up: { prefs: { $x: 1, 'a.b': 2 }, plan: 'pro' }, sent: { plan: 'pro' }, adjustments: [adj('prefs', 'nested_key_invalid')] },
    { name: 'nested key with a space', up: { prefs: { 'dark mode': true } }, sent: undefined, adjustments: [adj('prefs', 'nested_key_invalid')] },
    { name: 'bad key deep inside', up: { prefs: { ui: { colors: { 'x.y': 1 } } }, ok: 1 }, sent: { ok: 1 }, adjustments: [adj('prefs', 'nested_key_invalid')] },
    { name: 'empty nested key', up: { prefs: { '': 1 } }, sent: undefined, adjustments: [adj('prefs', 'nested_key_invalid')] },
    { name: 'nested key over 255 characters', up: { prefs: { ['k'.repeat(256)]: 1 } }, sent: undefined, adjustments: [adj('prefs', 'nested_key_invalid')] },
    { name: 'array of objects with a bad key', up: { pets: [{ id: 1 }, { 'na.me': 'Rex' }] }, sent: undefined, adjustments: [adj('pets', 'nested_key_invalid')] },
    {
      name: 'valid nested object and array of objects pass',
      up: { prefs: { dark_mode: true, ui: { lang: 'de' } }, pets: [{ id: 1, name: 'Rex' }] },
      sent: { prefs: { dark_mode: true, ui: { lang: 'de' } }, pets: [{ id: 1, name: 'Rex' }] },
      adjustments: [],
    },
    { name: 'top-level keys may contain dots and spaces (only nested keys may not)', up: { 'a.b c': 1 }, sent: { 'a.b c': 1 }, adjustments: [] },
    { name: 'string over 255 is cut', up: { bio: 'b'.repeat(300) }, sent: { bio: 'b'.repeat(255) }, adjustments: [adj('bio', 'string_over_255', 'truncated')] },
  ])('$name', ({ up, sent, adjustments }) => {
    const r = mapped(createOutboundMapper(cfg())(msg({ event_type: 'e', user_id: 'u-1', user_properties: up })));
    expect(r.attributes).toEqual(sent === undefined ? undefined : { external_id: 'u-1', ...sent });
    expect(r.adjustments).toEqual(adjustments);
  });

  it("one user's bad nested key never costs another user's update", () => {
    const m = createOutboundMapper(cfg());
    const bad = mapped(m(msg({ event_type: 'e', user_id: 'u-1', user_properties: { prefs: { $x: 1 } } })));
    const good = mapped(m(msg({ event_type: 'e', user_id: 'u-2', user_properties: { prefs: { x: 1 } } })));
    expect(bad.attributes).toBeUndefined();
    expect(good.attributes).toEqual({ external_id: 'u-2', prefs: { x: 1 } });
  });
});

describe('purchases as recorded', () => {
  const base = { event_type: 'Order Completed', user_id: 'u', time: Date.UTC(2024, 4, 1, 12) };
  const p = (o: Record<string, unknown>) => ({ external_id: 'u', time: '2024-05-01T12:00:00.000Z', ...o });
  const pa = (key: string, rule: string, kind: Adjustment['kind']): Adjustment => ({ kind, target: 'purchase', key, rule });
  const total = (ps: Array<{ price: number; quantity?: number }>) => ps.reduce((n, x) => n + x.price * (x.quantity ?? 1), 0);

  it.each([
    {
      name: 'quantity 250 becomes 100 + 100 + 50 at the unit price: revenue kept',
      input: { ...base, price: 2, quantity: 250, revenue: 500, productId: 'sticker' },
      purchases: [p({ product_id: 'sticker', currency: 'USD', price: 2, quantity: 100 }), p({ product_id: 'sticker', currency: 'USD', price: 2, quantity: 100 }), p({ product_id: 'sticker', currency: 'USD', price: 2, quantity: 50 })],
      adjustments: [pa('quantity', 'quantity_over_100', 'split')],
      revenue: 500,
    },
    {
      name: 'quantity 200 without a price: unit price from revenue ÷ quantity',
      input: { ...base, quantity: 200, revenue: 100 },
      purchases: [p({ product_id: 'revenue', currency: 'USD', price: 0.5, quantity: 100 }), p({ product_id: 'revenue', currency: 'USD', price: 0.5, quantity: 100 })],
      adjustments: [pa('quantity', 'quantity_over_100', 'split')],
      revenue: 100,
    },
    {
      name: 'quantity exactly 100: one purchase',
      input: { ...base, price: 1, quantity: 100 },
      purchases: [p({ product_id: 'revenue', currency: 'USD', price: 1, quantity: 100 })],
      adjustments: [],
      revenue: 100,
    },
    {
      name: 'lower-case currency is upper-cased',
      input: { ...base, revenue: 10, currency: 'eur' },
      purchases: [p({ product_id: 'revenue', currency: 'EUR', price: 10, quantity: 1 })],
      adjustments: [],
      revenue: 10,
    },
    {
      name: 'an invalid currency is counted and the default used',
      input: { ...base, revenue: 10, currency: 'euro' },
      purchases: [p({ product_id: 'revenue', currency: 'USD', price: 10, quantity: 1 })],
      adjustments: [pa('currency', 'currency_invalid', 'replaced')],
      revenue: 10,
    },
    {
      name: 'three letters that are no ISO 4217 code are invalid too',
      input: { ...base, revenue: 10, currency: 'XQZ' },
      purchases: [p({ product_id: 'revenue', currency: 'USD', price: 10, quantity: 1 })],
      adjustments: [pa('currency', 'currency_invalid', 'replaced')],
      revenue: 10,
    },
    {
      name: 'zero revenue is still a purchase',
      input: { ...base, revenue: 0, productId: 'free_trial' },
      purchases: [p({ product_id: 'free_trial', currency: 'USD', price: 0, quantity: 1 })],
      adjustments: [],
      revenue: 0,
    },
    {
      name: 'products array (ingest): one purchase per entry, each with its own id, price and quantity',
      input: {
        ...base,
        revenue: 70,
        currency: 'gbp',
        products: [
          { productId: 'shirt', price: 20, quantity: 2, revenueType: 'apparel' },
          { productId: 'hat', price: 30 },
        ],
      },
      purchases: [p({ product_id: 'shirt', currency: 'GBP', price: 20, quantity: 2 }), p({ product_id: 'hat', currency: 'GBP', price: 30, quantity: 1 })],
      adjustments: [],
      revenue: 70,
    },
    {
      name: 'products: revenueType as the id when productId is missing; revenue ÷ quantity; a split; bad entries counted',
      input: {
        ...base,
        products: [{ revenueType: 'credits', revenue: 300, quantity: 150 }, { productId: 'nothing' }, 'junk', { productId: 'refund', price: -5 }],
      },
      purchases: [p({ product_id: 'credits', currency: 'USD', price: 2, quantity: 100 }), p({ product_id: 'credits', currency: 'USD', price: 2, quantity: 50 })],
      adjustments: [
        pa('products[0].quantity', 'quantity_over_100', 'split'),
        pa('products[1]', 'product_without_price', 'dropped'),
        pa('products[2]', 'product_invalid', 'dropped'),
        pa('products[3]', 'negative_revenue_not_purchase', 'replaced'),
      ],
      revenue: 300,
    },
  ])('$name', ({ input, purchases, adjustments, revenue }) => {
    const r = mapped(createOutboundMapper(cfg())(msg(input)));
    expect(r.purchases).toEqual(purchases);
    expect(r.adjustments).toEqual(adjustments);
    expect(total(r.purchases)).toBeCloseTo(revenue, 9);
    expect(r.event?.name).toBe(input.event_type);
  });

  it('export shape: $products in event_properties is consumed; a plain products list stays on the event, not on each purchase', () => {
    const m = createOutboundMapper(cfg());
    const r = mapped(
      m(msg({ event_type: 'Order Completed', user_id: 'u', event_time: '2024-05-01T12:00:00Z', event_properties: { coupon: 'X', $products: [{ productId: 'a', price: 1 }, { productId: 'b', price: 2 }] } })),
    );
    expect(r.purchases.map((x) => [x.product_id, x.price])).toEqual([['a', 1], ['b', 2]]);
    expect(r.event?.properties).toEqual({ coupon: 'X' });
    expect(r.purchases[0]?.properties).toEqual({ coupon: 'X' });
    expect(r.adjustments).toEqual([]);
    const list = [{ productId: 'a', price: 1 }];
    const r2 = mapped(m(msg({ event_type: 'Order Completed', user_id: 'u', event_properties: { coupon: 'X', products: list } })));
    expect(r2.event?.properties).toEqual({ coupon: 'X', products: list });
    expect(r2.purchases[0]?.properties).toEqual({ coupon: 'X' });
  });

  describe('refunds inside a products list travel on the event', () => {
    const refund = { productId: 'hat', price: -30 };
    const shirt = { productId: 'shirt', price: 20, quantity: 2 };
    it.each([
      {
        name: 'only a refund: no purchase, the event carries the list and the revenue fields',
        o: {},
        input: { ...base, event_type: 'Order Refunded', currency: 'EUR', products: [refund] },
        purchases: [],
        properties: { currency: 'EUR', products: [refund] },
        kind: 'replaced' as const,
      },
      {
        name: 'a refund among purchases: the others are purchases, the event says what the order was',
        o: {},
        input: { ...base, event_type: 'Order Changed', revenue: 10, currency: 'EUR', products: [shirt, refund], event_properties: { coupon: 'X' } },
        purchases: [p({ product_id: 'shirt', currency: 'EUR', price: 20, quantity: 2, properties: { coupon: 'X' } })],
        properties: { coupon: 'X', revenue: 10, currency: 'EUR', products: [shirt, refund] },
        kind: 'replaced' as const,
      },
      {
        name: 'a refund by negative revenue (no price)',
        o: {},
        input: { ...base, event_type: 'Order Refunded', products: [{ productId: 'hat', revenue: -60, quantity: 2 }] },
        purchases: [],
        properties: { products: [{ productId: 'hat', revenue: -60, quantity: 2 }] },
        kind: 'replaced' as const,
      },
      {
        name: 'OUTBOUND_NEGATIVE_REVENUE_AS=drop: the event goes without the revenue fields',
        o: { negativeRevenueAs: 'drop' as const },
        input: { ...base, event_type: 'Order Refunded', currency: 'EUR', products: [refund] },
        purchases: [],
        properties: undefined,
        kind: 'dropped' as const,
      },
    ])('$name', ({ o, input, purchases, properties, kind }) => {
      const r = mapped(createOutboundMapper(cfg(o))(msg(input)));
      expect(r.purchases).toEqual(purchases);
      expect(r.event?.name).toBe(input.event_type);
      expect(r.event?.properties).toEqual(properties);
      expect(r.adjustments).toEqual([pa(`products[${input.products.length - 1}]`, 'negative_revenue_not_purchase', kind)]);
    });
  });

  describe('more purchase objects than one request holds (75 by default)', () => {
    it('quantity 7,600 becomes 76 purchases of 100: revenue kept', () => {
      const r = mapped(createOutboundMapper(cfg())(msg({ ...base, price: 1.5, quantity: 7_600, productId: 'seat' })));
      expect(r.purchases).toHaveLength(76);
      expect(r.purchases.every((x) => x.quantity === 100)).toBe(true);
      expect(total(r.purchases)).toBeCloseTo(11_400, 9);
    });

    it('80 products become 80 purchases', () => {
      const products = Array.from({ length: 80 }, (_, i) => ({ productId: `sku-${i}`, price: i + 1 }));
      const r = mapped(createOutboundMapper(cfg())(msg({ ...base, products })));
      expect(r.purchases.map((x) => x.product_id)).toEqual(products.map((x) => x.productId));
      expect(r.adjustments).toEqual([]);
    });

    it.each([
      { quantity: 1e12, key: 'quantity' },
      { quantity: 1e308, key: 'quantity' },
    ])('an absurd quantity ($quantity) stops at 1,000 objects, and the rest is counted', ({ quantity, key }) => {
      const r = mapped(createOutboundMapper(cfg())(msg({ ...base, price: 1, quantity })));
      expect(r.purchases).toHaveLength(1_000);
      expect(r.adjustments).toEqual([pa(key, 'quantity_over_100', 'split'), pa(key, 'purchases_over_1000', 'truncated')]);
    });

    it('the 1,000 objects are counted across the products of an event', () => {
      const products = [{ productId: 'a', price: 1, quantity: 99_950 }, { productId: 'b', price: 1, quantity: 100 }, { productId: 'c', price: 1 }];
      const r = mapped(createOutboundMapper(cfg())(msg({ ...base, products })));
      expect(r.purchases).toHaveLength(1_000);
      expect(r.purchases.filter((x) => x.product_id === 'b')).toHaveLength(0);
      expect(r.adjustments.filter((a) => a.rule === 'purchases_over_1000').map((a) => a.key)).toEqual(['products[1].quantity', 'products[2].quantity']);
    });
  });

  it.each([
    {
      name: 'negative revenue is a refund: no purchase, the event carries the revenue fields (default)',
      o: {},
      input: { ...base, event_type: 'Order Refunded', revenue: -20, productId: 'pro', currency: 'EUR' },
      properties: { revenue: -20, product_id: 'pro', currency: 'EUR' },
      adjustments: [pa('revenue', 'negative_revenue_not_purchase', 'replaced')],
    },
    {
      name: 'negative price with a quantity (export shape)',
      o: {},
      input: { event_type: 'Order Refunded', user_id: 'u', event_properties: { $price: -5, $quantity: 2, reason: 'damaged' } },
      properties: { reason: 'damaged', price: -5, quantity: 2 },
      adjustments: [pa('revenue', 'negative_revenue_not_purchase', 'replaced')],
    },
    {
      name: 'OUTBOUND_NEGATIVE_REVENUE_AS=drop: the event goes without the revenue fields',
      o: { negativeRevenueAs: 'drop' as const },
      input: { ...base, event_type: 'Order Refunded', revenue: -20 },
      properties: undefined,
      adjustments: [pa('revenue', 'negative_revenue_not_purchase', 'dropped')],
    },
  ])('$name', ({ o, input, properties, adjustments }) => {
    const r = mapped(createOutboundMapper(cfg(o))(msg(input)));
    expect(r.purchases).toEqual([]);
    expect(r.event?.name).toBe(input.event_type);
    expect(r.event?.properties).toEqual(properties);
    expect(r.adjustments).toEqual(adjustments);
  });
});

describe('per-request cap', () => {
  const base = { KAFKA_BROKERS: 'localhost:9092', BRAZE_REST_ENDPOINT: 'https://rest.iad-01.braze.com', BRAZE_API_KEY: 'k' };
  it.each([
    { env: {}, maxTotal: 75, maxPerArray: 75 },
    { env: { BRAZE_MAX_OBJECTS_PER_REQUEST: '50' }, maxTotal: 50, maxPerArray: 75 },
    { env: { BRAZE_MAX_OBJECTS_PER_REQUEST: '0' }, maxTotal: 0, maxPerArray: 75 },
  ])('$env -> total $maxTotal', ({ env, maxTotal, maxPerArray }) => {
    const c = loadConfig({ ...base, ...env });
    expect(c.braze?.maxTotal).toBe(maxTotal);
    expect(c.braze?.maxPerArray).toBe(maxPerArray);
  });

  it('outbound settings of this issue', () => {
    const c = loadConfig({ ...base, OUTBOUND_USER_PROPERTIES: 'plan*,country', OUTBOUND_ATTRIBUTE_STATE_USERS: '500', OUTBOUND_NEGATIVE_REVENUE_AS: 'drop', BRAZE_UPDATE_EXISTING_ONLY: 'true' });
    expect(c.outbound).toMatchObject({ userProperties: ['plan*', 'country'], attributeStateMaxUsers: 500, negativeRevenueAs: 'drop', updateExistingOnly: true });
    expect(loadConfig(base).outbound).toMatchObject({ userProperties: ['*'], attributeStateMaxUsers: 100_000, negativeRevenueAs: 'event' });
    expect(loadConfig(base).outbound.updateExistingOnly).toBeUndefined();
  });

  it('OUTBOUND_DEFAULT_CURRENCY is upper-cased and must be ISO 4217', () => {
    expect(loadConfig({ ...base, OUTBOUND_DEFAULT_CURRENCY: 'eur' }).outbound.defaultCurrency).toBe('EUR');
    expect(() => loadConfig({ ...base, OUTBOUND_DEFAULT_CURRENCY: 'euro' })).toThrow(/OUTBOUND_DEFAULT_CURRENCY/);
  });
});

describe('sizeEstimate stays close with the new objects', () => {
  it.each([
    ['an alias user\'s creating object', { event_type: 'e', device_id: 'dev-1', event_properties: { a: 1 } }],
    ['a split purchase', { event_type: 'buy', user_id: 'u', price: 2, quantity: 250, productId: 'p', event_properties: { coupon: 'x'.repeat(50) } }],
    ['per-product purchases', { event_type: 'buy', user_id: 'u', products: [{ productId: 'a', price: 1 }, { productId: 'b', price: 2, quantity: 3 }], event_properties: { k: 'v' } }],
    ['attributes left after the state filtered some', { event_type: 'e', user_id: 'u', user_properties: { plan: 'pro', country: 'DE' } }],
  ])('%s', (_name, input) => {
    const state = new AttributeState();
    const m = createOutboundMapper(cfg({ appId: 'app' }), { attributeState: state });
    if ('user_properties' in input) state.confirm(mapped(m(msg({ ...input, user_properties: { plan: 'free', country: 'DE' } }))).attributeWrite);
    const r = mapped(m(msg(input)));
    const actual = Buffer.byteLength(JSON.stringify([r.event, r.attributes, ...r.purchases].filter((o) => o !== undefined)));
    expect(r.sizeEstimate).toBeGreaterThan(actual * 0.8);
    expect(r.sizeEstimate).toBeLessThan(actual * 1.3);
  });
});
