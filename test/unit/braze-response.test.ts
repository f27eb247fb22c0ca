import { describe, expect, it } from 'vitest';
import { classifyBrazeResponse } from '../../src/amplitude-to-braze/braze-response.js';
import { DestinationBackoff, retryAfterFromHeaders } from '../../src/delivery/backoff.js';
import { ManualClock } from '../../src/clock.js';

const NOW = Date.parse('2025-03-14T09:00:00Z');

// Rows from reference/braze-users-track.md §8.
describe('classifyBrazeResponse', () => {
  it.each([
    { status: 201, body: { message: 'success', events_processed: 1 }, kind: 'ok' },
    { status: 200, body: { message: 'success', attributes_processed: 1 }, kind: 'ok' },
    { status: 202, body: { message: 'queued' }, kind: 'ok' },
    { status: 401, body: { message: 'Invalid API key' }, kind: 'stop', cls: 'auth' },
    { status: 403, body: { message: 'Access Denied' }, kind: 'stop', cls: 'auth' },
    { status: 404, body: { message: 'Not Found' }, kind: 'stop', cls: 'fatal' },
    { status: 413, body: { message: 'Request Entity Too Large' }, kind: 'split' },
    { status: 400, body: { message: 'Max Input Length Exceeded' }, kind: 'split' },
    { status: 400, body: { message: "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields." }, kind: 'invalid', cls: 'invalid_input' },
    { status: 429, body: { message: 'Rate limited' }, kind: 'retry', cls: 'rate_limited' },
    { status: 500, body: { message: 'Internal Server Error' }, kind: 'retry', cls: 'retryable' },
    { status: 502, body: {}, kind: 'retry', cls: 'retryable' },
    { status: 503, body: {}, kind: 'retry', cls: 'retryable' },
    { status: 504, body: {}, kind: 'retry', cls: 'retryable' },
    { status: 0, body: {}, kind: 'retry', cls: 'retryable' },
  ])('$status $body.message -> $kind', ({ status, body, kind, cls }) => {
    const o = classifyBrazeResponse(status, {}, JSON.stringify(body), NOW);
    expect(o.kind).toBe(kind);
    if (cls && 'failure' in o) expect(o.failure.class).toBe(cls);
  });

  it('reads the per-object errors of a success (the reference\'s worked example)', () => {
    const body = { message: 'success', events_processed: 1, errors: [{ type: "'quantity' is not valid", input_array: 'purchases', index: 0 }, 'something else'] };
    const o = classifyBrazeResponse(201, {}, JSON.stringify(body), NOW);
    expect(o).toMatchObject({ kind: 'ok', objectErrors: [{ array: 'purchases', index: 0, type: "'quantity' is not valid" }], unattributedErrors: ['something else'] });
  });

  it('honours X-RateLimit-Reset on a 429 and holds when X-RateLimit-Remaining hits 0', () => {
    const reset = String(NOW / 1000 + 7);
    const o = classifyBrazeResponse(429, { 'x-ratelimit-reset': reset }, '', NOW);
    expect(o.kind === 'retry' && o.failure.retryAfterMs).toBe(7000);
    const ok = classifyBrazeResponse(201, { 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': reset }, '{"message":"success"}', NOW);
    expect(ok.kind === 'ok' && ok.holdUntilMs).toBe(NOW + 7000);
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
  it('grows exponentially with jitter up to the cap and resets on success', () => {
    const clock = new ManualClock(0);
    const b = new DestinationBackoff({ baseMs: 100, maxMs: 1000, authRetryMs: 60_000 }, clock, () => 1);
    expect(b.onFailure('retryable')).toBe(100);
    expect(b.onFailure('retryable')).toBe(200);
    expect(b.onFailure('retryable')).toBe(400);
    expect(b.onFailure('retryable')).toBe(800);
    expect(b.onFailure('retryable')).toBe(1000);
    expect(b.waitMs()).toBe(1000);
    clock.advance(1000);
    expect(b.waitMs()).toBe(0);
    b.onSuccess();
    expect(b.onFailure('retryable')).toBe(100);
  });

  it('never waits less than half the step (equal jitter)', () => {
    const b = new DestinationBackoff({ baseMs: 100, maxMs: 1000, authRetryMs: 60_000 }, new ManualClock(), () => 0);
    expect(b.onFailure('retryable')).toBe(50);
    expect(b.onFailure('retryable')).toBe(100);
  });

  it('waits what the destination asked, and slowly for a refused key', () => {
    const clock = new ManualClock(0);
    const b = new DestinationBackoff({ baseMs: 100, maxMs: 10_000, authRetryMs: 60_000 }, clock, () => 0);
    expect(b.onFailure('rate_limited', 3000)).toBe(3000);
    expect(b.onFailure('auth')).toBe(60_000);
    expect(b.waitMs()).toBe(60_000);
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
