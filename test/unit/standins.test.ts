import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { Agent, request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { startAmplitudeStandIn, type AmplitudeStandIn, type AmplitudeStandInOptions } from '../../src/demo/standins/amplitude.js';
import { isBrazeTime, startBrazeStandIn, type BrazeStandIn, type BrazeStandInOptions } from '../../src/demo/standins/braze.js';

const KEY = 'braze-key-1';
const AMP_KEY = 'amp-project-key';
const T0 = Date.UTC(2025, 2, 14, 9, 0, 0); // a whole hour, so daily-quota buckets are easy to reason about

const open: Array<{ close(): Promise<void> }> = [];
afterEach(async () => {
  while (open.length > 0) await open.pop()?.close();
});

async function braze(opts: Partial<BrazeStandInOptions> = {}): Promise<BrazeStandIn> {
  const s = await startBrazeStandIn({ apiKey: KEY, ...opts });
  open.push(s);
  return s;
}

async function amplitude(opts: Partial<AmplitudeStandInOptions> = {}): Promise<AmplitudeStandIn> {
  const s = await startAmplitudeStandIn({ apiKey: AMP_KEY, ...opts });
  open.push(s);
  return s;
}

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Record<string, unknown>;
}

async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Reply> {
  const payload = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
  const res = await request(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: payload,
  });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

const postTrack = (s: BrazeStandIn, body: unknown, key = KEY, headers: Record<string, string> = {}): Promise<Reply> =>
  post(`${s.url}/users/track`, body, { authorization: `Bearer ${key}`, ...headers });

const postAmp = (s: AmplitudeStandIn, body: unknown, headers: Record<string, string> = {}): Promise<Reply> =>
  post(`${s.url}/2/httpapi`, body, headers);

const ev = (i: number, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  external_id: `u-${i}`,
  name: 'report_exported',
  time: '2025-03-14T09:26:53.000Z',
  ...extra,
});

const purchase = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  external_id: 'u-1',
  product_id: 'pro_annual',
  currency: 'EUR',
  price: 240,
  quantity: 1,
  time: '2025-03-14T09:27:10.000Z',
  ...extra,
});

const ampEvent = (i: number, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  device_id: `device-${i}`,
  event_type: 'Checkout Started',
  time: T0,
  insert_id: `ins-${i}`,
  ...extra,
});

