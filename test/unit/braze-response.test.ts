import { describe, expect, it } from 'vitest';
import { classifyBrazeResponse } from '../../src/amplitude-to-braze/braze-response.js';
import { DestinationBackoff, retryAfterFromHeaders } from '../../src/delivery/backoff.js';
import { ManualClock } from '../../src/clock.js';

const NOW = Date.parse('2025-03-14T09:00:00Z');

const counts = (attributes: number, events: number, purchases: number) => () => ({ attributes, events, purchases });
const NONE = counts(0, 1, 0);

// Rows from reference/braze-users-track.md §8.
describe('classifyBrazeResponse', () => {
  it.each([
    { status: 201, body: { message: 'success', events_processed: 1 }, kind: 'delivered' },
    { status: 200, body: { message: 'success', attributes_processed: 1 }, kind: 'delivered' },
    { status: 202, body: { message: 'queued' }, kind: 'delivered' },
    { status: 401, body: { message: 'Invalid API key' }, kind: 'stop', failure: 'auth' },
    { status: 403, body: { message: 'Access Denied' }, kind: 'stop', failure: 'auth' },
    { status: 404, body: { message: 'Not Found' }, kind: 'stop', failure: 'configuration' },
    { status: 405, body: { message: 'Method Not Allowed' }, kind: 'stop', failure: 'configuration' },
    { status: 302, body: {}, kind: 'stop', failure: 'configuration' },
    { status: 422, body: { message: 'what is this' }, kind: 'stop', failure: 'configuration' },
    { status: 413, body: { message: 'Request Entity Too Large' }, kind: 'split' },
    { status: 400, body: { message: 'Max Input Length Exceeded' }, kind: 'split' },
    { status: 400, body: { message: "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields." }, kind: 'split' },
    { status: 429, body: { message: 'Rate limited' }, kind: 'backoff', failure: 'rate_limited' },
    { status: 500, body: { message: 'Internal Server Error' }, kind: 'backoff', failure: 'unavailable' },
    { status: 502, body: {}, kind: 'backoff', failure: 'unavailable' },
    { status: 503, body: {}, kind: 'backoff', failure: 'unavailable' },
    { status: 504, body: {}, kind: 'backoff', failure: 'unavailable' },
    { status: 0, body: {}, kind: 'backoff', failure: 'unavailable' },
  ])('$status $body.message -> $kind', ({ status, body, kind, failure }) => {
    const o = classifyBrazeResponse(status, {}, JSON.stringify(body), NONE, NOW);
    expect(o.kind).toBe(kind);
    if (failure) expect(o).toMatchObject({ failure });
  });

  it('names the refused objects of a success by their position: attributes, then events, then purchases', () => {
    const body = { message: 'success', errors: [{ type: "'quantity' is not valid", input_array: 'purchases', index: 0 }, { type: 'bad', input_array: 'events', index: 1 }] };
    const o = classifyBrazeResponse(201, {}, JSON.stringify(body), counts(2, 3, 1), NOW);
    expect(o).toMatchObject({
      kind: 'rejected',
      othersDelivered: true,
      rejects: [
        { index: 5, reason: 'rejected_by_destination', error: "purchases[0]: 'quantity' is not valid" },
        { index: 3, reason: 'rejected_by_destination' },
      ],
    });
  });

  it('never counts a success whose errors name no object as a clean delivery', () => {
    const body = { message: 'success', errors: ['something went wrong'] };
    const o = classifyBrazeResponse(201, {}, JSON.stringify(body), counts(1, 2, 0), NOW);
    expect(o.kind).toBe('rejected');
    if (o.kind !== 'rejected') return;
    expect(o.othersDelivered).toBe(true);
    expect(o.rejects.map((r) => [r.index, r.reason])).toEqual([
      [0, 'rejected_unattributed'],
      [1, 'rejected_unattributed'],
      [2, 'rejected_unattributed'],
    ]);
  });

  it.each([
    ['a proxy\'s HTML page', '<html><body>Welcome</body></html>'],
    ['an empty body', ''],
    ['JSON that is not Braze\'s', '{"ok":true}'],
  ])('a 2xx without Braze\'s JSON answer (%s) is not a delivery: the leg stops and says why', (_name, text) => {
    const o = classifyBrazeResponse(200, {}, text, counts(1, 1, 0), NOW);
    expect(o).toMatchObject({ kind: 'stop', failure: 'configuration' });
    expect(o.kind === 'stop' && o.error).toMatch(/without its JSON answer.*check BRAZE_REST_ENDPOINT/);
  });

  it('a 400 naming objects refuses those and sends the rest again', () => {
    const body = { message: 'bad', errors: [{ type: 'invalid', input_array: 'attributes', index: 0 }] };
    expect(classifyBrazeResponse(400, {}, JSON.stringify(body), counts(1, 1, 0), NOW)).toMatchObject({ kind: 'rejected', othersDelivered: false, rejects: [{ index: 0 }] });
  });

  it('honours X-RateLimit-Reset on a 429 and holds when X-RateLimit-Remaining hits 0', () => {
    const reset = String(NOW / 1000 + 7);
    const o = classifyBrazeResponse(429, { 'x-ratelimit-reset': reset }, '', NONE, NOW);
    expect(o.kind === 'backoff' && o.retryAfterMs).toBe(7000);
    const ok = classifyBrazeResponse(201, { 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': reset }, '{"message":"success"}', NONE, NOW);
    expect(ok.kind === 'delivered' && ok.holdForMs).toBe(7000);
  });
});

describe('retryAfterFromHeaders', () => {
  it.each([
    [{ 'retry-after': '3' }, 3000],
    [{ 'retry-after': new Date(NOW + 5000).toUTCString() }, 5000],
    [{ 'x-ratelimit-reset': String(NOW / 1000 + 2) }, 2000],
    [{ 'retry-after': '1', 'x-ratelimit-reset': String(NOW / 1000 + 9) }, 1000],
    [{}, undefined],
  ])('%j -> %s', (headers, want) => {
    expect(retryAfterFromHeaders(headers, NOW)).toBe(want);
  });
});

describe('DestinationBackoff', () => {
  const settings = { baseMs: 100, maxMs: 1000, stopRetryMs: 60_000 };

  it('grows exponentially with jitter up to the cap and resets on success', () => {
    const clock = new ManualClock(0);
    const b = new DestinationBackoff(settings, clock, () => 1);
    const fail = () => b.onFailure(b.begin());
    expect([fail(), fail(), fail(), fail(), fail()]).toEqual([100, 200, 400, 800, 1000]);
    expect(b.failing).toBe(true);
    clock.advance(1000);
    expect(b.waitMs()).toBe(0);
    b.onSuccess();
    expect(b.failing).toBe(false);
    expect(fail()).toBe(100);
  });

  it('counts the failures of requests in flight together as one step', () => {
    const clock = new ManualClock(0);
    const b = new DestinationBackoff(settings, clock, () => 1);
    // 16 requests start together; all of them fail
    const tickets = Array.from({ length: 16 }, () => b.begin());
    const waits = tickets.map((t) => b.onFailure(t));
    expect(b.failures).toBe(1);
    expect(new Set(waits)).toEqual(new Set([100]));
    // the next probe fails: one more step
    clock.advance(100);
    expect(b.onFailure(b.begin())).toBe(200);
    expect(b.failures).toBe(2);
  });

  it('never waits less than half the step (equal jitter)', () => {
    const b = new DestinationBackoff(settings, new ManualClock(), () => 0);
    expect(b.onFailure(b.begin())).toBe(50);
    expect(b.onFailure(b.begin())).toBe(100);
  });

  it('waits what the destination asked, and slowly after a stop', () => {
    const clock = new ManualClock(0);
    const b = new DestinationBackoff({ baseMs: 100, maxMs: 10_000, stopRetryMs: 60_000 }, clock, () => 0);
    expect(b.onFailure(b.begin(), { retryAfterMs: 3000 })).toBe(3000);
    expect(b.onFailure(b.begin(), { stopped: true })).toBe(60_000);
  });
});

describe('RequestWindow', () => {
  it('allows the limit per window (aligned like Braze\'s), then says how long until the next', async () => {
    const { RequestWindow } = await import('../../src/delivery/request-window.js');
    const clock = new ManualClock(10_000);
    const w = new RequestWindow(3, 3_000, clock);
    expect([w.take(), w.take(), w.take()]).toEqual([0, 0, 0]);
    expect(w.take()).toBe(2_000); // the window is [9000, 12000)
    clock.advance(1_999);
    expect(w.take()).toBe(1);
    clock.advance(1);
    expect(w.take()).toBe(0);
    clock.advance(10_000);
    expect([w.take(), w.take(), w.take(), w.take()]).toEqual([0, 0, 0, 2_000]);
  });
});
