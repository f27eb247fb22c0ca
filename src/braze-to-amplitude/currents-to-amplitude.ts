/**
 * Braze Currents event → Amplitude HTTP V2 event, reproducing Braze's native "Amplitude Export"
 * connector (braze-currents.md §6, amplitude-source-connector.md §3):
 * `user_id` ← `external_user_id`, `device_id` ← `device_id`, `insert_id` ← `id`,
 * `time` ← `time` × 1000, `event_type` ← `[Appboy] <display name>`, every other Braze field →
 * `event_properties`, custom-event / purchase properties prefixed, `productId`/`price` top level for
 * purchases, `adid`/`idfa` from `ad_id`, `library` = `Braze`.
 *
 * Braze does not publish the exact event names, so every name is configurable (prefix, custom-event
 * prefix, per-type overrides); names not quoted by Braze are derived the same way as the quoted ones
 * and are marked "derived" below.
 */
import type { AmplitudeEvent, CurrentsEvent, JsonObject, JsonValue } from '../currents-ingest/currents-types.js';
import { isPlainObject, safeJsonParse } from '../currents-ingest/currents-body.js';

export const CUSTOM_EVENT_TYPE = 'users.behaviors.CustomEvent';
export const PURCHASE_EVENT_TYPE = 'users.behaviors.Purchase';

interface EventTypeInfo {
  /** Display name without the `[Appboy] ` prefix. */
  readonly name: string;
  /** Listed among the event types Braze's native connector exports to Amplitude. */
  readonly connector: boolean;
}

/**
 * Every Currents event type of braze-currents.md §1 (Currents v10 sample set) plus the campaign and
 * Canvas Abort events the Amplitude connector list names. Names quoted by Braze's glossary / partner
 * page are marked "Braze"; the rest are derived (channel display name + split record name).
 */
