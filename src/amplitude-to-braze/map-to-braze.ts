/**
 * The pure outbound mapping: one Amplitude event (a Kafka message value) becomes the Braze
 * `/users/track` objects for one user. No I/O; batching and sending live elsewhere.
 *
 * Rules come from reference/braze-users-track.md (§3–§7). Whatever does not fit a Braze rule is
 * dropped or truncated and always reported in `adjustments`, never changed silently.
 *
 * This runs once per event on the hot path, so it avoids copies: the parsed `event_properties`
 * object is sent as it is unless a rule forces a change, and sizes are estimated while the values
 * are checked rather than by serialising them.
 */
import type { OutboundMappingConfig } from './mapping-config.js';
import type {
  BrazeAttributes,
  BrazeAttributeValue,
  BrazeEvent,
  BrazeIdentifier,
  BrazePurchase,
  JsonObject,
  JsonValue,
} from './braze-types.js';
import { type AmplitudeInEvent, REVENUE_PROPERTY_KEYS, isJsonObject, parseAmplitudeMessage } from './amplitude-event.js';
import { compileBrazeOriginDetector, compileEventFilter } from './event-filter.js';
import { resolveIdentifier } from './identifiers.js';

export type AdjustmentTarget = 'event_property' | 'attribute' | 'purchase_property' | 'purchase';

export type Adjustment = {
  kind: 'truncated' | 'dropped';
  target: AdjustmentTarget;
  key: string;
  /** see AdjustmentRule for the values */
  rule: string;
};

/**
 * Every rule value this module reports. `rule` on Adjustment stays a plain string so new rules
 * do not break consumers that only log or count them.
 */
export type AdjustmentRule =
  | 'empty_key'
  | 'key_over_255'
  | 'key_starts_with_$'
  | 'reserved_key'
  | 'null_value'
  | 'string_over_255'
  | 'payload_over_50kb'
  | 'array_over_100'
  | 'nested_over_50kb'
  | 'identifier_conflict'
  | 'conflicting_operation'
  | 'set_once_unsupported'
  | 'clear_all_unsupported'
  | 'unsupported_operation'
  | 'malformed_operation'
  | 'add_not_integer'
  | 'array_element_not_string'
  | 'revenue_field_name_taken'
  | 'quantity_not_integer'
  | 'quantity_below_1'
  | 'quantity_over_100';

export type MapResult =
  | {
      kind: 'mapped';
      key: string;
      identifier: BrazeIdentifier;
      /**
       * Absent for `$identify` events, which carry only user properties. Such a result can hold
       * no object at all when every user property was dropped: it then exists to report the
       * adjustments.
       */
      event?: BrazeEvent;
      attributes?: BrazeAttributes;
      purchases: BrazePurchase[];
      adjustments: Adjustment[];
      insertId?: string;
      timeMs: number;
      /**
       * Approximate JSON size of the objects, for the 4 MB request cap. Strings are counted in
       * UTF-16 units, so multi-byte text and escapes are undercounted; keep a margin.
       */
      sizeEstimate: number;
    }
  | { kind: 'skipped'; reason: 'filtered' | 'loop_prevention'; eventType: string }
  | { kind: 'invalid'; reason: 'not_json' | 'not_object' | 'no_event_type' | 'no_identifier'; message: string };

export type OutboundMapper = (value: Buffer | null, kafkaTimestampMs?: number) => MapResult;

/** Braze's limit on property and attribute keys and on string values (§4, §7). */
export const MAX_KEY_LENGTH = 255;
export const MAX_STRING_LENGTH = 255;
/**
 * Braze's cap on a property payload that holds arrays or objects, and on a nested attribute.
 * The docs say 50 KB in older revisions and 100 KB in newer ones (§4, §7); the reference advises
 * the lower figure, read here as 50,000 bytes to stay clear of either meaning of "KB".
 */
export const MAX_NESTED_PAYLOAD_BYTES = 50_000;
/** Braze's per-attribute ceiling for string arrays (the default is 25; 100 is the most it allows). */
export const MAX_STRING_ARRAY_LENGTH = 100;
export const MAX_PURCHASE_QUANTITY = 100;

