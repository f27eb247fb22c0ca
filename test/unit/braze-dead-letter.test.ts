import { describe, expect, it } from 'vitest';
import {
  brazeObjectDeadLetter,
  buildObjectsBody,
  isBrazeObjectRecord,
  locateObjects,
  readBrazeObjectRecord,
  rejectsByItem,
} from '../../src/amplitude-to-braze/braze-dead-letter.js';
import { toMessage } from '../../src/kafka/dead-letter.js';
import type { Answer, DeliveryOutcome } from '../../src/delivery/outcome.js';
import { BrazeObjectReplayer, ObjectReplayFailed, type ReplayObject } from '../../src/replay/braze-objects.js';

const answer = (outcome: DeliveryOutcome): Answer => ({ outcome, status: 0, durationMs: 1, body: '' });

describe('Braze-object dead letters', () => {
  const purchase = { external_id: 'u-1', product_id: 'p', currency: 'EUR', price: 1, quantity: 1, time: '2025-03-14T09:00:00.000Z' };

  it('one record per object: the object as sent, the source coordinates, the error, and headers replay recognises', () => {
    const dl = brazeObjectDeadLetter({
      array: 'purchases',
      json: JSON.stringify(purchase),
      index: 2,
      reason: 'rejected_by_destination',
      error: "'quantity' is not valid",
      connector: 'braze',
      source: { topic: 'amplitude.events', partition: 3, offset: '41' },
      key: 'u-1',
      firstFailureMs: Date.UTC(2025, 2, 14, 9),
    });
    const m = toMessage(dl);
    const headers = Object.fromEntries(Object.entries(m.headers).map(([k, v]) => [k, String(v)]));
    expect(headers).toMatchObject({
      reason: 'rejected_by_destination',
      error: "'quantity' is not valid",
      leg: 'outbound',
      connector: 'braze',
      'source-topic': 'amplitude.events',
      'source-partition': '3',
      'source-offset': '41',
      'first-failure-time': '2025-03-14T09:00:00.000Z',
      payload: 'braze-object',
      'braze-array': 'purchases',
      'braze-index': '2',
    });
    expect(m.key).toBe('u-1');
    expect(isBrazeObjectRecord(headers)).toBe(true);
    expect(readBrazeObjectRecord(headers, m.value)).toEqual({ ok: true, array: 'purchases', object: purchase, json: JSON.stringify(purchase) });
  });

  it.each<{ headers: Record<string, string>; value: string | null; why: string }>([
    { headers: { reason: 'x' }, value: '{}', why: 'not a braze-object record' },
    { headers: { payload: 'braze-object', 'braze-array': 'users' }, value: '{}', why: 'unknown braze-array "users"' },
    { headers: { payload: 'braze-object', 'braze-array': 'events' }, value: null, why: 'no value' },
    { headers: { payload: 'braze-object', 'braze-array': 'events' }, value: '{nope', why: 'value is not JSON' },
    { headers: { payload: 'braze-object', 'braze-array': 'events' }, value: '[1]', why: 'value is not a JSON object' },
  ])('unreadable: $why', ({ headers, value, why }) => {
    expect(readBrazeObjectRecord(headers, value === null ? null : Buffer.from(value))).toEqual({ ok: false, why });
  });

  it('locateObjects maps body positions (attributes, then events, then purchases) to items and their objects', () => {
    const items = [
      { attributesJson: 'A0', eventJson: 'E0', purchaseJsons: ['P0a', 'P0b'] },
      { eventJson: 'E1', purchaseJsons: [] },
      { attributesJson: 'A2', purchaseJsons: ['P2'] },
    ];
    expect(locateObjects(items)).toEqual([
      { item: 0, array: 'attributes', json: 'A0', index: 0 },
      { item: 2, array: 'attributes', json: 'A2', index: 0 },
      { item: 0, array: 'events', json: 'E0', index: 1 },
      { item: 1, array: 'events', json: 'E1', index: 0 },
      { item: 0, array: 'purchases', json: 'P0a', index: 2 },
      { item: 0, array: 'purchases', json: 'P0b', index: 3 },
      { item: 2, array: 'purchases', json: 'P2', index: 1 },
    ]);
  });

  it('rejectsByItem groups refused positions by item, with the object each names', () => {
    const items = [
      { attributesJson: 'A0', eventJson: 'E0', purchaseJsons: ['P0'] },
      { eventJson: 'E1', purchaseJsons: ['P1'] },
    ];
    const g = rejectsByItem(items, [
      { index: 4, reason: 'rejected_by_destination', error: "'quantity' is not valid" },
      { index: 0, reason: 'rejected_by_destination', error: 'bad attribute' },
      { index: 4, reason: 'rejected_by_destination', error: 'twice' },
      { index: 9, reason: 'rejected_by_destination', error: 'nothing there' },
    ]);
    expect([...g.keys()].sort()).toEqual([0, 1]);
    expect(g.get(1)).toEqual([{ item: 1, array: 'purchases', json: 'P1', index: 1, reason: 'rejected_by_destination', error: "'quantity' is not valid" }]);
    expect(g.get(0)).toEqual([{ item: 0, array: 'attributes', json: 'A0', index: 0, reason: 'rejected_by_destination', error: 'bad attribute' }]);
  });

  it('buildObjectsBody orders the arrays as Braze processes them and names each position\'s object', () => {
    const { body, owners } = buildObjectsBody([
      { array: 'purchases', json: '{"p":1}' },
      { array: 'events', json: '{"e":1}' },
      { array: 'attributes', json: '{"a":1}' },
      { array: 'events', json: '{"e":2}' },
    ]);
    expect(JSON.parse(body)).toEqual({ attributes: [{ a: 1 }], events: [{ e: 1 }, { e: 2 }], purchases: [{ p: 1 }] });
    expect(owners).toEqual([2, 1, 3, 0]);
  });
});

