/**
 * A local stand-in for Braze `POST /users/track` (reference: braze-users-track.md).
 *
 * It enforces the documented limits strictly so that the integration tests, the fault tests, the
 * benchmarks and `npm run demo` catch a gateway that would be refused by the real service. Plain
 * `node:http` keeps the per-request cost low enough for benchmark traffic over keep-alive.
 */
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import { systemClock, type Clock } from '../../clock.js';
import { CountWaiters, FaultQueue, readBody, send, serve, type StandInFault } from './http-util.js';

export type BrazeArrayName = 'events' | 'attributes' | 'purchases';

export interface BrazeStandInOptions {
  /** The expected Bearer token; anything else is answered 401. */
  apiKey: string;
  /** Objects allowed in one array (legacy contracts: 75 per array). Default 75. */
  maxPerArray?: number;
  /**
   * Objects allowed across the three arrays: 75 in Braze's current docs (reference §7), 50 for
   * MAU CY 24-25 contracts, 0 for no cap (legacy contracts: only the per-array cap). Default 75,
   * so that a gateway sending more in one request is refused here as it would be by Braze.
   */
  maxTotal?: number;
  /** Largest accepted body. Default 4 MiB; larger is answered 413. */
  maxBodyBytes?: number;
  /** Workspace request limit, fixed windows aligned to the epoch. Default 3000 per 3000 ms. */
  rateLimit?: { requests: number; windowMs: number } | false;
  /** Per-object checks of identifiers, events, purchases, properties and attributes. Default true. */
  validate?: boolean;
  /**
   * The profile model (default true): user profiles keyed by external_id, alias (label + name),
   * braze_id and email, and Braze's update-only semantics (§2). An accepted object for a profile
   * that does not exist is answered 201 like any other, but when it is update-only (explicitly, or
   * by default: objects identified by alias or braze_id are update-only) it is silently not
   * processed; any object (attributes, event or purchase) with `_update_existing_only: false`
   * creates the profile: counted in `stats.silentlyDropped` and kept in `dropped`, not applied to a
   * profile. `received` keeps every accepted object either way, as the API accepted it.
   */
  profiles?: boolean;
  clock?: Clock;
  port?: number;
  host?: string;
}

/** Default body: Braze's `{"message": ...}` form. */
export type BrazeFault = StandInFault;

export type BrazeRejectPredicate = (
  obj: Record<string, unknown>,
  array: BrazeArrayName,
) => string | undefined;

export interface BrazeErrorItem {
  type: string;
  input_array: BrazeArrayName;
  index: number;
}

export interface BrazeStandInStats {
  requests: number;
  byStatus: Record<number, number>;
  acceptedObjects: number;
  rejectedObjects: number;
  rateLimited: number;
  faultsServed: number;
  /** Largest array sizes seen in any parsed request, accepted or not, to check the gateway's batching. */
  maxEventsInRequest: number;
  maxAttributesInRequest: number;
  maxPurchasesInRequest: number;
  maxObjectsInRequest: number;
  maxRequestBytes: number;
  /** accepted (201) objects not processed: their profile does not exist and they are update-only */
  silentlyDropped: number;
  /** profiles created by an accepted object */
  profilesCreated: number;
}

/** What the profile model holds for one user. */
export interface BrazeProfile {
  external_id?: string;
  aliases: Array<{ alias_name: string; alias_label: string }>;
  braze_id: string;
  email?: string;
  attributes: Record<string, unknown>;
  /** custom events and purchases recorded on the profile, in processing order */
  events: Array<Record<string, unknown>>;
  purchases: Array<Record<string, unknown>>;
}

/** One of the identifiers an object or a lookup names. */
export interface BrazeProfileId {
  external_id?: string;
  user_alias?: { alias_name: string; alias_label: string };
  braze_id?: string;
  email?: string;
}

export interface BrazeReceived {
  events: Array<Record<string, unknown>>;
  attributes: Array<Record<string, unknown>>;
  purchases: Array<Record<string, unknown>>;
}