describe('Braze /users/track stand-in', () => {
  it('answers 201 with counters for the arrays present and stores the objects', async () => {
    const s = await braze();
    const r = await postTrack(s, {
      attributes: [
        {
          user_alias: { alias_name: 'dev-7f3a91c2', alias_label: 'amplitude_device_id' },
          _update_existing_only: false,
          plan_tier: 'trial',
          seats: { inc: 1 },
        },
      ],
      events: [ev(1, { properties: { format: 'csv', rows: 1200, nested: { a: [1, 2] } } })],
      purchases: [purchase()],
    });
    expect(r.status).toBe(201);
    expect(r.body).toEqual({ message: 'success', attributes_processed: 1, events_processed: 1, purchases_processed: 1 });
    expect(s.received.events).toHaveLength(1);
    expect(s.received.attributes[0]?.plan_tier).toBe('trial');
    expect(s.received.purchases[0]?.product_id).toBe('pro_annual');
    expect(s.stats.requests).toBe(1);
    expect(s.stats.byStatus[201]).toBe(1);
  });

  it('omits the counters of absent arrays', async () => {
    const s = await braze();
    const r = await postTrack(s, { events: [ev(1), ev(2)] });
    expect(r.body).toEqual({ message: 'success', events_processed: 2 });
  });

  it('answers 401 for a wrong, quoted or missing key, and follows setApiKey', async () => {
    const s = await braze();
    const wrong = await postTrack(s, { events: [ev(1)] }, 'nope');
    expect(wrong.status).toBe(401);
    expect(wrong.body).toEqual({ message: 'Invalid API key: nope' });
    expect((await postTrack(s, { events: [ev(1)] }, `"${KEY}"`)).status).toBe(401);
    const missing = await post(`${s.url}/users/track`, { events: [ev(1)] });
    expect(missing.status).toBe(401);
    s.setApiKey('rotated');
    expect((await postTrack(s, { events: [ev(1)] })).status).toBe(401);
    expect((await postTrack(s, { events: [ev(1)] }, 'rotated')).status).toBe(201);
    expect(s.received.events).toHaveLength(1);
  });

  it('lists invalid objects as per-object error items and processes the rest', async () => {
    const s = await braze();
    const r = await postTrack(s, {
      events: [
        ev(0),
        { name: 'x', time: '2025-03-14T09:26:53Z' }, // no identifier
        ev(2, { time: 1741944413000 }), // epoch ms, not ISO
        ev(3, { properties: { $price: 1 } }),
        ev(4, { properties: { time: 'x' } }),
        ev(5, { properties: { long: 'x'.repeat(256) } }),
        ev(6, { braze_id: 'b-1' }), // two identifiers
        { user_alias: { alias_name: 'dev-1' }, name: 'x', time: '2025-03-14T09:26:53Z' }, // alias without label
        ev(8, { name: undefined }),
      ],
      purchases: [purchase({ quantity: 101 }), purchase({ currency: 'EURO' }), purchase({ price: '9.99' }), purchase()],
      attributes: [{ external_id: 'u-1', ['k'.repeat(256)]: 1 }, { external_id: 'u-1', email: 'a@b.c', plan: 'pro' }],
    });
    expect(r.status).toBe(201);
    expect(r.body.message).toBe('success');
    expect(r.body.events_processed).toBe(1);
    expect(r.body.purchases_processed).toBe(1);
    expect(r.body.attributes_processed).toBe(1);
    const errors = r.body.errors as Array<{ type: string; input_array: string; index: number }>;
    const at = (arr: string, index: number): string | undefined =>
      errors.find((e) => e.input_array === arr && e.index === index)?.type;
    expect(at('events', 1)).toBe("'external_id', 'braze_id', 'user_alias', 'email' or 'phone' is required");
    expect(at('events', 2)).toBe("'time' is not valid");
    expect(at('events', 3)).toMatch(/Property name '\$price'/);
    expect(at('events', 4)).toMatch(/reserved/);
    expect(at('events', 5)).toMatch(/longer than 255/);
    expect(at('events', 6)).toMatch(/Only one of/);
    expect(at('events', 7)).toBe("'user_alias' is not valid");
    expect(at('events', 8)).toBe("'name' is required");
    expect(at('purchases', 0)).toBe("'quantity' is not valid");
    expect(at('purchases', 1)).toBe("'currency' is not valid");
    expect(at('purchases', 2)).toBe("'price' is not valid");
    expect(at('attributes', 0)).toMatch(/Attribute name/);
    expect(errors).toHaveLength(12);
    expect(s.received.events).toEqual([ev(0)]);
    expect(s.received.attributes).toHaveLength(1);
    expect(s.stats.rejectedObjects).toBe(12);
  });

  it('answers 400 "Valid data must be provided" when nothing is valid', async () => {
    const s = await braze();
    const r = await postTrack(s, { events: [{ name: 'x', time: '2025-03-14T09:26:53Z' }], purchases: [purchase({ quantity: 0 })] });
    expect(r.status).toBe(400);
    expect(r.body).toEqual({
      message: "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields.",
      errors: [
        { type: "'external_id', 'braze_id', 'user_alias', 'email' or 'phone' is required", input_array: 'events', index: 0 },
        { type: "'quantity' is not valid", input_array: 'purchases', index: 0 },
      ],
    });
    const empty = await postTrack(s, {});
    expect(empty.status).toBe(400);
    expect(empty.body.message).toMatch(/^Valid data must be provided/);
    expect(s.received.events).toHaveLength(0);
  });

  it('answers 400 to invalid JSON, a wrong content type and a non-array field', async () => {
    const s = await braze();
    expect((await postTrack(s, '{"events": [')).status).toBe(400);
    expect((await postTrack(s, JSON.stringify({ events: [ev(1)] }), KEY, { 'content-type': 'text/plain' })).status).toBe(400);
    expect((await postTrack(s, { events: { a: 1 } })).status).toBe(400);
  });

  it('answers 400 "Max Input Length Exceeded" per array and for the total cap', async () => {
    const s = await braze();
    const events = Array.from({ length: 76 }, (_, i) => ev(i));
    const r = await postTrack(s, { events });
    expect(r.status).toBe(400);
    expect(r.body.message).toBe('Max Input Length Exceeded');
    expect(s.stats.maxEventsInRequest).toBe(76);
    // 75 objects in all by default (reference §7): 75 events and an attributes object are one too many
    const total = await postTrack(s, { events: events.slice(0, 75), attributes: [{ external_id: 'u' }] });
    expect(total.status).toBe(400);
    expect(total.body.message).toBe('Max Input Length Exceeded');
    expect((await postTrack(s, { events: events.slice(0, 74), attributes: [{ external_id: 'u' }] })).status).toBe(201);
    expect(s.received.events).toHaveLength(74);
    // a legacy contract: 75 per array, no total cap
    const legacy = await braze({ maxTotal: 0 });
    expect((await postTrack(legacy, { events: events.slice(0, 75), attributes: [{ external_id: 'u' }] })).status).toBe(201);

    const capped = await braze({ maxTotal: 50 });
    const over = await postTrack(capped, { events: events.slice(0, 30), purchases: Array.from({ length: 21 }, () => purchase()) });
    expect(over.status).toBe(400);
    expect(over.body.message).toBe('Max Input Length Exceeded');
    expect(capped.stats.maxObjectsInRequest).toBe(51);
    expect((await postTrack(capped, { events: events.slice(0, 50) })).status).toBe(201);
  });

  it('answers 413 over the body limit, both from Content-Length and from a chunked body', async () => {
    const s = await braze({ maxBodyBytes: 1000 });
    const big = { events: Array.from({ length: 20 }, (_, i) => ev(i)) };
    const r = await postTrack(s, big);
    expect(r.status).toBe(413);
    const chunked = await request(`${s.url}/users/track`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
      body: Readable.from([Buffer.from(JSON.stringify(big))]),
    });
    await chunked.body.text();
    expect(chunked.statusCode).toBe(413);
    // The connection stays usable after the refusal.
    expect((await postTrack(s, { events: [ev(1)] })).status).toBe(201);
  });

  it('sends X-RateLimit-* on every response and answers 429 over the window', async () => {
    const clock = new ManualClock(T0 + 500);
    const s = await braze({ clock, rateLimit: { requests: 3, windowMs: 3000 } });
    const resetSec = String(Math.ceil((Math.floor((T0 + 500) / 3000) * 3000 + 3000) / 1000));
    for (let i = 0; i < 3; i++) {
      const r = await postTrack(s, { events: [ev(i)] });
      expect(r.status).toBe(201);
      expect(r.headers['x-ratelimit-limit']).toBe('3');
      expect(r.headers['x-ratelimit-remaining']).toBe(String(2 - i));
      expect(r.headers['x-ratelimit-reset']).toBe(resetSec);
    }
    const limited = await postTrack(s, { events: [ev(9)] });
    expect(limited.status).toBe(429);
    expect(limited.headers['x-ratelimit-remaining']).toBe('0');
    expect(limited.headers['x-ratelimit-reset']).toBe(resetSec);
    expect(limited.headers['retry-after']).toBeUndefined();
    expect(s.stats.rateLimited).toBe(1);
    expect(s.received.events).toHaveLength(3);
    // A 401 carries the headers too, and does not use up the workspace's window.
    const unauth = await postTrack(s, { events: [ev(1)] }, 'nope');
    expect(unauth.headers['x-ratelimit-limit']).toBe('3');

    clock.set(Number(resetSec) * 1000);
    const next = await postTrack(s, { events: [ev(10)] });
    expect(next.status).toBe(201);
    expect(next.headers['x-ratelimit-remaining']).toBe('2');
  });

  it('omits the rate-limit headers when the limit is off', async () => {
    const s = await braze({ rateLimit: false });
    const r = await postTrack(s, { events: [ev(1)] });
    expect(r.headers['x-ratelimit-limit']).toBeUndefined();
  });

  it('serves injected faults in order, then goes back to normal', async () => {
    const s = await braze();
    s.injectFaults({ status: 503, count: 2 });
    s.injectFaults({ status: 429, count: 1, headers: { 'Retry-After': '7', 'X-RateLimit-Reset': '1234' }, body: { message: 'slow down' } });
    const a = await postTrack(s, { events: [ev(1)] });
    const b = await postTrack(s, { events: [ev(1)] });
    const c = await postTrack(s, { events: [ev(1)] });
    const d = await postTrack(s, { events: [ev(1)] });
    expect([a.status, b.status, c.status, d.status]).toEqual([503, 503, 429, 201]);
    expect(a.body).toEqual({ message: 'Service Unavailable' });
    expect(c.headers['retry-after']).toBe('7');
    expect(c.headers['x-ratelimit-reset']).toBe('1234');
    expect(c.body).toEqual({ message: 'slow down' });
    expect(s.received.events).toHaveLength(1);
    expect(s.stats.faultsServed).toBe(3);
  });

  it('can store a request and still answer it with a fault (a lost answer)', async () => {
    const s = await braze();
    s.injectFaults({ status: 500, count: 1, afterProcessing: true });
    expect((await postTrack(s, { events: [ev(1)] })).status).toBe(500);
    expect(s.received.events).toHaveLength(1);
  });

  it('can reset the connection or answer late', async () => {
    const s = await braze();
    s.injectFaults({ status: 0, count: 1 });
    await expect(postTrack(s, { events: [ev(1)] })).rejects.toThrow();
    s.injectFaults({ status: 201, count: 1, delayMs: 150, body: { message: 'success' } });
    const t = Date.now();
    expect((await postTrack(s, { events: [ev(1)] })).status).toBe(201);
    expect(Date.now() - t).toBeGreaterThanOrEqual(140);
    expect(s.received.events).toHaveLength(0);
  });

  it('refuses objects matched by rejectWhen', async () => {
    const s = await braze();
    s.rejectWhen((obj, array) => (array === 'events' && obj.external_id === 'u-1' ? 'provided external_id is blacklisted and disallowed' : undefined));
    const r = await postTrack(s, { events: [ev(0), ev(1), ev(2)] });
    expect(r.status).toBe(201);
    expect(r.body.errors).toEqual([{ type: 'provided external_id is blacklisted and disallowed', input_array: 'events', index: 1 }]);
    expect(s.received.events.map((e) => e.external_id)).toEqual(['u-0', 'u-2']);
    s.rejectWhen(undefined);
    expect((await postTrack(s, { events: [ev(1)] })).body.errors).toBeUndefined();
  });

  it('skips per-object checks when validate is false', async () => {
    const s = await braze({ validate: false });
    const r = await postTrack(s, { events: [{ name: 1 }] });
    expect(r.status).toBe(201);
  });

  it('waits for events and times out', async () => {
    const s = await braze();
    const waiting = s.waitForEvents(3, 5000);
    await postTrack(s, { events: [ev(1), ev(2)] });
    await postTrack(s, { events: [ev(3)] });
    await expect(waiting).resolves.toBeUndefined();
    await expect(s.waitForEvents(10, 50)).rejects.toThrow(/3 of 10/);
  });

  it('reset clears data, stats, faults and the key', async () => {
    const s = await braze();
    await postTrack(s, { events: [ev(1)] });
    const events = s.received.events;
    s.injectFaults({ status: 500, count: 5 });
    s.setApiKey('other');
    s.reset();
    expect(events).toHaveLength(0);
    expect(s.stats.requests).toBe(0);
    expect(s.stats.byStatus).toEqual({});
    expect((await postTrack(s, { events: [ev(1)] })).status).toBe(201);
  });

  it('answers 404 off the route', async () => {
    const s = await braze();
    const r = await post(`${s.url}/users/track/sync`, { events: [] }, { authorization: `Bearer ${KEY}` });
    expect(r.status).toBe(404);
  });

  it('accepts the documented time formats', () => {
    expect(isBrazeTime('2024-05-01T12:00:00Z')).toBe(true);
    expect(isBrazeTime('2024-05-01T12:00:00+01:00')).toBe(true);
    expect(isBrazeTime('2020-01-24T11:59:02.403+05:30')).toBe(true);
    expect(isBrazeTime('2024-05-01T12:00:00:123+0000')).toBe(true);
    expect(isBrazeTime(new Date(T0).toISOString())).toBe(true);
    expect(isBrazeTime('2024-13-01T12:00:00Z')).toBe(false);
    expect(isBrazeTime('yesterday')).toBe(false);
    expect(isBrazeTime('1741944413000')).toBe(false);
  });
});