export const CURRENTS_EVENT_TYPES: Readonly<Record<string, EventTypeInfo>> = Object.freeze({
  // Customer behaviour
  'users.behaviors.CustomEvent': { name: 'Custom Event', connector: true }, // Braze: "[Appboy] [Custom Event] <name>"
  'users.behaviors.Purchase': { name: 'Purchase', connector: true }, // Braze
  'users.behaviors.InstallAttribution': { name: 'Install Attribution', connector: true }, // Braze
  'users.behaviors.Location': { name: 'Location', connector: true }, // Braze
  'users.behaviors.Uninstall': { name: 'Uninstall', connector: true }, // Braze
  'users.behaviors.app.FirstSession': { name: 'First Session', connector: true }, // Braze
  'users.behaviors.app.SessionStart': { name: 'Session Start', connector: true }, // Braze
  'users.behaviors.app.SessionEnd': { name: 'Session End', connector: true }, // Braze
  'users.behaviors.subscription.GlobalStateChange': { name: 'Global Subscription State Change', connector: true }, // Braze
  'users.behaviors.subscriptiongroup.StateChange': { name: 'Subscription Group State Change', connector: true }, // Braze
  'users.behaviors.liveactivity.PushToStartTokenChange': { name: 'Live Activity Push To Start Token Change', connector: false },
  'users.behaviors.liveactivity.UpdateTokenChange': { name: 'Live Activity Update Token Change', connector: false },
  'users.behaviors.pushnotification.TokenStateChange': { name: 'Push Notification Token State Change', connector: false },
  // Campaigns
  'users.campaigns.Conversion': { name: 'Campaign Conversion', connector: true }, // Braze
  'users.campaigns.EnrollInControl': { name: 'Campaign Enroll In Control', connector: true },
  'users.campaigns.Abort': { name: 'Campaign Abort', connector: true },
  // Canvas
  'users.canvas.Entry': { name: 'Canvas Entry', connector: true }, // Braze
  'users.canvas.Conversion': { name: 'Canvas Conversion', connector: true }, // Braze
  'users.canvas.Abort': { name: 'Canvas Abort', connector: true },
  'users.canvas.exit.MatchedAudience': { name: 'Canvas Exit Matched Audience', connector: true },
  'users.canvas.exit.PerformedEvent': { name: 'Canvas Exit Performed Event', connector: true },
  'users.canvas.experimentstep.Conversion': { name: 'Canvas Experiment Step Conversion', connector: true },
  'users.canvas.experimentstep.SplitEntry': { name: 'Canvas Experiment Step Split Entry', connector: true },
  'users.canvas.costep.Send': { name: 'Canvas Co-Step Send', connector: false },
  'users.canvasstep.Progression': { name: 'Canvas Step Progression', connector: false },
  // Email
  'users.messages.email.Send': { name: 'Email Send', connector: true }, // Braze
  'users.messages.email.Delivery': { name: 'Email Delivery', connector: true }, // Braze
  'users.messages.email.Open': { name: 'Email Open', connector: true }, // Braze
  'users.messages.email.Click': { name: 'Email Click', connector: true }, // Braze
  'users.messages.email.Bounce': { name: 'Email Bounce', connector: true }, // Braze
  'users.messages.email.SoftBounce': { name: 'Email Soft Bounce', connector: true }, // Braze
  'users.messages.email.MarkAsSpam': { name: 'Email Mark As Spam', connector: true }, // Braze
  'users.messages.email.Unsubscribe': { name: 'Email Unsubscribe', connector: true }, // Braze
  'users.messages.email.Abort': { name: 'Email Abort', connector: true },
  'users.messages.email.Deferral': { name: 'Email Deferral', connector: false },
  'users.messages.email.Retry': { name: 'Email Retry', connector: false },
  // Push
  'users.messages.pushnotification.Send': { name: 'Push Notification Send', connector: true }, // Braze
  'users.messages.pushnotification.Open': { name: 'Push Notification Open', connector: true }, // Braze
  'users.messages.pushnotification.IosForeground': { name: 'Push Notification iOS Foreground Open', connector: true }, // Braze
  'users.messages.pushnotification.Bounce': { name: 'Push Notification Bounce', connector: true }, // Braze
  'users.messages.pushnotification.Abort': { name: 'Push Notification Abort', connector: true },
  'users.messages.pushnotification.Retry': { name: 'Push Notification Retry', connector: false },
  // In-app messages
  'users.messages.inappmessage.Impression': { name: 'In-App Message Impression', connector: true }, // Braze
  'users.messages.inappmessage.Click': { name: 'In-App Message Click', connector: true }, // Braze
  'users.messages.inappmessage.Abort': { name: 'In-App Message Abort', connector: true },
  // Content Cards
  'users.messages.contentcard.Send': { name: 'Content Card Send', connector: true }, // Braze
  'users.messages.contentcard.Impression': { name: 'Content Card Impression', connector: true }, // Braze
  'users.messages.contentcard.Click': { name: 'Content Card Click', connector: true }, // Braze
  'users.messages.contentcard.Dismiss': { name: 'Content Card Dismiss', connector: true }, // Braze
  'users.messages.contentcard.Abort': { name: 'Content Card Abort', connector: true },
  // SMS
  'users.messages.sms.Send': { name: 'SMS Send', connector: true }, // Braze
  'users.messages.sms.CarrierSend': { name: 'SMS Carrier Send', connector: true },
  'users.messages.sms.Delivery': { name: 'SMS Delivery', connector: true },
  'users.messages.sms.DeliveryFailure': { name: 'SMS Delivery Failure', connector: true },
  'users.messages.sms.InboundReceive': { name: 'SMS Inbound Receive', connector: true },
  'users.messages.sms.Rejection': { name: 'SMS Rejection', connector: true },
  'users.messages.sms.ShortLinkClick': { name: 'SMS Short Link Click', connector: true },
  'users.messages.sms.Abort': { name: 'SMS Abort', connector: true },
  'users.messages.sms.Retry': { name: 'SMS Retry', connector: false },
  // Webhook
  'users.messages.webhook.Send': { name: 'Webhook Send', connector: true }, // Braze
  'users.messages.webhook.Abort': { name: 'Webhook Abort', connector: true },
  'users.messages.webhook.Failure': { name: 'Webhook Failure', connector: false },
  'users.messages.webhook.Retry': { name: 'Webhook Retry', connector: false },
  // WhatsApp
  'users.messages.whatsapp.Send': { name: 'WhatsApp Send', connector: true },
  'users.messages.whatsapp.Delivery': { name: 'WhatsApp Delivery', connector: true },
  'users.messages.whatsapp.Read': { name: 'WhatsApp Read', connector: true },
  'users.messages.whatsapp.Failure': { name: 'WhatsApp Failure', connector: true },
  'users.messages.whatsapp.InboundReceive': { name: 'WhatsApp Inbound Receive', connector: true },
  'users.messages.whatsapp.Abort': { name: 'WhatsApp Abort', connector: true },
  'users.messages.whatsapp.Click': { name: 'WhatsApp Click', connector: false },
  'users.messages.whatsapp.Retry': { name: 'WhatsApp Retry', connector: false },
  // Newer or storage-only channels (not in the Amplitude connector list)
  'users.messages.rcs.Send': { name: 'RCS Send', connector: false },
  'users.messages.rcs.Delivery': { name: 'RCS Delivery', connector: false },
  'users.messages.rcs.Read': { name: 'RCS Read', connector: false },
  'users.messages.rcs.Click': { name: 'RCS Click', connector: false },
  'users.messages.rcs.Rejection': { name: 'RCS Rejection', connector: false },
  'users.messages.rcs.InboundReceive': { name: 'RCS Inbound Receive', connector: false },
  'users.messages.rcs.Abort': { name: 'RCS Abort', connector: false },
  'users.messages.line.Send': { name: 'LINE Send', connector: false },
  'users.messages.line.Click': { name: 'LINE Click', connector: false },
  'users.messages.line.InboundReceive': { name: 'LINE Inbound Receive', connector: false },
  'users.messages.line.Retry': { name: 'LINE Retry', connector: false },
  'users.messages.line.Abort': { name: 'LINE Abort', connector: false },
  'users.messages.banner.Impression': { name: 'Banner Impression', connector: false },
  'users.messages.banner.Click': { name: 'Banner Click', connector: false },
  'users.messages.banner.Dismiss': { name: 'Banner Dismiss', connector: false },
  'users.messages.banner.Abort': { name: 'Banner Abort', connector: false },
  'users.messages.featureflag.Impression': { name: 'Feature Flag Impression', connector: false },
  'users.messages.liveactivity.Send': { name: 'Live Activity Send', connector: false },
  'users.messages.liveactivity.Outcome': { name: 'Live Activity Outcome', connector: false },
  // Users, profile, agent console (storage-only)
  'users.profile.Update': { name: 'Profile Update', connector: false },
  'users.UserOrphan': { name: 'User Orphan', connector: false },
  'users.UserDeleteRequest': { name: 'User Delete Request', connector: false },
  'users.RandomBucketNumberUpdate': { name: 'Random Bucket Number Update', connector: false },
  'agentconsole.AgentExecuted': { name: 'Agent Console Agent Executed', connector: false },
  'agentconsole.ToolInvocation': { name: 'Agent Console Tool Invocation', connector: false },
});

