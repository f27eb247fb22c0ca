import { describe, expect, it } from 'vitest';
import { type Adjustment, type MapResult, createOutboundMapper } from '../../src/amplitude-to-braze/map-to-braze.js';
import { defaultOutboundMapping, type IdentifierRule, type OutboundMappingConfig } from '../../src/amplitude-to-braze/mapping-config.js';
import { parseAmplitudeMessage, parseTimestamp } from '../../src/amplitude-to-braze/amplitude-event.js';
import { compileEventFilter, isBrazeOriginated } from '../../src/amplitude-to-braze/event-filter.js';
import { resolveIdentifier } from '../../src/amplitude-to-braze/identifiers.js';

// Cases are built from reference/amplitude-event-model.md (§1: export and ingest shapes) and
// reference/braze-users-track.md (§2–§7: identifiers, objects, limits).

const msg = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));

const mapperWith = (overrides: Partial<OutboundMappingConfig> = {}) =>
  createOutboundMapper({ ...defaultOutboundMapping, ...overrides });

type Mapped = Extract<MapResult, { kind: 'mapped' }>;

function mapped(r: MapResult): Mapped {
  if (r.kind !== 'mapped') throw new Error(`expected mapped, got ${JSON.stringify(r)}`);
  return r;
}

/** A typical export-shape event (Export API / streaming default payload). */
const exportEvent = {
  event_type: 'report_exported',
  user_id: 'u-10482',
  device_id: 'dev-7f3a91c2',
  amplitude_id: 123456789,
  uuid: '2c4c4f4e-1111-4222-8333-444455556666',
  $insert_id: 'ins-1',
  app: 187520,
  event_time: '2025-03-14T09:26:54.000Z',
  client_event_time: '2025-03-14T09:26:53.000Z',
  client_upload_time: '2025-03-14T09:26:55.000Z',
  server_received_time: '2025-03-14T09:26:56.000Z',
  server_upload_time: '2025-03-14T09:26:57.000Z',
  event_properties: { format: 'csv', rows: 1200, source: 'amplitude' },
  user_properties: { plan_tier: 'trial' },
  library: 'amplitude-ts/2.11.0',
  platform: 'Web',
};

const T_2025 = Date.UTC(2025, 2, 14, 9, 26, 53);