describe('BrazeObjectReplayer', () => {
  const obj = (i: number, array: ReplayObject<number>['array'] = 'events'): ReplayObject<number> => ({ array, json: JSON.stringify({ external_id: `u-${i}`, i }), record: i });
  const limits = { maxPerArray: 75, maxTotal: 75, maxBytes: 3_900_000 };

  it('sends in requests under the caps, in order', async () => {
    const bodies: string[] = [];
    const r = new BrazeObjectReplayer<number>({ send: async (b) => (bodies.push(b), answer({ kind: 'delivered' })), limits: { ...limits, maxTotal: 3 } });
    for (let i = 0; i < 7; i++) r.add(obj(i));
    expect(await r.flush()).toEqual({ sent: 7, rejected: [] });
    expect(bodies.map((b) => (JSON.parse(b) as { events: unknown[] }).events.length)).toEqual([3, 3, 1]);
    expect(r.size).toBe(0);
  });

  it('a 2xx naming objects: those are handed back, the rest count as sent', async () => {
    const r = new BrazeObjectReplayer<number>({
      send: async () => answer({ kind: 'rejected', rejects: [{ index: 0, reason: 'rejected_by_destination', error: 'bad attr' }], othersDelivered: true }),
      limits,
    });
    r.add(obj(0, 'events'));
    r.add(obj(1, 'attributes'));
    // body position 0 is the attributes object, which is record 1
    expect(await r.flush()).toEqual({ sent: 1, rejected: [{ record: 1, reason: 'rejected_by_destination', error: 'bad attr' }] });
  });

  it('waits out 5xx and 429, splits on an unattributed 400, gives up on a refused key', async () => {
    const outcomes: DeliveryOutcome[] = [
      { kind: 'backoff', failure: 'unavailable', error: '503' },
      { kind: 'backoff', failure: 'rate_limited', error: '429', retryAfterMs: 5 },
      { kind: 'split', reason: 'rejected_by_destination', error: '400' },
      { kind: 'delivered' },
      { kind: 'split', reason: 'rejected_by_destination', error: '400' },
    ];
    const slept: number[] = [];
    const r = new BrazeObjectReplayer<number>({ send: async () => answer(outcomes.shift()!), limits, sleep: async (ms) => void slept.push(ms), retryBaseMs: 1 });
    r.add(obj(0));
    r.add(obj(1));
    expect(await r.flush()).toEqual({ sent: 1, rejected: [{ record: 1, reason: 'rejected_by_destination', error: '400' }] });
    // the shared policy: equal jitter on a 1 ms base, then Braze's Retry-After of 5 ms honoured
    expect(slept).toHaveLength(2);
    expect(slept[0]).toBeLessThanOrEqual(1);
    expect(slept[1]).toBeGreaterThanOrEqual(4);
    expect(slept[1]).toBeLessThanOrEqual(5);

    const stop = new BrazeObjectReplayer<number>({ send: async () => answer({ kind: 'stop', failure: 'auth', error: '401' }), limits });
    stop.add(obj(0));
    await expect(stop.flush()).rejects.toBeInstanceOf(ObjectReplayFailed);
    const down = new BrazeObjectReplayer<number>({ send: async () => answer({ kind: 'backoff', failure: 'unavailable', error: '503' }), limits, sleep: async () => undefined, maxAttempts: 3 });
    down.add(obj(0));
    await expect(down.flush()).rejects.toThrow(/after 3 attempts/);
  });
});