/**
 * Values Amplitude refuses as `user_id` / `device_id` (amplitude-http-api.md §4), compared after
 * lower-casing by default because the case-sensitivity of Amplitude's list is undocumented and
 * `NULL` or `Undefined` are no more an identity than `null`.
 */
export const AMPLITUDE_BLOCKED_IDS: readonly string[] = Object.freeze([
  'anonymous',
  'nil',
  'none',
  'null',
  'n/a',
  'na',
  'undefined',
  'unknown',
  '""',
  '00000000-0000-0000-0000-000000000000',
  '{}',
  'lmy47d',
  '0',
  '-1',
]);

export interface CurrentsMappingOptions {
  /** Prefix of every event name. Default `[Appboy] ` (Braze's legacy name, per Braze's docs). */
  eventNamePrefix?: string;
  /**
   * Inserted between the prefix and a custom event's own name. Default `[Custom Event] `, giving
   * `[Appboy] [Custom Event] <name>` (Braze partner page; the glossary shows `[Braze Custom Event]`).
   */
  customEventPrefix?: string;
  /**
   * Full Amplitude event names per Currents event type, used verbatim (no prefix added). For
   * `users.behaviors.CustomEvent` the override is a template in which `{name}` is replaced by the
   * custom event's name. An override also opts an event type in when `eventScope` is `connector`.
   */
  nameOverrides?: Readonly<Record<string, string>>;
  /**
   * `connector` (default): only the event types Braze's native Amplitude connector exports (and
   * types named in `nameOverrides`); others are refused as `unsupported_event`, so storage-only
   * events (RandomBucketNumberUpdate, UserOrphan, ...) don't spend Amplitude event volume.
   * `all`: every event type, with a name derived from the type for ones not in the table.
   */
  eventScope?: 'connector' | 'all';
  /** Key prefix for custom-event properties. Default `[Custom event property] `. */
  customPropertyPrefix?: string;
  /** Key prefix for purchase properties. Default `[Purchase property] `. */
  purchasePropertyPrefix?: string;
  /** Minimum id length Amplitude accepts; keep equal to the `options.min_id_length` sent. Default 5. */
  minIdLength?: number;
  /** Ids Amplitude refuses. Default `AMPLITUDE_BLOCKED_IDS`. */
  blockedIds?: readonly string[];
  /** Compare ids with `blockedIds` case-sensitively. Default false (see `AMPLITUDE_BLOCKED_IDS`). */
  blockedIdsCaseSensitive?: boolean;
  /** Value of `library`, the loop-prevention marker the outbound leg recognises. Default `Braze`. */
  library?: string;
}