export interface BrazeStandIn {
  /** The "REST endpoint"; the route is `POST ${url}/users/track`. */
  readonly url: string;
  /** Accepted objects only, in arrival order (silently dropped ones included: the API accepted them). */
  readonly received: Readonly<BrazeReceived>;
  /** Accepted objects the profile model did not process (unknown profile, update-only). */
  readonly dropped: Readonly<BrazeReceived>;
  readonly stats: Readonly<BrazeStandInStats>;
  setApiKey(key: string): void;
  /** The next `count` requests get this answer instead of the normal processing. Faults queue up in order. */
  injectFaults(fault: BrazeFault): void;
  /** Drops the faults not yet served (the end of an outage). */
  clearFaults(): void;
  /** Objects for which the predicate returns a reason are refused as a per-object error item. */
  rejectWhen(pred: BrazeRejectPredicate | undefined): void;
  /** Resolves once at least `n` events have been accepted in total; rejects after `timeoutMs`. */
  waitForEvents(n: number, timeoutMs: number): Promise<void>;
  /** The profile an identifier names, when the profile model is on and it exists. */
  profile(id: BrazeProfileId): BrazeProfile | undefined;
  /** Number of profiles (0 when the profile model is off). */
  profileCount(): number;
  /** Creates a profile as if it already existed in the workspace (a known user). */
  seedProfile(id: BrazeProfileId, attributes?: Record<string, unknown>): void;
  /** Back to the state right after start: data, profiles, stats, faults, rate window, predicate, and the configured key. */
  reset(): void;
  close(): Promise<void>;
}

const ARRAYS: readonly BrazeArrayName[] = ['attributes', 'events', 'purchases'];
const ROUTE = '/users/track';
const MAX_STRING = 255;
/** The docs disagree between 50 KB and 100 KB for array/object property values; 50 KB is the safe one. */
const MAX_NESTED_PROPERTY_BYTES = 50 * 1024;

const NO_VALID_DATA = "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields.";
/** Verbatim from observed Braze responses. */
const IDENTIFIER_REQUIRED = "'external_id', 'braze_id', 'user_alias', 'email' or 'phone' is required";
const RATE_LIMITED = 'API rate limit exceeded';

/** Not profile attributes: identifiers and per-object control flags. */
const NON_ATTRIBUTE_KEYS = new Set([
  'external_id',
  'user_alias',
  'braze_id',
  '_update_existing_only',
  '_merge_objects',
  'push_token_import',
]);

/**
 * ISO-8601 date-time, plus Braze's `yyyy-MM-dd'T'HH:mm:ss:SSSZ` variant (colon before the
 * fraction), which `Date.parse` would refuse.
 */
const TIME_RE =
  /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:[.:](\d{1,9}))?)?)?(Z|[+-]\d{2}(?::?\d{2})?)?$/;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isNonEmptyString(v: unknown): v is string {
  return typeof v === 'string' && v.length > 0;
}

export function isBrazeTime(v: unknown): boolean {
  if (typeof v !== 'string') return false;
  const m = TIME_RE.exec(v);
  if (!m) return false;
  const [, y, mo, d, hh = '00', mi = '00', ss = '00', frac = '0', tzRaw = 'Z'] = m;
  let tz = tzRaw;
  if (tz !== 'Z') tz = tz.length === 3 ? `${tz}:00` : tz.length === 5 ? `${tz.slice(0, 3)}:${tz.slice(3)}` : tz;
  const ms = frac.padEnd(3, '0').slice(0, 3);
  const parsed = Date.parse(`${y}-${mo}-${d}T${hh}:${mi}:${ss}.${ms}${tz}`);
  return Number.isFinite(parsed) && Number(mo) >= 1 && Number(mo) <= 12 && Number(d) >= 1 && Number(d) <= 31;
}