/**
 * Amplitude event types that are not user actions. `$identify` carries only user-property
 * changes, so it becomes an attributes object and no custom event; `$groupidentify` changes
 * group (account) properties, which Braze has no place for.
 */
const IDENTIFY_EVENT = '$identify';
const GROUP_IDENTIFY_EVENT = '$groupidentify';

/**
 * Attribute keys a user property must not write: identifier fields (a second identifier in one
 * object makes the target user ambiguous), per-object control flags (a user property would change
 * how Braze treats the whole object), and `__proto__` (assigning it would replace the prototype
 * of the object being built).
 */
const RESERVED_ATTRIBUTE_KEYS: ReadonlySet<string> = new Set([
  'external_id',
  'braze_id',
  'user_alias',
  'alias_name',
  'alias_label',
  '_update_existing_only',
  '_merge_objects',
  'push_token_import',
  '__proto__',
]);

/** Size of the identifier's JSON beyond the bytes of `key`, by target kind (see identifiers.ts). */
const IDENTIFIER_OVERHEAD: Record<'external_id' | 'user_alias' | 'braze_id' | 'email', number> = {
  external_id: 13, // "external_id":"<v>" vs ext:<v>
  user_alias: 39, // "user_alias":{"alias_name":"<v>","alias_label":"<l>"} vs alias:<l>:<v>
  braze_id: 8,
  email: 5,
};

/** Size accumulator shared by the helpers of one mapper; the mapping is synchronous, so one suffices. */
interface Scratch {
  size: number;
}

