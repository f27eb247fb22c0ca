import { failure, type Failure } from '../errors.js';
import { retryAfterFromHeaders } from '../delivery/backoff.js';

export type TrackArray = 'events' | 'attributes' | 'purchases';

export interface ObjectError {
  array: TrackArray;
  index: number;
  type: string;
}

export type BrazeOutcome =
  /** accepted; `objectErrors` names the objects Braze refused (the rest were processed) */
  | { kind: 'ok'; objectErrors: ObjectError[]; unattributedErrors: string[]; holdUntilMs?: number }
  /** the body was too big (413) or over the per-request object cap: split it */
  | { kind: 'split'; failure: Failure }
  /** refused as a whole for its content: isolate the bad objects by splitting, dead-letter a lone one */
  | { kind: 'invalid'; failure: Failure; objectErrors: ObjectError[] }
  | { kind: 'retry'; failure: Failure }
  | { kind: 'stop'; failure: Failure };

type Headers = Record<string, string | string[] | undefined>;

function parseBody(text: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(text);
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

const ARRAYS: ReadonlySet<string> = new Set(['events', 'attributes', 'purchases']);

/** Splits Braze's `errors` items into those naming an object (index + array) and the rest. */
function readErrors(body: Record<string, unknown> | undefined): { named: ObjectError[]; other: string[] } {
  const named: ObjectError[] = [];
  const other: string[] = [];
  const errors = body?.errors;
  if (!Array.isArray(errors)) return { named, other };
  for (const e of errors) {
    if (e !== null && typeof e === 'object') {
      const o = e as Record<string, unknown>;
      const type = typeof o.type === 'string' ? o.type : JSON.stringify(o);
      if (typeof o.input_array === 'string' && ARRAYS.has(o.input_array) && typeof o.index === 'number' && Number.isInteger(o.index)) {
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

/**
 * The reference's response table (braze-users-track.md §8) as one decision. Statuses Braze does
 * not document are classified by their HTTP meaning; anything unknown is retried, never dropped.
 */
export function classifyBrazeResponse(status: number, headers: Headers, bodyText: string, nowMs: number): BrazeOutcome {
  const body = parseBody(bodyText);
  const message = typeof body?.message === 'string' ? body.message : bodyText.slice(0, 200);
  const { named, other } = readErrors(body);

  if (status >= 200 && status < 300) {
    // Braze sends X-RateLimit-* on every response: when the window is spent, hold before the 429.
    const remaining = Number(header(headers, 'x-ratelimit-remaining'));
    const reset = Number(header(headers, 'x-ratelimit-reset'));
    const hold = header(headers, 'x-ratelimit-remaining') !== undefined && remaining <= 0 && reset > 0 ? reset * 1000 : undefined;
    return { kind: 'ok', objectErrors: named, unattributedErrors: other, ...(hold !== undefined && hold > nowMs ? { holdUntilMs: hold } : {}) };
  }
  if (status === 401 || status === 403) {
    return { kind: 'stop', failure: failure('auth', `http_${status}`, `Braze refused the API key (${status}): ${message}`, { status }) };
  }
  if (status === 404) {
    return { kind: 'stop', failure: failure('fatal', 'http_404', `Braze answered 404: check BRAZE_REST_ENDPOINT (${message})`, { status }) };
  }
  if (status === 413 || (status === 400 && /max input length/i.test(message + other.join(' ')))) {
    return { kind: 'split', failure: failure('invalid_input', 'too_large', `Braze answered ${status}: ${message}`, { status }) };
  }
  if (status === 429) {
    const wait = retryAfterFromHeaders(headers, nowMs);
    return { kind: 'retry', failure: failure('rate_limited', 'http_429', `Braze rate limit: ${message}`, { status, ...(wait !== undefined ? { retryAfterMs: wait } : {}) }) };
  }
  if (status === 408 || status >= 500 || status === 0) {
    const wait = retryAfterFromHeaders(headers, nowMs);
    return { kind: 'retry', failure: failure('retryable', `http_${status}`, `Braze answered ${status}: ${message}`, { status, ...(wait !== undefined ? { retryAfterMs: wait } : {}) }) };
  }
  if (status >= 400 && status < 500) {
    return { kind: 'invalid', failure: failure('invalid_input', 'rejected_by_destination', `Braze answered ${status}: ${message}`, { status }), objectErrors: named };
  }
  return { kind: 'retry', failure: failure('retryable', `http_${status}`, `unexpected status ${status} from Braze`, { status }) };
}