function checkIdentifier(obj: Record<string, unknown>, array: BrazeArrayName): string | undefined {
  let primaries = 0;
  if (obj.external_id !== undefined) {
    if (!isNonEmptyString(obj.external_id)) return "'external_id' is not valid";
    primaries++;
  }
  if (obj.braze_id !== undefined) {
    if (!isNonEmptyString(obj.braze_id)) return "'braze_id' is not valid";
    primaries++;
  }
  if (obj.user_alias !== undefined) {
    const a = obj.user_alias;
    if (!isRecord(a) || !isNonEmptyString(a.alias_name) || !isNonEmptyString(a.alias_label)) {
      return "'user_alias' is not valid";
    }
    primaries++;
  }
  const hasEmail = obj.email !== undefined;
  const hasPhone = obj.phone !== undefined;
  // In an attributes object `email` and `phone` are also profile fields, so next to another
  // identifier they are values being set, not a second identifier.
  if (array === 'attributes' && primaries === 1) return undefined;
  if (hasEmail && !isNonEmptyString(obj.email)) return "'email' is not valid";
  if (hasPhone && !isNonEmptyString(obj.phone)) return "'phone' is not valid";
  // Braze documents that email wins over phone when both are sent, so that pair counts as one.
  const total = primaries + (hasEmail || hasPhone ? 1 : 0);
  if (total === 0) return IDENTIFIER_REQUIRED;
  if (total > 1) return "Only one of 'external_id', 'braze_id', 'user_alias', 'email' or 'phone' may be provided";
  return undefined;
}

function checkProperties(props: unknown): string | undefined {
  if (props === undefined) return undefined;
  if (!isRecord(props)) return "'properties' is not valid";
  for (const [key, value] of Object.entries(props)) {
    if (key.length === 0 || key.length > MAX_STRING || key.startsWith('$')) {
      return `Property name '${key.slice(0, 64)}' is not valid`;
    }
    if (key === 'time' || key === 'event_name') return `Property name '${key}' is reserved`;
    if (typeof value === 'string') {
      if (value.length > MAX_STRING) return `Property '${key}' value is longer than ${MAX_STRING} characters`;
    } else if (typeof value === 'object' && value !== null) {
      if (Buffer.byteLength(JSON.stringify(value)) > MAX_NESTED_PROPERTY_BYTES) {
        return `Property '${key}' is larger than ${MAX_NESTED_PROPERTY_BYTES} bytes`;
      }
    } else if (typeof value === 'number') {
      if (!Number.isFinite(value)) return `Property '${key}' value is not valid`;
    }
  }
  return undefined;
}

function checkUpdateFlag(obj: Record<string, unknown>): string | undefined {
  const f = obj._update_existing_only;
  return f === undefined || typeof f === 'boolean' ? undefined : "'_update_existing_only' is not valid";
}

function checkEvent(obj: Record<string, unknown>): string | undefined {
  if (obj.name === undefined || obj.name === null) return "'name' is required";
  if (!isNonEmptyString(obj.name)) return "'name' is not valid";
  if (obj.time === undefined || obj.time === null) return "'time' is required";
  if (!isBrazeTime(obj.time)) return "'time' is not valid";
  if (obj.app_id !== undefined && typeof obj.app_id !== 'string') return "'app_id' is not valid";
  return checkUpdateFlag(obj) ?? checkProperties(obj.properties);
}

function checkPurchase(obj: Record<string, unknown>): string | undefined {
  const p = obj.product_id;
  if (p === undefined || p === null) return "'product_id' is required";
  if (!isNonEmptyString(p) || p.length > MAX_STRING) return "'product_id' is not valid";
  if (obj.currency === undefined || obj.currency === null) return "'currency' is required";
  if (typeof obj.currency !== 'string' || !/^[A-Za-z]{3}$/.test(obj.currency)) return "'currency' is not valid";
  if (obj.price === undefined || obj.price === null) return "'price' is required";
  if (typeof obj.price !== 'number' || !Number.isFinite(obj.price)) return "'price' is not valid";
  if (obj.time === undefined || obj.time === null) return "'time' is required";
  if (!isBrazeTime(obj.time)) return "'time' is not valid";
  const q = obj.quantity;
  if (q !== undefined && (typeof q !== 'number' || !Number.isInteger(q) || q < 1 || q > 100)) {
    return "'quantity' is not valid";
  }
  if (obj.app_id !== undefined && typeof obj.app_id !== 'string') return "'app_id' is not valid";
  return checkUpdateFlag(obj) ?? checkProperties(obj.properties);
}