describe('event shapes', () => {
  it.each([
    {
      name: 'export shape: event_time (Amplitude-corrected) wins over client_event_time; $insert_id',
      input: exportEvent,
      timeMs: T_2025 + 1_000,
      iso: '2025-03-14T09:26:54.000Z',
      insertId: 'ins-1',
    },
    {
      name: 'streaming form (zone-less, read as UTC)',
      input: { event_type: 'e', user_id: 'u', client_event_time: '2022-02-28 20:07:01.795', $insert_id: 'x' },
      timeMs: Date.UTC(2022, 1, 28, 20, 7, 1, 795),
      iso: '2022-02-28T20:07:01.795Z',
      insertId: 'x',
    },
    {
      name: 'ingest shape: time in epoch ms and insert_id',
      input: { event_type: 'e', user_id: 'u', time: 1714564800123, insert_id: 'ing-1' },
      timeMs: 1714564800123,
      iso: '2024-05-01T12:00:00.123Z',
      insertId: 'ing-1',
    },
    {
      name: 'client_event_time wins over time',
      input: { event_type: 'e', user_id: 'u', time: 1714564800000, client_event_time: '2020-01-01T00:00:00Z' },
      timeMs: Date.UTC(2020, 0, 1),
      iso: '2020-01-01T00:00:00.000Z',
      insertId: undefined,
    },
    {
      name: 'event_time wins over client_event_time and time',
      input: { event_type: 'e', user_id: 'u', time: 1714564800000, client_event_time: '2020-01-01T00:00:00Z', event_time: '2021-06-01T00:00:00Z' },
      timeMs: Date.UTC(2021, 5, 1),
      iso: '2021-06-01T00:00:00.000Z',
      insertId: undefined,
    },
    {
      name: 'time when neither event_time nor client_event_time is there',
      input: { event_type: 'e', user_id: 'u', time: 1714564800000, server_received_time: '2030-01-01T00:00:00Z' },
      timeMs: 1714564800000,
      iso: '2024-05-01T12:00:00.000Z',
      insertId: undefined,
    },
    {
      name: 'event_time when client_event_time is absent',
      input: { event_type: 'e', user_id: 'u', event_time: '2024-05-01 12:00:00.000', server_received_time: '2030-01-01 00:00:00' },
      timeMs: Date.UTC(2024, 4, 1, 12),
      iso: '2024-05-01T12:00:00.000Z',
      insertId: undefined,
    },
    {
      name: 'server_received_time as a last resort',
      input: { event_type: 'e', user_id: 'u', server_received_time: '2024-05-01T12:00:00Z' },
      timeMs: Date.UTC(2024, 4, 1, 12),
      iso: '2024-05-01T12:00:00.000Z',
      insertId: undefined,
    },
    {
      name: 'offset and microseconds',
      input: { event_type: 'e', user_id: 'u', client_event_time: '2024-05-01T14:00:00.123456+02:00' },
      timeMs: Date.UTC(2024, 4, 1, 12, 0, 0, 123),
      iso: '2024-05-01T12:00:00.123Z',
      insertId: undefined,
    },
    {
      name: 'unparseable time falls through to the next clock',
      input: { event_type: 'e', user_id: 'u', client_event_time: 'yesterday-ish', event_time: '2024-05-01T12:00:00Z' },
      timeMs: Date.UTC(2024, 4, 1, 12),
      iso: '2024-05-01T12:00:00.000Z',
      insertId: undefined,
    },
  ])('$name', ({ input, timeMs, iso, insertId }) => {
    const r = mapped(mapperWith()(msg(input), 1));
    expect(r.timeMs).toBe(timeMs);
    expect(r.event?.time).toBe(iso);
    expect(r.event?.name).toBe(input.event_type);
    expect(r.insertId).toBe(insertId);
  });

  it('export shape maps to the worked example of the reference', () => {
    const r = mapped(mapperWith({ appId: '3c1e2d4a-0000-4000-8000-1234567890ab' })(msg(exportEvent)));
    expect(r.key).toBe('ext:u-10482');
    expect(r.event).toEqual({
      external_id: 'u-10482',
      app_id: '3c1e2d4a-0000-4000-8000-1234567890ab',
      name: 'report_exported',
      time: '2025-03-14T09:26:54.000Z',
      properties: { format: 'csv', rows: 1200, source: 'amplitude' },
    });
    expect(r.attributes).toEqual({ external_id: 'u-10482', plan_tier: 'trial' });
    expect(r.purchases).toEqual([]);
    expect(r.adjustments).toEqual([]);
  });

  it('no time at all: the Kafka timestamp, else now', () => {
    const m = mapperWith();
    expect(mapped(m(msg({ event_type: 'e', user_id: 'u' }), 1714564800000)).timeMs).toBe(1714564800000);
    const before = Date.now();
    const r = mapped(m(msg({ event_type: 'e', user_id: 'u' })));
    expect(r.timeMs).toBeGreaterThanOrEqual(before);
    expect(r.timeMs).toBeLessThanOrEqual(Date.now());
  });

  it.each([
    ['2024-05-01T12:00:00Z', Date.UTC(2024, 4, 1, 12)],
    ['2024-05-01T12:00:00.5Z', Date.UTC(2024, 4, 1, 12, 0, 0, 500)],
    ['2024-05-01 12:00:00', Date.UTC(2024, 4, 1, 12)],
    ['2024-05-01', Date.UTC(2024, 4, 1)],
    ['2024-05-01T12:00:00-0130', Date.UTC(2024, 4, 1, 13, 30)],
    ['2024-05-01T12:00:00+05', Date.UTC(2024, 4, 1, 7)],
    ['1714564800000', 1714564800000],
    ['2024-13-01 12:00:00', undefined],
    ['not a time', undefined],
  ])('parseTimestamp(%j)', (s, expected) => {
    expect(parseTimestamp(s)).toBe(expected);
  });

  it('ids: numbers are stringified, empty strings count as absent', () => {
    const p = parseAmplitudeMessage(msg({ event_type: 'e', user_id: 42, device_id: '', insert_id: '' }));
    expect(p).toMatchObject({ ok: true, event: { userId: '42' } });
    if (!p.ok) throw new Error('unreachable');
    expect(p.event.deviceId).toBeUndefined();
    expect(p.event.insertId).toBeUndefined();
    const r = mapped(mapperWith()(msg({ event_type: 'e', user_id: '', device_id: 77 })));
    expect(r.identifier).toEqual({ user_alias: { alias_name: '77', alias_label: 'amplitude_device_id' } });
  });

  it.each([
    {
      name: 'ingest: revenue fields at top level',
      input: { event_type: 'buy', user_id: 'u', revenue: 30, price: 15, quantity: 2, productId: 'sku-1', revenueType: 'purchase', currency: 'EUR' },
    },
    {
      name: 'export: $-fields inside event_properties',
      input: {
        event_type: 'buy',
        user_id: 'u',
        event_properties: { $revenue: 30, $price: 15, $quantity: 2, $productId: 'sku-1', $revenueType: 'purchase', $currency: 'EUR' },
      },
    },
  ])('parse revenue, $name', ({ input }) => {
    const p = parseAmplitudeMessage(msg(input));
    expect(p).toMatchObject({
      ok: true,
      event: { revenue: 30, price: 15, quantity: 2, productId: 'sku-1', revenueType: 'purchase', currency: 'EUR' },
    });
  });
});