export function createOutboundMapper(cfg: OutboundMappingConfig): OutboundMapper {
  const acceptEventType = compileEventFilter(cfg.filter);
  const isFromBraze = cfg.loopPrevention.enabled ? compileBrazeOriginDetector(cfg.loopPrevention) : undefined;
  // Snapshots: the mapper must not change behaviour if the settings object is edited later.
  const rules = [...cfg.identifiers];
  const identifierOverhead = rules.map((r) => IDENTIFIER_OVERHEAD[r.target.kind]);
  const appId = cfg.appId;
  const updateExistingOnly = cfg.updateExistingOnly;
  const sendUserProperties = cfg.sendUserProperties;
  const revenueAsPurchase = cfg.revenueAs === 'purchase';
  const defaultCurrency = cfg.defaultCurrency;
  const scratch: Scratch = { size: 0 };

  return (value, kafkaTimestampMs) => {
    const parsed = parseAmplitudeMessage(value, kafkaTimestampMs);
    if (!parsed.ok) return { kind: 'invalid', reason: parsed.reason, message: parsed.message };
    const ev = parsed.event;
    const eventType = ev.eventType;

    if (isFromBraze !== undefined && isFromBraze(ev)) return { kind: 'skipped', reason: 'loop_prevention', eventType };
    if (!acceptEventType(eventType) || eventType === GROUP_IDENTIFY_EVENT) {
      return { kind: 'skipped', reason: 'filtered', eventType };
    }

    const resolved = resolveIdentifier(ev, rules);
    if (resolved === undefined) {
      return {
        kind: 'invalid',
        reason: 'no_identifier',
        message: `no identifier: none of the ${rules.length} identifier rule(s) found a value in the event`,
      };
    }
    const identifier = resolved.identifier;
    const identifierSize = resolved.key.length + (identifierOverhead[resolved.rule] ?? 40);
    const flagSize = updateExistingOnly === undefined ? 0 : 30;
    const adjustments: Adjustment[] = [];
    let size = 0;

    let attributes: BrazeAttributes | undefined;
    if (sendUserProperties && ev.userProperties !== undefined) {
      const attrs = newAttributes(identifier);
      if (updateExistingOnly !== undefined) attrs._update_existing_only = updateExistingOnly;
      scratch.size = 0;
      const written = writeAttributes(ev.userProperties, attrs, identifier.email, adjustments, scratch);
      if (written > 0) {
        attributes = attrs;
        size += identifierSize + flagSize + scratch.size + 2;
      }
    }

    const isIdentify = eventType === IDENTIFY_EVENT;
    if (isIdentify && attributes === undefined && adjustments.length === 0) {
      // Nothing Braze can take: no custom event for `$identify`, and no user properties to send.
      // With adjustments it stays 'mapped' (and empty) so that what was dropped is still reported.
      return { kind: 'skipped', reason: 'filtered', eventType };
    }

    let event: BrazeEvent | undefined;
    const purchases: BrazePurchase[] = [];
    if (!isIdentify) {
      const time = new Date(ev.timeMs).toISOString();
      const hasRevenue = ev.revenue !== undefined || ev.price !== undefined;

      let properties: JsonObject | undefined;
      let propertiesSize = 0;
      const firstPropertyAdjustment = adjustments.length;
      if (ev.eventProperties !== undefined) {
        scratch.size = 0;
        properties = sanitizeProperties(ev.eventProperties, hasRevenue, adjustments, scratch);
        propertiesSize = scratch.size;
      }
      const lastPropertyAdjustment = adjustments.length;

      if (hasRevenue && !revenueAsPurchase) {
        // Without a purchase object the revenue would vanish (top-level fields in the ingest
        // shape, dropped `$` keys in the export shape), so it travels as plain event properties.
        properties ??= {};
        propertiesSize += addRevenueProperties(ev, properties, adjustments);
      }

      event = newEvent(identifier, eventType, time);
      if (appId !== undefined) event.app_id = appId;
      if (properties !== undefined) event.properties = properties;
      if (updateExistingOnly !== undefined) event._update_existing_only = updateExistingOnly;
      size +=
        identifierSize + flagSize + eventType.length + 44 /* name, time and punctuation */ +
        (appId === undefined ? 0 : appId.length + 11) + (properties === undefined ? 0 : propertiesSize + 13);

      // With a purchase, the custom event is still sent: campaigns and segments key on the event
      // name ('Order Completed'), and Braze plans to phase purchases out in favour of custom
      // events (reference §5), so the event is the part that keeps working either way.
      if (hasRevenue && revenueAsPurchase) {
        const purchase = buildPurchase(ev, identifier, time, defaultCurrency, adjustments);
        if (appId !== undefined) purchase.app_id = appId;
        // The purchase carries the same (already checked) properties object: the rules are the
        // same, so the same drops apply to it and are reported against it too.
        if (properties !== undefined) purchase.properties = properties;
        for (let i = firstPropertyAdjustment; i < lastPropertyAdjustment; i++) {
          const a = adjustments[i]!;
          adjustments.push({ kind: a.kind, target: 'purchase_property', key: a.key, rule: a.rule });
        }
        if (updateExistingOnly !== undefined) purchase._update_existing_only = updateExistingOnly;
        purchases.push(purchase);
        size +=
          identifierSize + flagSize + purchase.product_id.length + purchase.currency.length + 110 +
          (appId === undefined ? 0 : appId.length + 11) + (properties === undefined ? 0 : propertiesSize + 13);
      }
    }

    return {
      kind: 'mapped',
      key: resolved.key,
      identifier,
      event,
      attributes,
      purchases,
      adjustments,
      insertId: ev.insertId,
      timeMs: ev.timeMs,
      sizeEstimate: size,
    };
  };
}

// ---------------------------------------------------------------------------------------------
// Object construction
//
// One object literal per identifier kind rather than `{...identifier, ...}`: V8 clones a spread
// source of varying shape through a slow path (measured at several µs per object), while a
// literal gets a stable hidden class and cheap property additions afterwards.

function newEvent(id: BrazeIdentifier, name: string, time: string): BrazeEvent {
  if (id.external_id !== undefined) return { external_id: id.external_id, name, time };
  if (id.user_alias !== undefined) return { user_alias: id.user_alias, name, time };
  if (id.braze_id !== undefined) return { braze_id: id.braze_id, name, time };
  return { email: id.email, name, time };
}

function newPurchase(
  id: BrazeIdentifier,
  product_id: string,
  currency: string,
  price: number,
  quantity: number,
  time: string,
): BrazePurchase {
  if (id.external_id !== undefined) return { external_id: id.external_id, product_id, currency, price, quantity, time };
  if (id.user_alias !== undefined) return { user_alias: id.user_alias, product_id, currency, price, quantity, time };
  if (id.braze_id !== undefined) return { braze_id: id.braze_id, product_id, currency, price, quantity, time };
  return { email: id.email, product_id, currency, price, quantity, time };
}

