/**
 * A local stand-in for the Amplitude HTTP V2 API, `POST /2/httpapi`, and the Batch API, `POST /batch`
 * (same request and answers, its own per-id rate and body cap) (reference: amplitude-http-api.md).
 *
 * Strict on purpose: ids are throttled per any sliding second (the real service averages over a
 * longer window), so a gateway whose own per-identity limiter leaks shows up as 429s here.
 * Plain `node:http` keeps the per-request cost low enough for benchmark traffic over keep-alive.
 */
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import { AMPLITUDE_BLOCKED_IDS } from '../../braze-to-amplitude/currents-to-amplitude.js';
import { gunzipSync } from 'node:zlib';
import { systemClock, type Clock } from '../../clock.js';
import { CountWaiters, FaultQueue, readBody, send, serve, type StandInFault } from './http-util.js';

export interface AmplitudeStandInOptions {
  /** The project API key expected in the body's `api_key`. */
  apiKey: string;
  /** Largest accepted number of events per request ("up to 2,000"). Default 2000; more is answered 413. */
  maxEventsPerRequest?: number;
  /** Largest accepted body in bytes, as received (before any gzip decoding). Default 1 MiB; more is 413. */
  maxBodyBytes?: number;
  /** Minimum `user_id` / `device_id` length unless the request's `options.min_id_length` says otherwise. Default 5. */
  minIdLength?: number;
  /** Events allowed per `device_id` and per `user_id` in any sliding second. Default 30; false turns it off. */
  perIdPerSecond?: number | false;
  /** Events allowed per id in the trailing 24 h, counted in whole-hour steps. Default off. */
  dailyQuota?: number | false;
  /**
   * The Batch API (`POST /batch`, same request and answers): events allowed per id in any sliding
   * second (default 1,000, or off when `perIdPerSecond` is false) and its body cap (default 20 MB).
   * Its ids are counted apart from `/2/httpapi`'s.
   */
  batchPerIdPerSecond?: number | false;
  batchMaxBodyBytes?: number;
  clock?: Clock;
  port?: number;
  host?: string;
}

/** Default body: Amplitude's `{"code", "error"}` form. */
export type AmplitudeFault = StandInFault;

export interface AmplitudeStandInStats {
  requests: number;
  byStatus: Record<number, number>;
  acceptedEvents: number;
  /** Events in requests refused with a 400 validation answer. */
  rejectedEvents: number;
  /** Requests answered 429 because an id went over `perIdPerSecond`. */
  throttled429: number;
  /** Requests answered 429 because an id went over `dailyQuota`. */
  quota429: number;
  faultsServed: number;
  /** Accepted events whose `insert_id` had already been accepted (Amplitude would drop them). */
  duplicateEvents: number;
  /** Largest event count and body size seen in any request, accepted or not, to check the gateway's batching. */
  maxEventsInRequest: number;
  maxRequestBytes: number;
  /** Requests per endpoint path (`/2/httpapi`, `/batch`). */
  byRoute: Record<string, number>;
}

export interface AmplitudeStandIn {
  /** Base URL; the gateway posts to `${url}/2/httpapi`. */
  readonly url: string;
  /** Accepted events in arrival order, duplicates included (with a too-short id already stripped, as Amplitude does). */
  readonly received: ReadonlyArray<Record<string, unknown>>;
  readonly stats: Readonly<AmplitudeStandInStats>;
  /** Accepted events per `insert_id`: a count above 1 is a duplicate Amplitude would have ignored. */
  readonly insertIdCounts: ReadonlyMap<string, number>;
  /** Distinct `insert_id`s accepted: what Amplitude would actually keep. */
  readonly uniqueInsertIds: number;
  setApiKey(key: string): void;
  /** The next `count` requests get this answer instead of the normal processing. Faults queue up in order. */
  injectFaults(fault: AmplitudeFault): void;
  /** Drops the faults not yet served (the end of an outage). */
  clearFaults(): void;
  /** Resolves once at least `n` events have been accepted in total (duplicates included); rejects after `timeoutMs`. */
  waitForEvents(n: number, timeoutMs: number): Promise<void>;
  /** Back to the state right after start: data, stats, faults, per-id windows and quotas, and the configured key. */
  reset(): void;
  close(): Promise<void>;
}

