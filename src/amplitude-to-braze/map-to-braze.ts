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
import { type AmplitudeInEvent, REVENUE_PROPERTY_KEYS, isJsonObject, parseAmplitudeMessage, readId, readNumber } from './amplitude-event.js';
import { compileBrazeOriginDetector, compileEventFilter } from './event-filter.js';
import { resolveIdentifier } from './identifiers.js';
import { AttributeState, type AttributeWrite } from './attribute-state.js';

export type AdjustmentTarget = 'event_property' | 'attribute' | 'purchase_property' | 'purchase';

export type Adjustment = {
  /**
   * `truncated`: cut to a limit; `dropped`: left out; `replaced`: another value sent instead (a
   * default currency, a refund sent as an event); `split`: sent as several objects (quantity over 100)
   */
  kind: 'truncated' | 'dropped' | 'replaced' | 'split';
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
  | 'nested_key_invalid'
  | 'identifier_conflict'
  | 'conflicting_operation'
  | 'set_once_unsupported'
  | 'prepend_unsupported'
  | 'clear_all_unsupported'
  | 'unsupported_operation'
  | 'malformed_operation'
  | 'add_not_integer'
  | 'array_element_not_string'
  | 'revenue_field_name_taken'
  | 'quantity_not_integer'
  | 'quantity_below_1'
  | 'quantity_over_100'
  | 'purchases_over_1000'
  | 'currency_invalid'
  | 'negative_revenue_not_purchase'
  | 'product_invalid'
  | 'product_without_price';

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
      /**
       * The user's changed attributes. For a user identified by alias (unless
       * BRAZE_UPDATE_EXISTING_ONLY=true) it carries `_update_existing_only: false`, and is there
       * even with no attribute at all until Braze has accepted one such object for the user: it
       * creates the alias-only profile. It must travel in the same request as `event` and
       * `purchases` (Braze processes a request's attributes before its events and purchases).
       * Until then `event` and `purchases` carry `_update_existing_only: false` too, so that they
       * create the profile themselves should Braze refuse this object.
       */
      attributes?: BrazeAttributes;
      /**
       * several when a quantity over 100 is split, or one per entry of a `products` array; at most
       * MAX_PURCHASES_PER_EVENT. They may be more than one request holds: the leg then sends the
       * event's objects in several requests (braze-leg.ts).
       */
      purchases: BrazePurchase[];
      adjustments: Adjustment[];
      /**
       * What `attributes` records in the attribute state: pass it to `AttributeState.confirm`
       * once Braze accepted the attributes object, to `release` when Braze refused it.
       */
      attributeWrite?: AttributeWrite;
      /** attribute writes left out because the attribute state knows Braze already has them */
      attributeWritesSaved: number;
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

export interface OutboundMapperOptions {
  /**
   * The attribute state to filter attributes through and to remember `$setOnce` in. Absent: one
   * is made from `cfg.attributeStateMaxUsers` (none when 0). `null`: none (every event writes its
   * whole user-property snapshot, and `$setOnce` is dropped).
   */
  attributeState?: AttributeState | null;
}

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
 * Most purchase objects one event becomes (quantity splits and `products` entries together):
 * 100,000 units at 100 per object. Not a Braze limit: the gateway's guard against an absurd
 * quantity (1e12 would be ten billion objects, and 1e308 never gets smaller by subtracting 100).
 * What lies beyond is counted (`purchases_over_1000`) and not sent.
 */
export const MAX_PURCHASES_PER_EVENT = 1_000;

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

/** ISO 4217 codes (the runtime's list, about 160 active ones); three capital letters where the runtime has none. */
const CURRENCIES: ReadonlySet<string> | undefined = (() => {
  try {
    return new Set(Intl.supportedValuesOf('currency'));
  } catch {
    return undefined;
  }
})();

export function isCurrencyCode(c: string): boolean {
  return CURRENCIES !== undefined ? CURRENCIES.has(c) : /^[A-Z]{3}$/.test(c);
}

/** Size accumulator shared by the helpers of one mapper; the mapping is synchronous, so one suffices. */
interface Scratch {
  size: number;
}

/** What the user-property writer needs beyond its arguments. */
interface WriteContext {
  identifierEmail: string | undefined;
  /** undefined: every user property is synced */
  allow: ((key: string) => boolean) | undefined;
  /** `$setOnce` is applied (there is an attribute state to remember it); false: dropped and reported */
  setOnce: boolean;
  /** the attributes that came from `$setOnce` in this event (made when the first one is seen) */
  setOnceKeys: Set<string> | undefined;
}

export function createOutboundMapper(cfg: OutboundMappingConfig, opts: OutboundMapperOptions = {}): OutboundMapper {
  const acceptEventType = compileEventFilter(cfg.filter);
  const isFromBraze = cfg.loopPrevention.enabled ? compileBrazeOriginDetector(cfg.loopPrevention) : undefined;
  // Snapshots: the mapper must not change behaviour if the settings object is edited later.
  const rules = [...cfg.identifiers];
  const identifierOverhead = rules.map((r) => IDENTIFIER_OVERHEAD[r.target.kind]);
  const appId = cfg.appId;
  const updateExistingOnly = cfg.updateExistingOnly;
  const sendUserProperties = cfg.sendUserProperties;
  const revenueAsPurchase = cfg.revenueAs === 'purchase';
  const negativeAsEvent = (cfg.negativeRevenueAs ?? 'event') === 'event';
  const defaultCurrency = cfg.defaultCurrency.toUpperCase();
  const allowList = cfg.userProperties ?? ['*'];
  const allow = allowList.length === 0 || allowList.includes('*') ? undefined : compileEventFilter({ allow: allowList, deny: [] });
  const state =
    opts.attributeState === null
      ? undefined
      : (opts.attributeState ?? ((cfg.attributeStateMaxUsers ?? 0) > 0 ? new AttributeState({ maxUsers: cfg.attributeStateMaxUsers }) : undefined));
  const scratch: Scratch = { size: 0 };
  const ctx: WriteContext = { identifierEmail: undefined, allow, setOnce: state !== undefined, setOnceKeys: undefined };

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
    const userKey = resolved.key;
    const identifierSize = resolved.key.length + (identifierOverhead[resolved.rule] ?? 40);
    const flagSize = updateExistingOnly === undefined ? 0 : 30;
    const adjustments: Adjustment[] = [];
    let size = 0;
    const isIdentify = eventType === IDENTIFY_EVENT;
    // An alias-only profile exists only once an object with `_update_existing_only: false` created it.
    const createProfile =
      identifier.user_alias !== undefined && updateExistingOnly !== true && (state === undefined || state.needsCreation(userKey));

    let attributes: BrazeAttributes | undefined;
    let attributeWrite: AttributeWrite | undefined;
    let saved = 0;
    if (sendUserProperties && ev.userProperties !== undefined) {
      let attrs = newAttributes(identifier);
      if (updateExistingOnly !== undefined) attrs._update_existing_only = updateExistingOnly;
      scratch.size = 0;
      ctx.identifierEmail = identifier.email;
      ctx.setOnceKeys = undefined;
      let written = writeAttributes(ev.userProperties, attrs, adjustments, scratch, ctx);
      if (written > 0 && state !== undefined) {
        const f = state.filter(userKey, attrs, ev.timeMs, ctx.setOnceKeys, createProfile);
        attrs = f.attributes;
        saved = f.unchanged + f.stale + f.setOnce;
        attributeWrite = f.write;
        if (f.kept < written) scratch.size = attributesSize(attrs);
        written = f.kept;
      }
      if (written > 0) {
        attributes = attrs;
        size += identifierSize + flagSize + scratch.size + 2;
      }
    }

    if (isIdentify && attributes === undefined && adjustments.length === 0) {
      // Nothing Braze can take: no custom event for `$identify`, and no user properties to send
      // (or none that changed).
      return saved > 0
        ? { kind: 'mapped', key: userKey, identifier, purchases: [], adjustments, attributeWritesSaved: saved, insertId: ev.insertId, timeMs: ev.timeMs, sizeEstimate: 0 }
        : { kind: 'skipped', reason: 'filtered', eventType };
    }

    if (createProfile && (!isIdentify || attributes !== undefined)) {
      if (attributes === undefined) {
        attributes = newAttributes(identifier);
        size += identifierSize + 2;
      }
      if (attributes._update_existing_only !== false) {
        attributes._update_existing_only = false;
        size += 30;
      }
      if (state !== undefined) attributeWrite ??= { userKey, entries: [], creates: true };
    }

    let event: BrazeEvent | undefined;
    const purchases: BrazePurchase[] = [];
    if (!isIdentify) {
      // While the alias-only profile may still need creating, the event and the purchases say so
      // too: each can then create the profile on its own, so they are not silently dropped when
      // Braze refuses the attributes object (for one bad attribute, say).
      const objectFlag = createProfile ? false : updateExistingOnly;
      const objectFlagSize = objectFlag === undefined ? 0 : 30;
      const time = new Date(ev.timeMs).toISOString();
      const products = ev.products !== undefined && ev.products.length > 0 ? ev.products : undefined;
      const hasRevenue = ev.revenue !== undefined || ev.price !== undefined || products !== undefined;
      const negative = products === undefined && hasRevenue && isNegativeRevenue(ev);
      // Refunds inside a products list are no purchases either (buildProductPurchases leaves them
      // out); like a top-level refund, they travel on the event, in its revenue fields.
      const productRefund = products !== undefined && revenueAsPurchase && products.some(isRefundEntry);

      let properties: JsonObject | undefined;
      let propertiesSize = 0;
      const firstPropertyAdjustment = adjustments.length;
      if (ev.eventProperties !== undefined) {
        scratch.size = 0;
        properties = sanitizeProperties(ev.eventProperties, hasRevenue, adjustments, scratch);
        propertiesSize = scratch.size;
      }
      const lastPropertyAdjustment = adjustments.length;

      if (negative) {
        // A refund is not a purchase: Braze would record a purchase with a negative price.
        adjustments.push({ kind: negativeAsEvent ? 'replaced' : 'dropped', target: 'purchase', key: 'revenue', rule: 'negative_revenue_not_purchase' });
      }
      let eventProperties = properties;
      let eventPropertiesSize = propertiesSize;
      if (hasRevenue && (!revenueAsPurchase || ((negative || productRefund) && negativeAsEvent))) {
        // Without a purchase object the revenue would vanish (top-level fields in the ingest
        // shape, dropped `$` keys in the export shape), so it travels as plain event properties.
        // With the purchases of a products list that holds refunds, the event gets its own copy:
        // the purchases keep the event's properties without the order's revenue fields.
        eventProperties = productRefund && properties !== undefined ? { ...properties } : (properties ?? {});
        eventPropertiesSize += addRevenueProperties(ev, eventProperties, adjustments);
      }

      event = newEvent(identifier, eventType, time);
      if (appId !== undefined) event.app_id = appId;
      if (eventProperties !== undefined) event.properties = eventProperties;
      if (objectFlag !== undefined) event._update_existing_only = objectFlag;
      size +=
        identifierSize + objectFlagSize + eventType.length + 44 /* name, time and punctuation */ +
        (appId === undefined ? 0 : appId.length + 11) + (eventProperties === undefined ? 0 : eventPropertiesSize + 13);

      // With a purchase, the custom event is still sent: campaigns and segments key on the event
      // name ('Order Completed'), and Braze plans to phase purchases out in favour of custom
      // events (reference §5), so the event is the part that keeps working either way.
      if (hasRevenue && revenueAsPurchase && !negative) {
        const currency = normalizeCurrency(ev.currency, defaultCurrency, 'currency', adjustments);
        if (products !== undefined) buildProductPurchases(products, ev, identifier, time, currency, defaultCurrency, negativeAsEvent, purchases, adjustments);
        else buildPurchases(ev, identifier, time, currency, purchases, adjustments);
        // Purchases carry the same (already checked) properties object: the rules are the same, so
        // the same drops apply and are reported against them too. Per-product purchases leave the
        // products list out: each is one of its entries.
        let purchaseProps = properties;
        let purchasePropsSize = propertiesSize;
        if (products !== undefined && purchaseProps !== undefined && Object.hasOwn(purchaseProps, 'products')) {
          const { products: _omit, ...rest } = purchaseProps;
          purchaseProps = Object.keys(rest).length > 0 ? rest : undefined;
          purchasePropsSize = purchaseProps === undefined ? 0 : estimateJsonSize(purchaseProps);
        }
        if (purchases.length > 0) {
          for (let i = firstPropertyAdjustment; i < lastPropertyAdjustment; i++) {
            const a = adjustments[i]!;
            adjustments.push({ kind: a.kind, target: 'purchase_property', key: a.key, rule: a.rule });
          }
        }
        for (const purchase of purchases) {
          if (appId !== undefined) purchase.app_id = appId;
          if (purchaseProps !== undefined) purchase.properties = purchaseProps;
          if (objectFlag !== undefined) purchase._update_existing_only = objectFlag;
          size +=
            identifierSize + objectFlagSize + purchase.product_id.length + purchase.currency.length + 110 +
            (appId === undefined ? 0 : appId.length + 11) + (purchaseProps === undefined ? 0 : purchasePropsSize + 13);
        }
      }
    }

    return {
      kind: 'mapped',
      key: userKey,
      identifier,
      event,
      attributes,
      purchases,
      adjustments,
      attributeWrite,
      attributeWritesSaved: saved,
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

const REVENUE_PLAIN_NAMES = ['revenue', 'price', 'quantity', 'product_id', 'revenue_type', 'currency', 'products'] as const;

function addRevenueProperties(ev: AmplitudeInEvent, props: JsonObject, adjustments: Adjustment[]): number {
  const values = [ev.revenue, ev.price, ev.quantity, ev.productId, ev.revenueType, ev.currency, ev.products];
  let size = 0;
  for (let i = 0; i < REVENUE_PLAIN_NAMES.length; i++) {
    const v = values[i];
    if (v === undefined) continue;
    const name = REVENUE_PLAIN_NAMES[i]!;
    if (Object.hasOwn(props, name)) {
      // The event's own property of that name wins (for `products`: it is the same list).
      if (name !== 'products') adjustments.push({ kind: 'dropped', target: 'event_property', key: name, rule: 'revenue_field_name_taken' });
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

/** Amplitude's revenue is price × quantity; a negative total is a refund. */
function isNegativeRevenue(ev: AmplitudeInEvent): boolean {
  if (ev.revenue !== undefined) return ev.revenue < 0;
  return (ev.price ?? 0) < 0;
}

/** Upper-cased; an unknown code is counted and replaced by the default. */
function normalizeCurrency(raw: string | undefined, fallback: string, key: string, adjustments: Adjustment[]): string {
  if (raw === undefined) return fallback;
  const c = raw.trim().toUpperCase();
  if (isCurrencyCode(c)) return c;
  adjustments.push({ kind: 'replaced', target: 'purchase', key, rule: 'currency_invalid' });
  return fallback;
}

/**
 * `product_id` falls back to the revenue type, then to the constant 'revenue': Braze requires a
 * product id, and a constant keeps the distinct-product count (capped at 5,000) bounded, where
 * the event type or an insert id would not.
 *
 * `price` is Amplitude's unit price, or revenue ÷ quantity (Amplitude's revenue is price ×
 * quantity).
 */
function buildPurchases(
  ev: AmplitudeInEvent,
  identifier: BrazeIdentifier,
  time: string,
  currency: string,
  out: BrazePurchase[],
  adjustments: Adjustment[],
): void {
  const quantity = purchaseQuantity(ev.quantity, 'quantity', adjustments);
  // hasRevenue guarantees one of the two; `?? 0` only satisfies the type.
  const price = ev.price ?? (ev.revenue ?? 0) / quantity;
  const productId = purchaseProductId(ev.productId ?? ev.revenueType ?? 'revenue', 'product_id', adjustments);
  pushSplit(out, identifier, productId, currency, price, quantity, time, 'quantity', adjustments);
}

/**
 * A refund entry of a `products` list: its unit price (its price, else its revenue ÷ a quantity of
 * at least 1, the same sign) is negative. The same reading as buildProductPurchases.
 */
function isRefundEntry(p: JsonValue): boolean {
  if (!isJsonObject(p)) return false;
  const n = readNumber(p['price'] ?? p['$price']) ?? readNumber(p['revenue'] ?? p['$revenue']);
  return n !== undefined && n < 0;
}

/**
 * One purchase per entry of a `products` list (each split as needed); entries without a price are
 * counted and left out, and so are refunds (`replaced` when they travel on the event, see
 * OUTBOUND_NEGATIVE_REVENUE_AS, else `dropped`).
 */
function buildProductPurchases(
  products: JsonValue[],
  ev: AmplitudeInEvent,
  identifier: BrazeIdentifier,
  time: string,
  currency: string,
  defaultCurrency: string,
  refundsOnEvent: boolean,
  out: BrazePurchase[],
  adjustments: Adjustment[],
): void {
  for (let i = 0; i < products.length; i++) {
    const p = products[i];
    const at = `products[${i}]`;
    if (!isJsonObject(p)) {
      adjustments.push({ kind: 'dropped', target: 'purchase', key: at, rule: 'product_invalid' });
      continue;
    }
    const quantity = purchaseQuantity(readNumber(p['quantity'] ?? p['$quantity']), `${at}.quantity`, adjustments);
    const revenue = readNumber(p['revenue'] ?? p['$revenue']);
    const unit = readNumber(p['price'] ?? p['$price']) ?? (revenue === undefined ? undefined : revenue / quantity);
    if (unit === undefined) {
      adjustments.push({ kind: 'dropped', target: 'purchase', key: at, rule: 'product_without_price' });
      continue;
    }
    if (unit < 0) {
      adjustments.push({ kind: refundsOnEvent ? 'replaced' : 'dropped', target: 'purchase', key: at, rule: 'negative_revenue_not_purchase' });
      continue;
    }
    const id =
      readId(p['productId'] ?? p['product_id'] ?? p['$productId']) ??
      readId(p['revenueType'] ?? p['revenue_type'] ?? p['$revenueType']) ??
      ev.productId ??
      ev.revenueType ??
      'revenue';
    const productId = purchaseProductId(id, `${at}.productId`, adjustments);
    const own = readId(p['currency'] ?? p['$currency']);
    const c = own === undefined ? currency : normalizeCurrency(own, defaultCurrency, `${at}.currency`, adjustments);
    pushSplit(out, identifier, productId, c, unit, quantity, time, `${at}.quantity`, adjustments);
  }
}

function purchaseQuantity(q: number | undefined, key: string, adjustments: Adjustment[]): number {
  if (q === undefined) return 1;
  let quantity = q;
  if (!Number.isInteger(quantity)) {
    quantity = Math.round(quantity);
    adjustments.push({ kind: 'truncated', target: 'purchase', key, rule: 'quantity_not_integer' });
  }
  if (quantity < 1) {
    quantity = 1;
    adjustments.push({ kind: 'truncated', target: 'purchase', key, rule: 'quantity_below_1' });
  }
  return quantity;
}

function purchaseProductId(id: string, key: string, adjustments: Adjustment[]): string {
  if (id.length <= MAX_STRING_LENGTH) return id;
  adjustments.push({ kind: 'truncated', target: 'purchase', key, rule: 'string_over_255' });
  return truncate(id);
}

/**
 * Braze takes at most 100 per purchase object: a larger quantity becomes several objects of at
 * most 100 at the same unit price, so the total revenue stays what Amplitude recorded. Stops at
 * MAX_PURCHASES_PER_EVENT objects for the whole event, and counts what is left out.
 */
function pushSplit(
  out: BrazePurchase[],
  identifier: BrazeIdentifier,
  productId: string,
  currency: string,
  price: number,
  quantity: number,
  time: string,
  key: string,
  adjustments: Adjustment[],
): void {
  if (quantity > MAX_PURCHASE_QUANTITY) adjustments.push({ kind: 'split', target: 'purchase', key, rule: 'quantity_over_100' });
  let left = quantity;
  for (; left > 0 && out.length < MAX_PURCHASES_PER_EVENT; left -= MAX_PURCHASE_QUANTITY) {
    out.push(newPurchase(identifier, productId, currency, price, Math.min(left, MAX_PURCHASE_QUANTITY), time));
  }
  if (left > 0) adjustments.push({ kind: 'truncated', target: 'purchase', key, rule: 'purchases_over_1000' });
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
 * values; Amplitude's operations map onto Braze's where Braze has the same operation:
 *  - `$set` sets; `$unset` sets null, which removes the attribute in Braze;
 *  - `$add` becomes `{inc: n}` (integers only: Braze documents `inc` for integers);
 *  - `$append` and `$postInsert` become `{add: [...]}` (Braze appends, keeping values unique);
 *  - `$remove` becomes `{remove: [...]}`;
 *  - `$setOnce` sets, marked in `ctx.setOnceKeys` so the attribute state sends it only when it
 *    has no value for the user; without an attribute state it is dropped and reported (sending it
 *    as a plain set would overwrite first-touch values on every event);
 *  - `$prepend` and `$preInsert` are dropped and reported: Braze can only append, and an append
 *    is not what Amplitude recorded;
 *  - `$clearAll` is dropped and reported: Braze has no "remove every attribute", and guessing the
 *    attribute list would erase data Amplitude never owned.
 * When two operations write the same attribute, the later one wins and the earlier is reported.
 * User properties outside the allow-list (OUTBOUND_USER_PROPERTIES) are left out without a report.
 */
function writeAttributes(up: JsonObject, attrs: BrazeAttributes, adjustments: Adjustment[], scratch: Scratch, ctx: WriteContext): number {
  let written = 0;
  for (const key in up) {
    const v = up[key];
    if (v === undefined) continue;
    if (key.charCodeAt(0) !== 36 /* $ */) {
      written += setAttribute(attrs, key, v, adjustments, scratch, ctx);
      continue;
    }
    if (key === '$clearAll') {
      adjustments.push({ kind: 'dropped', target: 'attribute', key, rule: 'clear_all_unsupported' });
      continue;
    }
    if (key === '$unset' && Array.isArray(v)) {
      // Some SDKs send the names as a list rather than as {name: '-'}.
      for (const name of v) {
        if (typeof name === 'string') written += writeOp(attrs, name, null, adjustments, scratch, ctx);
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
          if (x !== undefined) written += setAttribute(attrs, k, x, adjustments, scratch, ctx);
        }
        break;
      case '$setOnce': {
        for (const k in v) {
          const x = v[k];
          if (x === undefined) continue;
          if (!ctx.setOnce) {
            if (ctx.allow === undefined || ctx.allow(k)) adjustments.push({ kind: 'dropped', target: 'attribute', key: k, rule: 'set_once_unsupported' });
            continue;
          }
          const n = setAttribute(attrs, k, x, adjustments, scratch, ctx);
          if (Object.hasOwn(attrs, k)) (ctx.setOnceKeys ??= new Set<string>()).add(k);
          written += n;
        }
        break;
      }
      case '$unset':
        for (const k in v) written += writeOp(attrs, k, null, adjustments, scratch, ctx);
        break;
      case '$add':
        for (const k in v) {
          const n = integerValue(v[k]);
          if (n === undefined) adjustments.push({ kind: 'dropped', target: 'attribute', key: k, rule: 'add_not_integer' });
          else written += writeOp(attrs, k, { inc: n }, adjustments, scratch, ctx);
        }
        break;
      case '$prepend':
      case '$preInsert':
        for (const k in v) {
          if (ctx.allow === undefined || ctx.allow(k)) adjustments.push({ kind: 'dropped', target: 'attribute', key: k, rule: 'prepend_unsupported' });
        }
        break;
      case '$append':
      case '$postInsert':
      case '$remove':
        for (const k in v) {
          if (ctx.allow !== undefined && !ctx.allow(k)) continue;
          const list = stringList(k, v[k], adjustments);
          if (list === undefined) continue;
          const op: BrazeAttributeValue = key === '$remove' ? { remove: list } : { add: list };
          written += writeOp(attrs, k, op, adjustments, scratch, ctx);
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
function setAttribute(attrs: BrazeAttributes, key: string, v: JsonValue, adjustments: Adjustment[], scratch: Scratch, ctx: WriteContext): number {
  if (ctx.allow !== undefined && !ctx.allow(key)) return 0;
  // The key first, so that a dropped attribute is not also reported as truncated: writeOp reports the drop.
  if (attributeKeyRule(key) !== undefined) return writeOp(attrs, key, v, adjustments, scratch, ctx);
  let value: JsonValue | undefined = v;
  if (typeof v === 'string') {
    if (v.length > MAX_STRING_LENGTH) {
      value = truncate(v);
      adjustments.push({ kind: 'truncated', target: 'attribute', key, rule: 'string_over_255' });
    }
  } else if (Array.isArray(v)) {
    value = arrayAttribute(key, v, adjustments);
  } else if (typeof v === 'object' && v !== null) {
    if (!nestedKeysValid(v, 0)) {
      // Braze drops every nested-attribute update of the request (other users' too) for one bad key.
      adjustments.push({ kind: 'dropped', target: 'attribute', key, rule: 'nested_key_invalid' });
      value = undefined;
    } else if (exceedsNestedLimit(v)) {
      adjustments.push({ kind: 'dropped', target: 'attribute', key, rule: 'nested_over_50kb' });
      value = undefined;
    }
  }
  return value === undefined ? 0 : store(attrs, key, value, adjustments, scratch, ctx);
}

/** An operation's result: only the key needs checking, the value was built here. */
function writeOp(attrs: BrazeAttributes, key: string, value: BrazeAttributeValue, adjustments: Adjustment[], scratch: Scratch, ctx: WriteContext): number {
  if (ctx.allow !== undefined && !ctx.allow(key)) return 0;
  const keyRule = attributeKeyRule(key);
  if (keyRule !== undefined) {
    adjustments.push({ kind: 'dropped', target: 'attribute', key, rule: keyRule });
    return 0;
  }
  return store(attrs, key, value, adjustments, scratch, ctx);
}

/** Returns 1 when a new attribute was added. */
function store(attrs: BrazeAttributes, key: string, value: BrazeAttributeValue, adjustments: Adjustment[], scratch: Scratch, ctx: WriteContext): number {
  const identifierEmail = ctx.identifierEmail;
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
 * Braze's rules for keys inside a nested-object attribute (reference §7): at most 255 characters,
 * no spaces, no `.` and no `$`. Applies to the objects of an array of objects too.
 */
export function nestedKeyValid(key: string): boolean {
  const n = key.length;
  if (n === 0 || n > MAX_KEY_LENGTH || key === '__proto__') return false;
  for (let i = 0; i < n; i++) {
    const c = key.charCodeAt(i);
    if (c === 46 /* . */ || c === 36 /* $ */ || c === 32 /* space */) return false;
  }
  return true;
}

function nestedKeysValid(v: JsonValue, depth: number): boolean {
  if (typeof v !== 'object' || v === null) return true;
  if (depth > 50) return false;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) if (!nestedKeysValid(v[i]!, depth + 1)) return false;
    return true;
  }
  for (const k in v) {
    if (!nestedKeyValid(k)) return false;
    const x = v[k];
    if (x !== undefined && !nestedKeysValid(x, depth + 1)) return false;
  }
  return true;
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
      if (!nestedKeysValid(arr, 0)) {
        adjustments.push({ kind: 'dropped', target: 'attribute', key, rule: 'nested_key_invalid' });
        return undefined;
      }
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

/** The estimated JSON size of the attributes in an object (identifier and flags left out). */
function attributesSize(attrs: BrazeAttributes): number {
  let size = 0;
  for (const key in attrs) {
    if (key === 'external_id' || key === 'user_alias' || key === 'braze_id' || key === '_update_existing_only') continue;
    const v = attrs[key];
    if (v !== undefined) size += key.length + 4 + estimateJsonSize(v);
  }
  return size;
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