function newAttributes(id: BrazeIdentifier): BrazeAttributes {
  if (id.external_id !== undefined) return { external_id: id.external_id };
  if (id.user_alias !== undefined) return { user_alias: id.user_alias };
  if (id.braze_id !== undefined) return { braze_id: id.braze_id };
  return { email: id.email };
}

// ---------------------------------------------------------------------------------------------
// Event and purchase properties

function propertyKeyRule(key: string): AdjustmentRule | undefined {
  const n = key.length;
  if (n === 0) return 'empty_key';
  if (n > MAX_KEY_LENGTH) return 'key_over_255';
  if (key.charCodeAt(0) === 36 /* $ */) return 'key_starts_with_$';
  // `__proto__` is not a Braze rule: copying it into a new object would set that object's prototype.
  if (key === 'time' || key === 'event_name' || key === '__proto__') return 'reserved_key';
  return undefined;
}

/**
 * Applies Braze's event-property rules. Returns the input object itself when nothing has to
 * change (the common case), a filtered copy otherwise, or undefined when no property is left.
 * Leaves the estimated JSON size of the result in `scratch.size`.
 *
 * Strings inside arrays and nested objects are not walked: Braze states its 255-character rule
 * for property values, and a deep walk on every event costs more than it protects.
 */
function sanitizeProperties(
  props: JsonObject,
  consumeRevenueKeys: boolean,
  adjustments: Adjustment[],
  scratch: Scratch,
): JsonObject | undefined {
  let needCopy = false;
  let kept = 0;
  let size = 2;
  let nestedSize = 0;
  let nestedCount = 0;
  for (const key in props) {
    const v = props[key];
    if (v === undefined) continue;
    const keyRule = propertyKeyRule(key);
    if (keyRule !== undefined) {
      needCopy = true;
      // The revenue fields travel in the purchase (or as plain properties): consumed, not lost.
      if (!(consumeRevenueKeys && REVENUE_PROPERTY_KEYS.has(key))) {
        adjustments.push({ kind: 'dropped', target: 'event_property', key, rule: keyRule });
      }
      continue;
    }
    const entry = key.length + 4; // quotes, colon, comma
    if (typeof v === 'string') {
      if (v.length > MAX_STRING_LENGTH) {
        needCopy = true;
        adjustments.push({ kind: 'truncated', target: 'event_property', key, rule: 'string_over_255' });
        size += entry + MAX_STRING_LENGTH + 2;
      } else {
        size += entry + v.length + 2;
      }
    } else if (typeof v === 'number') {
      size += entry + numberJsonLength(v);
    } else if (typeof v === 'boolean') {
      size += entry + 5;
    } else if (v === null) {
      // Braze lists no null type for properties; an unknown type risks the whole object.
      needCopy = true;
      adjustments.push({ kind: 'dropped', target: 'event_property', key, rule: 'null_value' });
      continue;
    } else {
      nestedCount++;
      nestedSize += entry + estimateJsonSize(v);
    }
    kept++;
  }

  let dropNested = false;
  if (nestedCount > 0) {
    // Braze caps the whole property payload once it holds an array or object value.
    let total = size + nestedSize;
    // The estimate counts UTF-16 units and no escapes, so it can fall short by up to 6x (a control
    // character becomes \u00XX); measure exactly only when that could matter.
    if (total <= MAX_NESTED_PAYLOAD_BYTES && total * 6 > MAX_NESTED_PAYLOAD_BYTES) {
      nestedSize = exactNestedBytes(props);
      total = size + nestedSize;
    }
    if (total > MAX_NESTED_PAYLOAD_BYTES) {
      // Dropping the array/object values lifts the cap entirely, and those are what made it large.
      dropNested = true;
      needCopy = true;
      for (const key in props) {
        const v = props[key];
        if (typeof v === 'object' && v !== null && propertyKeyRule(key) === undefined) {
          adjustments.push({ kind: 'dropped', target: 'event_property', key, rule: 'payload_over_50kb' });
          kept--;
        }
      }
    } else {
      size = total;
    }
  }
  scratch.size = size;
  if (kept === 0) return undefined;
  if (!needCopy) return props;

  const out: JsonObject = {};
  for (const key in props) {
    const v = props[key];
    if (v === undefined || v === null || propertyKeyRule(key) !== undefined) continue;
    if (typeof v === 'string') out[key] = v.length > MAX_STRING_LENGTH ? truncate(v) : v;
    else if (typeof v !== 'object') out[key] = v;
    else if (!dropNested) out[key] = v;
  }
  return out;
}