describe('Braze stand-in profile model (update-only semantics, §2)', () => {
  const alias = (name: string) => ({ user_alias: { alias_name: name, alias_label: 'amplitude_device_id' } });
  const aliasEvent = (name: string, extra: Record<string, unknown> = {}) => ({ ...alias(name), name: 'e', time: '2025-03-14T09:26:53.000Z', ...extra });

  it.each([
    { name: 'alias, no flag (default update-only): dropped', obj: aliasEvent('d1'), array: 'events', processed: false },
    { name: 'alias, _update_existing_only false on an event: created', obj: aliasEvent('d1', { _update_existing_only: false }), array: 'events', processed: true },
    { name: 'external_id, no flag (default create): created', obj: ev(1), array: 'events', processed: true },
    { name: 'external_id, _update_existing_only true: dropped', obj: ev(1, { _update_existing_only: true }), array: 'events', processed: false },
    { name: 'braze_id never seen: dropped', obj: { braze_id: 'b-x', name: 'e', time: '2025-03-14T09:26:53.000Z' }, array: 'events', processed: false },
    { name: 'email (default create): created', obj: { email: 'a@x.io', name: 'e', time: '2025-03-14T09:26:53.000Z' }, array: 'events', processed: true },
    { name: 'alias attributes with false: created', obj: { ...alias('d1'), _update_existing_only: false, plan: 'pro' }, array: 'attributes', processed: true },
    { name: 'alias attributes without the flag: dropped', obj: { ...alias('d1'), plan: 'pro' }, array: 'attributes', processed: false },
    { name: 'alias purchase: dropped', obj: { ...alias('d1'), product_id: 'p', currency: 'USD', price: 1, time: '2025-03-14T09:26:53.000Z' }, array: 'purchases', processed: false },
  ])('$name', async ({ obj, array, processed }) => {
    const s = await braze();
    const r = await postTrack(s, { [array]: [obj] });
    // the answer does not tell: 201 and counted as processed either way
    expect(r.status).toBe(201);
    expect(r.body[`${array}_processed`]).toBe(1);
    expect(s.received[array as 'events']).toHaveLength(1);
    expect(s.stats.silentlyDropped).toBe(processed ? 0 : 1);
    expect(s.dropped[array as 'events']).toHaveLength(processed ? 0 : 1);
    expect(s.profileCount()).toBe(processed ? 1 : 0);
  });

  it('attributes are processed before events: a creating object listed after the events still keeps them', async () => {
    const s = await braze();
    await postTrack(s, { events: [aliasEvent('d1'), aliasEvent('d2')], attributes: [{ ...alias('d1'), _update_existing_only: false }] });
    expect(s.profile(alias('d1'))?.events).toHaveLength(1);
    expect(s.profile(alias('d2'))).toBeUndefined();
    expect(s.stats.silentlyDropped).toBe(1);
    // once created, objects without the flag reach the profile
    await postTrack(s, { events: [aliasEvent('d1')], attributes: [{ ...alias('d1'), plan: 'pro' }] });
    expect(s.profile(alias('d1'))).toMatchObject({ attributes: { plan: 'pro' }, aliases: [alias('d1').user_alias] });
    expect(s.profile(alias('d1'))?.events).toHaveLength(2);
    expect(s.stats.silentlyDropped).toBe(1);
  });

  it('applies attribute writes as Braze does: set, null removes, inc, add and remove, nested replace or merge', async () => {
    const s = await braze();
    s.seedProfile({ external_id: 'u-1' }, { tags: ['a'], seats: 1, prefs: { a: 1 } });
    await postTrack(s, { attributes: [{ external_id: 'u-1', plan: 'pro', seats: { inc: 2 }, tags: { add: ['b', 'a'] }, prefs: { b: 2 }, gone: 'x' }] });
    await postTrack(s, { attributes: [{ external_id: 'u-1', gone: null, tags: { remove: ['b'] }, prefs: { c: 3 }, _merge_objects: true, email: 'u1@x.io' }] });
    expect(s.profile({ external_id: 'u-1' })?.attributes).toEqual({ plan: 'pro', seats: 3, tags: ['a'], prefs: { b: 2, c: 3 }, email: 'u1@x.io' });
    expect(s.profile({ braze_id: s.profile({ external_id: 'u-1' })!.braze_id })?.external_id).toBe('u-1');
  });

  it('a seeded (known) alias needs no creating object', async () => {
    const s = await braze();
    s.seedProfile(alias('known'));
    await postTrack(s, { events: [aliasEvent('known')] });
    expect(s.stats.silentlyDropped).toBe(0);
    expect(s.profile(alias('known'))?.events).toHaveLength(1);
  });

  it('profiles: false turns the model off', async () => {
    const s = await braze({ profiles: false });
    await postTrack(s, { events: [aliasEvent('d1')] });
    expect(s.stats.silentlyDropped).toBe(0);
    expect(s.profileCount()).toBe(0);
    expect(s.received.events).toHaveLength(1);
  });

  it('reset forgets the profiles and the drops', async () => {
    const s = await braze();
    await postTrack(s, { events: [aliasEvent('d1'), ev(1)] });
    s.reset();
    expect(s.profileCount()).toBe(0);
    expect(s.stats.silentlyDropped).toBe(0);
    expect(s.dropped.events).toHaveLength(0);
  });
});

