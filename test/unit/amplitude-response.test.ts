import { describe, expect, it } from 'vitest';
import { amplitudeOutcome, classifyAmplitudeResponse, type ResponseHeaders } from '../../src/braze-to-amplitude/amplitude-response.js';
import { retryAfterFromHeaders } from '../../src/delivery/backoff.js';

interface Row {
  name: string;
  status: number;
  body: unknown;
  headers?: ResponseHeaders;
  batch: number;
  expected: Record<string, unknown>;
}

// Bodies are the documented shapes of amplitude-http-api.md §6 and the composed examples of §10.
const rows: Row[] = [
  {
    name: '200 success (§6.1)',
    status: 200,
    body: { code: 200, events_ingested: 3, payload_size_bytes: 1187, server_upload_time: 1767225701420 },
    batch: 3,
    expected: { kind: 'ok', eventsIngested: 3, serverUploadTime: 1767225701420 },
  },
  {
    name: '200 with the body still as text',
    status: 200,
    body: '{"code":200,"events_ingested":1,"payload_size_bytes":90,"server_upload_time":1}',
    batch: 1,
    expected: { kind: 'ok', eventsIngested: 1, serverUploadTime: 1 },
  },
  {
    // Amplitude always answers with `code` (§6): a 2xx without it is not Amplitude's answer (a
    // proxy, a wrong endpoint) and does not say the events arrived
    name: '200 with no body',
    status: 200,
    body: undefined,
    batch: 1,
    expected: { kind: 'fatal', failure: { class: 'fatal', reason: 'unexpected_status', status: 200 } },
  },
  {
    name: '200 with a proxy\'s HTML page',
    status: 200,
    body: '<html><body>Welcome</body></html>',
    batch: 1,
    expected: { kind: 'fatal', failure: { class: 'fatal', reason: 'unexpected_status', status: 200 } },
  },
  {
    name: '400 field validation: invalid and missing fields (§10)',
    status: 400,
    body: {
      code: 400,
      error: 'Invalid field values on some events',
      events_with_invalid_fields: { time: [2] },
      events_with_missing_fields: { event_type: [0] },
    },
    batch: 3,
    expected: {
      kind: 'invalid_events',
      indexes: [0, 2],
      events: [
        { index: 0, reason: 'missing_fields', fields: ['event_type'] },
        { index: 2, reason: 'invalid_fields', fields: ['time'] },
      ],
      failure: { class: 'invalid_input', reason: 'missing_fields', status: 400 },
    },
  },
  {
    name: '400 one event listed under several fields',
    status: 400,
    body: { code: 400, error: 'Invalid field values on some events', events_with_invalid_fields: { time: [1], price: [1, 3] } },
    batch: 4,
    expected: {
      kind: 'invalid_events',
      indexes: [1, 3],
      events: [
        { index: 1, reason: 'invalid_fields', fields: ['time', 'price'] },
        { index: 3, reason: 'invalid_fields', fields: ['price'] },
      ],
    },
  },
  {
    name: '400 bad API key (§6.2, §10)',
    status: 400,
    body: { code: 400, error: 'Invalid API key' },
    batch: 50,
    expected: { kind: 'auth', failure: { class: 'auth', reason: 'invalid_api_key', status: 400 } },
  },
  {
    name: '400 id too short (observed shape, §4, §10)',
    status: 400,
    body: { code: 400, error: 'Invalid id length for user_id or device_id', events_with_invalid_id_lengths: { user_id: [1] } },
    batch: 2,
    expected: {
      kind: 'invalid_events',
      indexes: [1],
      events: [{ index: 1, reason: 'invalid_id', fields: ['user_id'] }],
      failure: { class: 'invalid_input', reason: 'invalid_id', status: 400 },
    },
  },
  {
    name: '400 silenced devices (§6.3, §10)',
    status: 400,
    body: {
      code: 400,
      error: 'Events silenced for device_id',
      eps_threshold: 30,
      silenced_devices: ['kiosk-test-0001'],
      silenced_events: [0, 4],
      throttled_devices: {},
      throttled_events: [],
      exceeded_daily_quota_devices: {},
    },
    batch: 5,
    expected: {
      kind: 'silenced',
      devices: ['kiosk-test-0001'],
      indexes: [0, 4],
      events: [
        { index: 0, reason: 'silenced_device', fields: [] },
        { index: 4, reason: 'silenced_device', fields: [] },
      ],
      failure: { class: 'invalid_input', reason: 'silenced_device', status: 400 },
    },
  },
  {
    name: '400 missing request field (§6.2 missing_field)',
    status: 400,
    body: { code: 400, error: 'Request missing required field', missing_field: 'api_key' },
    batch: 10,
    expected: { kind: 'fatal', failure: { class: 'fatal', reason: 'invalid_request', status: 400 } },
  },
  {
    name: '400 invalid request path',
    status: 400,
    body: { code: 400, error: 'Invalid request path' },
    batch: 10,
    expected: { kind: 'fatal', failure: { class: 'fatal', reason: 'invalid_request' } },
  },
  {
    name: '400 invalid JSON request body',
    status: 400,
    body: { code: 400, error: 'Invalid JSON request body' },
    batch: 10,
    expected: { kind: 'fatal', failure: { class: 'fatal', reason: 'invalid_request' } },
  },
  {
    name: '400 invalid event JSON naming no event, batch of several: bisect',
    status: 400,
    body: { code: 400, error: 'Invalid event JSON' },
    batch: 8,
    expected: { kind: 'split', failure: { class: 'invalid_input', reason: 'invalid_event', status: 400 } },
  },
  {
    name: '400 invalid event JSON naming no event, single event: dead-letter it',
    status: 400,
    body: { code: 400, error: 'Invalid event JSON' },
    batch: 1,
    expected: { kind: 'invalid_events', indexes: [0], events: [{ index: 0, reason: 'invalid_event', fields: [] }] },
  },
  {
    name: '400 whose indexes are all out of range is treated as naming no event',
    status: 400,
    body: { code: 400, error: 'Invalid field values on some events', events_with_invalid_fields: { time: [7, -1, 'x', 1.5] } },
    batch: 3,
    expected: { kind: 'split' },
  },
  {
    name: '403 forbidden (WAF, §6.4)',
    status: 403,
    body: { code: 403, error: 'Forbidden' },
    batch: 3,
    expected: { kind: 'auth', failure: { class: 'auth', reason: 'forbidden', status: 403 } },
  },
  {
    name: '401 (not documented, treated as credentials)',
    status: 401,
    body: '',
    batch: 3,
    expected: { kind: 'auth', failure: { class: 'auth', reason: 'unauthorized', status: 401 } },
  },
  {
    name: '413 payload too large (§6.5), batch of several: halve',
    status: 413,
    body: { code: 413, error: 'Payload too large' },
    batch: 200,
    expected: { kind: 'too_large', failure: { class: 'retryable', reason: 'payload_too_large', status: 413 } },
  },
  {
    name: '413 on a single event: undeliverable',
    status: 413,
    body: { code: 413, error: 'Payload too large' },
    batch: 1,
    expected: {
      kind: 'invalid_events',
      indexes: [0],
      events: [{ index: 0, reason: 'too_large_single', fields: [] }],
      failure: { class: 'invalid_input', reason: 'too_large_single', status: 413 },
    },
  },
  {
    name: '429 throttled and over daily quota (§6.6, §10)',
    status: 429,
    body: {
      code: 429,
      error: 'Too many requests for some devices and users',
      eps_threshold: 30,
      throttled_devices: { 'b7d0c6e2-3a51-4c8e-9f10-5e2a7c9d4b11': 42 },
      throttled_users: { 'cust-000482': 37 },
      throttled_events: [0, 1, 2],
      exceeded_daily_quota_devices: { 'loadtest-device-77': 500318 },
      exceeded_daily_quota_users: {},
    },
    batch: 3,
    expected: {
      kind: 'daily_quota',
      devices: ['loadtest-device-77'],
      users: [],
      throttledDevices: ['b7d0c6e2-3a51-4c8e-9f10-5e2a7c9d4b11'],
      throttledUsers: ['cust-000482'],
      throttledIndexes: [0, 1, 2],
      holdMs: 0,
      failure: { class: 'rate_limited', reason: 'daily_quota', status: 429 },
    },
  },
  {
    name: '429 daily quota for users only',
    status: 429,
    body: { code: 429, error: 'Too many requests for some devices and users', exceeded_daily_quota_users: { 'cust-000482': 500001 }, throttled_events: [1] },
    batch: 2,
    expected: { kind: 'daily_quota', devices: [], users: ['cust-000482'], throttledDevices: [], throttledUsers: [], throttledIndexes: [1] },
  },
  {
    name: '429 per-second throttling only',
    status: 429,
    body: {
      code: 429,
      error: 'Too many requests for some devices and users',
      eps_threshold: 30,
      throttled_devices: { 'device-0001': 31, 'device-0002': 45 },
      throttled_users: {},
      throttled_events: [3, 1, 1, 9],
      exceeded_daily_quota_devices: {},
      exceeded_daily_quota_users: {},
    },
    batch: 5,
    expected: {
      kind: 'throttled',
      throttledDevices: ['device-0001', 'device-0002'],
      throttledUsers: [],
      throttledIndexes: [1, 3],
      holdMs: 0,
      failure: { class: 'rate_limited', reason: 'throttled', status: 429 },
    },
  },
  {
    name: '429 with no body: throttle the destination',
    status: 429,
    body: undefined,
    batch: 5,
    expected: { kind: 'throttled', throttledDevices: [], throttledUsers: [], throttledIndexes: [], holdMs: 0 },
  },
  {
    name: '429 with a longer Retry-After',
    status: 429,
    body: { code: 429, throttled_users: ['cust-000482'] },
    headers: { 'Retry-After': '120' },
    batch: 1,
    expected: { kind: 'throttled', throttledUsers: ['cust-000482'], holdMs: 120_000, failure: { retryAfterMs: 120_000 } },
  },
  { name: '500 (§6.7)', status: 500, body: undefined, batch: 3, expected: { kind: 'retryable', failure: { class: 'retryable', reason: 'server_error', status: 500 } } },
  { name: '502 with an HTML body', status: 502, body: '<html>Bad Gateway</html>', batch: 3, expected: { kind: 'retryable', failure: { class: 'retryable', reason: 'server_error', status: 502 } } },
  { name: '503 (safe retry)', status: 503, body: { code: 503 }, headers: { 'retry-after': '5' }, batch: 3, expected: { kind: 'retryable', failure: { reason: 'server_error', status: 503, retryAfterMs: 5000 } } },
  { name: '504', status: 504, body: undefined, batch: 3, expected: { kind: 'retryable', failure: { reason: 'server_error', status: 504 } } },
  { name: '408 timeout', status: 408, body: undefined, batch: 3, expected: { kind: 'retryable', failure: { class: 'retryable', reason: 'timeout', status: 408 } } },
  { name: 'an unexpected status', status: 418, body: undefined, batch: 3, expected: { kind: 'fatal', failure: { class: 'fatal', reason: 'unexpected_status', status: 418 } } },
  { name: '404 (a wrong path: the full endpoint URL appended twice)', status: 404, body: 'Invalid request path', batch: 3, expected: { kind: 'fatal', failure: { class: 'fatal', status: 404 } } },
  { name: '405', status: 405, body: undefined, batch: 3, expected: { kind: 'fatal', failure: { class: 'fatal', status: 405 } } },
  { name: 'a redirect', status: 302, body: undefined, batch: 3, expected: { kind: 'fatal', failure: { class: 'fatal', status: 302 } } },
];