export type IdField = 'user_id' | 'device_id';

export interface DroppedId {
  /** The Amplitude field the id would have filled. */
  field: IdField;
  reason: 'too_short' | 'blocked';
}

export type MapResult =
  | { ok: true; event: AmplitudeEvent; /** ids removed because Amplitude would refuse them */ droppedIds: DroppedId[] }
  | {
      ok: false;
      reason: 'no_identity' | 'invalid_id' | 'unsupported_event' | 'missing_name';
      message: string;
      droppedIds: DroppedId[];
    };

const DEFAULTS = {
  eventNamePrefix: '[Appboy] ',
  customEventPrefix: '[Custom Event] ',
  customPropertyPrefix: '[Custom event property] ',
  purchasePropertyPrefix: '[Purchase property] ',
  minIdLength: 5,
  library: 'Braze',
} as const;

/** Properties moved elsewhere by the mapping, per event type family. */
const CUSTOM_EVENT_CONSUMED = new Set(['name', 'custom_properties']);
const PURCHASE_CONSUMED = new Set(['product_id', 'price', 'purchase_properties']);

const ALL_ZERO_AD_ID = '00000000-0000-0000-0000-000000000000';

/**
 * Maps one Currents event that passed `validateCurrentsEvent` (which also refuses
 * prototype-polluting keys; run it again on events read back from Kafka). Pure and total: every
 * refusal is a `reason` the caller counts and dead-letters.
 */
