/**
 * Classification of Amplitude HTTP V2 (`/2/httpapi`) responses, per amplitude-http-api.md §6–8.
 * Pure: the caller holds the batch and applies the outcome (dead-letter listed indexes, halve,
 * hold ids, back off, stop the leg).
 *
 * The HTTP status decides the family (the body's `code` mirrors it, and a proxy in between may
 * rewrite a body but not a status); the body's index and id lists decide which events are affected.
 */
import { failure, type Failure } from '../errors.js';
import { retryAfterFromHeaders } from '../delivery/backoff.js';
import type { DeliveryOutcome } from '../delivery/outcome.js';

/** Why one event of the batch is dropped (also the dead-letter reason and drop-counter label). */
export type DroppedEventReason = 'invalid_fields' | 'missing_fields' | 'invalid_id' | 'silenced_device' | 'too_large_single' | 'invalid_event';

export interface DroppedEvent {
  index: number;
  reason: DroppedEventReason;
  /** Field names Amplitude named for this event (`events_with_*` maps), when it did. */
  fields: string[];
}


export type AmplitudeOutcome =
  | { kind: 'ok'; eventsIngested?: number; serverUploadTime?: number }
  /** 400 naming bad events: dead-letter `events`, resend the rest of the batch. */
  | { kind: 'invalid_events'; indexes: number[]; events: DroppedEvent[]; failure: Failure }
  /** 400 silenced-devices form: dead-letter `events` (silenced, plus any other listed), resend the rest. */
  | { kind: 'silenced'; devices: string[]; indexes: number[]; events: DroppedEvent[]; failure: Failure }
  /** 400 `Invalid API key` (and 401/403): stop the leg, keep everything, start the 48 h clock. */
  | { kind: 'auth'; failure: Failure }
  /** 413 on a batch of two or more: halve the batch size and resend everything. */
  | { kind: 'too_large'; failure: Failure }
  /**
   * 400 that names no event on a batch of two or more ("Invalid event JSON" and the like): one of
   * the events is bad but Amplitude didn't say which, so bisect (without shrinking the steady-state
   * batch size) until the culprit is alone and comes back as `invalid_events`.
   */
  | { kind: 'split'; failure: Failure }
  /**
   * 429 with only per-second throttling: hold the listed devices/users (and the events at
   * `throttledIndexes`) for `holdMs`, resend the rest now. With no ids listed, back off the whole
   * destination.
   */
  | {
      kind: 'throttled';
      throttledDevices: string[];
      throttledUsers: string[];
      throttledIndexes: number[];
      holdMs: number;
      failure: Failure;
    }
  /**
   * 429 naming ids over the 500K/24 h quota (`devices` / `users`): park their events with reason
   * `daily_quota` until the rolling window frees up. The same response may also throttle other ids;
   * those fields mean what they mean in `throttled`.
   */
  | {
      kind: 'daily_quota';
      devices: string[];
      users: string[];
      throttledDevices: string[];
      throttledUsers: string[];
      throttledIndexes: number[];
      holdMs: number;
      failure: Failure;
    }
  /** 408, 5xx and anything unrecognised: back off and retry the whole batch (insert_id makes it safe). */
  | { kind: 'retryable'; failure: Failure }
  /** A request Amplitude will never accept as built (missing request field, bad path): a gateway bug or misconfiguration. */
  | { kind: 'fatal'; failure: Failure };

export type ResponseHeaders = Record<string, string | string[] | undefined>;

/** 400 `error` values that describe the request as a whole, not any one event (§6.2). */
const REQUEST_LEVEL_ERRORS = ['Invalid request path', 'Missing request body', 'Invalid JSON request body', 'Request missing required field'];

/**
 * @param status HTTP status of the response
 * @param body parsed JSON body, or the raw text/bytes (parsed here if JSON), or undefined
 * @param headers response headers (any case)
 * @param batchSize number of events in the request, to ignore out-of-range indexes and to tell a
 *   single-event failure from a batch one
 * @param nowMs current time, only for an HTTP-date `Retry-After`
 */
