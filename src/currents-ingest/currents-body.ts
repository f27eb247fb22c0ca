/**
 * Pure validation of what Braze's Currents Custom HTTP connector posts to `POST /currents`.
 *
 * The split of responsibilities follows Braze's retry contract (braze-currents.md §5): a 400 makes
 * Braze split the batch into single events and drop any single event that gets 400 again. So a 400
 * is only returned for a request that can never succeed (garbage bytes, wrong envelope); a single
 * bad event inside a good envelope is reported by `validateCurrentsEvent` so the caller can
 * dead-letter just that event and still acknowledge the rest.
 */
import type { CurrentsEvent, CurrentsUser, JsonObject } from './currents-types.js';

export interface BodyLimits {
  /** Maximum nesting of arrays/objects inside one event (the event object itself is level 1). */
  maxDepth: number;
  /** Maximum length, in UTF-16 code units, of any string value or object key inside one event. */
  maxStringLength: number;
  /** Maximum number of events accepted in one request. */
  maxEventsPerBatch: number;
}

/**
 * Defaults, and why:
 * - `maxDepth` 64: Amplitude accepts property nesting up to 40 levels and a Currents event adds 3
 *   (event → properties → custom_properties), so nothing Amplitude would take is refused here, while
 *   walking, copying and serialising an event stays far from any stack limit.
 * - `maxStringLength` 65,536: Amplitude keeps 1,024 characters of a string anyway, but legitimate
 *   Currents fields (URLs, user agents, `message_extras` JSON) can be longer and are worth keeping
 *   in the dead-letter copy; 64 Ki only exists to stop one value from eating memory. Braze itself
 *   drops events over 900 KB.
 * - `maxEventsPerBatch` 1,000: Braze sends up to 100 events per batch by default; ten times that
 *   tolerates a connector configured for larger batches while bounding the work of one request.
 *   Over the limit the answer is 413, so Braze splits the batch instead of dropping it.
 */
export const DEFAULT_BODY_LIMITS: Readonly<BodyLimits> = Object.freeze({
  maxDepth: 64,
  maxStringLength: 65_536,
  maxEventsPerBatch: 1_000,
});

/**
 * Keys that let a later `Object.assign`, merge or `obj[a][b] = v` reach `Object.prototype`.
 * `JSON.parse` stores them as harmless own properties, but nothing downstream should have to
 * remember that, so they are refused at the edge. Refusing (rather than silently dropping the key)
 * keeps customer data unaltered: the request gets a 400, Braze re-sends the events one by one, and
 * only the event carrying such a key is refused and counted. A side effect: a custom property
 * literally named `constructor` or `prototype` is refused as well.
 */
export const FORBIDDEN_KEYS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

/** Largest epoch-seconds value accepted (9999-12-31T23:59:59Z); millisecond values are above it. */
export const MAX_EPOCH_SECONDS = 253_402_300_799;

export type SafeJsonParseResult =
  | { ok: true; /** `undefined` for an empty (or whitespace-only) body */ value: unknown }
  | { ok: false; status: 400; reason: 'invalid_utf8' | 'invalid_json' | 'forbidden_key'; message: string };

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Parses a request body as JSON. Invalid UTF-8 is refused rather than replaced with U+FFFD,
 * because a replaced id or property would be forwarded as if Braze had sent it. A leading BOM is
 * tolerated. An empty body yields `value: undefined`, which `parseCurrentsBody` treats as an empty
 * batch (Braze requires that to be a no-op).
 */
export function safeJsonParse(buf: Buffer | Uint8Array | string): SafeJsonParseResult {
  let text: string;
  if (typeof buf === 'string') {
    text = buf;
  } else {
    try {
      text = utf8.decode(buf);
    } catch {
      return { ok: false, status: 400, reason: 'invalid_utf8', message: 'request body is not valid UTF-8' };
    }
  }
  if (text.trim() === '') return { ok: true, value: undefined };
  let value: unknown;
  try {
    // No reviver: V8's plain JSON.parse is iterative, a reviver walk is recursive and would let a
    // deeply nested body overflow the stack.
    value = JSON.parse(text);
  } catch (err) {
    const detail = err instanceof Error ? err.message : String(err);
    return { ok: false, status: 400, reason: 'invalid_json', message: `request body is not valid JSON: ${truncate(detail, 200)}` };
  }
  const bad = findForbiddenKey(value);
  if (bad !== undefined) {
    return { ok: false, status: 400, reason: 'forbidden_key', message: `request body contains the forbidden key ${JSON.stringify(bad)}` };
  }
  return { ok: true, value };
}