function checkAttributes(obj: Record<string, unknown>): string | undefined {
  const err = checkUpdateFlag(obj);
  if (err) return err;
  for (const [key, value] of Object.entries(obj)) {
    if (NON_ATTRIBUTE_KEYS.has(key)) continue;
    if (key.length === 0 || key.length > MAX_STRING) return `Attribute name '${key.slice(0, 64)}' is not valid`;
    if (typeof value === 'string' && value.length > MAX_STRING) {
      return `Attribute '${key}' value is longer than ${MAX_STRING} characters`;
    }
  }
  return undefined;
}

function validateObject(obj: unknown, array: BrazeArrayName): string | undefined {
  if (!isRecord(obj)) return 'Object is not valid';
  const idErr = checkIdentifier(obj, array);
  if (idErr) return idErr;
  if (array === 'events') return checkEvent(obj);
  if (array === 'purchases') return checkPurchase(obj);
  return checkAttributes(obj);
}

function defaultFaultBody(status: number): unknown {
  if (status === 429) return { message: RATE_LIMITED };
  if (status === 413) return { message: 'Request Entity Too Large' };
  if (status === 401) return { message: 'Invalid API key: ' };
  return { message: STATUS_CODES[status] ?? 'Error' };
}

/** The lookup keys of an identifier (an attributes object's email is a value, not an identifier, next to another). */
function profileKeys(obj: BrazeProfileId & Record<string, unknown>): string[] {
  const keys: string[] = [];
  if (typeof obj.external_id === 'string') keys.push(`ext:${obj.external_id}`);
  const a = obj.user_alias;
  if (a && typeof a.alias_label === 'string' && typeof a.alias_name === 'string') keys.push(`alias:${a.alias_label}\u0000${a.alias_name}`);
  if (typeof obj.braze_id === 'string') keys.push(`braze:${obj.braze_id}`);
  if (keys.length === 0 && typeof obj.email === 'string') keys.push(`email:${obj.email.toLowerCase()}`);
  return keys;
}

/** Braze's default (§2): update-only for alias and braze_id, create for external_id, email and phone. */
function updateOnly(obj: Record<string, unknown>): boolean {
  if (typeof obj._update_existing_only === 'boolean') return obj._update_existing_only;
  return obj.external_id === undefined && obj.email === undefined && obj.phone === undefined;
}

/** One attribute write as Braze applies it: null removes; inc, add and remove operate. */
function applyAttribute(attrs: Record<string, unknown>, key: string, value: unknown, merge: boolean): void {
  if (value === null) {
    delete attrs[key];
    return;
  }
  if (isRecord(value)) {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === 'inc' && typeof value.inc === 'number') {
      attrs[key] = (typeof attrs[key] === 'number' ? (attrs[key] as number) : 0) + value.inc;
      return;
    }
    if (keys.length === 1 && (keys[0] === 'add' || keys[0] === 'remove') && Array.isArray(value[keys[0]])) {
      const list = (Array.isArray(attrs[key]) ? (attrs[key] as unknown[]) : []).slice();
      for (const item of value[keys[0]] as unknown[]) {
        const at = list.indexOf(item);
        if (at >= 0) list.splice(at, 1);
        if (keys[0] === 'add') list.push(item);
      }
      attrs[key] = list;
      return;
    }
    if (merge && isRecord(attrs[key])) {
      attrs[key] = { ...(attrs[key] as Record<string, unknown>), ...value };
      return;
    }
  }
  attrs[key] = value;
}

class ProfileStore {
  private readonly byKey = new Map<string, BrazeProfile>();
  private next = 1;
  count = 0;

  find(obj: Record<string, unknown>): BrazeProfile | undefined {
    for (const k of profileKeys(obj)) {
      const p = this.byKey.get(k);
      if (p) return p;
    }
    return undefined;
  }

  create(obj: Record<string, unknown>): BrazeProfile {
    const p: BrazeProfile = { aliases: [], braze_id: `sb-${String(this.next++).padStart(8, '0')}`, attributes: {}, events: [], purchases: [] };
    if (typeof obj.external_id === 'string') p.external_id = obj.external_id;
    const a = obj.user_alias;
    if (isRecord(a) && typeof a.alias_name === 'string' && typeof a.alias_label === 'string') p.aliases.push({ alias_name: a.alias_name, alias_label: a.alias_label });
    if (typeof obj.email === 'string') p.email = obj.email;
    for (const k of profileKeys(obj)) this.byKey.set(k, p);
    this.byKey.set(`braze:${p.braze_id}`, p);
    this.count++;
    return p;
  }