describe('identifiers', () => {
  const alias = (label: string): IdentifierRule['target'] => ({ kind: 'user_alias', aliasLabel: label });
  const three: IdentifierRule[] = [
    { source: { kind: 'user_property', name: 'braze_id' }, target: { kind: 'braze_id' } },
    { source: { kind: 'user_id' }, target: { kind: 'external_id' } },
    { source: { kind: 'device_id' }, target: alias('amplitude_device_id') },
  ];

  it.each([
    {
      name: 'user_id -> external_id (default primary)',
      rules: defaultOutboundMapping.identifiers,
      input: { user_id: 'u-1', device_id: 'dev-1' },
      identifier: { external_id: 'u-1' },
      key: 'ext:u-1',
      rule: 0,
    },
    {
      name: 'device_id -> user_alias with label (default secondary)',
      rules: defaultOutboundMapping.identifiers,
      input: { device_id: 'dev-1' },
      identifier: { user_alias: { alias_name: 'dev-1', alias_label: 'amplitude_device_id' } },
      key: 'alias:amplitude_device_id:dev-1',
      rule: 1,
    },
    {
      name: 'user property -> braze_id',
      rules: [{ source: { kind: 'user_property', name: 'braze_id' }, target: { kind: 'braze_id' } }] as IdentifierRule[],
      input: { user_properties: { braze_id: '5f1a' } },
      identifier: { braze_id: '5f1a' },
      key: 'braze:5f1a',
      rule: 0,
    },
    {
      name: 'user property -> email',
      rules: [{ source: { kind: 'user_property', name: 'email' }, target: { kind: 'email' } }] as IdentifierRule[],
      input: { user_properties: { email: 'ann@example.com' } },
      identifier: { email: 'ann@example.com' },
      key: 'email:ann@example.com',
      rule: 0,
    },
    {
      name: 'user property inside $set (ingest shape)',
      rules: [{ source: { kind: 'user_property', name: 'email' }, target: { kind: 'email' } }] as IdentifierRule[],
      input: { user_properties: { $set: { email: 'bob@example.com' } } },
      identifier: { email: 'bob@example.com' },
      key: 'email:bob@example.com',
      rule: 0,
    },
    {
      name: 'numeric user property is stringified',
      rules: [{ source: { kind: 'user_property', name: 'crm_id' }, target: alias('crm') }] as IdentifierRule[],
      input: { user_properties: { crm_id: 9001 } },
      identifier: { user_alias: { alias_name: '9001', alias_label: 'crm' } },
      key: 'alias:crm:9001',
      rule: 0,
    },
    {
      name: 'priority: primary present',
      rules: three,
      input: { user_id: 'u-1', device_id: 'dev-1', user_properties: { braze_id: 'b-1' } },
      identifier: { braze_id: 'b-1' },
      key: 'braze:b-1',
      rule: 0,
    },
    {
      name: 'priority: primary missing -> secondary',
      rules: three,
      input: { user_id: 'u-1', device_id: 'dev-1', user_properties: { braze_id: '' } },
      identifier: { external_id: 'u-1' },
      key: 'ext:u-1',
      rule: 1,
    },
    {
      name: 'priority: primary and secondary missing -> tertiary',
      rules: three,
      input: { device_id: 'dev-1', user_properties: { braze_id: { not: 'a string' } } },
      identifier: { user_alias: { alias_name: 'dev-1', alias_label: 'amplitude_device_id' } },
      key: 'alias:amplitude_device_id:dev-1',
      rule: 2,
    },
  ])('$name', ({ rules, input, identifier, key, rule }) => {
    const r = mapped(mapperWith({ identifiers: rules })(msg({ event_type: 'e', ...input })));
    expect(r.identifier).toEqual(identifier);
    expect(r.key).toBe(key);
    expect(r.event).toMatchObject(identifier);
    const p = parseAmplitudeMessage(msg({ event_type: 'e', ...input }));
    if (!p.ok) throw new Error('unreachable');
    expect(resolveIdentifier(p.event, rules)).toEqual({ identifier, key, rule });
  });

  it.each([
    { name: 'default rules, no user_id or device_id', rules: defaultOutboundMapping.identifiers, input: { user_properties: { a: 1 } } },
    { name: 'three rules, none has a value', rules: three, input: { user_id: '', device_id: '', user_properties: { braze_id: null } } },
    { name: 'no rules at all', rules: [] as IdentifierRule[], input: { user_id: 'u' } },
  ])('none -> invalid no_identifier: $name', ({ rules, input }) => {
    const r = mapperWith({ identifiers: rules })(msg({ event_type: 'e', ...input }));
    expect(r).toMatchObject({ kind: 'invalid', reason: 'no_identifier' });
  });

  it('alias-identified objects all carry the alias', () => {
    const r = mapped(
      mapperWith()(msg({ event_type: 'buy', device_id: 'dev-1', user_properties: { a: 'b' }, revenue: 5 })),
    );
    const id = { user_alias: { alias_name: 'dev-1', alias_label: 'amplitude_device_id' } };
    expect(r.event).toMatchObject(id);
    expect(r.attributes).toMatchObject(id);
    expect(r.purchases[0]).toMatchObject(id);
  });
});