describe('classifyAmplitudeResponse', () => {
  it.each(rows)('$name', ({ status, body, headers, batch, expected }) => {
    expect(classifyAmplitudeResponse(status, body, headers ?? {}, batch, 0)).toMatchObject(expected);
  });

  it('gives every non-ok outcome a Failure', () => {
    for (const r of rows) {
      const out = classifyAmplitudeResponse(r.status, r.body, r.headers ?? {}, r.batch, 0);
      if (out.kind === 'ok') continue;
      expect(out.failure.message).toMatch(/\S/);
      expect(out.failure.status).toBe(r.status);
    }
  });

  it('reports the silenced form with every index the body lists', () => {
    const out = classifyAmplitudeResponse(
      400,
      { code: 400, error: 'Events silenced for device_id', silenced_devices: ['kiosk-test-0001'], silenced_events: [2], events_with_invalid_fields: { time: [0] } },
      {},
      3,
    );
    expect(out).toMatchObject({ kind: 'silenced', indexes: [0, 2] });
  });

  it('reads the body from bytes', () => {
    const out = classifyAmplitudeResponse(400, Buffer.from('{"code":400,"error":"Invalid API key"}'), {}, 1);
    expect(out.kind).toBe('auth');
  });

  it('reads Retry-After case-insensitively, from an array, or as an HTTP date', () => {
    const now = Date.parse('2026-01-01T00:00:00Z');
    const a = classifyAmplitudeResponse(500, undefined, { 'RETRY-AFTER': ['7', '9'] }, 1, now);
    expect(a.kind !== 'ok' && a.failure.retryAfterMs).toBe(7000);
    const b = classifyAmplitudeResponse(503, undefined, { 'retry-after': 'Thu, 01 Jan 2026 00:00:30 GMT' }, 1, now);
    expect(b.kind !== 'ok' && b.failure.retryAfterMs).toBe(30_000);
  });
});