  clear(): void {
    this.byKey.clear();
    this.count = 0;
    this.next = 1;
  }
}

export async function startBrazeStandIn(opts: BrazeStandInOptions): Promise<BrazeStandIn> {
  const clock = opts.clock ?? systemClock;
  const maxPerArray = opts.maxPerArray ?? 75;
  const maxTotal = opts.maxTotal ?? 75;
  const maxBodyBytes = opts.maxBodyBytes ?? 4 * 1024 * 1024;
  const rate = opts.rateLimit === undefined ? { requests: 3000, windowMs: 3000 } : opts.rateLimit;
  const validate = opts.validate ?? true;
  const profilesOn = opts.profiles ?? true;
  const profiles = new ProfileStore();
  const host = opts.host ?? '127.0.0.1';

  let apiKey = opts.apiKey;
  let rejectPred: BrazeRejectPredicate | undefined;
  const faults = new FaultQueue();
  const received: BrazeReceived = { events: [], attributes: [], purchases: [] };
  const dropped: BrazeReceived = { events: [], attributes: [], purchases: [] };
  const stats: BrazeStandInStats = {
    requests: 0,
    byStatus: {},
    acceptedObjects: 0,
    rejectedObjects: 0,
    rateLimited: 0,
    faultsServed: 0,
    maxEventsInRequest: 0,
    maxAttributesInRequest: 0,
    maxPurchasesInRequest: 0,
    maxObjectsInRequest: 0,
    maxRequestBytes: 0,
    silentlyDropped: 0,
    profilesCreated: 0,
  };
  let windowStart = Number.NEGATIVE_INFINITY;
  let windowUsed = 0;
  const waiters = new CountWaiters(() => received.events.length, 'Braze stand-in');

  /** Fixed windows aligned to the epoch make `X-RateLimit-Reset` a deterministic whole second for 3 s windows. */
  function rateState(consume: boolean): { headers: Record<string, string>; over: boolean } {
    if (rate === false) return { headers: {}, over: false };
    const now = clock.now();
    const start = Math.floor(now / rate.windowMs) * rate.windowMs;
    if (start !== windowStart) {
      windowStart = start;
      windowUsed = 0;
    }
    if (consume) windowUsed++;
    return {
      over: consume && windowUsed > rate.requests,
      headers: {
        'X-RateLimit-Limit': String(rate.requests),
        'X-RateLimit-Remaining': String(Math.max(0, rate.requests - windowUsed)),
        // Rounded up so that a client waiting until the reset never lands in the old window.
        'X-RateLimit-Reset': String(Math.ceil((start + rate.windowMs) / 1000)),
      },
    };
  }

  /** Applies one accepted object to the profile it names, or drops it silently as Braze does. */
  function process(array: BrazeArrayName, obj: Record<string, unknown>): void {
    let p = profiles.find(obj);
    if (!p) {
      if (updateOnly(obj)) {
        stats.silentlyDropped++;
        dropped[array].push(obj);
        return;
      }
      p = profiles.create(obj);
      stats.profilesCreated++;
    }
    if (array === 'events') p.events.push(obj);
    else if (array === 'purchases') p.purchases.push(obj);
    else {
      const merge = obj._merge_objects === true;
      for (const [k, v] of Object.entries(obj)) {
        if (NON_ATTRIBUTE_KEYS.has(k)) continue;
        if (k === 'email' && profileKeys(obj)[0]?.startsWith('email:')) continue;
        applyAttribute(p.attributes, k, v, merge);
      }
    }
  }

  function answer(res: ServerResponse, status: number, body: unknown, headers: Record<string, string>): void {
    stats.byStatus[status] = (stats.byStatus[status] ?? 0) + 1;
    send(res, status, body, headers);
  }

  function serveFault(req: IncomingMessage, res: ServerResponse, fault: BrazeFault, rateHeaders: Record<string, string>): void {
    stats.faultsServed++;
    const fire = (): void => {
      if (fault.status === 0) {
        stats.byStatus[0] = (stats.byStatus[0] ?? 0) + 1;
        req.socket.destroy();
        return;
      }
      const body = fault.body === undefined ? defaultFaultBody(fault.status) : fault.body;
      answer(res, fault.status, body, { ...rateHeaders, ...fault.headers });
    };
    faults.schedule(fault, fire);
  }

  function bearerToken(req: IncomingMessage): string {
    const h = req.headers.authorization ?? '';
    const m = /^Bearer\s+(.*)$/i.exec(h);
    return m ? (m[1] ?? '') : h;
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?', 1)[0];
    if (path !== ROUTE) {
      req.resume();
      answer(res, 404, { message: 'Not Found' }, rateState(false).headers);
      return;
    }
    if (req.method !== 'POST') {
      req.resume();
      answer(res, 405, { message: 'Method Not Allowed' }, { ...rateState(false).headers, Allow: 'POST' });
      return;
    }
    stats.requests++;
    const token = bearerToken(req);
    const authorized = token === apiKey;
    // Only requests carrying the workspace key count against the workspace's window.
    const rl = rateState(authorized);

    const fault = faults.take();
    if (fault && !fault.afterProcessing) {
      req.resume();
      serveFault(req, res, fault, rl.headers);
      return;
    }
    const reply = (status: number, body: unknown): void => {
      if (fault) serveFault(req, res, fault, rl.headers);
      else answer(res, status, body, rl.headers);
    };

    if (!authorized) {
      req.resume();
      reply(401, { message: `Invalid API key: ${token}` });
      return;
    }
    if (rl.over) {
      req.resume();
      stats.rateLimited++;
      reply(429, { message: RATE_LIMITED });
      return;
    }
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > maxBodyBytes) {
      // Answered from the header so the client sees a 413 rather than a reset mid-upload.
      stats.maxRequestBytes = Math.max(stats.maxRequestBytes, declared);
      req.resume();
      reply(413, { message: 'Request Entity Too Large' });
      return;
    }
    const read = await readBody(req, maxBodyBytes);
    stats.maxRequestBytes = Math.max(stats.maxRequestBytes, read.bytes);
    if (read.tooLarge) {
      reply(413, { message: 'Request Entity Too Large' });
      return;
    }
    const ctype = (req.headers['content-type'] ?? '').split(';', 1)[0]?.trim().toLowerCase();
    if (ctype !== 'application/json') {
      reply(400, { message: "Content-Type must be 'application/json'" });
      return;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(read.body.toString('utf8'));
    } catch {
      reply(400, { message: 'Invalid JSON in request body' });
      return;
    }
    if (!isRecord(parsed)) {
      reply(400, { message: 'Request body must be a JSON object' });
      return;
    }

    const arrays: Partial<Record<BrazeArrayName, unknown[]>> = {};
    let total = 0;
    for (const name of ARRAYS) {
      const v = parsed[name];
      if (v === undefined || v === null) continue;
      if (!Array.isArray(v)) {
        reply(400, { message: `'${name}' must be an array` });
        return;
      }
      arrays[name] = v;
      total += v.length;
    }
    stats.maxEventsInRequest = Math.max(stats.maxEventsInRequest, arrays.events?.length ?? 0);
    stats.maxAttributesInRequest = Math.max(stats.maxAttributesInRequest, arrays.attributes?.length ?? 0);
    stats.maxPurchasesInRequest = Math.max(stats.maxPurchasesInRequest, arrays.purchases?.length ?? 0);
    stats.maxObjectsInRequest = Math.max(stats.maxObjectsInRequest, total);

    for (const name of ARRAYS) {
      const n = arrays[name]?.length ?? 0;
      if (n > maxPerArray) {
        reply(400, {
          message: 'Max Input Length Exceeded',
          errors: [`'${name}' has ${n} objects; at most ${maxPerArray} per array are allowed`],
        });
        return;
      }
    }
    if (maxTotal > 0 && total > maxTotal) {
      reply(400, {
        message: 'Max Input Length Exceeded',
        errors: [`${total} objects in the request; at most ${maxTotal} in total are allowed`],
      });
      return;
    }

    const errors: BrazeErrorItem[] = [];
    const accepted: Record<BrazeArrayName, Array<Record<string, unknown>>> = { attributes: [], events: [], purchases: [] };
    for (const name of ARRAYS) {
      const list = arrays[name];
      if (!list) continue;
      for (let i = 0; i < list.length; i++) {
        const obj = list[i];
        let reason = validate ? validateObject(obj, name) : isRecord(obj) ? undefined : 'Object is not valid';
        if (reason === undefined && rejectPred && isRecord(obj)) reason = rejectPred(obj, name);
        if (reason !== undefined || !isRecord(obj)) {
          errors.push({ type: reason ?? 'Object is not valid', input_array: name, index: i });
        } else {
          accepted[name].push(obj);
        }
      }
    }
    stats.rejectedObjects += errors.length;
    const acceptedCount = accepted.attributes.length + accepted.events.length + accepted.purchases.length;
    if (acceptedCount === 0) {
      reply(400, { message: NO_VALID_DATA, errors });
      return;
    }

    const body: Record<string, unknown> = { message: 'success' };
    for (const name of ARRAYS) {
      if (!arrays[name]) continue;
      body[`${name}_processed`] = accepted[name].length;
      const dest = received[name];
      for (const o of accepted[name]) dest.push(o);
    }
    if (errors.length > 0) body.errors = errors;
    stats.acceptedObjects += acceptedCount;
    // Braze processes a request's attributes, then its events, then its purchases (§7).
    if (profilesOn) for (const name of ARRAYS) for (const o of accepted[name]) process(name, o);
    reply(201, body);
    if (accepted.events.length > 0) waiters.notify();
  }

  const server = await serve(handle, (res, err) => answer(res, 500, { message: `stand-in error: ${err instanceof Error ? err.message : String(err)}` }, {}), opts.port ?? 0, host);
  const url = server.url;

  return {
    url,
    received,
    dropped,
    stats,
    profile(id: BrazeProfileId): BrazeProfile | undefined {
      return profiles.find(id as Record<string, unknown>);
    },
    profileCount(): number {
      return profiles.count;
    },
    seedProfile(id: BrazeProfileId, attributes: Record<string, unknown> = {}): void {
      const p = profiles.find(id as Record<string, unknown>) ?? profiles.create(id as Record<string, unknown>);
      Object.assign(p.attributes, attributes);
    },
    setApiKey(key: string): void {
      apiKey = key;
    },
    injectFaults(fault: BrazeFault): void {
      faults.add(fault);
    },
    clearFaults(): void {
      faults.clear();
    },
    rejectWhen(pred: BrazeRejectPredicate | undefined): void {
      rejectPred = pred;
    },
    waitForEvents(n: number, timeoutMs: number): Promise<void> {
      return waiters.wait(n, timeoutMs);
    },
    reset(): void {
      // Cleared in place so that references a test already holds stay live.
      received.events.length = 0;
      received.attributes.length = 0;
      received.purchases.length = 0;
      dropped.events.length = 0;
      dropped.attributes.length = 0;
      dropped.purchases.length = 0;
      profiles.clear();
      stats.silentlyDropped = 0;
      stats.profilesCreated = 0;
      for (const k of Object.keys(stats.byStatus)) delete stats.byStatus[Number(k)];
      stats.requests = 0;
      stats.acceptedObjects = 0;
      stats.rejectedObjects = 0;
      stats.rateLimited = 0;
      stats.faultsServed = 0;
      stats.maxEventsInRequest = 0;
      stats.maxAttributesInRequest = 0;
      stats.maxPurchasesInRequest = 0;
      stats.maxObjectsInRequest = 0;
      stats.maxRequestBytes = 0;
      faults.clear();
      rejectPred = undefined;
      apiKey = opts.apiKey;
      windowStart = Number.NEGATIVE_INFINITY;
      windowUsed = 0;
    },
    async close(): Promise<void> {
      faults.close();
      waiters.rejectAll();
      await server.close();
    },
  };
}