function exactNestedBytes(props: JsonObject): number {
  let bytes = 0;
  for (const key in props) {
    const v = props[key];
    if (typeof v === 'object' && v !== null && propertyKeyRule(key) === undefined) {
      bytes += Buffer.byteLength(key) + 4 + Buffer.byteLength(JSON.stringify(v));
    }
  }
  return bytes;
}

const REVENUE_PLAIN_NAMES = ['revenue', 'price', 'quantity', 'product_id', 'revenue_type', 'currency'] as const;

function addRevenueProperties(ev: AmplitudeInEvent, props: JsonObject, adjustments: Adjustment[]): number {
  const values = [ev.revenue, ev.price, ev.quantity, ev.productId, ev.revenueType, ev.currency];
  let size = 0;
  for (let i = 0; i < REVENUE_PLAIN_NAMES.length; i++) {
    const v = values[i];
    if (v === undefined) continue;
    const name = REVENUE_PLAIN_NAMES[i]!;
    if (Object.hasOwn(props, name)) {
      // The event's own property of that name wins; the revenue field is what is lost.
      adjustments.push({ kind: 'dropped', target: 'event_property', key: name, rule: 'revenue_field_name_taken' });
      continue;
    }
    const stored = typeof v === 'string' && v.length > MAX_STRING_LENGTH ? truncate(v) : v;
    if (stored !== v) adjustments.push({ kind: 'truncated', target: 'event_property', key: name, rule: 'string_over_255' });
    props[name] = stored;
    size += name.length + 4 + estimateJsonSize(stored);
  }
  return size;
}

// ---------------------------------------------------------------------------------------------
// Purchases

/**
 * `product_id` falls back to the revenue type, then to the constant 'revenue': Braze requires a
 * product id, and a constant keeps the distinct-product count (capped at 5,000) bounded, where
 * the event type or an insert id would not.
 *
 * `price` is Amplitude's unit price, or revenue ÷ quantity (Amplitude's revenue is price ×
 * quantity). A quantity over Braze's maximum of 100 is clamped to 100 and the unit price kept: the
 * product's price stays true and the shortfall in total revenue is reported as an adjustment.
 */
function buildPurchase(
  ev: AmplitudeInEvent,
  identifier: BrazeIdentifier,
  time: string,
  defaultCurrency: string,
  adjustments: Adjustment[],
): BrazePurchase {
  let quantity = 1;
  const q = ev.quantity;
  if (q !== undefined) {
    quantity = q;
    if (!Number.isInteger(quantity)) {
      quantity = Math.round(quantity);
      adjustments.push({ kind: 'truncated', target: 'purchase', key: 'quantity', rule: 'quantity_not_integer' });
    }
    if (quantity < 1) {
      quantity = 1;
      adjustments.push({ kind: 'truncated', target: 'purchase', key: 'quantity', rule: 'quantity_below_1' });
    }
  }
  // hasRevenue guarantees one of the two; `?? 0` only satisfies the type.
  const price = ev.price ?? (ev.revenue ?? 0) / quantity;
  if (quantity > MAX_PURCHASE_QUANTITY) {
    quantity = MAX_PURCHASE_QUANTITY;
    adjustments.push({ kind: 'truncated', target: 'purchase', key: 'quantity', rule: 'quantity_over_100' });
  }
  let productId = ev.productId ?? ev.revenueType ?? 'revenue';
  if (productId.length > MAX_STRING_LENGTH) {
    productId = truncate(productId);
    adjustments.push({ kind: 'truncated', target: 'purchase', key: 'product_id', rule: 'string_over_255' });
  }
  return newPurchase(identifier, productId, ev.currency ?? defaultCurrency, price, quantity, time);
}