describe('user properties -> attributes', () => {
  const adj = (kind: Adjustment['kind'], key: string, rule: string): Adjustment => ({ kind, target: 'attribute', key, rule });

  it.each([
    {
      name: 'plain keys set values; reserved profile fields pass through',
      up: { first_name: 'Ann', email: 'ann@example.com', country: 'DE', plan: 'pro', seats: 3, beta: true, tags: ['a', 'b'] },
      attrs: { first_name: 'Ann', email: 'ann@example.com', country: 'DE', plan: 'pro', seats: 3, beta: true, tags: ['a', 'b'] },
      adjustments: [],
    },
    { name: '$set', up: { $set: { plan: 'pro', seats: 2 } }, attrs: { plan: 'pro', seats: 2 }, adjustments: [] },
    {
      name: '$setOnce sets (the attribute state sends it once per user)',
      up: { $setOnce: { initial_referrer: 'google' }, $set: { plan: 'pro' } },
      attrs: { initial_referrer: 'google', plan: 'pro' },
      adjustments: [],
    },
    { name: '$unset -> null', up: { $unset: { plan: '-', trial_end: '-' } }, attrs: { plan: null, trial_end: null }, adjustments: [] },
    { name: '$unset as a list of names', up: { $unset: ['plan'] }, attrs: { plan: null }, adjustments: [] },
    { name: '$add -> inc', up: { $add: { seats: 1, credits: -5 } }, attrs: { seats: { inc: 1 }, credits: { inc: -5 } }, adjustments: [] },
    {
      name: '$add with a non-integer is dropped',
      up: { $add: { score: 1.5, n: 'x' } },
      attrs: undefined,
      adjustments: [adj('dropped', 'score', 'add_not_integer'), adj('dropped', 'n', 'add_not_integer')],
    },
    {
      name: '$append value or list -> add',
      up: { $append: { tags: 'vip', colors: ['red', 'blue'], nums: [1, true] } },
      attrs: { tags: { add: ['vip'] }, colors: { add: ['red', 'blue'] }, nums: { add: ['1', 'true'] } },
      adjustments: [],
    },
    { name: '$prepend is dropped and reported, not sent as an append', up: { $prepend: { tags: ['first'] } }, attrs: undefined, adjustments: [adj('dropped', 'tags', 'prepend_unsupported')] },
    { name: '$preInsert is dropped and reported', up: { $preInsert: { tags: 'x' }, $set: { a: 1 } }, attrs: { a: 1 }, adjustments: [adj('dropped', 'tags', 'prepend_unsupported')] },
    { name: '$postInsert -> add', up: { $postInsert: { tags: 'x' } }, attrs: { tags: { add: ['x'] } }, adjustments: [] },
    { name: '$remove -> remove', up: { $remove: { tags: ['old', 'stale'] } }, attrs: { tags: { remove: ['old', 'stale'] } }, adjustments: [] },
    {
      name: '$append drops non-string elements and reports',
      up: { $append: { tags: ['ok', null, { o: 1 }] } },
      attrs: { tags: { add: ['ok'] } },
      adjustments: [adj('dropped', 'tags', 'array_element_not_string')],
    },
    {
      name: '$clearAll is dropped and reported',
      up: { $clearAll: '-', plan: 'pro' },
      attrs: { plan: 'pro' },
      adjustments: [adj('dropped', '$clearAll', 'clear_all_unsupported')],
    },
    {
      name: 'unknown and malformed operations',
      up: { $bogus: { a: 1 }, $set: 'not an object' },
      attrs: undefined,
      adjustments: [adj('dropped', '$bogus', 'unsupported_operation'), adj('dropped', '$set', 'malformed_operation')],
    },
    {
      name: 'two operations on one key: the later wins, the earlier is reported',
      up: { $set: { seats: 3 }, $add: { seats: 1 } },
      attrs: { seats: { inc: 1 } },
      adjustments: [adj('dropped', 'seats', 'conflicting_operation')],
    },
    {
      name: 'identifier fields and flags cannot be written',
      up: { external_id: 'other', braze_id: 'b', _update_existing_only: false, ok: 1 },
      attrs: { ok: 1 },
      adjustments: [
        adj('dropped', 'external_id', 'reserved_key'),
        adj('dropped', 'braze_id', 'reserved_key'),
        adj('dropped', '_update_existing_only', 'reserved_key'),
      ],
    },
    {
      name: 'attribute key over 255 chars is dropped',
      up: { ['k'.repeat(256)]: 'v', ok: 'v' },
      attrs: { ok: 'v' },
      adjustments: [adj('dropped', 'k'.repeat(256), 'key_over_255')],
    },
    {
      name: 'string value over 255 chars is truncated',
      up: { bio: 'b'.repeat(300) },
      attrs: { bio: 'b'.repeat(255) },
      adjustments: [adj('truncated', 'bio', 'string_over_255')],
    },
    {
      name: 'string array over 100 elements is truncated',
      up: { tags: Array.from({ length: 120 }, (_, i) => `t${i}`) },
      attrs: { tags: Array.from({ length: 100 }, (_, i) => `t${i}`) },
      adjustments: [adj('truncated', 'tags', 'array_over_100')],
    },
    {
      name: 'nested object over 50 KB is dropped',
      up: { profile: { blob: 'x'.repeat(60_000) }, ok: 1 },
      attrs: { ok: 1 },
      adjustments: [adj('dropped', 'profile', 'nested_over_50kb')],
    },
    {
      name: 'small nested object and array of objects pass through',
      up: { address: { city: 'Berlin', zip: '10115' }, pets: [{ id: 1, name: 'Rex' }] },
      attrs: { address: { city: 'Berlin', zip: '10115' }, pets: [{ id: 1, name: 'Rex' }] },
      adjustments: [],
    },
  ])('$name', ({ up, attrs, adjustments }) => {
    const r = mapped(mapperWith()(msg({ event_type: 'e', user_id: 'u', user_properties: up })));
    expect(r.attributes).toEqual(attrs === undefined ? undefined : { external_id: 'u', ...attrs });
    expect(r.adjustments).toEqual(adjustments);
  });

  it('the email profile field does not fight an email identifier', () => {
    const rules: IdentifierRule[] = [{ source: { kind: 'user_property', name: 'email' }, target: { kind: 'email' } }];
    const r = mapped(mapperWith({ identifiers: rules })(msg({ event_type: 'e', user_properties: { email: 'a@x.io', plan: 'pro' } })));
    expect(r.attributes).toEqual({ email: 'a@x.io', plan: 'pro' });
    const r2 = mapped(
      mapperWith({ identifiers: rules })(msg({ event_type: 'e', user_properties: { email: 'a@x.io', $set: { email: 'b@x.io' } } })),
    );
    expect(r2.attributes).toBeUndefined();
    expect(r2.adjustments).toEqual([adj('dropped', 'email', 'identifier_conflict')]);
  });

  it('sendUserProperties: false sends no attributes', () => {
    const r = mapped(mapperWith({ sendUserProperties: false })(msg(exportEvent)));
    expect(r.attributes).toBeUndefined();
    expect(r.event).toBeDefined();
  });

  it('$identify becomes attributes only; with nothing to send or report it is skipped', () => {
    const m = mapperWith();
    const r = mapped(m(msg({ event_type: '$identify', user_id: 'u', user_properties: { $set: { plan: 'pro' } } })));
    expect(r.event).toBeUndefined();
    expect(r.purchases).toEqual([]);
    expect(r.attributes).toEqual({ external_id: 'u', plan: 'pro' });
    expect(m(msg({ event_type: '$identify', user_id: 'u', user_properties: {} }))).toEqual({
      kind: 'skipped',
      reason: 'filtered',
      eventType: '$identify',
    });
    const stateless = mapperWith({ attributeStateMaxUsers: 0 });
    const onlySetOnce = mapped(stateless(msg({ event_type: '$identify', user_id: 'u', user_properties: { $setOnce: { a: 1 } } })));
    expect(onlySetOnce.event).toBeUndefined();
    expect(onlySetOnce.attributes).toBeUndefined();
    expect(onlySetOnce.adjustments).toEqual([{ kind: 'dropped', target: 'attribute', key: 'a', rule: 'set_once_unsupported' }]);
    expect(m(msg({ event_type: '$groupidentify', user_id: 'u', group_properties: { a: 1 } }))).toMatchObject({
      kind: 'skipped',
      reason: 'filtered',
    });
  });
});

