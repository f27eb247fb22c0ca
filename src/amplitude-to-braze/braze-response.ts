import { retryAfterFromHeaders } from '../delivery/backoff.js';
import type { DeliveryOutcome, ItemReject } from '../delivery/outcome.js';

export type TrackArray = 'attributes' | 'events' | 'purchases';

/** The order of the arrays in every request the gateway builds: object positions count through them in this order. */
export const TRACK_ARRAYS: readonly TrackArray[] = ['attributes', 'events', 'purchases'];

/** How many objects each array of the request held (to turn Braze's per-array index into one position). */
export type ArrayCounts = Record<TrackArray, number>;

type Headers = Record<string, string | string[] | undefined>;

function parseBody(text: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(text);
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

const ARRAYS: ReadonlySet<string> = new Set(TRACK_ARRAYS);

interface NamedError {
  array: TrackArray;
  index: number;
  type: string;
}

/** Splits Braze's `errors` items into those naming an object (input_array + index) and the rest. */
function readErrors(body: Record<string, unknown> | undefined): { named: NamedError[]; other: string[] } {
  const named: NamedError[] = [];
  const other: string[] = [];
  const errors = body?.errors;
  if (!Array.isArray(errors)) return { named, other };
  for (const e of errors) {
    if (e !== null && typeof e === 'object') {
      const o = e as Record<string, unknown>;
      const type = typeof o.type === 'string' ? o.type : JSON.stringify(o);
      if (typeof o.input_array === 'string' && ARRAYS.has(o.input_array) && typeof o.index === 'number' && Number.isInteger(o.index) && o.index >= 0) {
        named.push({ array: o.input_array as TrackArray, index: o.index, type });
      } else other.push(type);
    } else other.push(String(e));
  }
  return { named, other };
}

function header(headers: Headers, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Object positions, counted through attributes, then events, then purchases. */
function positions(named: NamedError[], counts: ArrayCounts): ItemReject[] {
  const base: ArrayCounts = { attributes: 0, events: counts.attributes, purchases: counts.attributes + counts.events };
  const out: ItemReject[] = [];
  for (const e of named) {
    if (e.index >= counts[e.array]) continue;
    out.push({ index: base[e.array] + e.index, reason: 'rejected_by_destination', error: `${e.array}[${e.index}]: ${e.type}` });
  }
  return out;
}

/**
 * The reference's response table (braze-users-track.md §8) as one decision. Rejects name object
 * positions in the request (attributes, then events, then purchases); the caller maps them to its
 * items. Anything the table does not cover stops the leg loudly rather than retrying in silence.
 *
 * A 2xx whose `errors` name no object: Braze processed the request except for something it did
 * not place. Re-sending to find the culprit would duplicate whatever Braze did process (it does not
 * deduplicate events or purchases), so every object of that request is dead-lettered with reason
 * `rejected_unattributed`, and none is counted delivered.
 */
export function classifyBrazeResponse(status: number, headers: Headers, bodyText: string, counts: () => ArrayCounts, nowMs: number): DeliveryOutcome {
  const body = parseBody(bodyText);
  const message = typeof body?.message === 'string' ? body.message : bodyText.slice(0, 200);
  const { named, other } = readErrors(body);

  if (status >= 200 && status < 300) {
    // Braze answers every accepted request with its JSON (`{"message": "success", ...}`, §8). A 2xx
    // without it (a proxy's or a portal's page, an endpoint that is not Braze's) says nothing about
    // whether Braze has the data: counted as delivered it would be lost without a trace.
    if (typeof body?.message !== 'string') {
      return { kind: 'stop', failure: 'configuration', error: `Braze answered ${status} without its JSON answer (${JSON.stringify(bodyText.slice(0, 120))}): the request may not have reached Braze; check BRAZE_REST_ENDPOINT` };
    }
    // Braze sends X-RateLimit-* on every response: when the window is spent, hold before the 429.
    const remaining = header(headers, 'x-ratelimit-remaining');
    const hold = remaining !== undefined && Number(remaining) <= 0 ? retryAfterFromHeaders({ 'x-ratelimit-reset': header(headers, 'x-ratelimit-reset') }, nowMs) : undefined;
    const holdPart = hold !== undefined && hold > 0 ? { holdForMs: hold } : {};
    if (other.length > 0) {
      const c = counts();
      const total = c.attributes + c.events + c.purchases;
      const error = `Braze answered ${status} with errors naming no object: ${other.slice(0, 3).join('; ')}`;
      const rejects: ItemReject[] = [];
      for (let i = 0; i < total; i++) rejects.push({ index: i, reason: 'rejected_unattributed', error });
      return { kind: 'rejected', rejects, othersDelivered: true, ...holdPart };
    }
    if (named.length > 0) {
      const rejects = positions(named, counts());
      if (rejects.length > 0) return { kind: 'rejected', rejects, othersDelivered: true, ...holdPart };
    }
    return { kind: 'delivered', ...holdPart };
  }
  if (status === 401 || status === 403) {
    return { kind: 'stop', failure: 'auth', error: `Braze refused the API key (${status}): ${message}` };
  }
  if (status === 413 || (status === 400 && /max input length/i.test(message + other.join(' ')))) {
    return { kind: 'split', reason: 'too_large_single', error: `Braze answered ${status}: ${message}` };
  }
  if (status === 429) {
    const wait = retryAfterFromHeaders(headers, nowMs);
    return { kind: 'backoff', failure: 'rate_limited', error: `Braze rate limit: ${message}`, ...(wait !== undefined ? { retryAfterMs: wait } : {}) };
  }
  if (status === 0 || status === 408 || status >= 500) {
    const wait = retryAfterFromHeaders(headers, nowMs);
    return { kind: 'backoff', failure: 'unavailable', error: status === 0 ? `Braze unreachable: ${message}` : `Braze answered ${status}: ${message}`, ...(wait !== undefined ? { retryAfterMs: wait } : {}) };
  }
  if (status === 400) {
    if (named.length > 0) {
      // Refused as a whole for the objects it names: dead-letter those, send the others again.
      const rejects = positions(named, counts());
      if (rejects.length > 0) return { kind: 'rejected', rejects, othersDelivered: false };
    }
    // Braze documents 400 for bad content: halve until the culprit stands alone.
    return { kind: 'split', reason: 'rejected_by_destination', error: `Braze answered 400: ${message}` };
  }
  // 404 (wrong REST endpoint), 405, 3xx, other 4xx: no retry soon can fix these.
  return { kind: 'stop', failure: 'configuration', error: `Braze answered ${status}, which no retry can fix: check BRAZE_REST_ENDPOINT (${message})` };
}

/** Counts each array's objects of a request body the gateway built (read only when Braze names objects). */
export function countArrays(body: string): ArrayCounts {
  const b = parseBody(body);
  const n = (k: TrackArray) => (Array.isArray(b?.[k]) ? (b[k] as unknown[]).length : 0);
  return { attributes: n('attributes'), events: n('events'), purchases: n('purchases') };
}
