/**
 * Reads one Kafka message of the `amplitude.events` topic into a single internal shape, whichever
 * of Amplitude's two shapes it arrives in (reference/amplitude-event-model.md §1):
 *  - export / streaming shape: `client_event_time` and `event_time` as UTC strings, `$insert_id`,
 *    revenue as `$revenue`, `$price`, ... inside `event_properties`;
 *  - ingest (HTTP V2) shape: `time` in epoch ms, `insert_id`, revenue fields at top level.
 */
import { describeError } from '../errors.js';
import type { JsonObject, JsonValue } from './braze-types.js';

export interface AmplitudeInEvent {
  eventType: string;
  /** epoch ms, always set (falls back to the Kafka timestamp, then the current time) */
  timeMs: number;
  insertId?: string;
  userId?: string;
  deviceId?: string;
  eventProperties?: JsonObject;
  userProperties?: JsonObject;
  revenue?: number;
  price?: number;
  quantity?: number;
  productId?: string;
  revenueType?: string;
  currency?: string;
  /**
   * Several products in one revenue event: top-level `products`, or `$products` / `products` in
   * `event_properties`; each entry `{productId, price, quantity, revenueType, revenue}`.
   */
  products?: JsonValue[];
  library?: string;
}

export type ParseFailureReason = 'not_json' | 'not_object' | 'no_event_type';

export type ParseResult =
  | { ok: true; event: AmplitudeInEvent }
  | { ok: false; reason: ParseFailureReason; message: string };

/**
 * Where the export shape keeps the revenue fields. The mapper consumes these keys instead of
 * reporting them as dropped `$` properties.
 */
export const REVENUE_PROPERTY_KEYS: ReadonlySet<string> = new Set([
  '$revenue',
  '$price',
  '$quantity',
  '$productId',
  '$revenueType',
  '$currency',
  '$products',
]);

// Clock fields in order: Amplitude's `event_time` (the device time corrected for the device's clock
// skew), then the device's own `client_event_time`, then the ingest shape's `time`, then the server
// clocks as a last resort.
const TIME_FIELDS = ['event_time', 'client_event_time', 'time', 'server_received_time', 'server_upload_time'] as const;

/** ECMAScript's Date range; `new Date(ms).toISOString()` throws outside it. */
const MAX_TIME_MS = 8.64e15;

export function isJsonObject(v: JsonValue | undefined): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function parseAmplitudeMessage(value: Buffer | null, kafkaTimestampMs?: number): ParseResult {
  if (value === null) return { ok: false, reason: 'not_json', message: 'message has no value (tombstone)' };
  if (value.length === 0) return { ok: false, reason: 'not_json', message: 'message value is empty' };
  // Some producers write a UTF-8 byte-order mark, which JSON.parse rejects.
  const start = value.length >= 3 && value[0] === 0xef && value[1] === 0xbb && value[2] === 0xbf ? 3 : 0;
  let doc: JsonValue;
  try {
    doc = JSON.parse(value.toString('utf8', start)) as JsonValue;
  } catch (err) {
    return { ok: false, reason: 'not_json', message: `message value is not JSON: ${describeError(err)}` };
  }
  if (!isJsonObject(doc)) {
    const got = doc === null ? 'null' : Array.isArray(doc) ? 'an array' : `a ${typeof doc}`;
    return { ok: false, reason: 'not_object', message: `message value is ${got}, not a JSON object` };
  }
  const eventType = doc['event_type'];
  if (typeof eventType !== 'string' || eventType.length === 0) {
    return {
      ok: false,
      reason: 'no_event_type',
      message: eventType === undefined ? 'event_type is missing' : 'event_type is not a non-empty string',
    };
  }

  let timeMs: number | undefined;
  for (let i = 0; i < TIME_FIELDS.length && timeMs === undefined; i++) {
    timeMs = readTime(doc[TIME_FIELDS[i]!]);
  }
  if (timeMs === undefined) {
    timeMs =
      kafkaTimestampMs !== undefined && Number.isFinite(kafkaTimestampMs) && Math.abs(kafkaTimestampMs) <= MAX_TIME_MS
        ? kafkaTimestampMs
        : Date.now();
  }

  const ep = doc['event_properties'];
  const up = doc['user_properties'];
  const eventProperties = isJsonObject(ep) ? ep : undefined;
  const event: AmplitudeInEvent = {
    eventType,
    timeMs,
    insertId: readId(doc['insert_id']) ?? readId(doc['$insert_id']),
    userId: readId(doc['user_id']),
    deviceId: readId(doc['device_id']),
    eventProperties,
    userProperties: isJsonObject(up) ? up : undefined,
    revenue: readNumber(doc['revenue']),
    price: readNumber(doc['price']),
    quantity: readNumber(doc['quantity']),
    productId: readId(doc['productId']),
    revenueType: readId(doc['revenueType']),
    currency: readId(doc['currency']),
    products: Array.isArray(doc['products']) ? doc['products'] : undefined,
    library: typeof doc['library'] === 'string' ? doc['library'] : undefined,
  };
  if (eventProperties !== undefined) {
    // Top-level (ingest) values win; the export shape only has the `$` forms.
    event.revenue ??= readNumber(eventProperties['$revenue']);
    event.price ??= readNumber(eventProperties['$price']);
    event.quantity ??= readNumber(eventProperties['$quantity']);
    event.productId ??= readId(eventProperties['$productId']);
    event.revenueType ??= readId(eventProperties['$revenueType']);
    event.currency ??= readId(eventProperties['$currency']);
    if (event.products === undefined) {
      const p = eventProperties['$products'] ?? eventProperties['products'];
      if (Array.isArray(p)) event.products = p;
    }
  }
  return { ok: true, event };
}

