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
import type { DeadLetterReason } from '../delivery/outcome.js';

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
 * remember that, so they are refused at the edge, event by event: the event carrying one is
 * dead-lettered (reason `forbidden_key`, its bytes unaltered, so nothing is lost and it can be
 * inspected) and the rest of its batch is stored. Refusing rather than silently dropping the key
 * keeps customer data unaltered. A side effect: a custom property literally named `constructor`
 * or `prototype` is refused as well.
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
 * batch (Braze requires that to be a no-op). A forbidden key anywhere refuses the whole value:
 * right for one Kafka message (one event); `POST /currents` uses `parseJsonText` and decides per
 * event instead.
 */
export function safeJsonParse(buf: Buffer | Uint8Array | string): SafeJsonParseResult {
  const parsed = parseJsonText(buf);
  if (!parsed.ok) return parsed;
  const bad = findForbiddenKey(parsed.value);
  if (bad !== undefined) {
    return { ok: false, status: 400, reason: 'forbidden_key', message: `request body contains the forbidden key ${JSON.stringify(bad)}` };
  }
  return { ok: true, value: parsed.value };
}

export type JsonTextResult =
  | { ok: true; /** `undefined` for an empty (or whitespace-only) body */ value: unknown; /** the decoded text, BOM removed */ text: string }
  | { ok: false; status: 400; reason: 'invalid_utf8' | 'invalid_json'; message: string };

/**
 * UTF-8 (strict) and JSON, nothing more: forbidden keys are left for the caller to judge per event.
 * This is safe because `JSON.parse` defines every key, `__proto__` included, as an own data
 * property of a fresh object whose prototype stays `Object.prototype` (CreateDataProperty, not
 * `[[Set]]`): parsing alone never reaches a prototype. The danger is only in later merges that
 * copy such keys with assignment, which is why `validateCurrentsEvent` refuses an event carrying
 * one before anything copies it.
 */
export function parseJsonText(buf: Buffer | Uint8Array | string): JsonTextResult {
  let text: string;
  if (typeof buf === 'string') {
    text = buf.charCodeAt(0) === 0xfeff ? buf.slice(1) : buf;
  } else {
    try {
      text = utf8.decode(buf);
    } catch {
      return { ok: false, status: 400, reason: 'invalid_utf8', message: 'request body is not valid UTF-8' };
    }
  }
  if (text.trim() === '') return { ok: true, value: undefined, text };
  try {
    // No reviver: V8's plain JSON.parse is iterative, a reviver walk is recursive and would let a
    // deeply nested body overflow the stack.
    return { ok: true, value: JSON.parse(text) as unknown, text };
  } catch (err) {
    const detail = err instanceof Error ? err.message : String(err);
    return { ok: false, status: 400, reason: 'invalid_json', message: `request body is not valid JSON: ${truncate(detail, 200)}` };
  }
}

/**
 * The source text of each element of the top-level `"events"` array of a JSON text that
 * `JSON.parse` has already accepted (so the scan may assume it is well formed), in order; the last
 * `"events"` key wins, as in `JSON.parse`. Iterative, so any nesting costs a loop, not the stack.
 * Used for dead letters, whose value is the event exactly as it was sent, including events that
 * `JSON.stringify` could not write back (it recurses, and overflows at a few thousand levels).
 * Returns undefined when the text is not an object with an `"events"` array.
 */
export function eventSources(text: string): string[] | undefined {
  let i = 0;
  const n = text.length;
  const ws = (): void => {
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) i++;
      else break;
    }
  };
  /** i at an opening quote: moves past the closing quote */
  const skipString = (): void => {
    i++;
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 0x5c) i += 2;
      else if (c === 0x22) {
        i++;
        return;
      } else i++;
    }
  };
  /** i at the first character of a value: moves past it */
  const skipValue = (): void => {
    const c = text.charCodeAt(i);
    if (c === 0x22) return skipString();
    if (c === 0x7b || c === 0x5b) {
      let depth = 0;
      while (i < n) {
        const d = text.charCodeAt(i);
        if (d === 0x22) {
          skipString();
          continue;
        }
        if (d === 0x7b || d === 0x5b) depth++;
        else if (d === 0x7d || d === 0x5d) {
          depth--;
          if (depth === 0) {
            i++;
            return;
          }
        }
        i++;
      }
      return;
    }
    // number, true, false, null
    while (i < n) {
      const d = text.charCodeAt(i);
      if (d === 0x2c || d === 0x7d || d === 0x5d || d === 0x20 || d === 0x0a || d === 0x0d || d === 0x09) return;
      i++;
    }
  };

  ws();
  if (text.charCodeAt(i) !== 0x7b) return undefined;
  i++;
  let found: string[] | undefined;
  for (;;) {
    ws();
    if (i >= n || text.charCodeAt(i) === 0x7d) break;
    const keyStart = i;
    skipString();
    const key: unknown = JSON.parse(text.slice(keyStart, i));
    ws();
    i++; // ':'
    ws();
    if (key === 'events' && text.charCodeAt(i) === 0x5b) {
      const items: string[] = [];
      i++;
      for (;;) {
        ws();
        if (i >= n) return undefined;
        if (text.charCodeAt(i) === 0x5d) {
          i++;
          break;
        }
        const start = i;
        skipValue();
        items.push(text.slice(start, i));
        ws();
        if (text.charCodeAt(i) === 0x2c) i++;
      }
      found = items;
    } else {
      skipValue();
    }
    ws();
    if (text.charCodeAt(i) === 0x2c) i++;
  }
  return found;
}