const ROUTE = '/2/httpapi';
const BATCH_ROUTE = '/batch';

/** What differs between the two ingest endpoints (reference: amplitude-http-api.md, the limits table). */
interface Endpoint {
  maxEvents: number;
  maxBodyBytes: number;
  perSecond: number | false;
  devices: IdLedger;
  users: IdLedger;
}
const DAY_HOURS = 24;
const HOUR_MS = 3_600_000;

/**
 * Values Amplitude refuses as ids. The reference leaves case-sensitivity open; matching without
 * case is the stricter choice.
 */
const BLOCKED_IDS = new Set(AMPLITUDE_BLOCKED_IDS);

type FieldKind = 'int' | 'number' | 'string' | 'object';
const TYPED_FIELDS: ReadonlyArray<readonly [string, FieldKind]> = [
  ['time', 'int'],
  ['session_id', 'int'],
  ['event_id', 'int'],
  ['quantity', 'int'],
  ['price', 'number'],
  ['revenue', 'number'],
  ['location_lat', 'number'],
  ['location_lng', 'number'],
  ['insert_id', 'string'],
  ['app_version', 'string'],
  ['platform', 'string'],
  ['os_name', 'string'],
  ['os_version', 'string'],
  ['device_brand', 'string'],
  ['device_manufacturer', 'string'],
  ['device_model', 'string'],
  ['carrier', 'string'],
  ['country', 'string'],
  ['region', 'string'],
  ['city', 'string'],
  ['dma', 'string'],
  ['language', 'string'],
  ['ip', 'string'],
  ['idfa', 'string'],
  ['idfv', 'string'],
  ['adid', 'string'],
  ['android_id', 'string'],
  ['productId', 'string'],
  ['revenueType', 'string'],
  ['currency', 'string'],
  ['partner_id', 'string'],
  ['event_properties', 'object'],
  ['user_properties', 'object'],
  ['groups', 'object'],
  ['group_properties', 'object'],
];

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function fieldOk(v: unknown, kind: FieldKind): boolean {
  switch (kind) {
    case 'int':
      return typeof v === 'number' && Number.isSafeInteger(v);
    case 'number':
      return typeof v === 'number' && Number.isFinite(v);
    case 'string':
      return typeof v === 'string';
    case 'object':
      return isRecord(v);
  }
}

/** Documented body of a 429; every map is present even when empty, as in the reference example. */
export interface Amplitude429Body {
  code: 429;
  error: string;
  eps_threshold: number;
  throttled_devices: Record<string, number>;
  throttled_users: Record<string, number>;
  throttled_events: number[];
  exceeded_daily_quota_devices: Record<string, number>;
  exceeded_daily_quota_users: Record<string, number>;
}

function defaultFaultBody(status: number, epsThreshold: number): unknown {
  if (status === 429) {
    const body: Amplitude429Body = {
      code: 429,
      error: 'Too many requests for some devices and users',
      eps_threshold: epsThreshold,
      throttled_devices: {},
      throttled_users: {},
      throttled_events: [],
      exceeded_daily_quota_devices: {},
      exceeded_daily_quota_users: {},
    };
    return body;
  }
  if (status === 413) return { code: 413, error: 'Payload too large' };
  if (status === 403) return { code: 403, error: 'Forbidden' };
  if (status === 400) return { code: 400, error: 'Invalid API key' };
  return { code: status, error: STATUS_CODES[status] ?? 'Error' };
}

/**
 * Per-id state, kept compact because benchmarks create many ids: a ring of the last N arrival
 * times (enough to decide "more than N in any second") and, only when a quota is set, 24 hourly
 * counters (the quota is documented as a rolling 24 h evaluated in 1-hour steps).
 */
interface IdState {
  ring: Float64Array;
  head: number;
  size: number;
  hourStamp?: Float64Array;
  hourCount?: Uint32Array;
}

class IdLedger {
  private readonly ids = new Map<string, IdState>();
  constructor(
    private readonly perSecond: number,
    private readonly quota: number | false,
  ) {}

