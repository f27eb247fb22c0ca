/**
 * Dead letters of single Braze objects. When Braze refuses one object of a request (say a
 * purchase), only that object is dead-lettered, as its own record, and `replay` sends exactly that
 * object back to `/users/track`, not the whole Amplitude event (whose custom event and attributes
 * Braze had accepted and would record twice: Braze does not deduplicate).
 *
 * Record format (topic `gateway.dead-letter`, written through DeadLetterWriter):
 *  - value: the Braze object's JSON, exactly as it was sent;
 *  - key: the source message's key (the user's identity), so a replay keeps the user's order;
 *  - the usual headers (`reason`, `error`, `leg`, `connector`, `source-topic`, `source-partition`,
 *    `source-offset`, `first-failure-time`), plus
 *    `payload: braze-object`, `braze-array: attributes | events | purchases`, and
 *    `braze-index`: the object's position among the objects its source event became (0 for the
 *    attributes object, events and purchases counted in order), so several objects of one event
 *    can be told apart; for an attributes object also `braze-user` (the attribute state's key of
 *    the user) and `event-time` (epoch ms of the event it came from), so `replay` can leave out
 *    what the attribute state knows to be newer in Braze.
 */
import type { DeadLetter } from '../kafka/dead-letter.js';
import type { DeadLetterReason } from '../delivery/outcome.js';

export type BrazeArrayName = 'attributes' | 'events' | 'purchases';
const ARRAYS: readonly BrazeArrayName[] = ['attributes', 'events', 'purchases'];

export const BRAZE_OBJECT_HEADERS = {
  payload: 'payload',
  array: 'braze-array',
  index: 'braze-index',
  user: 'braze-user',
  eventTime: 'event-time',
} as const;

/** The `payload` header value that marks a record as one Braze object. */
export const BRAZE_OBJECT_PAYLOAD = 'braze-object';

export interface BrazeObjectDeadLetterInput {
  array: BrazeArrayName;
  /** the object's JSON as sent */
  json: string;
  /** position among the objects of its source event (see the module comment) */
  index?: number;
  reason: DeadLetterReason;
  /** Braze's error for the object */
  error: string;
  connector: string;
  /** the Kafka message the object came from */
  source: { topic: string; partition: number; offset: string };
  key: Buffer | string | null;
  firstFailureMs: number;
  /** for an attributes object: the attribute state's user key and the event's time (epoch ms) */
  user?: string;
  eventTimeMs?: number;
}

/** The dead letter for one refused Braze object; hand it to `DeadLetterWriter.write`. */
export function brazeObjectDeadLetter(o: BrazeObjectDeadLetterInput): DeadLetter {
  return {
    leg: 'outbound',
    connector: o.connector,
    reason: o.reason,
    error: o.error,
    value: Buffer.from(o.json, 'utf8'),
    key: o.key,
    source: o.source,
    firstFailureMs: o.firstFailureMs,
    extraHeaders: {
      [BRAZE_OBJECT_HEADERS.payload]: BRAZE_OBJECT_PAYLOAD,
      [BRAZE_OBJECT_HEADERS.array]: o.array,
      ...(o.index !== undefined ? { [BRAZE_OBJECT_HEADERS.index]: String(o.index) } : {}),
      ...(o.array === 'attributes' && o.user !== undefined ? { [BRAZE_OBJECT_HEADERS.user]: o.user } : {}),
      ...(o.array === 'attributes' && o.eventTimeMs !== undefined ? { [BRAZE_OBJECT_HEADERS.eventTime]: String(o.eventTimeMs) } : {}),
    },
  };
}

export type BrazeObjectRecord =
  | { ok: true; array: BrazeArrayName; object: Record<string, unknown>; json: string }
  | { ok: false; why: string };

/** True when a dead letter's headers mark it as one Braze object. */
export function isBrazeObjectRecord(headers: Readonly<Record<string, string>>): boolean {
  return headers[BRAZE_OBJECT_HEADERS.payload] === BRAZE_OBJECT_PAYLOAD;
}