function findForbiddenKey(root: unknown): string | undefined {
  const stack: unknown[] = [root];
  while (stack.length > 0) {
    const v = stack.pop();
    if (Array.isArray(v)) {
      for (const item of v) if (typeof item === 'object' && item !== null) stack.push(item);
    } else if (typeof v === 'object' && v !== null) {
      for (const key of Object.keys(v)) {
        if (FORBIDDEN_KEYS.has(key)) return key;
        const child: unknown = (v as Record<string, unknown>)[key];
        if (typeof child === 'object' && child !== null) stack.push(child);
      }
    }
  }
  return undefined;
}

export type ParseBodyResult =
  | { ok: true; events: unknown[] }
  | { ok: false; status: 400 | 413; message: string };

/**
 * Checks the `{"events": [...]}` envelope of an already-parsed body. Individual events are not
 * inspected here (see `validateCurrentsEvent`). A missing body, `{}` or `"events": null` is an empty
 * batch. Too many events is a 413 rather than a 400: Braze answers 413 by splitting the batch
 * smaller, whereas a 400 would make it fall back to single events and permanently drop any failure.
 */
export function parseCurrentsBody(raw: unknown, limits: BodyLimits = DEFAULT_BODY_LIMITS): ParseBodyResult {
  if (raw === undefined) return { ok: true, events: [] };
  if (!isPlainObject(raw)) {
    return { ok: false, status: 400, message: 'body must be a JSON object of the form {"events": [...]}' };
  }
  const events = raw['events'];
  if (events === undefined || events === null) return { ok: true, events: [] };
  if (!Array.isArray(events)) {
    return { ok: false, status: 400, message: '"events" must be an array' };
  }
  if (events.length > limits.maxEventsPerBatch) {
    return {
      ok: false,
      status: 413,
      message: `batch has ${events.length} events, more than the ${limits.maxEventsPerBatch} accepted per request`,
    };
  }
  return { ok: true, events: events as unknown[] };
}

export type CheckResult =
  | { ok: true }
  | { ok: false; reason: 'too_deep' | 'string_too_long' | 'forbidden_key' | 'not_json'; message: string };

/**
 * Walks a value iteratively (an explicit stack, so 10,000 levels of nesting cost a loop, not the
 * call stack) and refuses nesting deeper than `maxDepth`, strings or keys longer than
 * `maxStringLength`, forbidden keys, and anything that is not plain JSON (functions, `undefined`,
 * non-finite numbers, class instances such as Buffers or Dates). A scalar root is depth 0, the
 * outermost object or array is depth 1. The walk stops at the first violation.
 */
export function checkDepthAndStrings(value: unknown, limits: Pick<BodyLimits, 'maxDepth' | 'maxStringLength'>): CheckResult {
  const stack: Array<{ v: unknown; depth: number; path: string }> = [{ v: value, depth: 0, path: '$' }];
  while (stack.length > 0) {
    const { v, depth, path } = stack.pop()!;
    if (v === null || typeof v === 'boolean') continue;
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) return { ok: false, reason: 'not_json', message: `${path} is not a finite number` };
      continue;
    }
    if (typeof v === 'string') {
      if (v.length > limits.maxStringLength) {
        return { ok: false, reason: 'string_too_long', message: `${path} is ${v.length} characters long, over the limit of ${limits.maxStringLength}` };
      }
      continue;
    }
    if (Array.isArray(v)) {
      const d = depth + 1;
      if (d > limits.maxDepth) return tooDeep(path, limits.maxDepth);
      for (let i = v.length - 1; i >= 0; i--) stack.push({ v: v[i], depth: d, path: `${path}[${i}]` });
      continue;
    }
    if (isPlainObject(v)) {
      const d = depth + 1;
      if (d > limits.maxDepth) return tooDeep(path, limits.maxDepth);
      const keys = Object.keys(v);
      for (let i = keys.length - 1; i >= 0; i--) {
        const key = keys[i]!;
        if (FORBIDDEN_KEYS.has(key)) return { ok: false, reason: 'forbidden_key', message: `${path} has the forbidden key ${JSON.stringify(key)}` };
        if (key.length > limits.maxStringLength) {
          return { ok: false, reason: 'string_too_long', message: `${path} has a key ${key.length} characters long, over the limit of ${limits.maxStringLength}` };
        }
        stack.push({ v: v[key], depth: d, path: `${path}.${truncate(key, 40)}` });
      }
      continue;
    }
    return { ok: false, reason: 'not_json', message: `${path} is not a JSON value (${describeType(v)})` };
  }
  return { ok: true };
}