export function classifyAmplitudeResponse(
  status: number,
  body: unknown,
  headers: ResponseHeaders,
  batchSize: number,
  nowMs: number = Date.now(),
): AmplitudeOutcome {
  const b = asObject(body);
  const error = typeof b['error'] === 'string' ? b['error'] : '';
  const ra = header(headers, 'retry-after');
  const retryAfterMs = ra === undefined ? undefined : retryAfterFromHeaders({ 'retry-after': ra }, nowMs);
  const detail = error !== '' ? `: ${error}` : '';
  const extra = { status, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) };

  if (status >= 200 && status < 300) {
    // Amplitude's answers always carry `code` (amplitude-http-api.md §6). A 2xx without it (a
    // proxy's page, an endpoint that is not Amplitude's) does not say the events arrived.
    if (typeof b['code'] !== 'number') {
      return { kind: 'fatal', failure: failure('fatal', 'unexpected_status', `Amplitude answered ${status} without its JSON answer: the request may not have reached Amplitude; check AMPLITUDE_HTTP_API_URL`, extra) };
    }
    const out: AmplitudeOutcome = { kind: 'ok' };
    if (typeof b['events_ingested'] === 'number') out.eventsIngested = b['events_ingested'];
    if (typeof b['server_upload_time'] === 'number') out.serverUploadTime = b['server_upload_time'];
    return out;
  }

  if (status === 400) {
    if (error.startsWith('Invalid API key')) {
      return { kind: 'auth', failure: failure('auth', 'invalid_api_key', `Amplitude refused the API key (400${detail})`, extra) };
    }
    if (typeof b['missing_field'] === 'string' || REQUEST_LEVEL_ERRORS.includes(error)) {
      const missing = typeof b['missing_field'] === 'string' ? ` (missing_field ${b['missing_field']})` : '';
      return { kind: 'fatal', failure: failure('fatal', 'invalid_request', `Amplitude refused the request as built (400${detail})${missing}`, extra) };
    }

    const dropped = new Map<number, DroppedEvent>();
    const add = (index: number, reason: DroppedEventReason, field?: string): void => {
      let d = dropped.get(index);
      if (d === undefined) {
        d = { index, reason, fields: [] };
        dropped.set(index, d);
      }
      if (field !== undefined && !d.fields.includes(field)) d.fields.push(field);
    };
    for (const [field, idx] of indexMap(b['events_with_invalid_fields'], batchSize)) for (const i of idx) add(i, 'invalid_fields', field);
    for (const [field, idx] of indexMap(b['events_with_missing_fields'], batchSize)) for (const i of idx) add(i, 'missing_fields', field);
    for (const [field, idx] of indexMap(b['events_with_invalid_id_lengths'], batchSize)) for (const i of idx) add(i, 'invalid_id', field);
    for (const i of indexList(b['silenced_events'], batchSize)) add(i, 'silenced_device');
    const events = [...dropped.values()].sort((x, y) => x.index - y.index);
    const indexes = events.map((e) => e.index);

    const silencedDevices = stringList(b['silenced_devices']);
    if (silencedDevices.length > 0 || events.some((e) => e.reason === 'silenced_device')) {
      return {
        kind: 'silenced',
        devices: silencedDevices,
        indexes,
        events,
        failure: failure('invalid_input', 'silenced_device', `Amplitude silenced ${silencedDevices.length} device(s) (400${detail})`, extra),
      };
    }
    if (events.length > 0) {
      const first = events[0]!.reason;
      return {
        kind: 'invalid_events',
        indexes,
        events,
        failure: failure('invalid_input', first, `Amplitude refused ${events.length} of ${batchSize} event(s) (400${detail})`, extra),
      };
    }
    if (batchSize <= 1) {
      return {
        kind: 'invalid_events',
        indexes: [0],
        events: [{ index: 0, reason: 'invalid_event', fields: [] }],
        failure: failure('invalid_input', 'invalid_event', `Amplitude refused the event (400${detail})`, extra),
      };
    }
    return { kind: 'split', failure: failure('invalid_input', 'invalid_event', `Amplitude refused the batch without naming events (400${detail})`, extra) };
  }

  if (status === 401 || status === 403) {
    // 403 is Amplitude's WAF, not a key problem, but the handling is the same: nothing sent now will
    // get through, so stop the leg, keep the events and alert.
    const reason = status === 403 ? 'forbidden' : 'unauthorized';
    return { kind: 'auth', failure: failure('auth', reason, `Amplitude answered ${status}${detail}`, extra) };
  }

  if (status === 413) {
    if (batchSize <= 1) {
      return {
        kind: 'invalid_events',
        indexes: [0],
        events: [{ index: 0, reason: 'too_large_single', fields: [] }],
        failure: failure('invalid_input', 'too_large_single', `a single event is too large for Amplitude (413${detail})`, extra),
      };
    }
    return { kind: 'too_large', failure: failure('retryable', 'payload_too_large', `Amplitude payload too large for ${batchSize} events (413${detail})`, extra) };
  }

  if (status === 429) {
    const throttledDevices = idKeys(b['throttled_devices']);
    const throttledUsers = idKeys(b['throttled_users']);
    const throttledIndexes = indexList(b['throttled_events'], batchSize);
    const quotaDevices = idKeys(b['exceeded_daily_quota_devices']);
    const quotaUsers = idKeys(b['exceeded_daily_quota_users']);
    // what Amplitude asked for, if anything; the configured hold (AMPLITUDE_THROTTLE_HOLD_MS) is the floor
    const holdMs = retryAfterMs ?? 0;
    if (quotaDevices.length > 0 || quotaUsers.length > 0) {
      return {
        kind: 'daily_quota',
        devices: quotaDevices,
        users: quotaUsers,
        throttledDevices,
        throttledUsers,
        throttledIndexes,
        holdMs,
        failure: failure(
          'rate_limited',
          'daily_quota',
          `Amplitude daily quota exceeded for ${quotaDevices.length} device(s) and ${quotaUsers.length} user(s) (429${detail})`,
          extra,
        ),
      };
    }
    return {
      kind: 'throttled',
      throttledDevices,
      throttledUsers,
      throttledIndexes,
      holdMs,
      failure: failure(
        'rate_limited',
        'throttled',
        `Amplitude throttled ${throttledDevices.length} device(s) and ${throttledUsers.length} user(s) (429${detail})`,
        extra,
      ),
    };
  }

  if (status === 408 || status >= 500) {
    return { kind: 'retryable', failure: failure('retryable', status === 408 ? 'timeout' : 'server_error', `Amplitude answered ${status}${detail}`, extra) };
  }
  // 404 (a wrong path), 405, 3xx, any other 4xx: no retry soon can fix these; say so loudly.
  return { kind: 'fatal', failure: failure('fatal', 'unexpected_status', `Amplitude answered ${status}${detail}, which no retry can fix`, extra) };
}