describe('purchases', () => {
  it.each([
    {
      name: 'ingest: top-level revenue fields',
      input: { event_type: 'Order Completed', user_id: 'u', time: 1714564800000, price: 120, quantity: 2, revenue: 240, productId: 'pro_annual', currency: 'EUR' },
      purchase: { product_id: 'pro_annual', currency: 'EUR', price: 120, quantity: 2 },
      adjustments: [],
    },
    {
      name: 'export: $revenue in event_properties (consumed, not reported)',
      input: {
        event_type: 'Order Completed',
        user_id: 'u',
        client_event_time: '2024-05-01T12:00:00.000Z',
        event_properties: { $revenue: 30, $quantity: 3, $productId: 'credits', coupon: 'SPRING' },
      },
      purchase: { product_id: 'credits', currency: 'USD', price: 10, quantity: 3, properties: { coupon: 'SPRING' } },
      adjustments: [],
    },
    {
      name: 'revenue only: product_id falls back to revenueType, then "revenue"; quantity 1',
      input: { event_type: 'buy', user_id: 'u', time: 1714564800000, revenue: 9.99, revenueType: 'subscription' },
      purchase: { product_id: 'subscription', currency: 'USD', price: 9.99, quantity: 1 },
      adjustments: [],
    },
    {
      name: 'revenue only, no product or type',
      input: { event_type: 'buy', user_id: 'u', time: 1714564800000, revenue: 5 },
      purchase: { product_id: 'revenue', currency: 'USD', price: 5, quantity: 1 },
      adjustments: [],
    },
    {
      name: 'quantity 0 becomes 1',
      input: { event_type: 'buy', user_id: 'u', time: 1714564800000, price: 3, quantity: 0 },
      purchase: { product_id: 'revenue', currency: 'USD', price: 3, quantity: 1 },
      adjustments: [{ kind: 'truncated', target: 'purchase', key: 'quantity', rule: 'quantity_below_1' }],
    },
  ])('$name', ({ input, purchase, adjustments }) => {
    const r = mapped(mapperWith({ appId: 'app-1' })(msg(input)));
    expect(r.purchases).toHaveLength(1);
    expect(r.purchases[0]).toEqual({ external_id: 'u', app_id: 'app-1', time: r.event?.time, ...purchase });
    expect(r.adjustments).toEqual(adjustments);
    // the custom event is still sent, without the consumed revenue keys
    expect(r.event?.name).toBe(input.event_type);
    expect(r.event?.properties).toEqual('properties' in purchase ? purchase.properties : undefined);
  });

  it('purchase properties follow the event rules, and drops are reported for both', () => {
    const r = mapped(mapperWith()(msg({ event_type: 'buy', user_id: 'u', revenue: 1, event_properties: { $foo: 1, ok: 2 } })));
    expect(r.purchases[0]?.properties).toEqual({ ok: 2 });
    expect(r.adjustments).toEqual([
      { kind: 'dropped', target: 'event_property', key: '$foo', rule: 'key_starts_with_$' },
      { kind: 'dropped', target: 'purchase_property', key: '$foo', rule: 'key_starts_with_$' },
    ]);
  });

  it('revenueAs: event keeps revenue as plain event properties and sends no purchase', () => {
    const r = mapped(
      mapperWith({ revenueAs: 'event' })(
        msg({ event_type: 'buy', user_id: 'u', event_properties: { $revenue: 20, $productId: 'p', $quantity: 2, price: 'mine' } }),
      ),
    );
    expect(r.purchases).toEqual([]);
    expect(r.event?.properties).toEqual({ price: 'mine', revenue: 20, quantity: 2, product_id: 'p' });
    expect(r.adjustments).toEqual([]);
    const r2 = mapped(mapperWith({ revenueAs: 'event' })(msg({ event_type: 'buy', user_id: 'u', price: 4, event_properties: { price: 'mine' } })));
    expect(r2.event?.properties).toEqual({ price: 'mine' });
    expect(r2.adjustments).toEqual([{ kind: 'dropped', target: 'event_property', key: 'price', rule: 'revenue_field_name_taken' }]);
  });

  it('no revenue or price: no purchase, and stray $ fields are reported', () => {
    const r = mapped(mapperWith()(msg({ event_type: 'e', user_id: 'u', event_properties: { $quantity: 2 } })));
    expect(r.purchases).toEqual([]);
    expect(r.adjustments).toEqual([{ kind: 'dropped', target: 'event_property', key: '$quantity', rule: 'key_starts_with_$' }]);
  });
});