export function mapCurrentsEvent(ev: CurrentsEvent, opts: CurrentsMappingOptions = {}): MapResult {
  const droppedIds: DroppedId[] = [];

  const name = eventName(ev, opts);
  if (!name.ok) return { ...name, droppedIds };

  const rawUser = nonEmpty(ev.user.external_user_id);
  const rawDevice = nonEmpty(ev.user.device_id);
  if (rawUser === undefined && rawDevice === undefined) {
    return {
      ok: false,
      reason: 'no_identity',
      message: `${ev.event_type} ${ev.id} has neither external_user_id nor device_id`,
      droppedIds,
    };
  }
  // Amplitude strips an id it refuses and rejects the event only if none is left, so do the same
  // here, before sending, and report what was stripped.
  const userId = rawUser === undefined ? undefined : keepValidId('user_id', rawUser, opts, droppedIds);
  const deviceId = rawDevice === undefined ? undefined : keepValidId('device_id', rawDevice, opts, droppedIds);
  if (userId === undefined && deviceId === undefined) {
    return {
      ok: false,
      reason: 'invalid_id',
      message: `${ev.event_type} ${ev.id}: every id is one Amplitude refuses (${droppedIds.map((d) => `${d.field} ${d.reason}`).join(', ')})`,
      droppedIds,
    };
  }

  const props = ev.properties;
  const eventProperties: JsonObject = {};
  const isCustom = ev.event_type === CUSTOM_EVENT_TYPE;
  const isPurchase = ev.event_type === PURCHASE_EVENT_TYPE;
  const consumed = isCustom ? CUSTOM_EVENT_CONSUMED : isPurchase ? PURCHASE_CONSUMED : undefined;
  const nested = isCustom
    ? nestedProperties(props, 'custom_properties')
    : isPurchase
      ? nestedProperties(props, 'purchase_properties')
      : undefined;

  // Braze's own id and the user's timezone are Braze fields like any other; `braze_id` is Braze's
  // name for the former and avoids two different `user_id`s on one Amplitude event.
  if (ev.user.user_id !== undefined) eventProperties['braze_id'] = ev.user.user_id;
  if (ev.user.timezone !== undefined) eventProperties['timezone'] = ev.user.timezone;
  for (const [key, value] of Object.entries(props)) {
    if (consumed?.has(key)) continue;
    // A JSON-string `properties` that was parsed is replaced by its prefixed keys; one that could
    // not be parsed is kept as it is rather than lost.
    if (key === 'properties' && nested?.fromString) continue;
    eventProperties[key] = value;
  }
  if (nested !== undefined) {
    const prefix = isCustom
      ? opts.customPropertyPrefix ?? DEFAULTS.customPropertyPrefix
      : opts.purchasePropertyPrefix ?? DEFAULTS.purchasePropertyPrefix;
    for (const [key, value] of Object.entries(nested.props)) eventProperties[`${prefix}${key}`] = value;
  }

  const event: AmplitudeEvent = { event_type: name.name };
  if (userId !== undefined) event.user_id = userId;
  if (deviceId !== undefined) event.device_id = deviceId;
  event.time = Math.round(ev.time * 1000);
  event.insert_id = ev.id;
  event.event_properties = eventProperties;

  if (isPurchase) {
    const productId = props['product_id'];
    if (typeof productId === 'string' && productId !== '') event.productId = productId;
    const price = props['price'];
    if (typeof price === 'number' && Number.isFinite(price)) event.price = roundFloat32(price);
    // No quantity/revenue: the native connector sends neither (quantity defaults to 1 in
    // Amplitude, so revenue = price); `currency` stays in event_properties as Braze does.
  }

  const adId = props['ad_id'];
  if (typeof adId === 'string' && adId !== '' && adId !== ALL_ZERO_AD_ID) {
    const field = adIdField(props['ad_id_type'], props['platform']);
    if (field !== undefined) event[field] = adId;
  }

  event.library = opts.library ?? DEFAULTS.library;
  return { ok: true, event, droppedIds };
}

type NameResult = { ok: true; name: string } | { ok: false; reason: 'unsupported_event' | 'missing_name'; message: string };

function eventName(ev: CurrentsEvent, opts: CurrentsMappingOptions): NameResult {
  const override = opts.nameOverrides !== undefined && Object.hasOwn(opts.nameOverrides, ev.event_type)
    ? opts.nameOverrides[ev.event_type]
    : undefined;
  const info = Object.hasOwn(CURRENTS_EVENT_TYPES, ev.event_type) ? CURRENTS_EVENT_TYPES[ev.event_type] : undefined;
  const scope = opts.eventScope ?? 'connector';
  if (override === undefined && scope === 'connector' && !info?.connector) {
    return {
      ok: false,
      reason: 'unsupported_event',
      message: `${ev.event_type} is not exported by Braze's Amplitude connector (set eventScope "all" or a name override to send it)`,
    };
  }
  const prefix = opts.eventNamePrefix ?? DEFAULTS.eventNamePrefix;
  if (ev.event_type === CUSTOM_EVENT_TYPE) {
    const customName = ev.properties['name'];
    if (typeof customName !== 'string' || customName === '') {
      return { ok: false, reason: 'missing_name', message: `custom event ${ev.id} has no "name"` };
    }
    if (override !== undefined) return { ok: true, name: override.split('{name}').join(customName) };
    return { ok: true, name: `${prefix}${opts.customEventPrefix ?? DEFAULTS.customEventPrefix}${customName}` };
  }
  if (override !== undefined) return { ok: true, name: override };
  return { ok: true, name: `${prefix}${info?.name ?? deriveDisplayName(ev.event_type)}` };
}