function tooDeep(path: string, maxDepth: number): CheckResult {
  return { ok: false, reason: 'too_deep', message: `${path} nests deeper than ${maxDepth} levels` };
}

export type EventRejectReason =
  | 'not_object'
  | 'missing_id'
  | 'missing_event_type'
  | 'invalid_time'
  | 'invalid_user'
  | 'invalid_properties'
  | 'too_deep'
  | 'string_too_long'
  | 'forbidden_key'
  | 'not_json';

export type ValidateEventResult =
  | { ok: true; event: CurrentsEvent }
  | { ok: false; reason: EventRejectReason; message: string };

const USER_FIELDS = ['user_id', 'external_user_id', 'device_id', 'timezone'] as const;

/**
 * Validates one event of the HTTP connector shape and returns a normalised copy.
 *
 * Mandatory, because every Currents schema has them and the pipeline cannot work without them:
 * `id` (non-empty string: the de-duplication key and Amplitude `insert_id`), `event_type`
 * (non-empty string: decides the mapping), `time` (finite, non-negative epoch seconds not above
 * year 9999, which also catches millisecond values sent by mistake).
 * Optional: `user` (an object whose four fields are strings or null; nulls become absent; no
 * identity at all is the mapper's `no_identity`, not a malformed event, so it can be counted as
 * such) and `properties` (an object, default `{}`). The Braze `user_id` is not required: it is
 * nullable on the inbound-message events and unused by the mapping.
 * Unknown top-level fields are dropped: Braze adds fields over time, and the event's payload lives
 * in `properties`.
 */
export function validateCurrentsEvent(
  raw: unknown,
  limits: Pick<BodyLimits, 'maxDepth' | 'maxStringLength'> = DEFAULT_BODY_LIMITS,
  /** the caller already ran checkDepthAndStrings over the whole body this event came from */
  bodyChecked = false,
): ValidateEventResult {
  if (!isPlainObject(raw)) return { ok: false, reason: 'not_object', message: `event must be a JSON object, got ${describeType(raw)}` };
  if (!bodyChecked) {
    const checked = checkDepthAndStrings(raw, limits);
    if (!checked.ok) return checked;
  }

  const id = raw['id'];
  if (typeof id !== 'string' || id.length === 0) {
    return { ok: false, reason: 'missing_id', message: '"id" must be a non-empty string' };
  }
  const eventType = raw['event_type'];
  if (typeof eventType !== 'string' || eventType.length === 0) {
    return { ok: false, reason: 'missing_event_type', message: '"event_type" must be a non-empty string' };
  }
  const time = raw['time'];
  if (typeof time !== 'number' || !Number.isFinite(time) || time < 0 || time > MAX_EPOCH_SECONDS) {
    return { ok: false, reason: 'invalid_time', message: `"time" must be epoch seconds between 0 and ${MAX_EPOCH_SECONDS}` };
  }

  const rawUser = raw['user'];
  const user: CurrentsUser = {};
  if (rawUser !== undefined && rawUser !== null) {
    if (!isPlainObject(rawUser)) return { ok: false, reason: 'invalid_user', message: '"user" must be an object' };
    for (const field of USER_FIELDS) {
      const v = rawUser[field];
      if (v === undefined || v === null) continue;
      if (typeof v !== 'string') return { ok: false, reason: 'invalid_user', message: `"user.${field}" must be a string or null` };
      user[field] = v;
    }
  }

  const rawProps = raw['properties'];
  let properties: JsonObject = {};
  if (rawProps !== undefined && rawProps !== null) {
    if (!isPlainObject(rawProps)) return { ok: false, reason: 'invalid_properties', message: '"properties" must be an object' };
    // checkDepthAndStrings has established that the whole event is plain JSON.
    properties = rawProps as JsonObject;
  }

  return { ok: true, event: { id, event_type: eventType, time, user, properties } };
}

/** True for `{...}` literals and JSON.parse output; false for arrays, null, and class instances. */
export function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function describeType(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'object') {
    const name = (v as { constructor?: { name?: unknown } }).constructor?.name;
    return typeof name === 'string' ? name : 'object';
  }
  return typeof v;
}

function truncate(s: string, n: number): string {
  return s.length <= n ? s : `${s.slice(0, n)}…`;
}