describe('event property limits', () => {
  const drop = (key: string, rule: string): Adjustment => ({ kind: 'dropped', target: 'event_property', key, rule });
  const long = 'k'.repeat(256);
  const nested60k = { items: Array.from({ length: 60 }, (_, i) => ({ id: i, blob: 'y'.repeat(1000) })) };

  it.each([
    { name: 'key starting with $', props: { $browser: 'x', ok: 1 }, out: { ok: 1 }, adjustments: [drop('$browser', 'key_starts_with_$')] },
    { name: 'reserved key time', props: { time: 'x', ok: 1 }, out: { ok: 1 }, adjustments: [drop('time', 'reserved_key')] },
    { name: 'reserved key event_name', props: { event_name: 'x', ok: 1 }, out: { ok: 1 }, adjustments: [drop('event_name', 'reserved_key')] },
    { name: '256-char key', props: { [long]: 1, ok: 1 }, out: { ok: 1 }, adjustments: [drop(long, 'key_over_255')] },
    { name: 'empty key', props: { '': 1, ok: 1 }, out: { ok: 1 }, adjustments: [drop('', 'empty_key')] },
    { name: 'null value', props: { gone: null, ok: 1 }, out: { ok: 1 }, adjustments: [drop('gone', 'null_value')] },
    {
      name: '300-char string is truncated to 255',
      props: { note: 'n'.repeat(300), ok: 1 },
      out: { note: 'n'.repeat(255), ok: 1 },
      adjustments: [{ kind: 'truncated', target: 'event_property', key: 'note', rule: 'string_over_255' }],
    },
    {
      name: 'truncation does not split a surrogate pair',
      props: { note: 'a'.repeat(254) + '😀' + 'b' },
      out: { note: 'a'.repeat(254) },
      adjustments: [{ kind: 'truncated', target: 'event_property', key: 'note', rule: 'string_over_255' }],
    },
    {
      name: '60 KB nested payload: the array/object properties are dropped',
      props: { cart: nested60k, tags: ['a'], ok: 1 },
      out: { ok: 1 },
      adjustments: [drop('cart', 'payload_over_50kb'), drop('tags', 'payload_over_50kb')],
    },
    {
      name: 'small nested payload and datetimes inside arrays pass',
      props: { cart: { items: [{ id: 1 }] }, dates: ['2024-05-01T12:00:00Z'], at: '2024-05-01T12:00:00Z' },
      out: { cart: { items: [{ id: 1 }] }, dates: ['2024-05-01T12:00:00Z'], at: '2024-05-01T12:00:00Z' },
      adjustments: [],
    },
    { name: 'only dropped keys: no properties at all', props: { $a: 1 }, out: undefined, adjustments: [drop('$a', 'key_starts_with_$')] },
    { name: 'empty object: no properties', props: {}, out: undefined, adjustments: [] },
  ])('$name', ({ props, out, adjustments }) => {
    const r = mapped(mapperWith()(msg({ event_type: 'e', user_id: 'u', event_properties: props })));
    expect(r.event?.properties).toEqual(out);
    expect(r.adjustments).toEqual(adjustments);
  });

  it('a payload near 50 KB made of multi-byte text is measured in bytes', () => {
    // 20,000 characters of 3-byte text: 20 KB by length, about 60 KB on the wire
    const r = mapped(mapperWith()(msg({ event_type: 'e', user_id: 'u', event_properties: { list: ['€'.repeat(20_000)] } })));
    expect(r.event?.properties).toBeUndefined();
    expect(r.adjustments).toEqual([drop('list', 'payload_over_50kb')]);
  });
});