const FAMILY_WORDS: Readonly<Record<string, string>> = {
  behaviors: '',
  app: '',
  messages: '',
  campaigns: 'Campaign',
  canvas: 'Canvas',
  canvasstep: 'Canvas Step',
  costep: 'Co-Step',
  experimentstep: 'Experiment Step',
  exit: 'Exit',
  email: 'Email',
  pushnotification: 'Push Notification',
  inappmessage: 'In-App Message',
  contentcard: 'Content Card',
  sms: 'SMS',
  webhook: 'Webhook',
  whatsapp: 'WhatsApp',
  rcs: 'RCS',
  line: 'LINE',
  banner: 'Banner',
  featureflag: 'Feature Flag',
  liveactivity: 'Live Activity',
  subscription: 'Subscription',
  subscriptiongroup: 'Subscription Group',
  profile: 'Profile',
  agentconsole: 'Agent Console',
  newsfeedcard: 'News Feed Card',
  landingpage: 'Landing Page',
  survey: 'Survey',
};

/**
 * Display name for an event type missing from the table (Braze adds types over time):
 * `users.messages.survey.Response` → `Survey Response`.
 */
export function deriveDisplayName(eventType: string): string {
  const segments = eventType.split('.').filter((s) => s !== '');
  if (segments[0] === 'users') segments.shift();
  const last = segments.pop() ?? eventType;
  const words: string[] = [];
  for (const seg of segments) {
    const w = Object.hasOwn(FAMILY_WORDS, seg) ? FAMILY_WORDS[seg] : titleCase(seg);
    if (w) words.push(w);
  }
  words.push(splitCamel(last));
  return words.join(' ');
}

function splitCamel(s: string): string {
  return s.replace(/([a-z0-9])([A-Z])/g, '$1 $2').replace(/([A-Z]+)([A-Z][a-z])/g, '$1 $2');
}

function titleCase(s: string): string {
  return s.length === 0 ? s : s[0]!.toUpperCase() + s.slice(1);
}

function keepValidId(field: IdField, id: string, opts: CurrentsMappingOptions, dropped: DroppedId[]): string | undefined {
  const reason = idRejection(id, opts);
  if (reason === undefined) return id;
  dropped.push({ field, reason });
  return undefined;
}

/** Why Amplitude would refuse `id` as a user or device id, or undefined if it would accept it. */
export function idRejection(id: string, opts: Pick<CurrentsMappingOptions, 'minIdLength' | 'blockedIds' | 'blockedIdsCaseSensitive'> = {}): DroppedId['reason'] | undefined {
  // Blocked first: `null` is also short, but "blocked" is the more useful reason to report.
  const blocked = opts.blockedIds ?? AMPLITUDE_BLOCKED_IDS;
  if (opts.blockedIdsCaseSensitive) {
    if (blockedSet(blocked, false).has(id)) return 'blocked';
  } else if (blockedSet(blocked, true).has(id.toLowerCase())) return 'blocked';
  const min = opts.minIdLength ?? DEFAULTS.minIdLength;
  // Code points, not UTF-16 units, so an id of two emoji is two characters long; an id of at least
  // 2×min units has at least min code points, so only short ones need counting.
  if (id.length >= 2 * min) return undefined;
  let length = 0;
  for (const _ of id) length++;
  if (length < min) return 'too_short';
  return undefined;
}