/** The ids of each event of a batch, in order, to turn the ids a 429 names into batch positions. */
export interface EventIds {
  deviceId?: string;
  userId?: string;
}

/**
 * Amplitude's answer as the delivery core's outcome. Pure: the ids the answer names become the
 * positions of the events that carry them.
 */
export function amplitudeOutcome(o: AmplitudeOutcome, ids: readonly EventIds[], throttleHoldMs: number): DeliveryOutcome {
  switch (o.kind) {
    case 'ok':
      return { kind: 'delivered' };
    case 'invalid_events':
    case 'silenced':
      return {
        kind: 'rejected',
        othersDelivered: false,
        rejects: o.events.map((e) => ({ index: e.index, reason: e.reason, error: `${o.failure.message}${e.fields.length ? ` (fields: ${e.fields.join(', ')})` : ''}` })),
      };
    case 'too_large':
      return { kind: 'split', reason: 'too_large_single', error: o.failure.message };
    case 'split':
      return { kind: 'split', reason: 'invalid_event', error: o.failure.message };
    case 'throttled':
    case 'daily_quota': {
      const quota = o.kind === 'daily_quota' ? { devices: new Set(o.devices), users: new Set(o.users) } : undefined;
      const throttled = { devices: new Set(o.throttledDevices), users: new Set(o.throttledUsers) };
      const indexes = new Set(o.throttledIndexes);
      const hold: number[] = [];
      const park: number[] = [];
      ids.forEach((id, i) => {
        if (quota && matches(id, quota)) park.push(i);
        else if (indexes.has(i) || matches(id, throttled)) hold.push(i);
      });
      return {
        kind: 'hold',
        hold,
        // the configured hold (Amplitude advises 30 s), or longer when Amplitude says so
        holdMs: Math.max(throttleHoldMs, o.holdMs),
        park,
        parkIds: o.kind === 'daily_quota' ? { devices: o.devices, users: o.users } : { devices: [], users: [] },
        error: o.failure.message,
      };
    }
    case 'retryable':
      return { kind: 'backoff', failure: 'unavailable', error: o.failure.message, ...(o.failure.retryAfterMs !== undefined ? { retryAfterMs: o.failure.retryAfterMs } : {}) };
    case 'auth':
      return { kind: 'stop', failure: 'auth', error: o.failure.message };
    case 'fatal':
      return { kind: 'stop', failure: 'configuration', error: o.failure.message };
  }
}

function matches(id: EventIds, s: { devices: Set<string>; users: Set<string> }): boolean {
  return (id.deviceId !== undefined && s.devices.has(id.deviceId)) || (id.userId !== undefined && s.users.has(id.userId));
}

function asObject(body: unknown): Record<string, unknown> {
  let v = body;
  if (v instanceof Uint8Array) v = Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('utf8');
  if (typeof v === 'string') {
    try {
      v = JSON.parse(v);
    } catch {
      return {};
    }
  }
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

function header(headers: ResponseHeaders, name: string): string | undefined {
  for (const [k, v] of Object.entries(headers)) {
    if (k.toLowerCase() !== name) continue;
    return Array.isArray(v) ? v[0] : v;
  }
  return undefined;
}

function isIndex(v: unknown, batchSize: number): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < batchSize;
}

/** `[index, ...]`, keeping only valid in-range indexes, de-duplicated and sorted. */
function indexList(v: unknown, batchSize: number): number[] {
  if (!Array.isArray(v)) return [];
  return [...new Set(v.filter((i): i is number => isIndex(i, batchSize)))].sort((a, b) => a - b);
}

/** `{field: [index, ...]}` → entries with valid indexes only. */
function indexMap(v: unknown, batchSize: number): Array<[string, number[]]> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return [];
  const out: Array<[string, number[]]> = [];
  for (const [field, list] of Object.entries(v)) {
    const idx = indexList(list, batchSize);
    if (idx.length > 0) out.push([field, idx]);
  }
  return out;
}

/**
 * Ids named by a 429 body. Documented as `{id: rate_or_count}`; a plain array of ids is accepted
 * too, since some SDK typings declare them that way.
 */
function idKeys(v: unknown): string[] {
  if (Array.isArray(v)) return stringList(v);
  if (typeof v === 'object' && v !== null) return Object.keys(v);
  return [];
}

function stringList(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((s): s is string => typeof s === 'string') : [];
}