describe('flags on every object', () => {
  it.each([true, false])('updateExistingOnly: %s', (flag) => {
    const r = mapped(
      mapperWith({ updateExistingOnly: flag, appId: 'app-9' })(
        msg({ event_type: 'buy', user_id: 'u', revenue: 3, user_properties: { a: 1 } }),
      ),
    );
    expect(r.event?._update_existing_only).toBe(flag);
    expect(r.attributes?._update_existing_only).toBe(flag);
    expect(r.purchases[0]?._update_existing_only).toBe(flag);
    expect(r.event?.app_id).toBe('app-9');
    expect(r.purchases[0]?.app_id).toBe('app-9');
    expect(r.attributes).not.toHaveProperty('app_id');
  });

  it('unset settings leave the fields out (Braze defaults apply)', () => {
    const r = mapped(mapperWith()(msg({ event_type: 'buy', user_id: 'u', revenue: 3, user_properties: { a: 1 } })));
    for (const o of [r.event, r.attributes, r.purchases[0]]) {
      expect(o).not.toHaveProperty('_update_existing_only');
      expect(o).not.toHaveProperty('app_id');
    }
  });
});

describe('filters', () => {
  it.each([
    { name: 'empty allow: everything', filter: { allow: [], deny: [] }, eventType: 'anything', sent: true },
    { name: 'exact allow, match', filter: { allow: ['Order Completed'], deny: [] }, eventType: 'Order Completed', sent: true },
    { name: 'exact allow, no match', filter: { allow: ['Order Completed'], deny: [] }, eventType: 'Order Started', sent: false },
    { name: 'allow is case-sensitive', filter: { allow: ['Order Completed'], deny: [] }, eventType: 'order completed', sent: false },
    { name: 'exact deny', filter: { allow: [], deny: ['debug'] }, eventType: 'debug', sent: false },
    { name: '* wildcard allow', filter: { allow: ['Order *'], deny: [] }, eventType: 'Order Refunded', sent: true },
    { name: '* matches empty', filter: { allow: ['checkout*'], deny: [] }, eventType: 'checkout', sent: true },
    { name: '? wildcard', filter: { allow: ['step_?'], deny: [] }, eventType: 'step_3', sent: true },
    { name: '? is exactly one char', filter: { allow: ['step_?'], deny: [] }, eventType: 'step_10', sent: false },
    { name: 'regex specials are literal', filter: { allow: ['a.b (x)+*'], deny: [] }, eventType: 'a.b (x)+ yes', sent: true },
    { name: 'regex specials do not match loosely', filter: { allow: ['a.b'], deny: [] }, eventType: 'axb', sent: false },
    { name: 'deny wins over allow (exact)', filter: { allow: ['Order *'], deny: ['Order Test'] }, eventType: 'Order Test', sent: false },
    { name: 'deny wins over allow (wildcard)', filter: { allow: ['*'], deny: ['internal_*'] }, eventType: 'internal_ping', sent: false },
    { name: 'deny does not touch others', filter: { allow: ['*'], deny: ['internal_*'] }, eventType: 'public_ping', sent: true },
  ])('$name', ({ filter, eventType, sent }) => {
    expect(compileEventFilter(filter)(eventType)).toBe(sent);
    const r = mapperWith({ filter })(msg({ event_type: eventType, user_id: 'u' }));
    if (sent) expect(r.kind).toBe('mapped');
    else expect(r).toEqual({ kind: 'skipped', reason: 'filtered', eventType });
  });

  it('filters before resolving the identifier', () => {
    const r = mapperWith({ filter: { allow: [], deny: ['x'] } })(msg({ event_type: 'x' }));
    expect(r).toEqual({ kind: 'skipped', reason: 'filtered', eventType: 'x' });
  });
});