// ---------------------------------------------------------------------------------------------
// User properties → attributes

function attributeKeyRule(key: string): AdjustmentRule | undefined {
  const n = key.length;
  if (n === 0) return 'empty_key';
  if (n > MAX_KEY_LENGTH) return 'key_over_255';
  if (RESERVED_ATTRIBUTE_KEYS.has(key)) return 'reserved_key';
  return undefined;
}

/**
 * Writes the user properties into `attrs` and returns how many attributes were written.
 * Plain keys (the export shape's resolved properties, or the ingest shape's implicit `$set`) set
 * values; Amplitude's operations map onto Braze's:
 *  - `$set` sets; `$unset` sets null, which removes the attribute in Braze;
 *  - `$add` becomes `{inc: n}` (integers only: Braze documents `inc` for integers);
 *  - `$append`, `$prepend`, `$preInsert`, `$postInsert` become `{add: [...]}`: Braze keeps array
 *    values unique and appends, so prepend order is lost;
 *  - `$remove` becomes `{remove: [...]}`;
 *  - `$setOnce` is dropped and reported: Braze has no set-once, and sending it as a plain set
 *    would overwrite first-touch values (initial referrer, signup source) on every event. The
 *    export shape already carries the resolved value as a plain key, so it still reaches Braze;
 *  - `$clearAll` is dropped and reported: Braze has no "remove every attribute", and guessing the
 *    attribute list would erase data Amplitude never owned.
 * When two operations write the same attribute, the later one wins and the earlier is reported.
 */
function writeAttributes(
  up: JsonObject,
  attrs: BrazeAttributes,
  identifierEmail: string | undefined,
  adjustments: Adjustment[],
  scratch: Scratch,
): number {
  let written = 0;
  for (const key in up) {
    const v = up[key];
    if (v === undefined) continue;
    if (key.charCodeAt(0) !== 36 /* $ */) {
      written += setAttribute(attrs, key, v, identifierEmail, adjustments, scratch);
      continue;
    }
    if (key === '$clearAll') {
      adjustments.push({ kind: 'dropped', target: 'attribute', key, rule: 'clear_all_unsupported' });
      continue;
    }
    if (key === '$unset' && Array.isArray(v)) {
      // Some SDKs send the names as a list rather than as {name: '-'}.
      for (const name of v) {
        if (typeof name === 'string') written += writeOp(attrs, name, null, identifierEmail, adjustments, scratch);
        else adjustments.push({ kind: 'dropped', target: 'attribute', key, rule: 'malformed_operation' });
      }
      continue;
    }
    if (!isJsonObject(v)) {
      adjustments.push({
        kind: 'dropped',
        target: 'attribute',
        key,
        rule: OPERATIONS.has(key) ? 'malformed_operation' : 'unsupported_operation',
      });
      continue;
    }
    switch (key) {
      case '$set':
        for (const k in v) {
          const x = v[k];
          if (x !== undefined) written += setAttribute(attrs, k, x, identifierEmail, adjustments, scratch);
        }
        break;
      case '$setOnce':
        for (const k in v) adjustments.push({ kind: 'dropped', target: 'attribute', key: k, rule: 'set_once_unsupported' });
        break;
      case '$unset':
        for (const k in v) written += writeOp(attrs, k, null, identifierEmail, adjustments, scratch);
        break;
      case '$add':
        for (const k in v) {
          const n = integerValue(v[k]);
          if (n === undefined) adjustments.push({ kind: 'dropped', target: 'attribute', key: k, rule: 'add_not_integer' });
          else written += writeOp(attrs, k, { inc: n }, identifierEmail, adjustments, scratch);
        }
        break;
      case '$append':
      case '$prepend':
      case '$preInsert':
      case '$postInsert':
      case '$remove':
        for (const k in v) {
          const list = stringList(k, v[k], adjustments);
          if (list === undefined) continue;
          const op: BrazeAttributeValue = key === '$remove' ? { remove: list } : { add: list };
          written += writeOp(attrs, k, op, identifierEmail, adjustments, scratch);
        }
        break;
      default:
        adjustments.push({ kind: 'dropped', target: 'attribute', key, rule: 'unsupported_operation' });
    }
  }
  return written;
}