export type ContentKind = { ok: true; kind: 'json' | 'avro' } | { ok: false; message: string };

/**
 * What a `POST /currents` body is, from its Content-Type. Braze's Custom HTTP connector posts JSON
 * (its documented contract names the body, `{"events": [...]}`, and no media type), so
 * `application/json` (any `+json` type too) with or without `charset=utf-8` is JSON, and so is a
 * request that names no type at all: refusing one would make Braze retry a valid batch for days.
 * `avro/binary` (the Avro specification's media type for its object container files, as the
 * storage connectors write them) is Avro. Anything else, `text/plain` included, is refused with
 * 415 before the body is read: guessing would accept what the sender did not mean as JSON.
 */
export function currentsContentKind(header: string | undefined): ContentKind {
  if (header === undefined || header.trim() === '') return { ok: true, kind: 'json' };
  const [type = '', ...params] = header.split(';').map((p) => p.trim());
  const media = type.toLowerCase();
  if (media === 'avro/binary') return { ok: true, kind: 'avro' };
  if (media === 'application/json' || /^application\/[a-z0-9.+-]+\+json$/.test(media)) {
    for (const p of params) {
      const m = /^charset\s*=\s*"?([^";]*)"?$/i.exec(p);
      if (m && !/^utf-?8$/i.test((m[1] ?? '').trim())) return { ok: false, message: `charset ${JSON.stringify(m[1])} is not supported; send JSON as UTF-8` };
    }
    return { ok: true, kind: 'json' };
  }
  return { ok: false, message: `Content-Type ${JSON.stringify(header.slice(0, 100))} is not supported; send application/json (Braze Currents) or avro/binary (an Avro object container file)` };
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
 *
 * Every consumed and every received event is walked, so the walk that passes allocates nothing
 * per node (two reused stacks, no path strings); only a value that fails is walked a second time,
 * by `describeViolation`, to say where.
 */
export function checkDepthAndStrings(value: unknown, limits: Pick<BodyLimits, 'maxDepth' | 'maxStringLength'>): CheckResult {
  return withinLimits(value, limits) ? { ok: true } : describeViolation(value, limits);
}

// Reused by withinLimits: it is synchronous, so one pair serves every call. Cleared as it pops,
// so it keeps no event alive; its length stays at the widest value seen.
const walkValues: unknown[] = [];
const walkDepths: number[] = [];

function withinLimits(value: unknown, limits: Pick<BodyLimits, 'maxDepth' | 'maxStringLength'>): boolean {
  const values = walkValues;
  const depths = walkDepths;
  const { maxDepth, maxStringLength } = limits;
  let top = 0;
  values[0] = value;
  depths[0] = 0;
  let ok = true;
  while (top >= 0) {
    const v = values[top];
    const depth = depths[top]!;
    values[top--] = undefined;
    if (typeof v === 'string') {
      if (v.length > maxStringLength) ok = false;
    } else if (typeof v === 'number') {
      if (!Number.isFinite(v)) ok = false;
    } else if (v === null || typeof v === 'boolean') {
      continue;
    } else if (Array.isArray(v)) {
      if (depth + 1 > maxDepth) ok = false;
      else for (let i = v.length - 1; i >= 0; i--) (values[++top] = v[i]), (depths[top] = depth + 1);
    } else if (isPlainObject(v)) {
      if (depth + 1 > maxDepth) ok = false;
      else
        for (const key of Object.keys(v)) {
          if (FORBIDDEN_KEYS.has(key) || key.length > maxStringLength) {
            ok = false;
            break;
          }
          values[++top] = v[key];
          depths[top] = depth + 1;
        }
    } else {
      ok = false;
    }
    if (!ok) {
      // leave nothing referenced from the shared stack
      for (let i = 0; i <= top; i++) values[i] = undefined;
      return false;
    }
  }
  return true;
}

/** A violation of a value `withinLimits` refused, with its path: the same rules, one object per node. */
function describeViolation(value: unknown, limits: Pick<BodyLimits, 'maxDepth' | 'maxStringLength'>): CheckResult {
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
  // Unreachable while both walks apply the same rules; said rather than passed silently.
  return { ok: false, reason: 'not_json', message: '$ was refused by the limits walk but no violation was found' };
}

function tooDeep(path: string, maxDepth: number): CheckResult {
  return { ok: false, reason: 'too_deep', message: `${path} nests deeper than ${maxDepth} levels` };
}

/** Why one event is refused: members of the closed dead-letter reason set, so they are written as they are. */
export type EventRejectReason = Extract<
  DeadLetterReason,
  'not_object' | 'missing_id' | 'missing_event_type' | 'invalid_time' | 'invalid_user' | 'invalid_properties' | 'too_deep' | 'string_too_long' | 'forbidden_key' | 'not_json'
>;

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