/** Reads one Braze-object dead letter back (for `replay`). */
export function readBrazeObjectRecord(headers: Readonly<Record<string, string>>, value: Buffer | null): BrazeObjectRecord {
  if (!isBrazeObjectRecord(headers)) return { ok: false, why: 'not a braze-object record' };
  const array = headers[BRAZE_OBJECT_HEADERS.array];
  if (!ARRAYS.includes(array as BrazeArrayName)) return { ok: false, why: `unknown braze-array ${JSON.stringify(array)}` };
  if (value === null) return { ok: false, why: 'no value' };
  const json = value.toString('utf8');
  let object: unknown;
  try {
    object = JSON.parse(json);
  } catch {
    return { ok: false, why: 'value is not JSON' };
  }
  if (typeof object !== 'object' || object === null || Array.isArray(object)) return { ok: false, why: 'value is not a JSON object' };
  return { ok: true, array: array as BrazeArrayName, object: object as Record<string, unknown>, json };
}

/** The objects of one source event as the leg serialised them. */
export interface SerialisedObjects {
  attributesJson?: string;
  eventJson?: string;
  purchaseJsons: readonly string[];
}

export interface LocatedObject {
  /** index of the item (source event) in the batch */
  item: number;
  array: BrazeArrayName;
  json: string;
  /** position among the item's objects: attributes 0, then the event, then the purchases */
  index: number;
}

/**
 * Maps positions in a `/users/track` body built from `items` (attributes of every item first,
 * then events, then purchases: the order BrazeClient and Braze's `errors[].index` use, counted
 * across the three arrays) back to the object and the item it came from.
 */
export function locateObjects(items: readonly SerialisedObjects[]): LocatedObject[] {
  const out: LocatedObject[] = [];
  items.forEach((it, i) => {
    if (it.attributesJson !== undefined) out.push({ item: i, array: 'attributes', json: it.attributesJson, index: 0 });
  });
  items.forEach((it, i) => {
    if (it.eventJson !== undefined) out.push({ item: i, array: 'events', json: it.eventJson, index: it.attributesJson !== undefined ? 1 : 0 });
  });
  items.forEach((it, i) => {
    const base = (it.attributesJson !== undefined ? 1 : 0) + (it.eventJson !== undefined ? 1 : 0);
    it.purchaseJsons.forEach((p, k) => out.push({ item: i, array: 'purchases', json: p, index: base + k }));
  });
  return out;
}

/**
 * One `/users/track` body from single objects, in the order attributes, events, purchases, and
 * for each body position the index of the object it came from (in `objects`).
 */
export function buildObjectsBody(objects: ReadonlyArray<{ array: BrazeArrayName; json: string }>): { body: string; owners: number[] } {
  const parts: Record<BrazeArrayName, string[]> = { attributes: [], events: [], purchases: [] };
  const owners: Record<BrazeArrayName, number[]> = { attributes: [], events: [], purchases: [] };
  objects.forEach((o, i) => {
    parts[o.array].push(o.json);
    owners[o.array].push(i);
  });
  const fields = ARRAYS.filter((a) => parts[a].length > 0).map((a) => `"${a}":[${parts[a].join(',')}]`);
  return { body: `{${fields.join(',')}}`, owners: [...owners.attributes, ...owners.events, ...owners.purchases] };
}

export interface ObjectReject<Reason extends string = string> extends LocatedObject {
  reason: Reason;
  error: string;
}

/**
 * Braze's per-object refusals (positions in the body built from `items`, as BrazeClient reports
 * them) grouped by the item they belong to, each with its object: what the leg needs to write one
 * dead letter per refused object (`brazeObjectDeadLetter`) and to settle the item's attribute
 * write (`release` when its attributes object is among them, `confirm` otherwise). Positions that
 * name no object are left out.
 */
export function rejectsByItem<Reason extends string>(
  items: readonly SerialisedObjects[],
  rejects: ReadonlyArray<{ index: number; reason: Reason; error: string }>,
): Map<number, Array<ObjectReject<Reason>>> {
  const located = locateObjects(items);
  const out = new Map<number, Array<ObjectReject<Reason>>>();
  const seen = new Set<number>();
  for (const r of rejects) {
    const o = located[r.index];
    if (o === undefined || seen.has(r.index)) continue;
    seen.add(r.index);
    const list = out.get(o.item);
    const entry = { ...o, reason: r.reason, error: r.error };
    if (list) list.push(entry);
    else out.set(o.item, [entry]);
  }
  return out;
}