describe('loop prevention', () => {
  const on = defaultOutboundMapping.loopPrevention;
  it.each([
    { name: 'library "Braze"', input: { event_type: 'Email Opened', library: 'Braze' }, config: on, looped: true },
    { name: 'library compared case-insensitively', input: { event_type: 'x', library: 'braze' }, config: on, looped: true },
    { name: '[Appboy] event type prefix', input: { event_type: '[Appboy] Email Open' }, config: on, looped: true },
    { name: 'other library', input: { event_type: 'x', library: 'amplitude-ts/2.0.0' }, config: on, looped: false },
    { name: 'library only containing Braze', input: { event_type: 'x', library: 'braze-bridge/1' }, config: on, looped: false },
    { name: 'disabled', input: { event_type: '[Appboy] Email Open', library: 'Braze' }, config: { ...on, enabled: false }, looped: false },
    {
      name: 'custom libraries and prefixes',
      input: { event_type: 'currents:push_send' },
      config: { enabled: true, libraries: ['gateway'], eventTypePrefixes: ['currents:'] },
      looped: true,
    },
  ])('$name', ({ input, config, looped }) => {
    const r = mapperWith({ loopPrevention: config })(msg({ user_id: 'u', ...input }));
    if (looped) expect(r).toEqual({ kind: 'skipped', reason: 'loop_prevention', eventType: input.event_type });
    else expect(r.kind).toBe('mapped');
  });

  it('isBrazeOriginated classifies regardless of enabled', () => {
    const off = { ...on, enabled: false };
    expect(isBrazeOriginated({ eventType: 'x', library: 'BRAZE' }, off)).toBe(true);
    expect(isBrazeOriginated({ eventType: '[Appboy] Push', library: undefined }, on)).toBe(true);
    expect(isBrazeOriginated({ eventType: 'x', library: 'other' }, on)).toBe(false);
  });

  it('loop prevention applies before the identifier check', () => {
    expect(mapperWith()(msg({ event_type: 'x', library: 'Braze' }))).toMatchObject({ kind: 'skipped', reason: 'loop_prevention' });
  });
});

describe('garbage inputs', () => {
  it.each([
    { name: 'null value (tombstone)', value: null, reason: 'not_json' },
    { name: 'empty buffer', value: Buffer.alloc(0), reason: 'not_json' },
    { name: 'not JSON', value: Buffer.from('{"event_type": "e", '), reason: 'not_json' },
    { name: 'plain text', value: Buffer.from('hello'), reason: 'not_json' },
    { name: 'array', value: msg([{ event_type: 'e', user_id: 'u' }]), reason: 'not_object' },
    { name: 'number', value: Buffer.from('42'), reason: 'not_object' },
    { name: 'JSON null', value: Buffer.from('null'), reason: 'not_object' },
    { name: 'string', value: msg('event'), reason: 'not_object' },
    { name: 'missing event_type', value: msg({ user_id: 'u' }), reason: 'no_event_type' },
    { name: 'empty event_type', value: msg({ event_type: '', user_id: 'u' }), reason: 'no_event_type' },
    { name: 'numeric event_type', value: msg({ event_type: 7, user_id: 'u' }), reason: 'no_event_type' },
  ])('$name -> invalid $reason', ({ value, reason }) => {
    const r = mapperWith()(value);
    expect(r).toMatchObject({ kind: 'invalid', reason });
    if (r.kind === 'invalid') expect(r.message.length).toBeGreaterThan(0);
  });

  it('a UTF-8 byte-order mark is tolerated', () => {
    const value = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), msg({ event_type: 'e', user_id: 'u' })]);
    expect(mapperWith()(value).kind).toBe('mapped');
  });

  it('non-object event_properties / user_properties are ignored', () => {
    const r = mapped(mapperWith()(msg({ event_type: 'e', user_id: 'u', event_properties: [1], user_properties: 'x' })));
    expect(r.event?.properties).toBeUndefined();
    expect(r.attributes).toBeUndefined();
  });

  it('a __proto__ key never reaches an object prototype', () => {
    const raw = Buffer.from('{"event_type":"e","user_id":"u","event_properties":{"__proto__":{"x":1},"$y":1,"ok":1},"user_properties":{"__proto__":{"polluted":true},"a":1}}');
    const r = mapped(mapperWith()(raw));
    expect(r.event?.properties).toEqual({ ok: 1 });
    expect(Object.getPrototypeOf(r.event?.properties)).toBe(Object.prototype);
    expect(r.attributes).toEqual({ external_id: 'u', a: 1 });
    expect(Object.getPrototypeOf(r.attributes)).toBe(Object.prototype);
  });
});

describe('sizeEstimate', () => {
  it.each([
    ['plain export event', exportEvent],
    ['revenue event with user-property operations', {
      event_type: 'Order Completed',
      user_id: 'u-1',
      time: 1714564800000,
      revenue: 25,
      productId: 'p',
      event_properties: { a: 'x'.repeat(100), b: 1.25, c: [1, 2, 3], d: { e: 'f' } },
      user_properties: { $set: { plan: 'pro' }, $add: { n: 10 }, $append: { tags: ['x', 'y'] } },
    }],
  ])('is close to the JSON size of the objects: %s', (_name, input) => {
    const r = mapped(mapperWith({ appId: 'app', updateExistingOnly: false })(msg(input)));
    const actual = Buffer.byteLength(JSON.stringify([r.event, r.attributes, ...r.purchases].filter((o) => o !== undefined)));
    expect(r.sizeEstimate).toBeGreaterThan(actual * 0.85);
    expect(r.sizeEstimate).toBeLessThan(actual * 1.2);
  });
});