describe('Amplitude /2/httpapi stand-in', () => {
  it('answers 200 with the documented body and stores the events', async () => {
    const clock = new ManualClock(T0);
    const s = await amplitude({ clock });
    const body = { api_key: AMP_KEY, events: [ampEvent(1), ampEvent(2, { user_id: 'cust-000482' })] };
    const r = await postAmp(s, body);
    expect(r.status).toBe(200);
    expect(r.body).toEqual({
      code: 200,
      events_ingested: 2,
      payload_size_bytes: Buffer.byteLength(JSON.stringify(body)),
      server_upload_time: T0,
    });
    expect(s.received).toHaveLength(2);
    expect(s.stats.acceptedEvents).toBe(2);
  });

  it('answers a bad key with 400 "Invalid API key", and follows setApiKey', async () => {
    const s = await amplitude();
    const r = await postAmp(s, { api_key: 'wrong', events: [ampEvent(1)] });
    expect(r.status).toBe(400);
    expect(r.body).toEqual({ code: 400, error: 'Invalid API key' });
    s.setApiKey('wrong');
    expect((await postAmp(s, { api_key: 'wrong', events: [ampEvent(1)] })).status).toBe(200);
  });

  it('names a missing request field', async () => {
    const s = await amplitude();
    expect((await postAmp(s, { events: [ampEvent(1)] })).body).toEqual({
      code: 400,
      error: 'Request missing required field',
      missing_field: 'api_key',
    });
    expect((await postAmp(s, { api_key: AMP_KEY })).body).toEqual({
      code: 400,
      error: 'Request missing required field',
      missing_field: 'events',
    });
  });

  it('refuses the whole request and names invalid and missing fields by index', async () => {
    const s = await amplitude();
    const r = await postAmp(s, {
      api_key: AMP_KEY,
      events: [
        ampEvent(0, { event_type: undefined }),
        ampEvent(1),
        ampEvent(2, { time: '2025-03-14T09:00:00Z' }),
        ampEvent(3, { device_id: 'unknown' }),
        ampEvent(4, { device_id: undefined }),
        ampEvent(5, { event_properties: 'x' }),
      ],
    });
    expect(r.status).toBe(400);
    expect(r.body).toEqual({
      code: 400,
      error: 'Invalid field values on some events',
      events_with_invalid_fields: { time: [2], device_id: [3], event_properties: [5] },
      events_with_missing_fields: { event_type: [0], 'user_id or device_id': [4] },
    });
    expect(s.received).toHaveLength(0);
    expect(s.stats.rejectedEvents).toBe(6);
  });

  it('rejects blocked id values regardless of case', async () => {
    const s = await amplitude();
    for (const id of ['Anonymous', 'NULL', '00000000-0000-0000-0000-000000000000', '-1', 'lmy47d']) {
      const r = await postAmp(s, { api_key: AMP_KEY, events: [{ event_type: 'x', user_id: id }] });
      expect(r.status).toBe(400);
      expect(r.body.events_with_invalid_fields).toEqual({ user_id: [0] });
    }
  });

  it('answers too-short ids with events_with_invalid_id_lengths, honours min_id_length, strips a short id', async () => {
    const s = await amplitude();
    const r = await postAmp(s, { api_key: AMP_KEY, events: [ampEvent(0), { event_type: 'x', user_id: 'abc' }] });
    expect(r.status).toBe(400);
    expect(r.body).toEqual({
      code: 400,
      error: 'Invalid id length for user_id or device_id',
      events_with_invalid_id_lengths: { user_id: [1] },
    });
    expect(s.received).toHaveLength(0);

    const lowered = await postAmp(s, { api_key: AMP_KEY, options: { min_id_length: 3 }, events: [{ event_type: 'x', user_id: 'abc' }] });
    expect(lowered.status).toBe(200);

    const stripped = await postAmp(s, { api_key: AMP_KEY, events: [ampEvent(7, { user_id: 'ab' })] });
    expect(stripped.status).toBe(200);
    expect(s.received[1]).not.toHaveProperty('user_id');
    expect(s.received[1]?.device_id).toBe('device-7');

    const shortMin = await amplitude({ minIdLength: 2 });
    expect((await postAmp(shortMin, { api_key: AMP_KEY, events: [{ event_type: 'x', user_id: 'ab' }] })).status).toBe(200);
  });

  it('answers 413 "Payload too large" over the event count or the body size', async () => {
    const s = await amplitude({ perIdPerSecond: false });
    const events = Array.from({ length: 2001 }, (_, i) => ampEvent(i));
    const r = await postAmp(s, { api_key: AMP_KEY, events });
    expect(r.status).toBe(413);
    expect(r.body).toEqual({ code: 413, error: 'Payload too large' });
    expect(s.stats.maxEventsInRequest).toBe(2001);
    expect((await postAmp(s, { api_key: AMP_KEY, events: events.slice(0, 2000) })).status).toBe(200);

    const small = await amplitude({ maxBodyBytes: 500 });
    const big = await postAmp(small, { api_key: AMP_KEY, events: events.slice(0, 20) });
    expect(big.status).toBe(413);
    expect(big.body).toEqual({ code: 413, error: 'Payload too large' });
  });

  it('answers documented 400s for a bad path, an empty body and invalid JSON', async () => {
    const s = await amplitude();
    expect((await post(`${s.url}/2/httpapi/2/httpapi`, { api_key: AMP_KEY, events: [] })).body).toEqual({ code: 400, error: 'Invalid request path' });
    expect((await postAmp(s, '')).body).toEqual({ code: 400, error: 'Missing request body' });
    expect((await postAmp(s, '{"api_key":')).body).toEqual({ code: 400, error: 'Invalid JSON request body' });
    expect((await postAmp(s, { api_key: AMP_KEY, events: [42] })).body).toEqual({ code: 400, error: 'Invalid event JSON' });
  });

  it('serves the Batch API too: the same answers, 1,000 events/s per id where HTTP V2 allows 30, its own 20 MB body cap', async () => {
    const s = await amplitude();
    const burst = Array.from({ length: 100 }, (_, i) => ({ event_type: 'e', device_id: 'device-burst', insert_id: `b${i}` }));
    const viaBatch = await post(`${s.url}/batch`, { api_key: AMP_KEY, events: burst });
    expect(viaBatch.status).toBe(200);
    expect(viaBatch.body).toMatchObject({ code: 200, events_ingested: 100 });
    const viaHttp = await postAmp(s, { api_key: AMP_KEY, events: burst.map((e) => ({ ...e, device_id: 'device-other' })) });
    expect(viaHttp.status).toBe(429);
    expect((await post(`${s.url}/batch`, { api_key: 'wrong', events: burst.slice(0, 1) })).body).toEqual({ code: 400, error: 'Invalid API key' });
    const big = Array.from({ length: 1_500 }, (_, i) => ({ event_type: 'e', device_id: `device-${i % 500}`, insert_id: `g${i}`, event_properties: { pad: 'x'.repeat(900) } }));
    expect((await postAmp(s, { api_key: AMP_KEY, events: big })).status).toBe(413);
    expect((await post(`${s.url}/batch`, { api_key: AMP_KEY, events: big })).status).toBe(200);
    expect(s.stats.byRoute).toEqual({ '/batch': 3, '/2/httpapi': 2 });
  });

  it('accepts a gzip body', async () => {
    const s = await amplitude();
    const gz = gzipSync(Buffer.from(JSON.stringify({ api_key: AMP_KEY, events: [ampEvent(1)] })));
    const r = await postAmp(s, gz, { 'content-encoding': 'gzip' });
    expect(r.status).toBe(200);
    expect(s.received).toHaveLength(1);
  });

  it('throttles an id going over 30 events in any sliding second, storing nothing of that request', async () => {
    const clock = new ManualClock(T0);
    const s = await amplitude({ clock });
    const batch = (n: number, id = 'device-A'): Array<Record<string, unknown>> =>
      Array.from({ length: n }, (_, i) => ampEvent(i, { device_id: id }));

    clock.set(T0);
    expect((await postAmp(s, { api_key: AMP_KEY, events: batch(10) })).status).toBe(200);
    clock.set(T0 + 100);
    expect((await postAmp(s, { api_key: AMP_KEY, events: batch(10) })).status).toBe(200);
    clock.set(T0 + 200);
    expect((await postAmp(s, { api_key: AMP_KEY, events: batch(10) })).status).toBe(200);

    clock.set(T0 + 999);
    const r = await postAmp(s, { api_key: AMP_KEY, events: [ampEvent(99, { device_id: 'other-device' }), ...batch(1)] });
    expect(r.status).toBe(429);
    expect(r.body).toEqual({
      code: 429,
      error: 'Too many requests for some devices and users',
      eps_threshold: 30,
      throttled_devices: { 'device-A': 31 },
      throttled_users: {},
      throttled_events: [1],
      exceeded_daily_quota_devices: {},
      exceeded_daily_quota_users: {},
    });
    expect(s.received).toHaveLength(30);
    expect(s.stats.throttled429).toBe(1);

    // The window is half-open: at +1000 the events of T0 no longer count, those of +100 and +200 do.
    clock.set(T0 + 1000);
    expect((await postAmp(s, { api_key: AMP_KEY, events: batch(11) })).status).toBe(429);
    expect((await postAmp(s, { api_key: AMP_KEY, events: batch(10) })).status).toBe(200);
    expect(s.received).toHaveLength(40);
  });

  it('throttles by user_id too, and a single request over the limit', async () => {
    const clock = new ManualClock(T0);
    const s = await amplitude({ clock, perIdPerSecond: 5 });
    const events = Array.from({ length: 6 }, (_, i) => ampEvent(i, { user_id: 'cust-000482' }));
    const r = await postAmp(s, { api_key: AMP_KEY, events });
    expect(r.status).toBe(429);
    expect(r.body.eps_threshold).toBe(5);
    expect(r.body.throttled_users).toEqual({ 'cust-000482': 6 });
    expect(r.body.throttled_devices).toEqual({});
    expect(r.body.throttled_events).toEqual([0, 1, 2, 3, 4, 5]);
    expect((await postAmp(s, { api_key: AMP_KEY, events: events.slice(0, 5) })).status).toBe(200);
  });

  it('applies a daily quota per id over the trailing 24 h', async () => {
    const clock = new ManualClock(T0);
    const s = await amplitude({ clock, perIdPerSecond: false, dailyQuota: 5 });
    const batch = (n: number): Array<Record<string, unknown>> => Array.from({ length: n }, (_, i) => ampEvent(i, { device_id: 'device-Q', user_id: 'user-Q' }));
    expect((await postAmp(s, { api_key: AMP_KEY, events: batch(3) })).status).toBe(200);
    clock.advance(5 * 3_600_000);
    expect((await postAmp(s, { api_key: AMP_KEY, events: batch(2) })).status).toBe(200);
    const r = await postAmp(s, { api_key: AMP_KEY, events: batch(1) });
    expect(r.status).toBe(429);
    expect(r.body.exceeded_daily_quota_devices).toEqual({ 'device-Q': 5 });
    expect(r.body.exceeded_daily_quota_users).toEqual({ 'user-Q': 5 });
    expect(r.body.throttled_events).toEqual([]);
    expect(s.stats.quota429).toBe(1);
    // 24 h after the first batch its hour has left the window, freeing 3.
    clock.set(T0 + 24 * 3_600_000);
    expect((await postAmp(s, { api_key: AMP_KEY, events: batch(3) })).status).toBe(200);
    expect((await postAmp(s, { api_key: AMP_KEY, events: batch(1) })).status).toBe(429);
  });

  it('counts accepted events per insert_id to measure duplicates', async () => {
    const s = await amplitude();
    await postAmp(s, { api_key: AMP_KEY, events: [ampEvent(1), ampEvent(2)] });
    await postAmp(s, { api_key: AMP_KEY, events: [ampEvent(2), ampEvent(3)] });
    expect(s.received).toHaveLength(4);
    expect(s.uniqueInsertIds).toBe(3);
    expect(s.insertIdCounts.get('ins-2')).toBe(2);
    expect(s.stats.duplicateEvents).toBe(1);
  });

  it('serves injected faults with documented default bodies, and lost answers', async () => {
    const s = await amplitude();
    s.injectFaults({ status: 503, count: 1 });
    s.injectFaults({ status: 429, count: 1, headers: { 'Retry-After': '3' } });
    s.injectFaults({ status: 413, count: 1 });
    s.injectFaults({ status: 502, count: 1, afterProcessing: true });
    const body = { api_key: AMP_KEY, events: [ampEvent(1)] };
    const a = await postAmp(s, body);
    const b = await postAmp(s, body);
    const c = await postAmp(s, body);
    expect([a.status, b.status, c.status]).toEqual([503, 429, 413]);
    expect(a.body).toEqual({ code: 503, error: 'Service Unavailable' });
    expect(b.headers['retry-after']).toBe('3');
    expect(b.body.error).toBe('Too many requests for some devices and users');
    expect(c.body).toEqual({ code: 413, error: 'Payload too large' });
    expect(s.received).toHaveLength(0);
    expect((await postAmp(s, body)).status).toBe(502);
    expect(s.received).toHaveLength(1);
    expect((await postAmp(s, body)).status).toBe(200);
    expect(s.stats.byStatus).toEqual({ 503: 1, 429: 1, 413: 1, 502: 1, 200: 1 });
  });

  it('waits for events, times out, and reset clears everything', async () => {
    const clock = new ManualClock(T0);
    const s = await amplitude({ clock });
    const waiting = s.waitForEvents(2, 5000);
    await postAmp(s, { api_key: AMP_KEY, events: [ampEvent(1)] });
    await postAmp(s, { api_key: AMP_KEY, events: [ampEvent(2)] });
    await expect(waiting).resolves.toBeUndefined();
    await expect(s.waitForEvents(5, 50)).rejects.toThrow(/2 of 5/);

    await postAmp(s, { api_key: AMP_KEY, events: Array.from({ length: 29 }, (_, i) => ampEvent(1, { insert_id: `x-${i}` })) });
    expect((await postAmp(s, { api_key: AMP_KEY, events: [ampEvent(1)] })).status).toBe(429);
    s.reset();
    expect(s.received).toHaveLength(0);
    expect(s.uniqueInsertIds).toBe(0);
    expect(s.stats.requests).toBe(0);
    expect((await postAmp(s, { api_key: AMP_KEY, events: [ampEvent(1)] })).status).toBe(200);
  });

  it('serves many keep-alive requests quickly', async () => {
    const s = await amplitude({ perIdPerSecond: false });
    const agent = new Agent({ connections: 16, pipelining: 1 });
    const payload = JSON.stringify({ api_key: AMP_KEY, events: Array.from({ length: 10 }, (_, i) => ampEvent(i)) });
    const total = 4000;
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < total) {
        next++;
        const res = await request(`${s.url}/2/httpapi`, {
          method: 'POST',
          dispatcher: agent,
          headers: { 'content-type': 'application/json' },
          body: payload,
        });
        await res.body.dump();
        expect(res.statusCode).toBe(200);
      }
    };
    const started = performance.now();
    await Promise.all(Array.from({ length: 16 }, worker));
    const ms = performance.now() - started;
    await agent.close();
    expect(s.stats.requests).toBe(total);
    expect(s.received).toHaveLength(total * 10);
    // Generous: a loaded 2-core CI box still manages well over 1,000 requests/s.
    expect(ms).toBeLessThan(15_000);
  });
});