describe('retryAfterFromHeaders (the one Retry-After parser)', () => {
  it.each([
    ['10', 10_000],
    ['0', 0],
    [' 2.5 ', 2_500],
    ['Thu, 01 Jan 2026 00:01:00 GMT', 60_000],
    ['Wed, 31 Dec 2025 00:00:00 GMT', 0],
    ['soon', undefined],
    [undefined, undefined],
  ])('%s → %s', (value, want) => {
    expect(retryAfterFromHeaders(value === undefined ? {} : { 'retry-after': value }, Date.parse('2026-01-01T00:00:00Z'))).toBe(want);
  });
});

describe('amplitudeOutcome: each answer as the delivery core acts on it', () => {
  const ids = [{ deviceId: 'd1', userId: 'u1' }, { deviceId: 'd2' }, { userId: 'u3' }, { deviceId: 'd4' }];
  const outcome = (status: number, body: unknown, headers: ResponseHeaders = {}) => amplitudeOutcome(classifyAmplitudeResponse(status, body, headers, ids.length, 0), ids, 30_000);

  it.each([
    ['200', 200, { code: 200 }, { kind: 'delivered' }],
    ['400 naming events: those rejected, the rest sent again', 400, { code: 400, error: 'Invalid field values on some events', events_with_invalid_fields: { time: [1] } }, { kind: 'rejected', othersDelivered: false, rejects: [{ index: 1, reason: 'invalid_fields' }] }],
    ['400 naming nothing: split', 400, { code: 400, error: 'Invalid event JSON' }, { kind: 'split', reason: 'invalid_event' }],
    ['413: split', 413, {}, { kind: 'split', reason: 'too_large_single' }],
    ['Invalid API key: stop', 400, { code: 400, error: 'Invalid API key: x' }, { kind: 'stop', failure: 'auth' }],
    ['404: stop, a configuration no retry fixes', 404, 'Invalid request path', { kind: 'stop', failure: 'configuration' }],
    ['503: back off', 503, {}, { kind: 'backoff', failure: 'unavailable' }],
  ])('%s', (_name, status, body, want) => {
    expect(outcome(status, body)).toMatchObject(want);
  });

  it('turns the ids a 429 names into the positions to hold and to park, with the configured hold as the floor', () => {
    const o = outcome(429, {
      code: 429,
      throttled_devices: { d2: 31 },
      throttled_users: {},
      exceeded_daily_quota_devices: {},
      exceeded_daily_quota_users: { u3: 500000 },
    });
    expect(o).toMatchObject({ kind: 'hold', hold: [1], park: [2], holdMs: 30_000, parkIds: { devices: [], users: ['u3'] } });
    const longer = outcome(429, { code: 429, throttled_devices: { d4: 40 } }, { 'retry-after': '90' });
    expect(longer).toMatchObject({ kind: 'hold', hold: [3], holdMs: 90_000 });
  });
});