/** blocked-id lists as Sets, built once per list (this runs for every event) */
const blockedSets = new WeakMap<readonly string[], { exact: Set<string>; lower: Set<string> }>();
function blockedSet(list: readonly string[], lower: boolean): Set<string> {
  let s = blockedSets.get(list);
  if (!s) {
    s = { exact: new Set(list), lower: new Set(list.map((b) => b.toLowerCase())) };
    blockedSets.set(list, s);
  }
  return lower ? s.lower : s.exact;
}

function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v === '' ? undefined : v;
}

/**
 * Custom/purchase properties: the HTTP connector nests them as an object under
 * `custom_properties`/`purchase_properties`; Avro-derived (storage) events that were not converted
 * carry a JSON string under `properties`, which is parsed here with the same safety rules as a body.
 */
function nestedProperties(props: JsonObject, nestedKey: string): { props: JsonObject; fromString: boolean } | undefined {
  const nested = props[nestedKey];
  if (isPlainObject(nested)) return { props: nested as JsonObject, fromString: false };
  const encoded = props['properties'];
  if (typeof encoded === 'string') {
    if (encoded.trim() === '') return { props: {}, fromString: true };
    const parsed = safeJsonParse(encoded);
    if (parsed.ok && isPlainObject(parsed.value)) return { props: parsed.value as JsonObject, fromString: true };
  }
  return undefined;
}

/**
 * Which top-level Amplitude ad-id field `ad_id` fills: iOS IDFA → `idfa`, Google ad id → `adid`;
 * Windows and Roku ad ids have no Amplitude field and stay in event_properties only. Without an
 * `ad_id_type`, the platform decides.
 */
function adIdField(adIdType: JsonValue | undefined, platform: JsonValue | undefined): 'idfa' | 'adid' | undefined {
  if (adIdType === 'ios_idfa') return 'idfa';
  if (adIdType === 'google_ad_id') return 'adid';
  if (typeof adIdType === 'string' && adIdType !== '') return undefined;
  if (platform === 'ios') return 'idfa';
  if (platform === 'android' || platform === 'kindle') return 'adid';
  return undefined;
}

/**
 * Avro `float` prices decode as the nearest double of a 32-bit float (3.14 → 3.140000104904175).
 * Values that are exactly a float32 are replaced by the shortest decimal that maps to the same
 * float32; any other double is left alone, since it did not come from a float32.
 */
export function roundFloat32(v: number): number {
  if (!Number.isFinite(v) || Math.fround(v) !== v) return v;
  for (let p = 1; p <= 9; p++) {
    const candidate = Number(v.toPrecision(p));
    if (Math.fround(candidate) === v) return candidate;
  }
  return v;
}

/** Narrowing for `identityKey`: Currents events carry a `user` block, Amplitude events don't. */
export function isCurrentsEvent(ev: AmplitudeEvent | CurrentsEvent): ev is CurrentsEvent {
  return 'user' in ev && typeof ev.user === 'object' && ev.user !== null;
}

/**
 * The Kafka key for an event: the user id when there is one (for a Currents event,
 * `external_user_id`), else `device_id`. Keyed by user, all of a user's events land on one
 * partition, so the one process owning it sees every event counted against that user id, whatever
 * the devices (Amplitude limits each user id as well as each device id). Ids Amplitude would refuse
 * are skipped, so a Currents event and the Amplitude event mapped from it get the same key and land
 * on the same partition.
 */
export function identityKey(
  ev: AmplitudeEvent | CurrentsEvent,
  opts: Pick<CurrentsMappingOptions, 'minIdLength' | 'blockedIds' | 'blockedIdsCaseSensitive'> = {},
): string | undefined {
  const [device, user] = isCurrentsEvent(ev) ? [ev.user.device_id, ev.user.external_user_id] : [ev.device_id, ev.user_id];
  for (const id of [user, device]) {
    if (typeof id === 'string' && id !== '' && idRejection(id, opts) === undefined) return id;
  }
  return undefined;
}