  private state(id: string): IdState {
    let s = this.ids.get(id);
    if (!s) {
      s = { ring: new Float64Array(Math.max(1, this.perSecond)), head: 0, size: 0 };
      if (this.quota !== false) {
        s.hourStamp = new Float64Array(DAY_HOURS).fill(-1);
        s.hourCount = new Uint32Array(DAY_HOURS);
      }
      this.ids.set(id, s);
    }
    return s;
  }

  /** Events of this id in the second ending at `now`, counting `extra` more arriving now. */
  eventsInLastSecond(id: string, now: number, extra: number): number {
    const s = this.ids.get(id);
    let n = 0;
    if (s) {
      const cutoff = now - 1000;
      const cap = s.ring.length;
      for (let i = 1; i <= s.size; i++) {
        const t = s.ring[(s.head - i + cap) % cap]!;
        if (t <= cutoff) break;
        n++;
      }
    }
    return n + extra;
  }

  eventsInLastDay(id: string, now: number): number {
    const s = this.ids.get(id);
    if (!s?.hourStamp || !s.hourCount) return 0;
    const hour = Math.floor(now / HOUR_MS);
    let n = 0;
    for (let i = 0; i < DAY_HOURS; i++) {
      if (s.hourStamp[i]! > hour - DAY_HOURS) n += s.hourCount[i]!;
    }
    return n;
  }

  record(id: string, now: number, count: number): void {
    const s = this.state(id);
    const cap = s.ring.length;
    for (let i = 0; i < Math.min(count, cap); i++) {
      s.ring[s.head] = now;
      s.head = (s.head + 1) % cap;
    }
    s.size = Math.min(cap, s.size + count);
    if (s.hourStamp && s.hourCount) {
      const hour = Math.floor(now / HOUR_MS);
      const slot = hour % DAY_HOURS;
      if (s.hourStamp[slot] !== hour) {
        s.hourStamp[slot] = hour;
        s.hourCount[slot] = 0;
      }
      s.hourCount[slot] = s.hourCount[slot]! + count;
    }
  }

  clear(): void {
    this.ids.clear();
  }
}

function addIndex(map: Record<string, number[]>, field: string, index: number): void {
  const list = map[field];
  if (list) list.push(index);
  else map[field] = [index];
}