/** Ids may be numeric in the source; Braze wants strings, and "" means "no id". */
export function readId(v: JsonValue | undefined): string | undefined {
  if (typeof v === 'string') return v.length > 0 ? v : undefined;
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  return undefined;
}

// Export pipelines sometimes stringify numbers, so numeric strings are accepted too.
export function readNumber(v: JsonValue | undefined): number | undefined {
  if (typeof v === 'number') return Number.isFinite(v) ? v : undefined;
  if (typeof v === 'string' && v.length > 0) {
    const n = Number(v);
    return Number.isFinite(n) && v.trim().length > 0 ? n : undefined;
  }
  return undefined;
}

function readTime(v: JsonValue | undefined): number | undefined {
  if (typeof v === 'number') return Number.isFinite(v) && Math.abs(v) <= MAX_TIME_MS ? v : undefined;
  if (typeof v === 'string' && v.length > 0) return parseTimestamp(v);
  return undefined;
}

/**
 * Parses the timestamp forms Amplitude emits without Date.parse on the common path: Date.parse
 * reads a zone-less `2022-02-28 20:07:01.795` as local time, and Amplitude means UTC.
 * Accepted: `YYYY-MM-DD`, then optionally `T` or space + `HH:MM:SS`, optional fraction of any
 * length, optional `Z` or `±HH:MM` / `±HHMM` / `±HH`; a zone-less value is UTC. Anything else
 * is tried as an epoch-ms number, then handed to Date.parse.
 */
export function parseTimestamp(s: string): number | undefined {
  const n = s.length;
  const year = digits(s, 0, 4);
  if (year >= 0 && n >= 10 && s.charCodeAt(4) === 45 /* - */ && s.charCodeAt(7) === 45) {
    const month = digits(s, 5, 2);
    const day = digits(s, 8, 2);
    if (month < 1 || month > 12 || day < 1 || day > 31) return undefined;
    if (n === 10) return Date.UTC(year, month - 1, day);
    const sep = s.charCodeAt(10);
    if ((sep === 84 /* T */ || sep === 32 /* space */) && n >= 19 && s.charCodeAt(13) === 58 && s.charCodeAt(16) === 58) {
      const hour = digits(s, 11, 2);
      const minute = digits(s, 14, 2);
      const second = digits(s, 17, 2);
      if (hour < 0 || hour > 23 || minute < 0 || minute > 59 || second < 0 || second > 60) return undefined;
      let i = 19;
      let ms = 0;
      if (i < n && s.charCodeAt(i) === 46 /* . */) {
        i++;
        let scale = 100;
        const fracStart = i;
        while (i < n) {
          const c = s.charCodeAt(i) - 48;
          if (c < 0 || c > 9) break;
          ms += c * scale;
          scale /= 10;
          i++;
        }
        if (i === fracStart) return undefined;
        ms = Math.floor(ms);
      }
      let offsetMin = 0;
      if (i < n) {
        const z = s.charCodeAt(i);
        if ((z === 90 /* Z */ || z === 122 /* z */) && i + 1 === n) {
          // UTC
        } else if (z === 43 /* + */ || z === 45 /* - */) {
          const rest = n - i - 1;
          const oh = digits(s, i + 1, 2);
          let om = 0;
          if (rest === 5 && s.charCodeAt(i + 3) === 58) om = digits(s, i + 4, 2);
          else if (rest === 4) om = digits(s, i + 3, 2);
          else if (rest !== 2) return fallbackParse(s);
          if (oh < 0 || om < 0 || oh > 23 || om > 59) return undefined;
          offsetMin = (z === 43 ? 1 : -1) * (oh * 60 + om);
        } else {
          return fallbackParse(s);
        }
      }
      const t = Date.UTC(year, month - 1, day, hour, minute, second, ms) - offsetMin * 60_000;
      return Number.isFinite(t) && Math.abs(t) <= MAX_TIME_MS ? t : undefined;
    }
  }
  return fallbackParse(s);
}

function fallbackParse(s: string): number | undefined {
  const asNumber = Number(s);
  if (Number.isFinite(asNumber) && s.trim().length > 0) return Math.abs(asNumber) <= MAX_TIME_MS ? asNumber : undefined;
  const t = Date.parse(s);
  return Number.isFinite(t) ? t : undefined;
}

/** The value of `count` ASCII digits at `at`, or -1. */
function digits(s: string, at: number, count: number): number {
  if (at + count > s.length) return -1;
  let v = 0;
  for (let i = at; i < at + count; i++) {
    const c = s.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return -1;
    v = v * 10 + c;
  }
  return v;
}