const OPERATIONS: ReadonlySet<string> = new Set([
  '$set',
  '$setOnce',
  '$unset',
  '$add',
  '$append',
  '$prepend',
  '$preInsert',
  '$postInsert',
  '$remove',
  '$clearAll',
]);

/** A plain value: checked and trimmed to Braze's limits, then written. */
function setAttribute(
  attrs: BrazeAttributes,
  key: string,
  v: JsonValue,
  identifierEmail: string | undefined,
  adjustments: Adjustment[],
  scratch: Scratch,
): number {
  // The key first, so that a dropped attribute is not also reported as truncated: writeOp reports the drop.
  if (attributeKeyRule(key) !== undefined) return writeOp(attrs, key, v, identifierEmail, adjustments, scratch);
  let value: JsonValue | undefined = v;
  if (typeof v === 'string') {
    if (v.length > MAX_STRING_LENGTH) {
      value = truncate(v);
      adjustments.push({ kind: 'truncated', target: 'attribute', key, rule: 'string_over_255' });
    }
  } else if (Array.isArray(v)) {
    value = arrayAttribute(key, v, adjustments);
  } else if (typeof v === 'object' && v !== null && exceedsNestedLimit(v)) {
    adjustments.push({ kind: 'dropped', target: 'attribute', key, rule: 'nested_over_50kb' });
    value = undefined;
  }
  return value === undefined ? 0 : store(attrs, key, value, identifierEmail, adjustments, scratch);
}

/** An operation's result: only the key needs checking, the value was built here. */
function writeOp(
  attrs: BrazeAttributes,
  key: string,
  value: BrazeAttributeValue,
  identifierEmail: string | undefined,
  adjustments: Adjustment[],
  scratch: Scratch,
): number {
  const keyRule = attributeKeyRule(key);
  if (keyRule !== undefined) {
    adjustments.push({ kind: 'dropped', target: 'attribute', key, rule: keyRule });
    return 0;
  }
  return store(attrs, key, value, identifierEmail, adjustments, scratch);
}

/** Returns 1 when a new attribute was added. */
function store(
  attrs: BrazeAttributes,
  key: string,
  value: BrazeAttributeValue,
  identifierEmail: string | undefined,
  adjustments: Adjustment[],
  scratch: Scratch,
): number {
  if (identifierEmail !== undefined && key === 'email') {
    // The object is addressed by this email: the same value is already there, and another one
    // would change which profile the object means.
    if (value !== identifierEmail) adjustments.push({ kind: 'dropped', target: 'attribute', key, rule: 'identifier_conflict' });
    return 0;
  }
  const existed = Object.hasOwn(attrs, key);
  if (existed) adjustments.push({ kind: 'dropped', target: 'attribute', key, rule: 'conflicting_operation' });
  attrs[key] = value;
  scratch.size += key.length + 4 + estimateJsonSize(value);
  return existed ? 0 : 1;
}

/**
 * Arrays of primitives are Braze string arrays: at most 100 elements and 255 characters each.
 * Arrays holding objects are Braze arrays of objects, limited by size instead of count.
 * Returns the input array when nothing changes.
 */
function arrayAttribute(key: string, arr: JsonValue[], adjustments: Adjustment[]): JsonValue[] | undefined {
  for (let i = 0; i < arr.length; i++) {
    const el = arr[i];
    if (typeof el === 'object' && el !== null) {
      if (exceedsNestedLimit(arr)) {
        adjustments.push({ kind: 'dropped', target: 'attribute', key, rule: 'nested_over_50kb' });
        return undefined;
      }
      return arr;
    }
  }
  let out = arr;
  if (arr.length > MAX_STRING_ARRAY_LENGTH) {
    out = arr.slice(0, MAX_STRING_ARRAY_LENGTH);
    adjustments.push({ kind: 'truncated', target: 'attribute', key, rule: 'array_over_100' });
  }
  let truncatedAny = false;
  for (let i = 0; i < out.length; i++) {
    const el = out[i];
    if (typeof el === 'string' && el.length > MAX_STRING_LENGTH) {
      if (out === arr) out = arr.slice();
      out[i] = truncate(el);
      truncatedAny = true;
    }
  }
  if (truncatedAny) adjustments.push({ kind: 'truncated', target: 'attribute', key, rule: 'string_over_255' });
  return out;
}