export async function startAmplitudeStandIn(opts: AmplitudeStandInOptions): Promise<AmplitudeStandIn> {
  const clock = opts.clock ?? systemClock;
  const defaultMinIdLength = opts.minIdLength ?? 5;
  const httpPerSecond = opts.perIdPerSecond === undefined ? 30 : opts.perIdPerSecond;
  const quota = opts.dailyQuota ?? false;
  // Devices and users are separate key spaces: the same string may be both a device and a user id.
  const endpoint = (maxEvents: number, maxBodyBytes: number, perSecond: number | false): Endpoint => ({
    maxEvents,
    maxBodyBytes,
    perSecond,
    devices: new IdLedger(perSecond === false ? 1 : perSecond, quota),
    users: new IdLedger(perSecond === false ? 1 : perSecond, quota),
  });
  const endpoints = new Map<string, Endpoint>([
    [ROUTE, endpoint(opts.maxEventsPerRequest ?? 2000, opts.maxBodyBytes ?? 1024 * 1024, httpPerSecond)],
    [
      BATCH_ROUTE,
      endpoint(opts.maxEventsPerRequest ?? 2000, opts.batchMaxBodyBytes ?? 20 * 1024 * 1024, opts.batchPerIdPerSecond ?? (httpPerSecond === false ? false : 1_000)),
    ],
  ]);
  const host = opts.host ?? '127.0.0.1';

  let apiKey = opts.apiKey;
  const faults = new FaultQueue();
  const received: Array<Record<string, unknown>> = [];
  const insertIdCounts = new Map<string, number>();
  const stats: AmplitudeStandInStats = {
    requests: 0,
    byStatus: {},
    acceptedEvents: 0,
    rejectedEvents: 0,
    throttled429: 0,
    quota429: 0,
    faultsServed: 0,
    duplicateEvents: 0,
    maxEventsInRequest: 0,
    maxRequestBytes: 0,
    byRoute: {},
  };
  const waiters = new CountWaiters(() => received.length, 'Amplitude stand-in');

  function answer(res: ServerResponse, status: number, body: unknown, headers?: Record<string, string>): void {
    stats.byStatus[status] = (stats.byStatus[status] ?? 0) + 1;
    send(res, status, body, headers);
  }

  function serveFault(req: IncomingMessage, res: ServerResponse, fault: AmplitudeFault, epsThreshold: number): void {
    stats.faultsServed++;
    const fire = (): void => {
      if (fault.status === 0) {
        stats.byStatus[0] = (stats.byStatus[0] ?? 0) + 1;
        req.socket.destroy();
        return;
      }
      const body = fault.body === undefined ? defaultFaultBody(fault.status, epsThreshold) : fault.body;
      answer(res, fault.status, body, fault.headers);
    };
    faults.schedule(fault, fire);
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?', 1)[0] ?? '/';
    const ep = req.method === 'POST' ? endpoints.get(path) : undefined;
    if (ep === undefined) {
      req.resume();
      answer(res, 400, { code: 400, error: 'Invalid request path' });
      return;
    }
    const { maxEvents, maxBodyBytes, perSecond, devices, users } = ep;
    const epsThreshold = perSecond === false ? 0 : perSecond;
    stats.requests++;
    stats.byRoute[path] = (stats.byRoute[path] ?? 0) + 1;
    const fault = faults.take();
    if (fault && !fault.afterProcessing) {
      req.resume();
      serveFault(req, res, fault, epsThreshold);
      return;
    }
    const reply = (status: number, body: unknown): void => {
      if (fault) serveFault(req, res, fault, epsThreshold);
      else answer(res, status, body);
    };

    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > maxBodyBytes) {
      // Answered from the header so the client sees a 413 rather than a reset mid-upload.
      stats.maxRequestBytes = Math.max(stats.maxRequestBytes, declared);
      req.resume();
      reply(413, { code: 413, error: 'Payload too large' });
      return;
    }
    const read = await readBody(req, maxBodyBytes);
    stats.maxRequestBytes = Math.max(stats.maxRequestBytes, read.bytes);
    if (read.tooLarge) {
      reply(413, { code: 413, error: 'Payload too large' });
      return;
    }
    if (read.bytes === 0) {
      reply(400, { code: 400, error: 'Missing request body' });
      return;
    }
    const ctype = (req.headers['content-type'] ?? '').split(';', 1)[0]?.trim().toLowerCase();
    if (ctype !== 'application/json') {
      // `detail` is the stand-in's own hint; the documented part is `code` and `error`.
      reply(400, { code: 400, error: 'Invalid JSON request body', detail: "Content-Type must be 'application/json'" });
      return;
    }
    let raw = read.body;
    const encoding = (req.headers['content-encoding'] ?? '').toLowerCase();
    if (encoding === 'gzip') {
      try {
        raw = gunzipSync(raw);
      } catch {
        reply(400, { code: 400, error: 'Invalid JSON request body', detail: 'body is not valid gzip' });
        return;
      }
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw.toString('utf8'));
    } catch {
      reply(400, { code: 400, error: 'Invalid JSON request body' });
      return;
    }
    if (!isRecord(parsed)) {
      reply(400, { code: 400, error: 'Invalid JSON request body' });
      return;
    }
    if (typeof parsed.api_key !== 'string' || parsed.api_key.length === 0) {
      reply(400, { code: 400, error: 'Request missing required field', missing_field: 'api_key' });
      return;
    }
    if (parsed.api_key !== apiKey) {
      reply(400, { code: 400, error: 'Invalid API key' });
      return;
    }
    const events = parsed.events;
    if (!Array.isArray(events) || events.length === 0) {
      reply(400, { code: 400, error: 'Request missing required field', missing_field: 'events' });
      return;
    }
    stats.maxEventsInRequest = Math.max(stats.maxEventsInRequest, events.length);
    if (events.length > maxEvents) {
      reply(413, { code: 413, error: 'Payload too large' });
      return;
    }

    let minIdLength = defaultMinIdLength;
    const options = parsed.options;
    if (isRecord(options) && options.min_id_length !== undefined) {
      const m = options.min_id_length;
      if (typeof m !== 'number' || !Number.isInteger(m) || m < 1) {
        reply(400, { code: 400, error: 'Invalid field values on some events', detail: 'options.min_id_length must be a positive integer' });
        return;
      }
      minIdLength = m;
    }

    const invalidFields: Record<string, number[]> = {};
    const missingFields: Record<string, number[]> = {};
    const invalidIdLengths: Record<string, number[]> = {};
    const toStore: Array<Record<string, unknown>> = [];
    const deviceOf: Array<string | undefined> = [];
    const userOf: Array<string | undefined> = [];

    for (let i = 0; i < events.length; i++) {
      const ev: unknown = events[i];
      if (!isRecord(ev)) {
        reply(400, { code: 400, error: 'Invalid event JSON' });
        return;
      }
      let bad = false;
      const et = ev.event_type;
      if (et === undefined || et === null || et === '') {
        addIndex(missingFields, 'event_type', i);
        bad = true;
      } else if (typeof et !== 'string') {
        addIndex(invalidFields, 'event_type', i);
        bad = true;
      }
      for (const [field, kind] of TYPED_FIELDS) {
        const v = ev[field];
        if (v !== undefined && v !== null && !fieldOk(v, kind)) {
          addIndex(invalidFields, field, i);
          bad = true;
        }
      }

      let user: string | undefined;
      let device: string | undefined;
      let shortUser = false;
      let shortDevice = false;
      for (const field of ['user_id', 'device_id'] as const) {
        const v = ev[field];
        if (v === undefined || v === null) continue;
        if (typeof v !== 'string' || BLOCKED_IDS.has(v.toLowerCase())) {
          addIndex(invalidFields, field, i);
          bad = true;
          continue;
        }
        if (v.length < minIdLength) {
          if (field === 'user_id') shortUser = true;
          else shortDevice = true;
          continue;
        }
        if (field === 'user_id') user = v;
        else device = v;
      }
      if (!bad && user === undefined && device === undefined) {
        if (shortUser || shortDevice) {
          if (shortUser) addIndex(invalidIdLengths, 'user_id', i);
          if (shortDevice) addIndex(invalidIdLengths, 'device_id', i);
        } else {
          addIndex(missingFields, 'user_id or device_id', i);
        }
        bad = true;
      }
      if (bad) continue;

      // Amplitude strips a too-short id and keeps the event when the other id is usable.
      let stored = ev;
      if (shortUser || shortDevice) {
        stored = { ...ev };
        if (shortUser) delete stored.user_id;
        if (shortDevice) delete stored.device_id;
      }
      toStore.push(stored);
      userOf.push(user);
      deviceOf.push(device);
    }

    const hasFieldErrors = Object.keys(invalidFields).length > 0 || Object.keys(missingFields).length > 0;
    const hasIdErrors = Object.keys(invalidIdLengths).length > 0;
    if (hasFieldErrors || hasIdErrors) {
      // A 400 refuses the whole request: the SDKs drop the listed indexes and resend the rest.
      stats.rejectedEvents += events.length;
      const body: Record<string, unknown> = {
        code: 400,
        error: hasFieldErrors ? 'Invalid field values on some events' : 'Invalid id length for user_id or device_id',
      };
      if (Object.keys(invalidFields).length > 0) body.events_with_invalid_fields = invalidFields;
      if (Object.keys(missingFields).length > 0) body.events_with_missing_fields = missingFields;
      if (hasIdErrors) body.events_with_invalid_id_lengths = invalidIdLengths;
      reply(400, body);
      return;
    }

    const now = clock.now();
    if (perSecond !== false || quota !== false) {
      const perDevice = new Map<string, number>();
      const perUser = new Map<string, number>();
      for (let i = 0; i < toStore.length; i++) {
        const d = deviceOf[i];
        const u = userOf[i];
        if (d !== undefined) perDevice.set(d, (perDevice.get(d) ?? 0) + 1);
        if (u !== undefined) perUser.set(u, (perUser.get(u) ?? 0) + 1);
      }
      const throttledDevices: Record<string, number> = {};
      const throttledUsers: Record<string, number> = {};
      const quotaDevices: Record<string, number> = {};
      const quotaUsers: Record<string, number> = {};
      const flags = { throttled: false, overQuota: false };
      const check = (ledger: IdLedger, counts: Map<string, number>, thr: Record<string, number>, q: Record<string, number>): void => {
        for (const [id, k] of counts) {
          if (perSecond !== false) {
            const eps = ledger.eventsInLastSecond(id, now, k);
            if (eps > perSecond) {
              thr[id] = eps;
              flags.throttled = true;
            }
          }
          if (quota !== false) {
            const day = ledger.eventsInLastDay(id, now);
            if (day + k > quota) {
              q[id] = day;
              flags.overQuota = true;
            }
          }
        }
      };
      check(devices, perDevice, throttledDevices, quotaDevices);
      check(users, perUser, throttledUsers, quotaUsers);
      if (flags.throttled || flags.overQuota) {
        const throttledEvents: number[] = [];
        // Indexes refer to the request's `events`; every event was kept in toStore, in order.
        for (let i = 0; i < toStore.length; i++) {
          const d = deviceOf[i];
          const u = userOf[i];
          if ((d !== undefined && d in throttledDevices) || (u !== undefined && u in throttledUsers)) throttledEvents.push(i);
        }
        if (flags.throttled) stats.throttled429++;
        if (flags.overQuota) stats.quota429++;
        const body: Amplitude429Body = {
          code: 429,
          error: 'Too many requests for some devices and users',
          eps_threshold: epsThreshold,
          throttled_devices: throttledDevices,
          throttled_users: throttledUsers,
          throttled_events: throttledEvents,
          exceeded_daily_quota_devices: quotaDevices,
          exceeded_daily_quota_users: quotaUsers,
        };
        reply(429, body);
        return;
      }
      for (const [id, k] of perDevice) devices.record(id, now, k);
      for (const [id, k] of perUser) users.record(id, now, k);
    }

    for (const ev of toStore) {
      received.push(ev);
      const ins = ev.insert_id;
      if (typeof ins === 'string') {
        const seen = insertIdCounts.get(ins) ?? 0;
        if (seen > 0) stats.duplicateEvents++;
        insertIdCounts.set(ins, seen + 1);
      }
    }
    stats.acceptedEvents += toStore.length;
    reply(200, { code: 200, events_ingested: toStore.length, payload_size_bytes: read.bytes, server_upload_time: now });
    waiters.notify();
  }

  const server = await serve(handle, (res, err) => answer(res, 500, { code: 500, error: `stand-in error: ${err instanceof Error ? err.message : String(err)}` }), opts.port ?? 0, host);
  const url = server.url;

  return {
    url,
    received,
    stats,
    insertIdCounts,
    get uniqueInsertIds(): number {
      return insertIdCounts.size;
    },
    setApiKey(key: string): void {
      apiKey = key;
    },
    injectFaults(fault: AmplitudeFault): void {
      faults.add(fault);
    },
    clearFaults(): void {
      faults.clear();
    },
    waitForEvents(n: number, timeoutMs: number): Promise<void> {
      return waiters.wait(n, timeoutMs);
    },
    reset(): void {
      // Cleared in place so that references a test already holds stay live.
      received.length = 0;
      insertIdCounts.clear();
      for (const k of Object.keys(stats.byStatus)) delete stats.byStatus[Number(k)];
      stats.requests = 0;
      stats.acceptedEvents = 0;
      stats.rejectedEvents = 0;
      stats.throttled429 = 0;
      stats.quota429 = 0;
      stats.faultsServed = 0;
      stats.duplicateEvents = 0;
      stats.maxEventsInRequest = 0;
      stats.maxRequestBytes = 0;
      for (const k of Object.keys(stats.byRoute)) delete stats.byRoute[k];
      faults.clear();
      for (const e of endpoints.values()) {
        e.devices.clear();
        e.users.clear();
      }
      apiKey = opts.apiKey;
    },
    async close(): Promise<void> {
      faults.close();
      waiters.rejectAll();
      await server.close();
    },
  };
}