/**
 * The element list of an array operation, as Braze's string arrays want it: numbers and booleans
 * become strings, nulls and objects are dropped (reported once per attribute).
 */
function stringList(key: string, v: JsonValue | undefined, adjustments: Adjustment[]): string[] | undefined {
  if (v === undefined) return undefined;
  const items = Array.isArray(v) ? v : [v];
  const out: string[] = [];
  let droppedElement = false;
  let truncatedElement = false;
  for (const el of items) {
    if (typeof el === 'string') {
      if (el.length > MAX_STRING_LENGTH) {
        out.push(truncate(el));
        truncatedElement = true;
      } else {
        out.push(el);
      }
    } else if (typeof el === 'number' || typeof el === 'boolean') {
      out.push(String(el));
    } else {
      droppedElement = true;
    }
  }
  if (droppedElement) adjustments.push({ kind: 'dropped', target: 'attribute', key, rule: 'array_element_not_string' });
  if (truncatedElement) adjustments.push({ kind: 'truncated', target: 'attribute', key, rule: 'string_over_255' });
  if (out.length > MAX_STRING_ARRAY_LENGTH) {
    out.length = MAX_STRING_ARRAY_LENGTH;
    adjustments.push({ kind: 'truncated', target: 'attribute', key, rule: 'array_over_100' });
  }
  // An empty add/remove changes nothing, so leaving it out loses nothing.
  return out.length > 0 ? out : undefined;
}

function integerValue(v: JsonValue | undefined): number | undefined {
  const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim().length > 0 ? Number(v) : NaN;
  return Number.isSafeInteger(n) ? n : undefined;
}

function exceedsNestedLimit(v: JsonValue): boolean {
  const estimate = estimateJsonSize(v);
  if (estimate > MAX_NESTED_PAYLOAD_BYTES) return true;
  if (estimate * 6 <= MAX_NESTED_PAYLOAD_BYTES) return false;
  return Buffer.byteLength(JSON.stringify(v)) > MAX_NESTED_PAYLOAD_BYTES;
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/** Cuts to 255 UTF-16 units without splitting a surrogate pair. */
function truncate(s: string): string {
  const c = s.charCodeAt(MAX_STRING_LENGTH - 1);
  return s.slice(0, c >= 0xd800 && c <= 0xdbff ? MAX_STRING_LENGTH - 1 : MAX_STRING_LENGTH);
}

/**
 * A lower bound on the JSON length: strings are counted in UTF-16 units without escapes, which
 * is exact for plain ASCII. Walks without allocating.
 */
export function estimateJsonSize(v: JsonValue): number {
  switch (typeof v) {
    case 'string':
      return v.length + 2;
    case 'number':
      return numberJsonLength(v);
    case 'boolean':
      return v ? 4 : 5;
  }
  if (v === null) return 4;
  if (Array.isArray(v)) {
    let size = v.length > 0 ? v.length + 1 : 2;
    for (let i = 0; i < v.length; i++) size += estimateJsonSize(v[i]!);
    return size;
  }
  let size = 2;
  let first = true;
  for (const key in v) {
    const x = v[key];
    if (x === undefined) continue;
    size += key.length + 3 + (first ? 0 : 1) + estimateJsonSize(x);
    first = false;
  }
  return size;
}

function numberJsonLength(n: number): number {
  if (Number.isInteger(n) && n > -1e15 && n < 1e15) {
    let len = n < 0 ? 2 : 1;
    let a = n < 0 ? -n : n;
    while (a >= 10) {
      a /= 10;
      len++;
    }
    return len;
  }
  return String(n).length;
}
